"""VQA attribute rewards (GIT, BLIP) on tiny random checkpoints saved to disk, plus the yes/no helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForQuestionAnswering,
    BlipImageProcessorPil,
    BlipProcessor,
    CLIPImageProcessorPil,
    GitConfig,
    GitForCausalLM,
    GitProcessor,
)

from t2i_r1.rewards import build_reward
from t2i_r1.rewards._common import YesNoTokens, answer_token_ids
from t2i_r1.rewards.vqa import BLIPVQAReward, GITVQAReward, aggregate_phrase_scores
from t2i_r1.utils.checkpoints import MissingCheckpointError

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", "?", "a", "green", "red", "blue",
         "pizza", "bench", "dog", "cat", "car", "photo", "of", "wooden", "metallic", "[DEC]"]


def tiny_bert_tokenizer() -> BertTokenizer:
    return BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})


@pytest.fixture(scope="module")
def git_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = tiny_bert_tokenizer()
    config = GitConfig(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )
    path = tmp_path_factory.mktemp("git")
    GitForCausalLM(config).save_pretrained(path)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    GitProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    torch.manual_seed(1)
    tok = tiny_bert_tokenizer()
    config = BlipConfig(
        text_config=dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, encoder_hidden_size=32, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=WORDS.index("[DEC]"), sep_token_id=3),
        # The answer decoder cross-attends to question states through the same config as the question
        # encoder to image states, so (as in the real BLIP) the vision width equals the text width.
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )
    path = tmp_path_factory.mktemp("blip")
    BlipForQuestionAnswering(config).save_pretrained(path)
    image_processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    return path


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (32 + 4 * i, 40, 3), dtype=np.uint8)) for i in range(n)]


METADATA = [
    {"attr_nouns": ["green pizza", "red bench"], "task_type": "color"},
    {"nouns": ["dog", "cat"], "spatial_info": {"obj1": "dog", "obj2": "cat", "locality": "left of"}},
    {"attr_nouns": ["wooden car"], "task_type": "texture"},
    {"attr_nouns": ["blue dog", "metallic cat", "red pizza"], "task_type": "color"},
]
PROMPTS = ["a green pizza and a red bench", "a dog left of a cat", "a wooden car",
           "a blue dog, a metallic cat, a red pizza"]


# ---- helpers ----


def test_yes_no_probability_arithmetic():
    answers = YesNoTokens(yes=(1,), no=(2,))
    # Row 0: yes logit 2, no logit 0 -> e^2 / (e^2 + e^0) = sigmoid(2); other tokens do not matter.
    # Row 1: yes = no -> 1/2 however small both are (-100: softmax probabilities near 1e-44).
    logits = torch.tensor([[5.0, 2.0, 0.0, 3.0], [50.0, -100.0, -100.0, 0.0]])
    torch.testing.assert_close(answers.probability(logits), torch.tensor([1 / (1 + math.exp(-2)), 0.5]))
    # Two "yes" spellings are summed: (e^1 + e^1) / (e^1 + e^1 + e^0).
    two = YesNoTokens(yes=(0, 1), no=(2,)).probability(torch.tensor([[1.0, 1.0, 0.0]]))
    torch.testing.assert_close(two, torch.tensor([2 * math.e / (2 * math.e + 1)]))
    with pytest.raises(ValueError, match="both yes and no"):
        YesNoTokens(yes=(1,), no=(1,))


def test_answer_token_ids():
    tok = tiny_bert_tokenizer()
    # Uncased BERT: "yes", "Yes" and " yes" are the same single token.
    assert answer_token_ids(tok, ["yes", "Yes", " yes"]) == [WORDS.index("yes")]
    with pytest.raises(ValueError, match="single token"):
        answer_token_ids(tok, ["maybe", "yes please"])


def test_aggregation():
    assert aggregate_phrase_scores([0.5, 0.25], "mean") == 0.375
    assert aggregate_phrase_scores([0.5, 0.25], "product") == 0.125
    assert math.isnan(aggregate_phrase_scores([], "mean"))
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_phrase_scores([0.5], "max")


# ---- GIT ----


def _git_expected(git_dir, image, question):
    """P(yes)/(P(yes)+P(no)) from transformers' own GIT forward: logits at the last question token."""
    model = GitForCausalLM.from_pretrained(git_dir).eval()
    processor = GitProcessor.from_pretrained(git_dir)
    ids = [processor.tokenizer.cls_token_id] + processor.tokenizer(question, add_special_tokens=False)["input_ids"]
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probs = model(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[0, -1].softmax(-1)
    y, n = probs[WORDS.index("yes")], probs[WORDS.index("no")]
    return (y / (y + n)).item()


def test_git_yes_probability_matches_transformers_forward(git_dir):
    reward = GITVQAReward(checkpoint=git_dir, device="cpu")
    images = _images(2)
    # Image 0 asked twice (one vision pass, two grid rows), image 1 once (a dummy row fills its grid).
    questions = ["green pizza?", "red bench?", "a wooden car?"]
    got = reward.yes_probability([images[0], images[0], images[1]], questions)
    expected = [_git_expected(git_dir, images[0], questions[0]), _git_expected(git_dir, images[0], questions[1]),
                _git_expected(git_dir, images[1], questions[2])]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=0)


def test_git_reward_end_to_end(git_dir):
    images = _images(4, seed=2)
    mean = GITVQAReward(checkpoint=git_dir, device="cpu", batch_size=3)(PROMPTS, images, METADATA)
    prod = GITVQAReward(checkpoint=git_dir, device="cpu", aggregation="product")(PROMPTS, images, METADATA)
    assert len(mean) == 4 and math.isnan(mean[1]) and math.isnan(prod[1])  # spatial prompt: not applicable
    assert all(0 <= s <= 1 for i, s in enumerate(mean) if i != 1)
    # Expected per image: the phrase probabilities from transformers' forward, averaged / multiplied.
    for i in (0, 2, 3):
        phrase = [_git_expected(git_dir, images[i], f"{p}?") for p in METADATA[i]["attr_nouns"]]
        assert mean[i] == pytest.approx(sum(phrase) / len(phrase), abs=1e-5)
        assert prod[i] == pytest.approx(math.prod(phrase), abs=1e-5)


def test_git_batched_equals_one_by_one(git_dir):
    reward = GITVQAReward(checkpoint=git_dir, device="cpu", batch_size=4)
    images = _images(4, seed=3)
    batched = reward(PROMPTS, images, METADATA)
    single = [reward([p], [im], [m])[0] for p, im, m in zip(PROMPTS, images, METADATA)]
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)  # NaN == NaN for assert_allclose


def test_git_reference_behavior_routes_as_reward_git(git_dir):
    # reward_git.py of CaraJ7/T2I-R1 @2d9d4d1: L48-50 spatial / numeracy -> 0; L53-54 attr_nouns present
    # -> its phrases; L55-59 otherwise the nouns ("dog?"), or 1 without nouns; L74 the mean.
    metadata = [
        {"task_type": "spatial", "nouns": ["dog", "cat"], "attr_nouns": ["red dog"]},
        {"task_type": "numeracy", "nouns": ["cat"]},
        {"task_type": "color", "nouns": ["pizza"], "attr_nouns": ["green pizza", "red bench"]},
        {"task_type": "non", "nouns": ["dog", "car"]},  # no attr_nouns: asks "dog?" and "car?"; ours: NaN
        {"task_type": "object", "nouns": []},
        {"task_type": "color", "nouns": ["cat"], "attr_nouns": []},  # np.mean([]) -> NaN
    ]
    images = _images(6, seed=4)
    reward = GITVQAReward(checkpoint=git_dir, device="cpu", behavior="reference")
    got = reward(["p"] * 6, images, metadata)
    assert got[0] == 0.0 and got[1] == 0.0 and got[4] == 1.0 and math.isnan(got[5])
    for i, phrases in ((2, ["green pizza", "red bench"]), (3, ["dog", "car"])):
        expected = [_git_expected(git_dir, images[i], f"{p}?") for p in phrases]
        assert got[i] == pytest.approx(sum(expected) / len(expected), abs=1e-5)
    ours = GITVQAReward(checkpoint=git_dir, device="cpu")(["p"] * 6, images, metadata)
    assert [math.isnan(v) for v in ours] == [False, True, False, True, True, True]  # ours: NaN = not applicable
    assert ours[2] == pytest.approx(got[2], abs=1e-6)
    with pytest.raises(ValueError, match="behavior"):
        GITVQAReward(checkpoint=git_dir, device="cpu", behavior="paper")


# ---- BLIP ----


def _blip_expected(blip_dir, image, question):
    """First-step logits of transformers' BLIP ``generate`` -> P(yes)/(P(yes)+P(no))."""
    model = BlipForQuestionAnswering.from_pretrained(blip_dir).eval()
    processor = BlipProcessor.from_pretrained(blip_dir)
    inputs = processor(images=image, text=question, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=1, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    probs = out.logits[0][0].softmax(-1)
    y, n = probs[WORDS.index("yes")], probs[WORDS.index("no")]
    return (y / (y + n)).item()


def test_blip_yes_probability_matches_transformers_generate(blip_dir):
    reward = BLIPVQAReward(checkpoint=blip_dir, device="cpu")
    images = _images(2, seed=4)
    questions = ["green pizza?", "a red bench?", "wooden car?"]
    got = reward.yes_probability([images[0], images[1], images[0]], questions)
    expected = [_blip_expected(blip_dir, images[0], questions[0]), _blip_expected(blip_dir, images[1], questions[1]),
                _blip_expected(blip_dir, images[0], questions[2])]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=0)


def test_blip_reward_batched_equals_one_by_one(blip_dir):
    reward = BLIPVQAReward(checkpoint=blip_dir, device="cpu", batch_size=2, aggregation="product")
    images = _images(4, seed=5)
    batched = reward(PROMPTS, images, METADATA)
    assert math.isnan(batched[1]) and all(0 <= s <= 1 for i, s in enumerate(batched) if i != 1)
    single = [reward([p], [im], [m])[0] for p, im, m in zip(PROMPTS, images, METADATA)]
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)


def test_registry_and_errors(git_dir, blip_dir, tmp_path):
    assert build_reward("git_vqa", checkpoint=git_dir, device="cpu").name == "git_vqa"
    assert build_reward("blip_vqa", checkpoint=blip_dir, device="cpu").name == "blip_vqa"
    with pytest.raises(MissingCheckpointError, match="microsoft/git-large-vqav2"):
        GITVQAReward(checkpoint=tmp_path / "no_git")
    with pytest.raises(MissingCheckpointError, match="Salesforce/blip-vqa-base"):
        BLIPVQAReward(checkpoint=tmp_path / "no_blip")
    with pytest.raises(ValueError, match="aggregation"):
        GITVQAReward(checkpoint=git_dir, aggregation="min")
    reward = GITVQAReward(checkpoint=git_dir, device="cpu")
    assert reward([], [], []) == []
    assert math.isnan(reward(["a dog"], _images(1), [{"attr_nouns": []}])[0])


# ---- real weights / GPU (skipped unless available) ----


def _weights(name: str):
    import os

    root = os.environ.get("T2I_R1_WEIGHTS")
    if not root or not os.path.exists(os.path.join(root, name)):
        pytest.skip(f"needs $T2I_R1_WEIGHTS/{name} (real checkpoint; see the reward's docstring for the release)")
    return os.path.join(root, name)


@pytest.mark.weights
@pytest.mark.parametrize("cls, name", [(GITVQAReward, "git-large-vqav2"), (BLIPVQAReward, "blip-vqa-base")])
def test_real_vqa_sees_the_colour(cls, name):
    reward = cls(checkpoint=_weights(name), device="cpu")
    red = Image.new("RGB", (384, 384), (220, 20, 20))
    right, wrong = reward.yes_probability([red, red], ["red square?", "green square?"]).tolist()
    assert right > wrong


@pytest.mark.gpu
def test_vqa_on_gpu_matches_cpu(git_dir, blip_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    images = _images(4, seed=6)
    for cls, path in [(GITVQAReward, git_dir), (BLIPVQAReward, blip_dir)]:
        cpu = cls(checkpoint=path, device="cpu")(PROMPTS, images, METADATA)
        gpu = cls(checkpoint=path, device="cuda")(PROMPTS, images, METADATA)
        np.testing.assert_allclose(gpu, cpu, atol=1e-5, rtol=0)

"""ORM (LLaVA-OneVision judge): the original-layout converter, and the reward on tiny checkpoints in both
layouts, checked against transformers' own LLaVA-OneVision forward."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AddedToken,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from t2i_r1.rewards import build_reward
from t2i_r1.rewards.orm import (
    DEFAULT_PROMPT_TEMPLATE,
    OutputRewardModel,
    convert_llava_onevision_state_dict,
)
from t2i_r1.utils.checkpoints import MissingCheckpointError

IMAGE_SIZE, PATCH = 32, 8
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2 + 1  # 16 patches + the image_newline embedding
PROMPTS = ["a red dog", "a photo of a cat", "two red dogs on a bench", "a cat"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in-process on the judge's own wording, with Qwen's chat special tokens."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = [DEFAULT_PROMPT_TEMPLATE.format(image="", prompt=p) + " yes no" for p in PROMPTS] * 10
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tk.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def tiny_model(image_token_id: int, seed: int = 0) -> LlavaOnevisionForConditionalGeneration:
    torch.manual_seed(seed)
    config = LlavaOnevisionConfig(
        text_config=Qwen2Config(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256).to_dict(),
        vision_config=SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH,
                                         vision_use_head=False).to_dict(),
        image_token_id=image_token_id, image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]],
        vision_feature_layer=-1, vision_feature_select_strategy="full",
    )
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    with torch.no_grad():  # a random judge has P(yes) ~ P(no); widen the spread so scores differ
        model.lm_head.weight.mul_(20)
    return model


def to_original_layout(state_dict):
    """transformers keys -> LLaVA-NeXT keys, written out the way the original checkpoints name them."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("model.vision_tower."):
            key = "model.vision_tower.vision_tower.vision_model." + key[len("model.vision_tower."):]
        elif key.startswith("model.multi_modal_projector.linear_1."):
            key = "model.mm_projector.0." + key[len("model.multi_modal_projector.linear_1."):]
        elif key.startswith("model.multi_modal_projector.linear_2."):
            key = "model.mm_projector.2." + key[len("model.multi_modal_projector.linear_2."):]
        elif key.startswith("model.language_model."):
            key = "model." + key[len("model.language_model."):]
        out[key] = value
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same tiny judge saved twice: as a transformers directory and in the original LLaVA-NeXT layout."""
    tok = tiny_tokenizer()
    image_token_id = len(tok)  # where both loaders put <image>: the first id after the trained vocabulary
    model = tiny_model(image_token_id)
    with torch.no_grad():  # tie the head to the embeddings so the original copy can omit lm_head
        model.model.language_model.embed_tokens.weight.mul_(5)
        model.lm_head.weight.copy_(model.model.language_model.embed_tokens.weight)

    hf_dir = tmp_path_factory.mktemp("orm_hf")
    hf_tok = tiny_tokenizer()
    hf_tok.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
    assert hf_tok.convert_tokens_to_ids("<image>") == image_token_id
    model.save_pretrained(hf_dir)
    hf_tok.save_pretrained(hf_dir)

    orig_dir = tmp_path_factory.mktemp("orm_llava")
    original = to_original_layout({k: v.clone().contiguous() for k, v in model.state_dict().items()})
    del original["lm_head.weight"]  # tied checkpoints do not save it
    original["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # saved by old versions; dropped
    save_file(original, str(orig_dir / "model.safetensors"))
    text = model.config.text_config
    (orig_dir / "config.json").write_text(json.dumps({
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava",
        "vocab_size": text.vocab_size, "hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads, "max_position_embeddings": text.max_position_embeddings,
        "rms_norm_eps": text.rms_norm_eps, "rope_theta": text.rope_parameters["rope_theta"], "hidden_act": "silu",
        "mm_vision_tower": "google/siglip-so400m-patch14-384", "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": 16, "image_aspect_ratio": "anyres_max_9", "image_grid_pinpoints": [[32, 32]],
        "mm_patch_merge_type": "spatial_unpad",
    }))
    tiny_tokenizer().save_pretrained(orig_dir)  # no <image> token: the loader adds it
    return hf_dir, orig_dir, model


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (24 + 8 * (i % 3), 32, 3), dtype=np.uint8)) for i in range(n)]


# ---- converter ----


def test_converter_maps_the_original_layout():
    model = tiny_model(image_token_id=300)
    hf = model.state_dict()
    original = to_original_layout(hf)
    # Spot checks of the LLaVA-NeXT names the converter must read.
    for key in ["model.vision_tower.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight",
                "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight",
                "model.mm_projector.0.weight", "model.mm_projector.2.bias", "model.image_newline",
                "model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight", "model.norm.weight",
                "lm_head.weight"]:
        assert key in original
    original["model.vision_tower.vision_tower.vision_model.head.probe"] = torch.zeros(1, 1, 16)  # SigLIP head: dropped
    converted = convert_llava_onevision_state_dict(original)
    assert converted.keys() == hf.keys()
    assert all(torch.equal(converted[k], hf[k]) for k in hf)

    del original["lm_head.weight"]  # tied: the head becomes a copy of the embeddings
    tied = convert_llava_onevision_state_dict(original)
    assert torch.equal(tied["lm_head.weight"], hf["model.language_model.embed_tokens.weight"])

    original["model.vision_resampler.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="model.vision_resampler.weight"):
        convert_llava_onevision_state_dict(original)


# ---- the reward ----


def _expected(model, tok, prompts, pixel_values):
    """Via transformers' own path: HF multi-image features (one crop + newline each) merged by the model."""
    n = len(prompts)
    with torch.no_grad():
        feats = model.model.get_image_features(
            pixel_values=pixel_values, image_sizes=torch.tensor([[IMAGE_SIZE, IMAGE_SIZE]] * n),
            batch_num_images=torch.tensor([n]),  # several images in one sample -> no anyres tiling
        ).pooler_output
        out = []
        for prompt, feat in zip(prompts, feats):
            text = DEFAULT_PROMPT_TEMPLATE.format(image="<image>" * NUM_IMAGE_TOKENS, prompt=prompt)
            ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
            image = {"image": BaseModelOutputWithPooling(pooler_output=[feat])}
            logits = model(input_ids=ids, mm_encoder_outputs=image).logits
            probs = logits[0, -1].softmax(-1)
            y, no = probs[tok.convert_tokens_to_ids("yes")], probs[tok.convert_tokens_to_ids("no")]
            out.append((y / (y + no)).item())
    return out


def test_orm_matches_transformers_forward(checkpoints):
    hf_dir, _, model = checkpoints
    reward = OutputRewardModel(checkpoint=hf_dir, device="cpu", batch_size=3)
    images = _images(4)
    scores = reward(PROMPTS, images, [{}] * 4)
    assert len(scores) == 4 and all(math.isfinite(s) and 0 <= s <= 1 for s in scores)
    expected = _expected(model, reward.tokenizer, PROMPTS, reward.pixel_values(images))
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    assert max(scores) - min(scores) > 1e-4  # the scores depend on the inputs


def test_orm_original_layout_equals_transformers_layout(checkpoints):
    hf_dir, orig_dir, _ = checkpoints
    images = _images(4, seed=1)
    hf_scores = OutputRewardModel(checkpoint=hf_dir, device="cpu")(PROMPTS, images, [{}] * 4)
    orig = OutputRewardModel(checkpoint=orig_dir, device="cpu", vision_num_heads=2, vision_image_size=IMAGE_SIZE)
    assert orig.tokenizer.convert_tokens_to_ids("<image>") == orig.model.config.image_token_id
    np.testing.assert_allclose(orig(PROMPTS, images, [{}] * 4), hf_scores, atol=1e-5, rtol=0)


def test_orm_batched_equals_one_by_one(checkpoints):
    hf_dir, _, _ = checkpoints
    reward = OutputRewardModel(checkpoint=hf_dir, device="cpu", batch_size=4)
    images = _images(4, seed=2)
    batched = reward(PROMPTS, images, [{}] * 4)
    single = [reward([p], [im], [{}])[0] for p, im in zip(PROMPTS, images)]
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)


def test_orm_temperature(checkpoints):
    hf_dir, _, _ = checkpoints
    reward = OutputRewardModel(checkpoint=hf_dir, device="cpu", temperature=0.3)
    images = _images(2, seed=3)
    logits = reward.yes_logits(PROMPTS[:2], images)
    yes, no = reward.tokenizer.convert_tokens_to_ids("yes"), reward.tokenizer.convert_tokens_to_ids("no")
    # The reference reads softmax(logits / 0.3): P(yes)/(P(yes)+P(no)) = sigmoid((l_yes - l_no) / 0.3).
    expected = torch.sigmoid((logits[:, yes] - logits[:, no]) / 0.3)
    np.testing.assert_allclose(reward(PROMPTS[:2], images, [{}] * 2), expected.numpy(), atol=1e-6, rtol=0)


def test_pad_preprocessing(checkpoints):
    hf_dir, _, _ = checkpoints
    reward = OutputRewardModel(checkpoint=hf_dir, device="cpu")
    # 32 x 16 white image -> padded to 32 x 32 with the mean colour (int(0.5 * 255) = 127), rows 0-7 and 24-31.
    pixels = reward.pixel_values([Image.new("RGB", (32, 16), (255, 255, 255))])
    assert pixels.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.testing.assert_close(pixels[0, :, 0, 0], torch.full((3,), (127 / 255 - 0.5) / 0.5))
    torch.testing.assert_close(pixels[0, :, 16, 16], torch.full((3,), (1 - 0.5) / 0.5))
    ids, mask = reward.input_ids(["a cat", "two red dogs on a bench"])
    assert (ids == reward.model.config.image_token_id).sum(dim=1).tolist() == [NUM_IMAGE_TOKENS] * 2
    assert mask[0].tolist() == sorted(mask[0].tolist(), reverse=True)  # right padding


def test_orm_registry_and_errors(checkpoints, tmp_path):
    hf_dir, _, _ = checkpoints
    assert build_reward("orm", checkpoint=hf_dir, device="cpu").name == "orm"
    with pytest.raises(MissingCheckpointError, match="CaraJ/ORM-T2I-R1"):
        OutputRewardModel(checkpoint=tmp_path / "no_orm")
    with pytest.raises(ValueError, match="prompt_template"):
        OutputRewardModel(checkpoint=hf_dir, prompt_template="Is this {prompt}?")
    question = "Does this image accurately represent the prompt? Please answer yes or no without explanation."
    assert question in DEFAULT_PROMPT_TEMPLATE


# ---- behavior="reference" (reward_orm.py of CaraJ7/T2I-R1 @2d9d4d1, "RO" below) ----


def test_orm_reference_behavior_by_hand(checkpoints):
    hf_dir, _, _ = checkpoints
    reward = OutputRewardModel(checkpoint=hf_dir, device="cpu", behavior="reference", seed=0)
    tok = reward.tokenizer
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    other = tok.convert_tokens_to_ids("cat") if tok.convert_tokens_to_ids("cat") is not None else 5
    V = reward.model.config.text_config.vocab_size
    logits = torch.full((3, V), -10.0)
    # row 0: yes 2.0, no 1.7 -> a yes/no is drawn (others e^-40 smaller at T 0.3); RO L104-118 reads the
    # probabilities after the temperature: P(yes)/(P(yes)+P(no)) = sigmoid((2.0 - 1.7) / 0.3) = sigmoid(1)
    logits[0, yes], logits[0, no] = 2.0, 1.7
    # row 1: another word dominates -> the sampled first word is not yes/no -> RO L101, L112-116: 0
    logits[1, other], logits[1, yes], logits[1, no] = 20.0, 1.0, 0.0
    # row 2: "no" below the 50 best logits -> top-k (transformers' default 50) zeroes it -> 1.0
    logits[2, torch.arange(V) != yes] = torch.linspace(2.0, 1.0, V - 1)
    logits[2, yes] = 10.0  # drawn: every other token is e^(-8 / 0.3) as likely
    logits[2, no] = -20.0
    scores = reward.reference_scores(logits)
    assert scores[0] == pytest.approx(float(torch.sigmoid(torch.tensor(1.0))), abs=1e-5)
    assert scores[1] == 0.0
    assert scores[2] == 1.0


def test_orm_reference_behavior_end_to_end(checkpoints):
    hf_dir, _, _ = checkpoints
    images = _images(4, seed=4)
    a = OutputRewardModel(checkpoint=hf_dir, device="cpu", behavior="reference", seed=1)
    b = OutputRewardModel(checkpoint=hf_dir, device="cpu", behavior="reference", seed=1)
    scores = a(PROMPTS, images, [{}] * 4)
    assert scores == b(PROMPTS, images, [{}] * 4)  # the draws are seeded
    again = OutputRewardModel(checkpoint=hf_dir, device="cpu", behavior="reference", seed=1)
    assert scores == again.reference_scores(again.yes_logits(PROMPTS, images))
    assert all(s == 0.0 or 0.0 <= s <= 1.0 for s in scores)
    assert build_reward("orm", checkpoint=hf_dir, device="cpu", behavior="reference").behavior == "reference"
    with pytest.raises(ValueError, match="behavior"):
        OutputRewardModel(checkpoint=hf_dir, behavior="paper")
    with pytest.raises(ValueError, match="0.3"):
        OutputRewardModel(checkpoint=hf_dir, behavior="reference", temperature=0.5)


# ---- real weights / GPU (skipped unless available) ----


@pytest.mark.weights
def test_real_orm_loads_and_scores():
    import os

    root = os.environ.get("T2I_R1_WEIGHTS")
    if not root or not os.path.isdir(os.path.join(root, "ORM-T2I-R1")):
        pytest.skip("needs $T2I_R1_WEIGHTS/ORM-T2I-R1 (huggingface-cli download CaraJ/ORM-T2I-R1)")
    reward = OutputRewardModel(checkpoint=os.path.join(root, "ORM-T2I-R1"), dtype="bfloat16",
                               device="cuda" if torch.cuda.is_available() else "cpu")
    assert reward.num_image_tokens == 27 * 27 + 1  # SigLIP-so400m at 384 px, patch 14, plus the newline
    scores = reward(["a red square"], [Image.new("RGB", (384, 384), (220, 20, 20))], [{}])
    assert 0 <= scores[0] <= 1


@pytest.mark.gpu
def test_orm_on_gpu_matches_cpu(checkpoints):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    hf_dir, _, _ = checkpoints
    images = _images(4, seed=7)
    cpu = OutputRewardModel(checkpoint=hf_dir, device="cpu")(PROMPTS, images, [{}] * 4)
    gpu = OutputRewardModel(checkpoint=hf_dir, device="cuda")(PROMPTS, images, [{}] * 4)
    np.testing.assert_allclose(gpu, cpu, atol=1e-5, rtol=0)

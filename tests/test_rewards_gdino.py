"""GroundingDINO reward end to end on a tiny random model built from a config (CPU, no downloads)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BertConfig,
    BertTokenizer,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoProcessor,
    SwinConfig,
)
from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil

from t2i_r1.rewards import build_reward
from t2i_r1.rewards.grounding_dino import (
    GroundingDINOReward,
    build_caption,
    detections_from_logits,
    phrase_token_mask,
    route,
)

WORDS = ["cat", "dog", "car", "zebra", "sports", "ball", "red", "apple", "bowl", "clock", "traffic", "light", "##s"]


def tiny_tokenizer() -> BertTokenizer:
    # GroundingDINO hard-codes BERT's ids of [CLS]=101, [SEP]=102, "."=1012, "?"=1029 to split phrases.
    tokens = [f"[unused{i}]" for i in range(1100)]
    for index, token in {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}.items():
        tokens[index] = token
    for i, word in enumerate(WORDS):
        tokens[200 + i] = word
    return BertTokenizer(vocab={token: i for i, token in enumerate(tokens)})


@pytest.fixture(scope="module")
def tiny():
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], out_indices=[2, 3, 4], image_size=64, window_size=2
        ),
        text_config=BertConfig(vocab_size=1100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=20, num_feature_levels=3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(config).eval()
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64}),
        tokenizer=tiny_tokenizer(),
    )
    return model, processor


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]


BATCH = [
    ("a cat left of a dog", {"task_type": "spatial", "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "left of"}}),
    ("two apples and a bowl", {"task_type": "numeracy", "numeracy_info": [{"obj_name": "apple", "num": 2}, {"obj_name": "bowl", "num": 1}]}),
    ("a red car and a zebra", {"task_type": "color", "nouns": ["car", "zebra"], "attr_nouns": ["red car"]}),
    ("a photo of a traffic light above a sports ball", {}),  # no metadata: parsed from the prompt
    ("four clocks", {"task_type": "numeracy", "nouns": ["clock"]}),  # numeracy without numeracy_info: NaN
    ("a cat in front of a dog", {"task_type": "spatial", "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "in front of"}}),  # NaN
]  # fmt: skip
RANGES = [(0.0, 0.9), (0.0, 1.0), (0.0, 1.0), (0.0, 0.9)]  # spatial, numeracy, existence, spatial


def test_end_to_end_scores_each_image_in_its_documented_range(tiny):
    model, processor = tiny
    reward = GroundingDINOReward(model=model, processor=processor, device="cpu", batch_size=4)
    prompts, metadata = zip(*BATCH)
    scores = reward(list(prompts), images(len(BATCH)), list(metadata))
    assert len(scores) == len(BATCH)
    for score, (lo, hi) in zip(scores[:4], RANGES):
        assert math.isfinite(score) and lo <= score <= hi
    assert math.isnan(scores[4]) and math.isnan(scores[5])


def test_batched_equals_one_by_one(tiny):
    model, processor = tiny
    prompts, metadata = zip(*BATCH)
    pictures = images(len(BATCH), seed=1)
    batched = GroundingDINOReward(model=model, processor=processor, device="cpu", batch_size=len(BATCH))
    single = GroundingDINOReward(model=model, processor=processor, device="cpu", batch_size=1)
    a = batched(list(prompts), pictures, list(metadata))
    b = single(list(prompts), pictures, list(metadata))
    assert np.allclose(a, b, atol=1e-6, equal_nan=True)
    # the detections themselves agree too, not only the scores (texts of different lengths were padded)
    phrases = [["cat", "dog"], ["apple", "bowl"], ["car", "zebra"], ["traffic light", "sports ball"]]
    det_a = batched.detect(pictures[:4], phrases)
    det_b = single.detect(pictures[:4], phrases)
    assert [len(d) for d in det_a] == [len(d) for d in det_b]
    for da, db in zip(det_a, det_b):
        for x, y in zip(da, db):
            assert x.label == y.label
            assert x.score == pytest.approx(y.score, abs=1e-5)
            assert x.box == pytest.approx(y.box, abs=1e-5)


def test_loads_from_a_checkpoint_directory_through_the_registry(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = build_reward("gdino", model_path=str(tmp_path), device="cpu")
    assert isinstance(loaded, GroundingDINOReward)
    in_memory = GroundingDINOReward(model=model, processor=processor, device="cpu")
    prompts, metadata = zip(*BATCH[:4])
    pictures = images(4, seed=2)
    assert np.allclose(loaded(list(prompts), pictures, list(metadata)), in_memory(list(prompts), pictures, list(metadata)), atol=1e-6)


def test_missing_checkpoint_names_the_file_and_the_public_release(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        GroundingDINOReward(model_path=tmp_path / "nowhere", device="cpu")
    assert "config.json" in str(err.value) and "IDEA-Research/grounding-dino-tiny" in str(err.value)
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        GroundingDINOReward(model_path=tmp_path, device="cpu")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        GroundingDINOReward(model_path=tmp_path, device="cpu")
    with pytest.raises(FileNotFoundError, match="no path was given"):
        GroundingDINOReward(device="cpu")


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_detections_from_logits_by_hand():
    # tokens: [CLS] cat . sports ball . [SEP] -> phrase "cat" = token 1, "sports ball" = tokens 3, 4
    token_mask = torch.tensor([[0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    probs = torch.full((4, 7), 0.1)
    probs[0, 1] = 0.8  # query 0: cat 0.8 -> a cat with score 0.8
    probs[1, 3], probs[1, 4] = 0.5, 0.2  # query 1: sports ball mean (0.5 + 0.2) / 2 = 0.35 > 0.3, best 0.5 > 0.3
    probs[2, 3], probs[2, 4] = 0.25, 0.3  # query 2: mean 0.275 <= 0.3 -> nothing
    logits = probs.apply_(logit)  # query 3: all 0.1 -> nothing
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4]] * 4)  # (cx, cy, w, h) -> (0.4, 0.3, 0.6, 0.7)
    found = detections_from_logits(logits, boxes, token_mask, ["cat", "sports ball"], 0.3, 0.3)
    assert [(d.label, round(d.score, 6)) for d in found] == [("cat", 0.8), ("sports ball", 0.35)]
    assert found[0].box == pytest.approx((0.4, 0.3, 0.6, 0.7))
    # a stricter text threshold (0.4) drops the 0.35 sports ball
    strict = detections_from_logits(logits, boxes, token_mask, ["cat", "sports ball"], 0.3, 0.4)
    assert [d.label for d in strict] == ["cat"]


def test_token_spans_come_from_offsets_not_eval():
    # The reference passed token spans through `eval`; here they come from the tokenizer's offsets.
    caption, spans = build_caption(["Sports  Ball", "cat"])
    assert caption == "sports ball . cat ."
    assert spans == [(0, 11), (14, 17)]
    encoded = tiny_tokenizer()(caption, return_offsets_mapping=True, return_tensors="pt")
    assert encoded["input_ids"][0].tolist() == [101, 204, 205, 1012, 200, 1012, 102]
    mask = phrase_token_mask(encoded["offset_mapping"][0], spans)
    assert mask.int().tolist() == [[0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0]]


def test_routes():
    assert route({"task_type": "numeracy", "numeracy_info": [{"obj_name": "cat", "num": 2}]})[:2] == ("numeracy", ["cat"])
    assert route({"task_type": "numeracy", "nouns": ["cat"]}) is None
    spatial = {"obj1": "Cat", "obj2": "cat", "locality": "near"}
    assert route({"task_type": "complex", "nouns": ["cat"], "spatial_info": spatial})[:2] == ("spatial", ["cat"])
    assert route({"task_type": "spatial", "nouns": ["cat", "dog"]}) is None
    assert route({"task_type": "color", "nouns": ["car", "Car", "zebra"]})[:2] == ("existence", ["car", "zebra"])
    assert route({"task_type": "non", "nouns": []}) is None
    assert route({"prompt": "three red apples"})[:2] == ("numeracy", ["apple"])
    assert route({"prompt": "three red apples"}, parse_missing=False) is None


def test_rejects_bad_settings(tiny):
    model, processor = tiny
    with pytest.raises(ValueError, match="batch_size"):
        GroundingDINOReward(model=model, processor=processor, batch_size=0)
    with pytest.raises(ValueError, match="text_threshold"):
        GroundingDINOReward(model=model, processor=processor, text_threshold=1.5)


# --- behavior="reference" (t2i_r1.rewards.gdino_reference; branch-by-branch tests in test_gdino_reference.py)

REFERENCE_BATCH = [
    ("a cat left of a dog", {"task_type": "spatial", "nouns": ["cat", "dog"], "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "left of"}}),
    ("two apples and a bowl", {"task_type": "numeracy", "nouns": ["apple", "bowl"], "numeracy_info": [{"obj_name": "apple", "num": 2}, {"obj_name": "bowl", "num": 1}]}),
    ("a red car and a zebra", {"task_type": "color", "nouns": ["car", "zebra", "red sports ball"]}),
    ("the clock on top of the bowl", {"task_type": "complex", "nouns": ["clock", "bowl"], "spatial_info": {"obj1": "clock", "obj2": "bowl", "locality": "on top of"}}),
    ("nothing to find", {"task_type": "non", "nouns": []}),
]  # fmt: skip


def test_reference_behavior_scores_the_reference_query(tiny):
    from t2i_r1.rewards import gdino_reference

    model, processor = tiny
    reward = GroundingDINOReward(model=model, processor=processor, device="cpu", batch_size=2, box_threshold=0.0,
                                 behavior="reference")  # threshold 0: every query detects every noun
    prompts, metadata = zip(*REFERENCE_BATCH)
    pictures = images(len(REFERENCE_BATCH), seed=3)
    scores = reward(list(prompts), pictures, list(metadata))
    found = reward.detect_reference(pictures[:4], [m["nouns"] for m in metadata[:4]])
    assert scores[:4] == [gdino_reference.score(m, f) for m, f in zip(metadata, found)]
    # the three-word noun is queried by its first and last word and labelled so: it never counts
    assert {x.label for x in found[2]} == {"car", "zebra", "red ball"}
    assert scores[2] == pytest.approx(2 / 3)
    # complex with spatial_info: noun existence (everything detected at threshold 0) -> 1; no nouns -> 1
    assert scores[3] == 1.0 and scores[4] == 1.0
    # boxes are kept as predicted (cx, cy, w, h), not clamped corners
    raw = model(**processor(images=pictures[0], text="cat . dog.", return_tensors="pt")).pred_boxes[0]
    assert found[0][0].cxcywh == pytest.approx(tuple(raw[0].tolist()), abs=1e-5)


def test_reference_behavior_through_the_registry_and_validation(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = build_reward("gdino", model_path=str(tmp_path), device="cpu", behavior="reference")  # YAML kwargs
    assert loaded.behavior == "reference"
    with pytest.raises(ValueError, match="behavior"):
        GroundingDINOReward(model=model, processor=processor, behavior="paper")

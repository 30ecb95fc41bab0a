"""The policy adapter: loading, prompt formats, padding, decoding, and clear errors on bad input."""

import json

import pytest
import torch

from t2i_r1.policy import JanusPolicy, NotAJanusCheckpoint, load_template
from t2i_r1.rollout import ImageSamplingConfig, PlanSamplingConfig, sample_image_tokens, sample_plans
from t2i_r1.rollout.sampling import _mask_through_eos, rows_per_chunk


def test_from_pretrained_round_trip(tiny_checkpoint, tiny_policy):
    loaded = JanusPolicy.from_pretrained(tiny_checkpoint)
    ids = tiny_policy.tokenize(["a red cube"]).ids
    assert torch.equal(loaded.tokenize(["a red cube"]).ids, ids)
    assert loaded.num_image_tokens == 64 and loaded.codebook_size == 1024
    for name, p in tiny_policy.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], p), name


def test_from_pretrained_dtype(tiny_checkpoint):
    assert JanusPolicy.from_pretrained(tiny_checkpoint, dtype="bfloat16").model.dtype == torch.bfloat16


def test_not_a_janus_directory(tmp_path):
    with pytest.raises(NotAJanusCheckpoint, match="config.json is missing"):
        JanusPolicy.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(NotAJanusCheckpoint, match="'llama' model, not a Janus"):
        JanusPolicy.from_pretrained(tmp_path)


def test_template_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="reasoning template file not found"):
        load_template(tmp_path / "missing.txt")
    no_slot = tmp_path / "no_slot.txt"
    no_slot.write_text("Describe the image.")
    with pytest.raises(ValueError, match="no '\\{prompt\\}' slot"):
        load_template(no_slot)


def test_custom_template_is_used(tiny_checkpoint, tmp_path):
    template = tmp_path / "t.txt"
    template.write_text("PLAN FOR: {prompt}")
    policy = JanusPolicy.from_pretrained(tiny_checkpoint, reasoning_template=template)
    assert policy.plan_prompt_text("a cat") == "<|User|>: PLAN FOR: a cat\n\n<|Assistant|>:"


def test_saved_checkpoint_keeps_its_reasoning_instruction(tiny_checkpoint, tmp_path):
    template = tmp_path / "t.txt"
    template.write_text("PLAN FOR: {prompt}")
    policy = JanusPolicy.from_pretrained(tiny_checkpoint, reasoning_template=template)
    policy.save_pretrained(tmp_path / "saved")
    assert JanusPolicy.from_pretrained(tmp_path / "saved").reasoning_template == "PLAN FOR: {prompt}"
    # An explicit template still wins over the saved one.
    other = tmp_path / "o.txt"
    other.write_text("OTHER {prompt}")
    assert JanusPolicy.from_pretrained(tmp_path / "saved", reasoning_template=other).reasoning_template == "OTHER {prompt}"


def test_prompt_formats(tiny_policy):
    assert tiny_policy.image_prompt_text("a cat", "one black cat") == (
        "<|User|>: a cat. one black cat\n\n<|Assistant|>:<begin_of_image>"
    )
    assert tiny_policy.image_prompt_text(" a cat ") == "<|User|>: a cat\n\n<|Assistant|>:<begin_of_image>"
    assert "Prompt: a cat" in tiny_policy.plan_prompt_text("a cat")


def test_left_padding_bos_and_uncond(tiny_policy):
    tok = tiny_policy.tokenize([tiny_policy.image_prompt_text("a"), tiny_policy.image_prompt_text("a much longer cat")])
    short = tok.mask[0].argmax()  # first real token of the short row
    assert tok.mask[0, :short].sum() == 0 and tok.ids[0, short] == tiny_policy.bos_id
    assert (tok.ids[:, -1] == tiny_policy.boi_id).all()
    uncond = tiny_policy.unconditional_ids(tok.ids, tok.mask)
    real = tok.mask.bool()
    kept = uncond[real]
    assert set(kept.tolist()) == {tiny_policy.bos_id, tiny_policy.boi_id, tiny_policy.pad_id}
    assert (uncond[:, -1] == tiny_policy.boi_id).all() and uncond[1, 0] == tiny_policy.bos_id


def test_empty_and_too_long_prompts(tiny_policy):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        sample_plans(tiny_policy, ["a cat", "  "], 1, PlanSamplingConfig(max_new_tokens=2))
    with pytest.raises(ValueError, match="exceed the model's context of 1024 tokens"):
        sample_plans(tiny_policy, ["cat " * 900], 1, PlanSamplingConfig(max_new_tokens=8))


def test_same_seed_same_output(tiny_policy):
    cfg = PlanSamplingConfig(max_new_tokens=10)
    a = sample_plans(tiny_policy, ["a cat"], 2, cfg, torch.Generator().manual_seed(5))
    b = sample_plans(tiny_policy, ["a cat"], 2, cfg, torch.Generator().manual_seed(5))
    c = sample_plans(tiny_policy, ["a cat"], 2, cfg, torch.Generator().manual_seed(6))
    assert torch.equal(a.plan_ids, b.plan_ids) and a.texts == b.texts
    assert not torch.equal(a.plan_ids, c.plan_ids)


def test_mask_through_eos():
    eos = 2
    tokens = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]])
    # row 0: EOS at 1 -> mask positions 0..1; row 1: no EOS -> all; row 2: EOS first -> only position 0
    assert _mask_through_eos(tokens, eos).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_plans_stop_at_eos(tiny_policy, monkeypatch):
    """Rows end at their first EOS and are padded after it; sampling stops once every row has ended."""
    original = tiny_policy.text_logits
    calls = []

    def eos_after_row_index(hidden):
        # step k (k = 0, 1, ...): rows with index <= k get EOS as a certain token, the others avoid EOS
        logits = original(hidden).clone()
        step = len(calls)
        calls.append(step)
        rows = torch.arange(len(logits))
        logits[:, tiny_policy.eos_id] = torch.where(rows <= step, 1e4, -1e4)
        return logits

    monkeypatch.setattr(tiny_policy, "text_logits", eos_after_row_index)
    plans = sample_plans(tiny_policy, ["a cat"], 3, PlanSamplingConfig(max_new_tokens=16))
    # row r ends at step r, so the plan masks have lengths 1, 2, 3 and sampling ran 3 steps, not 16
    assert plans.plan_mask.sum(1).tolist() == [1, 2, 3]
    assert len(calls) == 3 and plans.plan_ids.shape[1] == 3
    for row, mask in zip(plans.plan_ids, plans.plan_mask):
        end = int(mask.sum()) - 1
        assert row[end] == tiny_policy.eos_id and (row[end + 1 :] == tiny_policy.pad_id).all()


def test_decode_shapes_and_range(tiny_policy):
    tokens = torch.randint(0, tiny_policy.codebook_size, (3, tiny_policy.num_image_tokens))
    pixels = tiny_policy.decode_image_tokens(tokens)
    assert pixels.shape == (3, 3, 64, 64)
    assert pixels.min() >= 0 and pixels.max() <= 1
    images = tiny_policy.to_pil(pixels)
    assert len(images) == 3 and images[0].size == (64, 64) and images[0].mode == "RGB"


def test_rows_per_chunk_follows_memory_budget(tiny_policy):
    # tiny: 2 layers x 4 kv heads x 32 head dim x fp32 = 2 (k,v) * 2 * 4 * 32 * 4 B = 2048 B per token per row;
    # 100 tokens -> 204,800 B per row, x2 rows per sample under CFG = 409,600 B per sample.
    budget = 409_600 * 10 / 2**30
    assert rows_per_chunk(tiny_policy, 100, ImageSamplingConfig(memory_budget_gb=budget)) == 10
    assert rows_per_chunk(tiny_policy, 100, ImageSamplingConfig(memory_budget_gb=budget, guidance_scale=1.0)) == 20
    assert rows_per_chunk(tiny_policy, 100, ImageSamplingConfig(memory_budget_gb=budget, max_rows_per_chunk=3)) == 3


def test_image_prompt_must_end_with_boi(tiny_policy):
    tok = tiny_policy.tokenize(["<|User|>: a cat"])
    with pytest.raises(ValueError, match="begin_of_image"):
        sample_image_tokens(tiny_policy, tok.ids, tok.mask, ImageSamplingConfig())

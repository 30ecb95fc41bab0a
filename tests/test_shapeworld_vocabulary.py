"""Extending a ShapeWorld checkpoint's vocabulary: new words get their own ids, the model's behaviour on
every text is unchanged (a new word reads and scores as ``<unk>`` did), and the result saves and loads."""

from __future__ import annotations

import json

import torch

from t2i_r1.cli import main as cli_main
from t2i_r1.shapeworld.model import (
    DEFAULT_ASSET,
    FORMAT_WORDS,
    UNK,
    ShapeWorldModelSpec,
    build_model,
    extend_vocabulary,
    load_policy,
)
from t2i_r1.shapeworld.phrasing import vocabulary

TINY = ShapeWorldModelSpec(hidden=32, layers=1, heads=2, intermediate=64, grid=2, codebook=16, vq_channels=32, seed=3)


def _logits(policy, text: str) -> torch.Tensor:
    ids = policy.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return policy.text_logits(policy.backbone(input_ids=ids).last_hidden_state)  # (1, T, V)


def test_new_words_get_ids_and_read_exactly_as_unk(tmp_path):
    policy = build_model(TINY)
    old_size = len(policy.tokenizer)
    before_unknown = _logits(policy, "a walrus circle left of a quokka")  # (1, T, V_old)
    before_known = _logits(policy, "a red circle left of a square")

    added = extend_vocabulary(policy, ["walrus", "red", "quokka", "walrus"])
    assert added == ["walrus", "quokka"]  # known words and repeats are skipped, order kept
    ids = policy.tokenizer.convert_tokens_to_ids(["walrus", "quokka", UNK])
    assert ids[:2] == [old_size, old_size + 1] and len(policy.tokenizer) == old_size + 2

    after_unknown = _logits(policy, "a walrus circle left of a quokka")  # (1, T, V_old + 2)
    after_known = _logits(policy, "a red circle left of a square")
    unk = ids[2]
    # The old ids' logits are unchanged, and each new word scores exactly as <unk> does.
    torch.testing.assert_close(after_unknown[..., :old_size], before_unknown, rtol=0, atol=0)
    torch.testing.assert_close(after_known[..., :old_size], before_known, rtol=0, atol=0)
    for new in ids[:2]:
        torch.testing.assert_close(after_known[..., new], after_known[..., unk], rtol=0, atol=0)
    assert extend_vocabulary(policy, ["walrus"]) == []

    policy.save_pretrained(tmp_path)
    reloaded = load_policy(tmp_path)
    assert reloaded.tokenizer.convert_tokens_to_ids("quokka") == old_size + 1
    assert reloaded.model.config.text_config.vocab_size == old_size + 2
    torch.testing.assert_close(_logits(reloaded, "a walrus circle left of a quokka"), after_unknown)


def test_extend_vocab_command_records_what_it_added(tmp_path):
    source = tmp_path / "small"
    build_model(TINY).save_pretrained(source)
    (source / "pretrain.json").write_text(json.dumps({"lm": {"steps": 1}}))
    # The tiny model already knows the whole vocabulary: nothing to add, and the record says so.
    cli_main(["shapeworld", "extend-vocab", "--model", str(source), "--out", str(tmp_path / "out")])
    record = json.loads((tmp_path / "out" / "pretrain.json").read_text())
    assert record["lm"] == {"steps": 1} and record["vocabulary_extension"]["added"] == []


def test_packaged_model_knows_every_word_of_every_phrasing_family():
    policy = load_policy(DEFAULT_ASSET)
    assert extend_vocabulary(policy, [*vocabulary(), *FORMAT_WORDS]) == []

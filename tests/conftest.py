"""Shared fixtures: tiny Janus models of the real transformers classes, built in-process (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2i_r1.policy.tiny import TinyJanusSpec, build_tiny_janus

torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_policy():
    """A tiny random Janus (hidden 128, 2 layers, 64 image tokens); treat it as read-only."""
    return build_tiny_janus(TinyJanusSpec())


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_policy) -> Path:
    """The tiny Janus written as a checkpoint directory that ``from_pretrained`` loads."""
    path = tmp_path_factory.mktemp("tiny-janus")
    tiny_policy.save_pretrained(path)
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared test data at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_planner(tmp_path_factory) -> Path:
    """A tiny random ``LlamaForCausalLM`` + tokenizer saved as a directory: an external planner."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from t2i_r1.policy.tiny import DEFAULT_CORPUS, train_tokenizer

    tokenizer = train_tokenizer([DEFAULT_CORPUS], vocab_size=300)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                      bos_token_id=tokenizer.bos_token_id))
    path = tmp_path_factory.mktemp("tiny-planner")
    lm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path

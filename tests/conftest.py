"""Shared fixtures: tiny Janus models of the real transformers classes, built in-process (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2i_r1.testing import TinyJanusSpec, build_tiny_janus, save_tiny_planner

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
    return save_tiny_planner(tmp_path_factory.mktemp("tiny-planner"))

"""Tiny seeded components of the real classes, for tests, smoke runs and benchmarks (no downloads).

- ``t2i_r1.testing.janus``: tiny Janus models and an in-process tokenizer (``build_tiny_janus``), a tiny
  external planner (``save_tiny_planner``).
- ``t2i_r1.testing.scorers``: tiny versions of every evaluation model, saved as loadable checkpoints.
"""

from t2i_r1.testing.janus import (
    DEFAULT_CORPUS,
    PRESETS,
    TinyJanusSpec,
    build_janus_pro_shaped,
    build_tiny_janus,
    janus_pro_configs,
    save_tiny_janus,
    save_tiny_planner,
    train_tokenizer,
)

__all__ = ["DEFAULT_CORPUS", "PRESETS", "TinyJanusSpec", "build_janus_pro_shaped", "build_tiny_janus", "janus_pro_configs", "save_tiny_janus", "save_tiny_planner",
           "train_tokenizer"]

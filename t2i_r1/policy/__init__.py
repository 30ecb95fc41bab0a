"""Model adapters: the policy knows the model and its prompt formats, not sampling or rewards."""

from t2i_r1.policy.janus import JanusPolicy, NotAJanusCheckpoint, TokenizedPrompts, load_template

__all__ = ["JanusPolicy", "NotAJanusCheckpoint", "TokenizedPrompts", "load_template"]

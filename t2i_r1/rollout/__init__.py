"""Rollout: sampling plans and image tokens, and their exact teacher-forced log-probs (no optimizer)."""

import importlib

# name -> module; imported on first use, so ``t2i_r1.rollout.settings`` is importable without torch
_EXPORTS = {
    "LogProbSettings": "logprobs", "image_log_probs": "logprobs", "log_probs": "logprobs", "plan_log_probs": "logprobs",
    "ImageSample": "sampling", "PlanSample": "sampling", "sample_image_tokens": "sampling", "sample_plans": "sampling",
    "ImageSamplingConfig": "settings", "PlanSamplingConfig": "settings",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ImageSample", "ImageSamplingConfig", "LogProbSettings", "PlanSample", "PlanSamplingConfig",
    "image_log_probs", "log_probs", "plan_log_probs", "sample_image_tokens", "sample_plans",
]

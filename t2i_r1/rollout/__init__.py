"""Rollout: sampling plans and image tokens, and their exact teacher-forced log-probs (no optimizer)."""

from t2i_r1.rollout.logprobs import LogProbSettings, image_log_probs, log_probs, plan_log_probs
from t2i_r1.rollout.sampling import (
    ImageSample,
    ImageSamplingConfig,
    PlanSample,
    PlanSamplingConfig,
    sample_image_tokens,
    sample_plans,
)

__all__ = [
    "ImageSample", "ImageSamplingConfig", "LogProbSettings", "PlanSample", "PlanSamplingConfig",
    "image_log_probs", "log_probs", "plan_log_probs", "sample_image_tokens", "sample_plans",
]

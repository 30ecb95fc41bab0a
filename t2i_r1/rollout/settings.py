"""The sampling settings of the two levels (plan and image tokens): plain dataclasses, validated on creation.

Kept apart from ``sampling.py`` so that reading them (the command line's flag defaults and help) imports
no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from t2i_r1.config_io import check_finite

DEFAULT_IMAGE_PROMPT_FORMAT = "{prompt}. {plan}"
"""How the prompt and the plan are joined into the image prompt (the paper's)."""

ImageLogprobMode = Literal["guided", "conditional"]


@dataclass
class PlanSamplingConfig:
    max_new_tokens: int = 128
    """Longest plan, EOS included; a plan that reaches it without EOS is kept whole (and truncated)."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    """Sample among the k most likely tokens (before top_p); None = all. The reference's plans: 50,
    transformers' ``generate`` default (configs/recipes/reference_exact_7b.yaml)."""

    def __post_init__(self):
        check_finite(self, "plan.")
        if self.max_new_tokens < 1:
            raise ValueError(f"plan.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"plan.temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"plan.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"plan.top_k must be >= 1 or null, got {self.top_k}")


@dataclass
class ImageSamplingConfig:
    guidance_scale: float = 5.0
    """Classifier-free guidance: logits = uncond + scale * (cond - uncond); 1 disables CFG."""
    temperature: float = 1.0
    top_k: int | None = None
    logprob_mode: ImageLogprobMode = "guided"
    """Distribution whose log-probs are recorded and trained: "guided" (sampled) or "conditional"."""
    memory_budget_gb: float = 4.0
    """KV-cache memory one chunk of rows may use; sets how many rows are sampled at once."""
    max_rows_per_chunk: int | None = None
    """Hard cap on rows per chunk (before doubling for CFG); None = from the memory budget only."""

    def __post_init__(self):
        check_finite(self, "image.")
        if self.guidance_scale < 0:
            raise ValueError(f"image.guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.temperature <= 0:
            raise ValueError(f"image.temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"image.top_k must be >= 1 or null, got {self.top_k}")
        if self.logprob_mode not in ("guided", "conditional"):
            raise ValueError(f"image.logprob_mode must be 'guided' or 'conditional', got {self.logprob_mode!r}")
        if self.memory_budget_gb <= 0:
            raise ValueError(f"image.memory_budget_gb must be > 0, got {self.memory_budget_gb}")

    @property
    def uses_cfg(self) -> bool:
        return self.guidance_scale != 1.0

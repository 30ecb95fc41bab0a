"""Two-level rollouts: G plans per prompt, K images per plan.

Row layout (the GRPO group of a prompt is contiguous):
    plan rows   B * G        row r belongs to prompt r // G
    image rows  B * G * K    row n uses plan n // K and prompt n // (G * K)
Without plans (the token-only ablation and the baseline), image rows are B * G * K draws from the
prompt alone.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.rollout.sampling import (
    ImageSample,
    ImageSamplingConfig,
    PlanSample,
    PlanSamplingConfig,
    sample_image_tokens,
    sample_plans,
)


@dataclass
class Rollout:
    prompts: list[str]  # (B,) distinct prompts of the batch
    plans_per_prompt: int  # G
    images_per_plan: int  # K
    plans: PlanSample | None  # B * G rows sampled by the policy, or None (no plan, or an external planner)
    images: ImageSample  # B * G * K rows
    plan_texts: list[str] | None = None  # B * G plans the images were drawn from (own or external)

    @property
    def group_size(self) -> int:
        return self.plans_per_prompt * self.images_per_plan

    @property
    def sample_prompts(self) -> list[str]:
        """The prompt of each image row (N,)."""
        return [p for p in self.prompts for _ in range(self.group_size)]

    @property
    def sample_plans(self) -> list[str | None]:
        """The plan text of each image row (N,), None without plans."""
        if self.plan_texts is None:
            return [None] * len(self.images.tokens)
        return [t for t in self.plan_texts for _ in range(self.images_per_plan)]


def image_prompts(
    policy: JanusPolicy, prompts: list[str], plans: list[str] | None, copies: int, *, reserve: int
):
    """Tokenised image prompts: one row per plan (``copies`` per plan), or ``copies`` per prompt."""
    if plans is None:
        texts = [policy.image_prompt_text(p) for p in prompts for _ in range(copies)]
    else:
        per_prompt = len(plans) // len(prompts)
        texts = [
            policy.image_prompt_text(prompts[i // per_prompt], plan) for i, plan in enumerate(plans) for _ in range(copies)
        ]
    return policy.tokenize(texts, what="image prompt", reserve=reserve)


@torch.no_grad()
def generate_rollouts(
    policy: JanusPolicy,
    prompts: list[str],
    *,
    plans_per_prompt: int,
    images_per_plan: int = 1,
    use_plan: bool = True,
    plan_config: PlanSamplingConfig | None = None,
    image_config: ImageSamplingConfig | None = None,
    generator: torch.Generator | None = None,
    external_plans: list[str] | None = None,
    timer: Callable[[str], AbstractContextManager] | None = None,
) -> Rollout:
    """Sample plans (unless ``use_plan`` is False) then image tokens for a batch of prompts.

    ``external_plans`` (B * G texts) replaces the model's own plans, for planning by another model.
    ``timer(name)`` wraps the phases "plan_sampling" and "image_sampling" (for step timings).
    """
    plan_config = plan_config or PlanSamplingConfig()
    image_config = image_config or ImageSamplingConfig()
    G, K = plans_per_prompt, images_per_plan
    timer = timer or (lambda name: nullcontext())
    plans = None
    if external_plans is not None:
        if len(external_plans) != len(prompts) * G:
            raise ValueError(f"external_plans needs {len(prompts) * G} texts (B * G), got {len(external_plans)}")
        plan_texts = list(external_plans)
    elif use_plan:
        with timer("plan_sampling"):
            plans = sample_plans(policy, prompts, G, plan_config, generator)
        plan_texts = plans.texts
    else:
        plan_texts = None
    if plan_texts is None:
        tok = image_prompts(policy, prompts, None, G * K, reserve=policy.num_image_tokens)
    else:
        tok = image_prompts(policy, prompts, plan_texts, K, reserve=policy.num_image_tokens)
    with timer("image_sampling"):
        images = sample_image_tokens(policy, tok.ids, tok.mask, image_config, generator)
    return Rollout(list(prompts), G, K, plans, images, plan_texts)

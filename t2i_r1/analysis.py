"""Exploration potential: how much a reward varies within groups of G samples of one prompt.

The paper's rebuttal explains why SFT before RL hurts with this number: GRPO learns only from the spread
of rewards inside a group, and a model whose samples of one prompt all look alike (low within-group
standard deviation) leaves RL little to compare. Measured for a base and a trained model on the same
prompts, seeds and rewards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from t2i_r1.data import PromptRecord
from t2i_r1.grpo.core import group_moments
from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.rewards.ensemble import RewardEnsemble
from t2i_r1.rollout.rollout import generate_rollouts
from t2i_r1.rollout.sampling import ImageSamplingConfig, PlanSamplingConfig


def within_group_std(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N,) rewards, groups of ``group_size`` -> (B,) sample std of the non-NaN values of each group (the
    std GRPO normalises by, ``grpo.core.group_moments``); NaN for a group with fewer than two values."""
    moments = group_moments(values, group_size, std="sample")
    return torch.where(moments.count > 1, moments.std, torch.nan)  # (B,)


@torch.no_grad()
def exploration_potential(
    policy: JanusPolicy,
    records: Sequence[PromptRecord],
    rewards: RewardEnsemble,
    *,
    group_size: int = 8,
    use_plan: bool = True,
    plan_config: PlanSamplingConfig | None = None,
    image_config: ImageSamplingConfig | None = None,
    prompts_per_batch: int = 4,
    seed: int = 0,
) -> dict[str, float]:
    """Mean over prompts of the within-group reward std, per reward and for the weighted total."""
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    stds: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(records), prompts_per_batch):
        batch = list(records[start : start + prompts_per_batch])
        rollout = generate_rollouts(
            policy, [r.prompt for r in batch], plans_per_prompt=group_size, use_plan=use_plan,
            plan_config=plan_config, image_config=image_config, generator=generator,
        )
        images = policy.to_pil(policy.decode_image_tokens(rollout.images.tokens))
        metadata = [{**r.reward_metadata(), "plan": plan} for r, plan in
                    zip([r for r in batch for _ in range(group_size)], rollout.sample_plans)]
        scores = rewards(rollout.sample_prompts, images, metadata)
        for name, values in {**scores.per_reward, "total": scores.total}.items():
            stds.setdefault(name, []).append(within_group_std(values, group_size))
    return {name: float(torch.cat(parts).nanmean()) for name, parts in stds.items()}

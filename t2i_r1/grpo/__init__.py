"""BiCoT-GRPO: the pure math lives in ``t2i_r1.grpo.core`` (advantages, PPO-clip, k3 KL, loss aggregation)."""

from t2i_r1.grpo.core import (
    ADVANTAGE_ESTIMATORS,
    LOSS_AGGREGATIONS,
    AdvantageStats,
    PolicyLossStats,
    Segment,
    aggregate_loss,
    aggregate_rewards,
    group_advantages,
    grpo_loss,
    kl_k3,
    policy_loss,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "AdvantageStats",
    "PolicyLossStats",
    "Segment",
    "aggregate_loss",
    "aggregate_rewards",
    "group_advantages",
    "grpo_loss",
    "kl_k3",
    "policy_loss",
]

"""BiCoT-GRPO math as pure tensor functions: advantages, PPO-clip policy loss, k3 KL, loss aggregation.

No model, no optimizer, no process group: every function maps tensors to tensors and is unit-tested on
CPU (``tests/test_grpo_core.py``). The trainer calls ``aggregate_rewards`` once per rollout batch and
``grpo_loss`` once per micro-batch of every optimisation pass, handing it a ``LossNormalizer`` counted
over the whole step, so the micro-batch losses add up to the step's loss (choice 9).

Dimensions (used in every shape comment below):
    B  prompts in the rollout batch
    G  plans sampled per prompt
    K  images sampled per plan (default 1)
    N  samples = B * G * K, laid out group after group: sample n belongs to group n // (G * K)
    R  reward functions
    T  tokens of one sequence (plan and image tokens side by side; see ``grpo_loss``)
    S  segments (``plan``, ``image``)

Choices, and how they differ from the paper / the reference implementation (REFERENCE-NOTES.md;
every difference, with the reference-exact recipe, in docs/reference-differences.md):
 1. Group = all G * K images of one prompt, as in the paper: a plan and the images drawn from it are
    scored against every other plan and image of the same prompt.
 2. Advantage ``(r - mean) / (std + eps)`` with eps = 1e-4 and the sample (n - 1) std, as the
    reference (``torch.std``); ``std="population"`` divides by n instead. ``scale=False`` keeps only the
    centring, ``r - mean`` (Dr. GRPO, Liu et al. 2025; TRL's ``scale_rewards="none"``): dividing by the
    group's std gives a group whose rewards differ only by noise the same weight as one whose samples
    differ in kind.
 3. NaN rewards mean "missing", never 0 (the reward interface's contract): group mean and std use the
    non-NaN members only and a NaN sample gets advantage 0. The reference has no NaN handling.
 4. A group whose valid rewards are all equal (or that has fewer than two valid rewards for the
    sample std) is "zero-variance": its advantages are exactly 0 instead of round-off over 1e-4, it is
    counted in the stats, and ``drop_zero_variance=True`` returns a keep-mask without it, so the
    trainer can skip samples that carry no policy gradient (DAPO's dynamic sampling, minus the
    re-sampling). The reference keeps them, which only adds KL terms.
 5. Two reward aggregations, by name: ``sum_then_normalize`` (the paper: weighted sum of the rewards,
    NaN entries skipped, all-NaN -> NaN, then one normalisation) and ``normalize_then_sum`` (each
    reward normalised within the group, then the weighted sum of those z-scores; the sum is not
    normalised again, so a weight states how many group-stds that reward is worth, and a reward with a
    large spread can no longer drown one with a small spread). Skipped NaN entries are not
    re-weighted: a group shares one prompt, so a reward that does not apply is usually NaN for the
    whole group and shifts all members alike. TRL's ``normalize_then_sum`` z-scores the weighted sum
    once more over the whole batch; ours does not (its ``sum_then_normalize`` equals ours).
 6. Policy loss: PPO clip on the per-token ratio ``exp(logp - old_logp)`` against the sampling-time
    log-probs, with separate eps_low / eps_high (DAPO). The reference computes
    ``exp(lp - lp.detach())`` (ratio fixed at 1), so clipping never acts and several passes per
    rollout are not valid; with one pass (``old_logp = logp.detach()``) ours has the same value and
    gradient (tested).
 7. KL to the reference policy with the k3 estimator ``exp(ref - lp) - (ref - lp) - 1``, added per
    token with weight beta (paper 0.01), as the reference.
 8. Loss aggregation, by name: ``token_mean`` (the paper: one mean over every valid plan and image
    token), ``sequence_mean`` (mean per sample, then over samples: every sample weighs the same
    whatever its length) and ``segment_weighted`` (a token mean per segment, combined as
    ``w_plan * plan_mean + w_image * image_mean``). Why the last: a plan has ~50-100 tokens and an
    image 576, so in a plain token mean the plan gets ~10-15% of the gradient and is nearly ignored
    (the reference's behaviour). Weights are not re-normalised: an empty segment (the ``token``
    ablation has no plan) contributes 0 and leaves the other term at its own weight.
 9. Normalisation is explicit: every sum is divided by the counts of a ``LossNormalizer`` (valid
    tokens per segment, sequences that have any). Left out, it counts the tensors passed in (one call
    is the whole step). The trainer counts it once over all micro-batches of a step, so each
    micro-batch's loss is its share of the step's loss and the accumulated gradient equals the one-piece
    gradient (as TRL's DAPO loss divides by the step's tokens and verl by its global token count). The
    statistics are normalised the same way: a step's micro-batch statistics add up to the step's. Means
    stay per process, as the reference's are per device. ``sequence_mean`` divides by the samples that
    have tokens; TRL's ``"grpo"`` loss divides by every row, empty ones included (they never occur here:
    every sample has image tokens or a plan).
 10. Masked positions never reach ``exp``: their log-ratio is set to 0 first, so padding log-probs that
    are -inf or garbage cannot leak NaN into the gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "AdvantageStats",
    "GroupMoments",
    "LossNormalizer",
    "PolicyLossStats",
    "Segment",
    "aggregate_loss",
    "aggregate_rewards",
    "group_advantages",
    "group_moments",
    "grpo_loss",
    "kl_k3",
    "policy_loss",
    "weighted_nansum",
]


# --------------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------------


@dataclass
class AdvantageStats:
    """What the advantage computation saw, per group and per sample (tensors; ``as_log`` gives floats)."""

    group_mean: Tensor  # (B,) mean of the valid (non-NaN) total rewards of each group; NaN if none
    group_std: Tensor  # (B,) std of the same (sample or population as asked); 0 where undefined
    zero_variance: Tensor  # (B,) bool: the group carries no policy gradient
    keep: Tensor  # (N,) bool: samples to train on (all True unless drop_zero_variance)
    valid: Tensor  # (N,) bool: sample has a (non-NaN) reward
    total_reward: Tensor  # (N,) the reward that was normalised (sum_then_normalize) or logged

    @property
    def num_zero_variance(self) -> int:
        return int(self.zero_variance.sum())

    def as_log(self) -> dict[str, float]:
        valid_total = self.total_reward[self.valid]
        return {
            "reward_mean": float(valid_total.mean()) if valid_total.numel() else float("nan"),
            "reward_std_within_group": float(self.group_std.mean()),
            "zero_variance_groups": float(self.num_zero_variance),
            "zero_variance_fraction": float(self.zero_variance.float().mean()),
            "missing_reward_fraction": float((~self.valid).float().mean()),
            "kept_fraction": float(self.keep.float().mean()),
        }


def _check_groups(n: int, group_size: int, what: str) -> int:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if n % group_size:
        raise ValueError(f"{what} has {n} samples, not a multiple of group_size={group_size}")
    return n // group_size


@dataclass
class GroupMoments:
    """NaN-aware moments of each group of rewards."""

    mean: Tensor  # (B,) mean of the valid members; NaN if none
    std: Tensor  # (B,) sample or population std of the valid members; 0 where undefined
    count: Tensor  # (B,) valid members
    zero_variance: Tensor  # (B,) bool: too few valid members, or all of them equal
    valid: Tensor  # (N,) bool: the sample's reward is not NaN


def group_moments(rewards: Tensor, group_size: int, std: str = "sample") -> GroupMoments:
    """Mean and std of the non-NaN rewards of each consecutive group of ``group_size``; rewards (N,)."""
    if std not in ("sample", "population"):
        raise ValueError(f"std must be 'sample' or 'population', got {std!r}")
    grouped = rewards.view(-1, group_size)  # (B, G*K)
    valid = ~torch.isnan(grouped)  # (B, G*K)
    count = valid.sum(dim=1)  # (B,)
    filled = torch.where(valid, grouped, torch.zeros_like(grouped))  # (B, G*K)
    mean = filled.sum(dim=1) / count.clamp(min=1)  # (B,)
    squares = torch.where(valid, (grouped - mean[:, None]) ** 2, torch.zeros_like(grouped))  # (B, G*K)
    dof = count - 1 if std == "sample" else count  # (B,)
    group_std = (squares.sum(dim=1) / dof.clamp(min=1)).sqrt()  # (B,)
    # Exact test (max == min over valid members), not std < tol: identical rewards can give a std
    # of ~1e-17 from round-off in the mean, which is not a real signal.
    high = torch.where(valid, grouped, torch.full_like(grouped, -torch.inf)).amax(dim=1)  # (B,)
    low = torch.where(valid, grouped, torch.full_like(grouped, torch.inf)).amin(dim=1)  # (B,)
    min_count = 2 if std == "sample" else 1
    zero_variance = (count < min_count) | (high == low)  # (B,)
    group_std = torch.where(count < min_count, torch.zeros_like(group_std), group_std)  # (B,)
    mean = torch.where(count == 0, torch.full_like(mean, torch.nan), mean)  # (B,)
    return GroupMoments(mean, group_std, count, zero_variance, valid.view(-1))


def _stats(mean, group_std, zero_variance, valid, total, group_size: int, drop_zero_variance: bool) -> AdvantageStats:
    """Advantage stats in ``total``'s dtype; ``keep`` drops zero-variance groups only when asked."""
    keep = ~zero_variance.repeat_interleave(group_size) if drop_zero_variance else torch.ones_like(valid)  # (N,)
    return AdvantageStats(group_mean=mean.to(total.dtype), group_std=group_std.to(total.dtype),
                          zero_variance=zero_variance, keep=keep, valid=valid, total_reward=total)


def group_advantages(
    rewards: Tensor,
    group_size: int,
    eps: float = 1e-4,
    std: str = "sample",
    drop_zero_variance: bool = False,
    scale: bool = True,
) -> tuple[Tensor, AdvantageStats]:
    """``(r - mean_group) / (std_group + eps)`` over consecutive groups of ``group_size`` samples
    (``scale=False``: ``r - mean_group``).

    rewards: (N,) float, NaN = missing. Returns advantages (N,) in the rewards' dtype (computed in
    float64) and ``AdvantageStats``. NaN samples and zero-variance groups get advantage exactly 0.
    """
    if rewards.dim() != 1 or not rewards.is_floating_point():
        raise ValueError(f"rewards must be a 1-D float tensor (N,), got {tuple(rewards.shape)} {rewards.dtype}")
    num_groups = _check_groups(rewards.numel(), group_size, "rewards")
    r = rewards.double()  # (N,)
    m = group_moments(r, group_size, std)
    advantages = r.view(num_groups, group_size) - m.mean[:, None]  # (B, G*K)
    if scale:
        advantages = advantages / (m.std[:, None] + eps)  # (B, G*K)
    advantages = advantages.view(-1)  # (N,)
    no_signal = ~m.valid | m.zero_variance.repeat_interleave(group_size)  # (N,)
    advantages = torch.where(no_signal, torch.zeros_like(advantages), advantages)  # (N,)
    stats = _stats(m.mean, m.std, m.zero_variance, m.valid, rewards, group_size, drop_zero_variance)
    return advantages.to(rewards.dtype), stats


def weighted_nansum(per_reward: Tensor, weights: Tensor) -> Tensor:
    """Weighted sum over rewards (N, R) with weights (R,), skipping NaN entries -> (N,); a sample with every
    entry NaN stays NaN. The paper's total reward; ``RewardEnsemble`` reports it as ``total``."""
    present = ~torch.isnan(per_reward)  # (N, R)
    terms = torch.where(present, per_reward * weights, torch.zeros_like(per_reward))  # (N, R)
    total = terms.sum(dim=1)  # (N,)
    return torch.where(present.any(dim=1), total, torch.full_like(total, torch.nan))  # (N,)


def _check_per_reward(per_reward: Tensor, weights: Tensor | list[float]) -> Tensor:
    if per_reward.dim() != 2 or not per_reward.is_floating_point():
        raise ValueError(f"per_reward must be a 2-D float tensor (N, R), got {tuple(per_reward.shape)}")
    weights = torch.as_tensor(weights, dtype=per_reward.dtype, device=per_reward.device)  # (R,)
    if weights.shape != (per_reward.shape[1],):
        raise ValueError(f"weights has shape {tuple(weights.shape)}, expected ({per_reward.shape[1]},): one per reward")
    return weights


def sum_then_normalize(
    per_reward: Tensor,
    weights: Tensor | list[float],
    group_size: int,
    eps: float = 1e-4,
    std: str = "sample",
    drop_zero_variance: bool = False,
    scale: bool = True,
) -> tuple[Tensor, AdvantageStats]:
    """The paper: total = weighted NaN-skipping sum over rewards (N,), then ``group_advantages``."""
    weights = _check_per_reward(per_reward, weights)  # (R,)
    total = weighted_nansum(per_reward, weights)  # (N,)
    return group_advantages(total, group_size, eps=eps, std=std, drop_zero_variance=drop_zero_variance, scale=scale)


def normalize_then_sum(
    per_reward: Tensor,
    weights: Tensor | list[float],
    group_size: int,
    eps: float = 1e-4,
    std: str = "sample",
    drop_zero_variance: bool = False,
    scale: bool = True,
) -> tuple[Tensor, AdvantageStats]:
    """Each reward normalised within its group (NaN -> 0), then the weighted sum of the z-scores
    (``scale=False``: of the centred rewards).

    A group is zero-variance when every reward is zero-variance in it (then all its advantages are 0).
    ``stats.total_reward`` and the group mean/std are those of the weighted raw sum, for logging.
    """
    weights = _check_per_reward(per_reward, weights)  # (R,)
    num_groups = _check_groups(per_reward.shape[0], group_size, "per_reward")
    advantages = torch.zeros(per_reward.shape[0], dtype=per_reward.dtype, device=per_reward.device)  # (N,)
    zero_variance = torch.ones(num_groups, dtype=torch.bool, device=per_reward.device)  # (B,)
    for j in range(per_reward.shape[1]):
        adv_j, stats_j = group_advantages(per_reward[:, j].contiguous(), group_size, eps=eps, std=std, scale=scale)  # (N,)
        advantages = advantages + weights[j] * adv_j  # (N,)
        zero_variance = zero_variance & stats_j.zero_variance  # (B,)
    total = weighted_nansum(per_reward, weights)  # (N,)
    m = group_moments(total.double(), group_size, std)
    return advantages, _stats(m.mean, m.std, zero_variance, m.valid, total, group_size, drop_zero_variance)


# name -> function(per_reward (N, R), weights (R,), group_size, eps, std, drop_zero_variance, scale)
ADVANTAGE_ESTIMATORS: dict[str, Callable[..., tuple[Tensor, AdvantageStats]]] = {
    "sum_then_normalize": sum_then_normalize,
    "normalize_then_sum": normalize_then_sum,
}


def aggregate_rewards(
    per_reward: Tensor,
    weights: Tensor | list[float],
    group_size: int,
    mode: str = "sum_then_normalize",
    eps: float = 1e-4,
    std: str = "sample",
    drop_zero_variance: bool = False,
    scale: bool = True,
) -> tuple[Tensor, AdvantageStats]:
    """Rewards (N, R) and their weights (R,) -> advantages (N,) and stats, by the named aggregation."""
    try:
        estimator = ADVANTAGE_ESTIMATORS[mode]
    except KeyError:
        raise ValueError(f"unknown reward aggregation mode {mode!r}; known: {sorted(ADVANTAGE_ESTIMATORS)}") from None
    return estimator(per_reward, weights, group_size, eps=eps, std=std, drop_zero_variance=drop_zero_variance, scale=scale)


# --------------------------------------------------------------------------------------------------
# Policy loss and KL
# --------------------------------------------------------------------------------------------------


@dataclass
class PolicyLossStats:
    """Which valid tokens were clipped, and their ratios (detached, per token); ``as_log`` summarises."""

    ratio: Tensor  # (N, T) importance ratio, 1 on masked positions
    clipped_low: Tensor  # (N, T) bool: valid, clipped at 1 - eps_low with A < 0 (no gradient)
    clipped_high: Tensor  # (N, T) bool: valid, clipped at 1 + eps_high with A > 0 (no gradient)
    mask: Tensor  # (N, T) bool: valid tokens

    @property
    def clip_low_fraction(self) -> Tensor:
        return _masked_mean(self.clipped_low.to(self.ratio.dtype), self.mask)

    @property
    def clip_high_fraction(self) -> Tensor:
        return _masked_mean(self.clipped_high.to(self.ratio.dtype), self.mask)

    @property
    def ratio_mean(self) -> Tensor:
        return _masked_mean(self.ratio, self.mask)

    def as_log(self, within: Tensor | None = None, count: float | None = None) -> dict[str, float]:
        """Clip fractions and mean ratio over the valid tokens (those ``within`` a segment's (N, T) mask if
        given), divided by their number or by ``count`` (a step-level count, see ``LossNormalizer``)."""
        mask = self.mask if within is None else self.mask & within  # (N, T)
        divisor = _count(mask.sum() if count is None else count, self.ratio)
        low = _masked_sum(self.clipped_low.to(self.ratio.dtype), mask) / divisor
        high = _masked_sum(self.clipped_high.to(self.ratio.dtype), mask) / divisor
        return {
            "clip_low_fraction": float(low),
            "clip_high_fraction": float(high),
            "clip_fraction": float(low + high),
            "ratio_mean": float(_masked_sum(self.ratio, mask) / divisor),
        }


def _masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Sum of values (N, T) over mask (N, T) bool; masked positions never reach the sum (nor its gradient)."""
    return torch.where(mask, values, torch.zeros_like(values)).sum()  # ()


def _count(count: float | Tensor, like: Tensor) -> Tensor:
    """A count as a divisor in ``like``'s dtype, at least 1 (an empty mask gives 0, not NaN)."""
    return torch.as_tensor(count, device=like.device).clamp(min=1).to(like.dtype)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of values (N, T) over mask (N, T) bool; 0 (still in the graph) when the mask is empty."""
    return _masked_sum(values, mask) / mask.sum().clamp(min=1)


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> tuple[Tensor, PolicyLossStats]:
    """PPO-clip per token: ``max(-A * ratio, -A * clip(ratio, 1 - eps_low, 1 + eps_high))``.

    logp, old_logp: (N, T) log-probs of the sampled tokens under the current policy and at sampling
    time; advantages: (N,); mask: (N, T) bool. Returns per-token loss (N, T), 0 where masked.
    With ``old_logp = logp.detach()`` the ratio is 1 and value and gradient equal the paper's
    ``-exp(logp - logp.detach()) * A``.
    """
    if logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(
            f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask {tuple(mask.shape)} must match"
        )
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages has shape {tuple(advantages.shape)}, expected ({logp.shape[0]},)")
    mask = mask.bool()  # (N, T)
    log_ratio = torch.where(mask, logp - old_logp, torch.zeros_like(logp))  # (N, T)
    ratio = log_ratio.exp()  # (N, T)
    adv = advantages[:, None].to(logp.dtype)  # (N, 1)
    unclipped = -adv * ratio  # (N, T)
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)  # (N, T)
    # The pessimistic bound: where the clipped term wins, the gradient is zero (clamp is flat there).
    per_token = torch.maximum(unclipped, clipped)  # (N, T)
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))  # (N, T)
    with torch.no_grad():
        stats = PolicyLossStats(
            ratio=ratio.detach(),
            clipped_low=(ratio < 1.0 - eps_low) & (adv < 0) & mask,  # (N, T)
            clipped_high=(ratio > 1.0 + eps_high) & (adv > 0) & mask,  # (N, T)
            mask=mask,
        )
    return per_token, stats


def kl_k3(logp: Tensor, ref_logp: Tensor, mask: Tensor | None = None) -> Tensor:
    """k3 estimator of KL(policy || reference) per token: ``exp(ref - lp) - (ref - lp) - 1`` >= 0.

    logp, ref_logp: (N, T). With a mask (N, T), masked positions are 0 and never reach ``exp``.
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} must match")
    diff = ref_logp - logp  # (N, T)
    if mask is not None:
        diff = torch.where(mask.bool(), diff, torch.zeros_like(diff))  # (N, T)
    return diff.exp() - diff - 1.0  # (N, T)


# --------------------------------------------------------------------------------------------------
# Loss aggregation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossNormalizer:
    """What the loss sums are divided by: counts over a whole optimisation step (see choice 9).

    ``from_masks`` counts them from masks; the trainer does so once over all micro-batches of a step and
    passes the result to every micro-batch's ``grpo_loss``.
    """

    segment_tokens: Mapping[str, float]  # valid tokens of each segment in the step
    sequences: float  # samples of the step with at least one valid token

    @property
    def tokens(self) -> float:
        return float(sum(self.segment_tokens.values()))

    @classmethod
    def from_masks(cls, masks: Mapping[str, Tensor]) -> LossNormalizer:
        """Counts of ``masks``: segment name -> (N, T_s) bool, every segment over the same N samples."""
        if not masks:
            raise ValueError("LossNormalizer.from_masks needs at least one mask")
        has_tokens = torch.stack([m.bool().any(dim=1) for m in masks.values()]).any(dim=0)  # (N,)
        return cls({name: float(m.bool().sum()) for name, m in masks.items()}, float(has_tokens.sum()))


def _normalizer(mask: Tensor, segments: Mapping[str, Tensor] | None) -> LossNormalizer:
    """The counts of the tensors passed in (the default: one call is the whole step)."""
    masks = {name: seg & mask for name, seg in segments.items()} if segments else {"all": mask}
    return LossNormalizer.from_masks(masks)


def token_mean(per_token: Tensor, mask: Tensor, segments=None, weights=None, normalizer=None) -> Tensor:
    """One mean over every valid token of the step (the paper). Empty mask -> 0."""
    normalizer = normalizer or _normalizer(mask, segments)
    return _masked_sum(per_token, mask) / _count(normalizer.tokens, per_token)


def sequence_mean(per_token: Tensor, mask: Tensor, segments=None, weights=None, normalizer=None) -> Tensor:
    """Mean over each sample's valid tokens, then over the step's samples that have any. Empty -> 0.

    A sample lies in one micro-batch whole, so its own token count is always complete here."""
    normalizer = normalizer or _normalizer(mask, segments)
    counts = mask.sum(dim=1)  # (N,)
    sums = torch.where(mask, per_token, torch.zeros_like(per_token)).sum(dim=1)  # (N,)
    per_sequence = sums / counts.clamp(min=1)  # (N,) samples without tokens add 0 to the sum
    return per_sequence.sum() / _count(normalizer.sequences, per_token)


def segment_weighted(
    per_token: Tensor,
    mask: Tensor,
    segments: Mapping[str, Tensor] | None = None,
    weights: Mapping[str, float] | None = None,
    normalizer: LossNormalizer | None = None,
) -> Tensor:
    """``sum_s weights[s] * token_mean over (segments[s] & mask)``; an empty segment contributes 0."""
    if not segments:
        raise ValueError("segment_weighted needs segments: a mapping name -> (N, T) mask, e.g. plan and image")
    weights = weights or {}
    missing = sorted(set(segments) - set(weights))
    if missing:
        raise ValueError(f"segment_weighted: no weight for segment(s) {missing}; weights given for {sorted(weights)}")
    stacked = torch.stack([m.bool() for m in segments.values()])  # (S, N, T)
    if stacked.shape[1:] != per_token.shape:
        raise ValueError(f"segment masks have shape {tuple(stacked.shape[1:])}, expected {tuple(per_token.shape)}")
    if (stacked.sum(dim=0) > 1).any():
        raise ValueError(f"segments {list(segments)} overlap: a token would be counted twice")
    normalizer = normalizer or _normalizer(mask, segments)
    loss = per_token.new_zeros(())
    for name, seg_mask in zip(segments, stacked):
        count = _count(normalizer.segment_tokens[name], per_token)
        loss = loss + weights[name] * (_masked_sum(per_token, seg_mask & mask) / count)
    return loss


# name -> function(per_token (N, T), mask (N, T) bool, segments, weights, normalizer) -> scalar
LOSS_AGGREGATIONS: dict[str, Callable[..., Tensor]] = {
    "token_mean": token_mean,
    "sequence_mean": sequence_mean,
    "segment_weighted": segment_weighted,
}


def aggregate_loss(
    per_token: Tensor,
    mask: Tensor,
    mode: str = "token_mean",
    segments: Mapping[str, Tensor] | None = None,
    weights: Mapping[str, float] | None = None,
    normalizer: LossNormalizer | None = None,
) -> Tensor:
    """Per-token loss (N, T) and mask (N, T) -> scalar, by the named aggregation (never NaN when empty).

    ``normalizer``: the step's counts (choice 9); None counts ``mask`` (and ``segments``) themselves.
    """
    try:
        aggregate = LOSS_AGGREGATIONS[mode]
    except KeyError:
        raise ValueError(f"unknown loss aggregation {mode!r}; known: {sorted(LOSS_AGGREGATIONS)}") from None
    if mask.shape != per_token.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and per_token {tuple(per_token.shape)} must match")
    if mode != "segment_weighted" and (segments or weights):
        raise ValueError(f"segments / weights only apply to mode 'segment_weighted', not {mode!r}")
    if normalizer is not None and segments and set(segments) - set(normalizer.segment_tokens):
        missing = sorted(set(segments) - set(normalizer.segment_tokens))
        raise ValueError(f"the normalizer has no token count for segment(s) {missing}")
    return aggregate(per_token, mask.bool(), segments=segments, weights=weights, normalizer=normalizer)


# --------------------------------------------------------------------------------------------------
# The whole loss
# --------------------------------------------------------------------------------------------------


@dataclass
class Segment:
    """Log-probs of one part of each sample (the plan, or the image tokens), all (N, T_s).

    old_logp None: one pass per rollout (old = current, detached). ref_logp None: only with beta = 0.
    """

    logp: Tensor  # (N, T_s) current policy, with gradient
    mask: Tensor  # (N, T_s) bool, True on tokens that are trained
    old_logp: Tensor | None = None  # (N, T_s) at sampling time
    ref_logp: Tensor | None = None  # (N, T_s) reference policy


def grpo_loss(
    segments: Mapping[str, Segment],
    advantages: Tensor,
    beta: float = 0.01,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    aggregation: str = "token_mean",
    segment_weights: Mapping[str, float] | None = None,
    normalizer: LossNormalizer | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Policy loss + beta * k3 over all segments, aggregated; returns (loss (), stats of floats).

    The segments (e.g. ``{"plan": ..., "image": ...}``, each (N, T_s)) are laid side by side into one
    (N, T) with T = sum T_s, so ``token_mean`` and ``sequence_mean`` see plan and image tokens of a
    sample together and ``segment_weighted`` gets one mask per segment. A segment with no tokens (the
    ``token`` ablation's plan) is simply absent or all-False.

    ``normalizer``: the counts of the whole step when this call sees one micro-batch of it (choice 9);
    None counts these segments. Statistics use the same counts. ``segment_weighted`` reports them per
    segment, each a token mean over that segment (``plan/kl_mean``, ``image/clip_fraction``...); the other
    aggregations report them over all tokens (``kl_mean``, ``kl_mean_plan``, ``plan_tokens``...).
    """
    if not segments:
        raise ValueError("grpo_loss needs at least one segment")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    names = list(segments)
    for name, seg in segments.items():
        if seg.ref_logp is None and beta > 0:
            raise ValueError(f"segment {name!r} has no ref_logp but beta={beta} > 0")
    logp = torch.cat([s.logp for s in segments.values()], dim=1)  # (N, T)
    mask = torch.cat([s.mask.bool() for s in segments.values()], dim=1)  # (N, T)
    old_logp = torch.cat(
        [(s.old_logp if s.old_logp is not None else s.logp.detach()) for s in segments.values()], dim=1
    )  # (N, T)
    # One mask per segment over the joint layout: True on that segment's valid tokens.
    seg_masks, start = {}, 0
    for name in names:
        width = segments[name].logp.shape[1]
        seg_mask = torch.zeros_like(mask)  # (N, T)
        seg_mask[:, start : start + width] = segments[name].mask.bool()
        seg_masks[name] = seg_mask
        start += width
    normalizer = normalizer or LossNormalizer.from_masks(seg_masks)

    pg, pg_stats = policy_loss(logp, old_logp, advantages, mask, eps_low, eps_high)  # (N, T)
    per_token = pg  # (N, T)
    kl = None
    if beta > 0:
        ref_logp = torch.cat([s.ref_logp for s in segments.values()], dim=1)  # (N, T)
        kl = kl_k3(logp, ref_logp, mask)  # (N, T)
        per_token = pg + beta * kl  # (N, T)

    if aggregation == "segment_weighted":
        loss = aggregate_loss(per_token, mask, aggregation, seg_masks, segment_weights, normalizer)  # ()
    else:
        loss = aggregate_loss(per_token, mask, aggregation, normalizer=normalizer)  # ()

    with torch.no_grad():
        if aggregation == "segment_weighted":
            stats: dict[str, float] = {"loss": float(loss)}
            for name, seg_mask in seg_masks.items():
                part = LossNormalizer({name: normalizer.segment_tokens[name]}, normalizer.sequences)
                summary = _summary(per_token, pg, kl, pg_stats, {name: seg_mask}, "token_mean", part)
                stats.update({f"{name}/{k}": v for k, v in summary.items()})
        else:
            stats = _summary(per_token, pg, kl, pg_stats, seg_masks, aggregation, normalizer)
    return loss, stats


def _summary(
    per_token: Tensor,
    pg: Tensor,
    kl: Tensor | None,
    pg_stats: PolicyLossStats,
    seg_masks: Mapping[str, Tensor],
    aggregation: str,
    normalizer: LossNormalizer,
) -> dict[str, float]:
    """Loss, policy loss, clip and KL statistics over the tokens of ``seg_masks`` (each (N, T)), normalised
    by ``normalizer``."""
    mask = torch.stack(list(seg_masks.values())).any(dim=0)  # (N, T)
    stats = {
        "loss": float(aggregate_loss(per_token, mask, aggregation, normalizer=normalizer)),
        "policy_loss": float(aggregate_loss(pg, mask, aggregation, normalizer=normalizer)),
    }
    stats.update(pg_stats.as_log(within=mask, count=normalizer.tokens))
    stats["kl_mean"] = float(_masked_sum(kl, mask) / _count(normalizer.tokens, kl)) if kl is not None else 0.0
    for name, seg_mask in seg_masks.items():
        stats[f"{name}_tokens"] = float(seg_mask.sum())
        if kl is not None:
            stats[f"kl_mean_{name}"] = float(_masked_sum(kl, seg_mask) / _count(normalizer.segment_tokens[name], kl))
    return stats

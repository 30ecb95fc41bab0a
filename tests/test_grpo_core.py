"""Unit tests of the GRPO math (t2i_r1.grpo.core): every expected number is derived in a comment.

Everything runs in float64 so the hand arithmetic can be checked to ~1e-12.
"""

import math

import pytest
import torch

from t2i_r1.grpo.core import (
    ADVANTAGE_ESTIMATORS,
    LOSS_AGGREGATIONS,
    LossNormalizer,
    Segment,
    aggregate_loss,
    aggregate_rewards,
    group_advantages,
    grpo_loss,
    kl_k3,
    policy_loss,
)

F64 = torch.float64
EPS = 1e-4


def t(values, dtype=F64):
    return torch.tensor(values, dtype=dtype)


def close(actual, expected, tol=1e-12):
    actual, expected = torch.as_tensor(actual, dtype=F64), torch.as_tensor(expected, dtype=F64)
    torch.testing.assert_close(actual, expected, rtol=0, atol=tol)


# ----------------------------------------------------------------------------------------------- advantages


def test_group_advantages_sample_std_one_group():
    # rewards [1, 2, 3, 4]: mean 2.5, deviations -1.5 -0.5 0.5 1.5, squares sum 2.25+0.25+0.25+2.25 = 5,
    # sample var 5/3, std sqrt(5/3) = 1.2909944; advantage = deviation / (1.2909944 + 1e-4).
    adv, stats = group_advantages(t([1, 2, 3, 4]), group_size=4)
    std = math.sqrt(5 / 3)
    close(adv, [d / (std + EPS) for d in (-1.5, -0.5, 0.5, 1.5)])
    close(adv[0], -1.5 / 1.2910944, tol=1e-7)  # the number itself: -1.16182...
    close(stats.group_mean, [2.5])
    close(stats.group_std, [std])
    assert stats.num_zero_variance == 0


def test_group_advantages_population_std():
    # same rewards, population var 5/4, std sqrt(1.25) = 1.1180340
    adv, stats = group_advantages(t([1, 2, 3, 4]), group_size=4, std="population")
    std = math.sqrt(1.25)
    close(adv, [d / (std + EPS) for d in (-1.5, -0.5, 0.5, 1.5)])
    close(stats.group_std, [std])


def test_unscaled_advantages_are_the_centred_rewards():
    # scale=False (Dr. GRPO): r - mean only. Groups [0, 2] and [10, 40] keep their spreads (-+1 and -+15)
    # instead of both becoming -+0.707 z-scores; [1, nan] has one valid reward (zero-variance, 0) as with
    # scaling, [3, 5] gives -+1, [5, 5] 0; the stats are the same as with scaling.
    nan = float("nan")
    rewards = t([0, 2, 10, 40, 1, nan, 3, 5, 5, 5])
    adv, stats = group_advantages(rewards, group_size=2, scale=False)
    close(adv, [-1, 1, -15, 15, 0, 0, -1, 1, 0, 0])
    _, scaled_stats = group_advantages(rewards, group_size=2)
    close(stats.group_std, scaled_stats.group_std)
    assert stats.zero_variance.tolist() == scaled_stats.zero_variance.tolist()
    per_reward = torch.stack([t([0, 2, 4, 6]), t([1, 1, 3, 7])], dim=1)  # (N=4, R=2), one group of 4
    by_sum, _ = aggregate_rewards(per_reward, [1.0, 2.0], 4, "sum_then_normalize", scale=False)
    close(by_sum, [-7, -5, 1, 11])  # totals 2 4 10 20, mean 9
    by_reward, _ = aggregate_rewards(per_reward, [1.0, 2.0], 4, "normalize_then_sum", scale=False)
    close(by_reward, [-3 + 2 * -2, -1 + 2 * -2, 1 + 2 * 0, 3 + 2 * 4])  # means 3 and 3: unscaled, the two agree


def test_group_advantages_are_per_group():
    # two groups of 2: [0, 2] -> mean 1, sample std sqrt((1+1)/1) = sqrt(2): advantages -+1/(sqrt2+eps);
    # [10, 40] -> mean 25, std sqrt((225+225)/1) = sqrt(450): advantages -+15/(sqrt450+eps)
    adv, _ = group_advantages(t([0, 2, 10, 40]), group_size=2)
    a = 1 / (math.sqrt(2) + EPS)
    b = 15 / (math.sqrt(450) + EPS)
    close(adv, [-a, a, -b, b])


def test_group_advantages_nan_is_missing():
    # [1, nan, 3, 5]: valid 1 3 5, mean 3, deviations -2 0 2, sample var (4+0+4)/2 = 4, std 2;
    # the NaN sample gets 0 (not the advantage of a reward 0, which would be -3/2).
    adv, stats = group_advantages(t([1, float("nan"), 3, 5]), group_size=4)
    close(adv, [-2 / (2 + EPS), 0.0, 0.0, 2 / (2 + EPS)])
    assert not torch.isnan(adv).any()
    assert stats.valid.tolist() == [True, False, True, True]
    close(stats.group_mean, [3.0])
    assert stats.as_log()["missing_reward_fraction"] == 0.25


def test_group_advantages_too_few_valid_rewards():
    # group 0: one valid reward -> sample std undefined -> zero-variance, all 0;
    # group 1: all NaN -> mean NaN, all 0; group 2: [1, 3, nan] -> mean 2, std sqrt(2/1)
    nan = float("nan")
    adv, stats = group_advantages(t([nan, 7, nan, nan, nan, nan, 1, 3, nan]), group_size=3)
    s = math.sqrt(2)
    close(adv, [0, 0, 0, 0, 0, 0, -1 / (s + EPS), 1 / (s + EPS), 0])
    assert stats.zero_variance.tolist() == [True, True, False]
    assert torch.isnan(stats.group_mean[1]) and stats.group_mean[0] == 7
    close(stats.group_std, [0.0, 0.0, s])
    # population std with one valid reward is 0, also zero-variance
    _, pop = group_advantages(t([nan, 7, nan]), group_size=3, std="population")
    assert pop.zero_variance.tolist() == [True]


def test_zero_variance_groups_reported_and_dropped():
    # group 0 [1, 2, 3, 4] has signal; group 1 [5, 5, 5, 5] has none.
    rewards = t([1, 2, 3, 4, 5, 5, 5, 5])
    adv, stats = group_advantages(rewards, group_size=4)
    assert stats.zero_variance.tolist() == [False, True]
    assert stats.num_zero_variance == 1
    assert adv[4:].tolist() == [0.0] * 4
    assert stats.keep.all()  # not dropped unless asked
    assert stats.as_log()["zero_variance_fraction"] == 0.5

    adv_d, stats_d = group_advantages(rewards, group_size=4, drop_zero_variance=True)
    assert stats_d.keep.tolist() == [True] * 4 + [False] * 4
    assert torch.equal(adv_d, adv)  # dropping only changes the mask
    assert stats_d.as_log()["kept_fraction"] == 0.5


def test_zero_variance_is_exact_despite_round_off():
    # [0.1, 0.1, 0.1] in float64: the sum 0.30000000000000004 / 3 != 0.1, so torch.std gives ~1.7e-17 and
    # the naive formula a tiny non-zero advantage; the group must still count as zero-variance with 0s.
    rewards = t([0.1, 0.1, 0.1])
    naive = (rewards - rewards.mean()) / (rewards.std() + EPS)
    assert naive.abs().max() > 0  # the trap is real
    adv, stats = group_advantages(rewards, group_size=3)
    assert adv.tolist() == [0.0, 0.0, 0.0]
    assert stats.zero_variance.tolist() == [True]


def test_group_advantages_keeps_dtype_and_validates():
    adv, _ = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]), group_size=2)
    assert adv.dtype == torch.float32
    with pytest.raises(ValueError, match="multiple of group_size=3"):
        group_advantages(t([1, 2, 3, 4]), group_size=3)
    with pytest.raises(ValueError, match="1-D float"):
        group_advantages(t([[1, 2]]), group_size=2)
    with pytest.raises(ValueError, match="std must be"):
        group_advantages(t([1, 2]), group_size=2, std="biased")


# ----------------------------------------------------------------------------------------------- reward aggregation

# One group of 3 samples, 2 rewards, weights (1, 0.5):
#   r1 = [1, 2, 3], r2 = [4, 0, 2]
PER_REWARD = t([[1, 4], [2, 0], [3, 2]])
WEIGHTS = [1.0, 0.5]


def test_sum_then_normalize_by_hand():
    # total = r1 + 0.5 r2 = [1+2, 2+0, 3+1] = [3, 2, 4]; mean 3, deviations 0 -1 1,
    # sample var (0+1+1)/2 = 1, std 1 -> advantages [0, -1/1.0001, 1/1.0001]
    adv, stats = aggregate_rewards(PER_REWARD, WEIGHTS, group_size=3, mode="sum_then_normalize")
    close(adv, [0.0, -1 / (1 + EPS), 1 / (1 + EPS)])
    close(stats.total_reward, [3, 2, 4])
    close(stats.group_mean, [3.0])


def test_normalize_then_sum_by_hand():
    # r1 = [1, 2, 3]: mean 2, std sqrt((1+0+1)/2) = 1 -> z1 = [-1, 0, 1] / 1.0001
    # r2 = [4, 0, 2]: mean 2, std sqrt((4+4+0)/2) = 2 -> z2 = [2, -2, 0] / 2.0001
    # advantage = z1 + 0.5 z2 = [-1/1.0001 + 1/2.0001, -1/2.0001, 1/1.0001]
    adv, stats = aggregate_rewards(PER_REWARD, WEIGHTS, group_size=3, mode="normalize_then_sum")
    close(adv, [-1 / 1.0001 + 1 / 2.0001, -1 / 2.0001, 1 / 1.0001])
    # the two modes disagree on sample 0: 0 after summing, about -0.5 when each reward counts alone
    close(adv[0], -0.49995, tol=1e-4)
    close(stats.total_reward, [3, 2, 4])  # logged total is the same weighted raw sum


def test_sum_then_normalize_skips_nan_entries():
    # sample 0 lacks r2: total = [1, 2+0, 3+1] = [1, 2, 4] (no re-weighting); mean 7/3,
    # deviations -4/3 -1/3 5/3, squares 16/9 + 1/9 + 25/9 = 42/9, sample var 21/9, std sqrt(21)/3;
    # sample 3 of a second group has no reward at all -> total NaN -> advantage 0.
    nan = float("nan")
    per_reward = t([[1, nan], [2, 0], [3, 2], [nan, nan], [1, 1], [2, 2]])
    adv, stats = aggregate_rewards(per_reward, WEIGHTS, group_size=3, mode="sum_then_normalize")
    s = math.sqrt(21) / 3
    close(adv[:3], [(-4 / 3) / (s + EPS), (-1 / 3) / (s + EPS), (5 / 3) / (s + EPS)])
    assert torch.isnan(stats.total_reward[3])
    # group 2: totals [NaN, 1.5, 3]: mean 2.25, deviations -0.75 0.75, sample var 1.125, std sqrt(1.125)
    s2 = math.sqrt(1.125)
    close(adv[3:], [0.0, -0.75 / (s2 + EPS), 0.75 / (s2 + EPS)])


def test_normalize_then_sum_with_nan_and_zero_variance():
    nan = float("nan")
    # group 0: r1 = [1, 2, 3] -> z1 = [-1, 0, 1]/1.0001; r2 = [nan, 0, 2]: mean 1, deviations -1 1,
    #   sample var 2/1, std sqrt2 -> z2 = [0, -1, 1]/(sqrt2 + eps); advantage = z1 + 0.5 z2
    # group 1: r1 = [5, 5, 5], r2 = [1, 1, 1]: every reward constant -> zero-variance, advantages 0
    # group 2: r1 constant [2, 2, 2], r2 = [0, 1, 2] varies -> not zero-variance:
    #   z2 = [-1, 0, 1]/1.0001 (mean 1, std 1), advantage = 0 + 0.5 z2
    per_reward = t([[1, nan], [2, 0], [3, 2], [5, 1], [5, 1], [5, 1], [2, 0], [2, 1], [2, 2]])
    adv, stats = aggregate_rewards(
        per_reward, WEIGHTS, group_size=3, mode="normalize_then_sum", drop_zero_variance=True
    )
    r2 = math.sqrt(2) + EPS
    close(adv[:3], [-1 / 1.0001, 0.5 * -1 / r2, 1 / 1.0001 + 0.5 * 1 / r2])
    close(adv[3:6], [0.0, 0.0, 0.0])
    close(adv[6:], [-0.5 / 1.0001, 0.0, 0.5 / 1.0001])
    assert stats.zero_variance.tolist() == [False, True, False]
    assert stats.keep.tolist() == [True] * 3 + [False] * 3 + [True] * 3


def test_aggregate_rewards_registry_and_errors():
    assert set(ADVANTAGE_ESTIMATORS) == {"sum_then_normalize", "normalize_then_sum"}
    with pytest.raises(ValueError, match="unknown reward aggregation mode 'mean'"):
        aggregate_rewards(PER_REWARD, WEIGHTS, group_size=3, mode="mean")
    with pytest.raises(ValueError, match=r"expected \(2,\): one per reward"):
        aggregate_rewards(PER_REWARD, [1.0], group_size=3)


# ----------------------------------------------------------------------------------------------- policy loss

# Two samples, advantages +1 and -1, ratios [0.5, 1.0, 1.5] on both rows, eps 0.2 -> clip range [0.8, 1.2].
RATIOS = [0.5, 1.0, 1.5]


def _ratio_inputs():
    old = torch.full((2, 3), -1.0, dtype=F64)
    logp = (old + torch.log(t([RATIOS, RATIOS]))).requires_grad_(True)
    return logp, old, t([1.0, -1.0]), torch.ones(2, 3, dtype=torch.bool)


def test_policy_loss_values_and_clipping():
    logp, old, adv, mask = _ratio_inputs()
    loss, stats = policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.2)
    # A = +1: unclipped -r = [-0.5, -1, -1.5], clipped -clip(r) = [-0.8, -1, -1.2]; max -> [-0.5, -1, -1.2]
    # A = -1: unclipped  r = [ 0.5,  1,  1.5], clipped  clip(r) = [ 0.8,  1,  1.2]; max -> [ 0.8,  1,  1.5]
    close(loss, [[-0.5, -1.0, -1.2], [0.8, 1.0, 1.5]])
    # gradient wrt logp: d(-A r)/dlogp = -A r where unclipped, 0 where the clipped term won
    #   row A=+1: [-0.5, -1, 0 (r=1.5 clipped high)]; row A=-1: [0 (r=0.5 clipped low), 1, 1.5]
    loss.sum().backward()
    close(logp.grad, [[-0.5, -1.0, 0.0], [0.0, 1.0, 1.5]])
    # clipped tokens: (r=1.5, A>0) high and (r=0.5, A<0) low, 1 of 6 tokens each; ratio mean 3*2/6 = 1
    log = stats.as_log()
    close(log["clip_high_fraction"], 1 / 6)
    close(log["clip_low_fraction"], 1 / 6)
    close(log["clip_fraction"], 2 / 6)
    close(log["ratio_mean"], 1.0)


def test_policy_loss_asymmetric_clip():
    # eps_low 0.2, eps_high 0.6 -> range [0.8, 1.6]: r = 1.5 with A = +1 is no longer clipped (loss -1.5,
    # gradient -1.5); r = 0.5 with A = -1 still is (loss 0.8, gradient 0).
    logp, old, adv, mask = _ratio_inputs()
    loss, stats = policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.6)
    close(loss, [[-0.5, -1.0, -1.5], [0.8, 1.0, 1.5]])
    loss.sum().backward()
    close(logp.grad, [[-0.5, -1.0, -1.5], [0.0, 1.0, 1.5]])
    assert stats.as_log()["clip_high_fraction"] == 0.0


def test_policy_loss_masked_positions_are_inert():
    # a padded position holding -inf log-probs must give loss 0, gradient 0 and no NaN anywhere;
    # the masked token is also left out of the clip and ratio statistics (ratio mean over 3 tokens of row 0).
    logp = t([[-1.0, -2.0, float("-inf")]]).requires_grad_(True)
    old = t([[-1.0, -2.0, -3.0]])
    mask = torch.tensor([[True, True, False]])
    loss, stats = policy_loss(logp, old, t([2.0]), mask)
    close(loss, [[-2.0, -2.0, 0.0]])  # ratio 1 on valid tokens: -A * 1
    loss.sum().backward()
    assert not torch.isnan(logp.grad).any()
    close(logp.grad, [[-2.0, -2.0, 0.0]])
    close(stats.ratio_mean, 1.0)


def test_one_pass_equals_paper_loss_value_and_gradient():
    # The paper / reference: -(exp(lp - lp.detach()) * A), token mean. Ours with old_logp = lp.detach().
    g = torch.Generator().manual_seed(0)
    lp_ours = (-torch.rand(4, 7, generator=g, dtype=F64) * 5).requires_grad_(True)
    lp_paper = lp_ours.detach().clone().requires_grad_(True)
    adv = torch.randn(4, generator=g, dtype=F64)
    mask = torch.rand(4, 7, generator=g) > 0.3

    ours, _ = policy_loss(lp_ours, lp_ours.detach(), adv, mask, eps_low=0.2, eps_high=0.28)
    ours = aggregate_loss(ours, mask, "token_mean")
    paper = -(torch.exp(lp_paper - lp_paper.detach()) * adv[:, None])
    paper = (paper * mask).sum() / mask.sum()
    ours.backward()
    paper.backward()
    close(ours, paper, tol=1e-15)
    close(lp_ours.grad, lp_paper.grad, tol=1e-15)
    # and the gradient is plain REINFORCE: -A / (number of valid tokens) on valid tokens
    close(lp_ours.grad, -adv[:, None] * mask / mask.sum(), tol=1e-15)


def test_policy_loss_shape_errors():
    with pytest.raises(ValueError, match="must match"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expected \(2,\)"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3, dtype=torch.bool))


# ----------------------------------------------------------------------------------------------- k3 KL


def test_kl_k3_values():
    # lp = log 0.5, ref = log 0.25: ref - lp = log 0.5 -> 0.5 - log 0.5 - 1 = 0.5 + 0.693147 - 1 = 0.193147
    # lp = log 0.25, ref = log 0.5: ref - lp = log 2   -> 2 - log 2 - 1 = 0.306853
    # equal log-probs -> 1 - 0 - 1 = 0
    lp = torch.log(t([[0.5, 0.25, 0.3]]))
    ref = torch.log(t([[0.25, 0.5, 0.3]]))
    close(kl_k3(lp, ref), [[0.5 + math.log(2) - 1, 1 - math.log(2), 0.0]])
    close(kl_k3(lp, ref)[0, 0], 0.193147, tol=1e-6)


def test_kl_k3_nonnegative_and_gradient():
    g = torch.Generator().manual_seed(1)
    lp = (-torch.rand(5, 9, generator=g, dtype=F64) * 8).requires_grad_(True)
    ref = -torch.rand(5, 9, generator=g, dtype=F64) * 8
    kl = kl_k3(lp, ref)
    assert (kl >= 0).all()
    # d/dlp [exp(ref - lp) - (ref - lp) - 1] = 1 - exp(ref - lp)
    kl.sum().backward()
    close(lp.grad, 1 - torch.exp(ref - lp.detach()))


def test_kl_k3_expectation_is_exact_kl():
    # Under sampling from p, E_p[k3] = E_p[q/p] - E_p[log q/p] - 1 = 1 + KL(p||q) - 1 = KL(p||q).
    # p = [0.5, 0.25, 0.25], q = [0.25, 0.25, 0.5]: KL = 0.5 log 2 + 0 + 0.25 log 0.5 = 0.25 log 2 = 0.1732868
    p = t([0.5, 0.25, 0.25])
    q = t([0.25, 0.25, 0.5])
    expectation = (p * kl_k3(p.log()[None], q.log()[None])[0]).sum()
    close(expectation, 0.25 * math.log(2))


def test_kl_k3_mask_keeps_garbage_out():
    lp = t([[-1.0, float("-inf")]]).requires_grad_(True)
    ref = t([[-1.0, -2.0]])
    kl = kl_k3(lp, ref, mask=torch.tensor([[True, False]]))
    close(kl, [[0.0, 0.0]])
    kl.sum().backward()
    assert not torch.isnan(lp.grad).any()


# ----------------------------------------------------------------------------------------------- loss aggregation

# per-token values; columns 0-1 are the plan, 2-3 the image; row 0 has only its two plan tokens valid.
PER_TOKEN = t([[1, 2, 3, 4], [5, 6, 7, 8]])
MASK = torch.tensor([[True, True, False, False], [True, True, True, True]])
PLAN = torch.tensor([[True, True, False, False]] * 2)
IMAGE = ~PLAN


def test_token_mean_by_hand():
    # valid tokens 1 2 5 6 7 8: 29 / 6
    close(aggregate_loss(PER_TOKEN, MASK, "token_mean"), 29 / 6)


def test_sequence_mean_by_hand():
    # row 0: (1+2)/2 = 1.5; row 1: (5+6+7+8)/4 = 6.5; mean (1.5+6.5)/2 = 4
    close(aggregate_loss(PER_TOKEN, MASK, "sequence_mean"), 4.0)
    # a sample with no valid token is left out, not counted as 0: only row 1 -> 6.5
    close(aggregate_loss(PER_TOKEN, MASK & torch.tensor([[False], [True]]), "sequence_mean"), 6.5)


def test_segment_weighted_by_hand():
    # plan tokens valid: 1 2 5 6 -> mean 3.5; image tokens valid: 7 8 -> mean 7.5
    # w_plan 2, w_image 0.5: 2*3.5 + 0.5*7.5 = 7 + 3.75 = 10.75
    segments, weights = {"plan": PLAN, "image": IMAGE}, {"plan": 2.0, "image": 0.5}
    loss = aggregate_loss(PER_TOKEN, MASK, "segment_weighted", segments=segments, weights=weights)
    close(loss, 10.75)


def test_segment_weighted_gives_the_plan_its_share():
    # 100 plan tokens and 576 image tokens per sample (the paper's sizes), per-token loss = the logp itself:
    # token_mean puts 100/676 = 0.148 of the gradient on the plan; segment_weighted (1, 1) puts 1 on each part.
    logp = torch.zeros(2, 676, dtype=F64, requires_grad=True)
    mask = torch.ones(2, 676, dtype=torch.bool)
    plan = torch.zeros_like(mask)
    plan[:, :100] = True
    aggregate_loss(logp, mask, "token_mean").backward()
    close(logp.grad[:, :100].sum(), 100 / 676)
    logp.grad = None
    segments, weights = {"plan": plan, "image": ~plan}, {"plan": 1.0, "image": 1.0}
    aggregate_loss(logp, mask, "segment_weighted", segments, weights).backward()
    close(logp.grad[:, :100].sum(), 1.0)
    close(logp.grad[:, 100:].sum(), 1.0)


def test_empty_segments_and_masks_give_zero_not_nan():
    per_token = PER_TOKEN.clone().requires_grad_(True)
    # token ablation: no plan tokens -> plan term 0, image term 1 * 7.5 (weights not re-normalised)
    no_plan = MASK & IMAGE
    segments, weights = {"plan": PLAN, "image": IMAGE}, {"plan": 1.0, "image": 1.0}
    loss = aggregate_loss(per_token, no_plan, "segment_weighted", segments, weights)
    close(loss, 7.5)
    loss.backward()
    close(per_token.grad, [[0, 0, 0, 0], [0, 0, 0.5, 0.5]])
    # nothing valid at all: every mode returns 0 with a zero (not NaN) gradient
    empty = torch.zeros_like(MASK)
    for mode in ("token_mean", "sequence_mean"):
        per_token.grad = None
        loss = aggregate_loss(per_token, empty, mode)
        loss.backward()
        assert loss.item() == 0.0 and per_token.grad.abs().sum() == 0


def test_aggregate_loss_errors():
    assert set(LOSS_AGGREGATIONS) == {"token_mean", "sequence_mean", "segment_weighted"}
    with pytest.raises(ValueError, match="unknown loss aggregation 'sum'"):
        aggregate_loss(PER_TOKEN, MASK, "sum")
    with pytest.raises(ValueError, match="needs segments"):
        aggregate_loss(PER_TOKEN, MASK, "segment_weighted")
    with pytest.raises(ValueError, match=r"no weight for segment\(s\) \['image'\]"):
        aggregate_loss(PER_TOKEN, MASK, "segment_weighted", {"plan": PLAN, "image": IMAGE}, {"plan": 1.0})
    with pytest.raises(ValueError, match="only apply to mode 'segment_weighted'"):
        aggregate_loss(PER_TOKEN, MASK, "token_mean", {"plan": PLAN}, {"plan": 1.0})
    with pytest.raises(ValueError, match="overlap"):
        aggregate_loss(PER_TOKEN, MASK, "segment_weighted", {"a": PLAN, "b": MASK}, {"a": 1.0, "b": 1.0})


# ----------------------------------------------------------------------------------------------- grpo_loss


def _segments(seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    plan_lp = -torch.rand(3, 4, generator=g, dtype=F64) * 4
    image_lp = -torch.rand(3, 6, generator=g, dtype=F64) * 6
    plan_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    image_mask = torch.ones(3, 6, dtype=torch.bool)
    plan_ref = plan_lp + 0.1 * torch.randn(3, 4, generator=g, dtype=F64)
    image_ref = image_lp + 0.1 * torch.randn(3, 6, generator=g, dtype=F64)
    plan = Segment(plan_lp.clone().requires_grad_(requires_grad), plan_mask, ref_logp=plan_ref)
    image = Segment(image_lp.clone().requires_grad_(requires_grad), image_mask, ref_logp=image_ref)
    return {"plan": plan, "image": image}


def test_grpo_loss_one_pass_equals_reference_formula():
    # The reference: -(exp(lp - lp.detach()) * A - beta * k3), token mean over all plan + image tokens.
    segs = _segments()
    adv = t([1.5, -0.5, -1.0])
    beta = 0.01
    loss, stats = grpo_loss(segs, adv, beta=beta, aggregation="token_mean")

    lp = torch.cat([segs["plan"].logp.detach(), segs["image"].logp.detach()], dim=1).requires_grad_(True)
    ref = torch.cat([segs["plan"].ref_logp, segs["image"].ref_logp], dim=1)
    mask = torch.cat([segs["plan"].mask, segs["image"].mask], dim=1)
    k3 = torch.exp(ref - lp) - (ref - lp) - 1
    per_token = -(torch.exp(lp - lp.detach()) * adv[:, None] - beta * k3)
    expected = (per_token * mask).sum() / mask.sum()

    loss.backward()
    expected.backward()
    close(loss, expected, tol=1e-15)
    close(segs["plan"].logp.grad, lp.grad[:, :4], tol=1e-15)
    close(segs["image"].logp.grad, lp.grad[:, 4:], tol=1e-15)
    # stats: floats; 9 plan tokens (3+2+4) and 18 image tokens; kl mean = token mean of k3
    assert stats["plan_tokens"] == 9.0 and stats["image_tokens"] == 18.0
    close(stats["kl_mean"], ((k3 * mask).sum() / mask.sum()).item(), tol=1e-15)
    close(stats["kl_mean_plan"], ((k3[:, :4] * mask[:, :4]).sum() / 9).item(), tol=1e-15)
    assert stats["clip_fraction"] == 0.0 and stats["ratio_mean"] == 1.0
    assert all(isinstance(v, float) for v in stats.values())


def test_grpo_loss_segment_weighted_and_token_ablation():
    # beta 0, advantages all 1, one pass: per-token loss is -1 everywhere, gradient -1/count per token.
    # segment_weighted (plan 1, image 0.5): loss = 1 * -1 + 0.5 * -1 = -1.5; plan tokens get -1/9 each,
    # image tokens -0.5/18 each.
    segs = _segments()
    loss, _ = grpo_loss(segs, t([1.0, 1.0, 1.0]), beta=0.0, aggregation="segment_weighted",
                        segment_weights={"plan": 1.0, "image": 0.5})
    close(loss, -1.5)
    loss.backward()
    close(segs["plan"].logp.grad, -segs["plan"].mask.double() / 9)
    close(segs["image"].logp.grad, -0.5 * segs["image"].mask.double() / 18)

    # token ablation: the plan segment has no tokens -> plan term 0, no NaN, plan gradient 0
    segs = _segments()
    segs["plan"].mask = torch.zeros_like(segs["plan"].mask)
    loss, stats = grpo_loss(segs, t([1.0, 1.0, 1.0]), beta=0.01, aggregation="segment_weighted",
                            segment_weights={"plan": 1.0, "image": 1.0})
    loss.backward()
    # segment_weighted reports each segment's statistics under its name
    assert torch.isfinite(loss) and stats["plan/plan_tokens"] == 0.0 and stats["plan/kl_mean"] == 0.0
    assert stats["image/image_tokens"] == 18.0 and stats["image/kl_mean"] > 0
    assert segs["plan"].logp.grad.abs().sum() == 0
    assert segs["image"].logp.grad.abs().sum() > 0


def test_grpo_loss_with_stale_old_logp_clips():
    # a second pass: the image log-probs moved up by log 1.5 since sampling (ratio 1.5 > 1.2) -> for the
    # positive-advantage sample all its 6 image tokens are clipped high: 6 of 27 valid tokens.
    segs = _segments()
    for seg in segs.values():
        seg.old_logp = seg.logp.detach().clone()
    segs["image"].old_logp = segs["image"].old_logp - math.log(1.5)
    _, stats = grpo_loss(segs, t([1.0, -1.0, -1.0]), beta=0.0)
    close(stats["clip_high_fraction"], 6 / 27)
    close(stats["clip_low_fraction"], 0.0)
    # ratio mean: 9 plan tokens at 1 and 18 image tokens at 1.5 -> (9 + 27) / 27 = 4/3
    close(stats["ratio_mean"], 4 / 3)


def test_grpo_loss_errors():
    segs = _segments()
    segs["image"].ref_logp = None
    with pytest.raises(ValueError, match="segment 'image' has no ref_logp"):
        grpo_loss(segs, t([1.0, 1.0, 1.0]), beta=0.01)
    grpo_loss(segs, t([1.0, 1.0, 1.0]), beta=0.0)  # fine without a reference when beta is 0
    with pytest.raises(ValueError, match="at least one segment"):
        grpo_loss({}, t([1.0]))


# ----------------------------------------------------------------------------------------------- step normaliser


def _step(seed=0, n=6):
    """n samples: plan (4 columns, ragged masks) and image (5 columns); a stale old_logp so some tokens clip."""
    g = torch.Generator().manual_seed(seed)
    segs = {}
    for name, width in (("plan", 4), ("image", 5)):
        lp = -torch.rand(n, width, generator=g, dtype=F64) * 3
        mask = torch.rand(n, width, generator=g) > (0.3 if name == "plan" else 0.0)
        mask[:, 0] = True  # every sample has tokens in both segments, as in the trainer
        old = lp + 0.3 * torch.randn(n, width, generator=g, dtype=F64)
        ref = lp + 0.1 * torch.randn(n, width, generator=g, dtype=F64)
        segs[name] = Segment(lp.requires_grad_(True), mask, old, ref)
    return segs, torch.randn(n, generator=g, dtype=F64)


def _part(segs, rows):
    return {k: Segment(s.logp[rows], s.mask[rows], s.old_logp[rows], s.ref_logp[rows]) for k, s in segs.items()}


def _old_trainer_loss(segs, adv, rows, aggregation, weights, beta):
    """The trainer's scaling before the step normaliser, written out: each micro-batch's own mean (over its
    tokens, sequences, or each segment's tokens) times its share of the step's count."""
    def per_token(seg, r):
        pg, _ = policy_loss(seg.logp[r], seg.old_logp[r], adv[r], seg.mask[r], 0.2, 0.28)
        return pg + beta * kl_k3(seg.logp[r], seg.ref_logp[r], seg.mask[r])

    def mean(values, mask):
        return (values * mask).sum() / mask.sum()

    masks = {k: s.mask for k, s in segs.items()}
    if aggregation == "segment_weighted":
        shares = {k: float(m[rows].sum()) / float(m.sum()) for k, m in masks.items()}
        return sum(weights[k] * mean(per_token(s, rows), masks[k][rows]) * shares[k] for k, s in segs.items())
    joint = torch.cat([per_token(s, rows) for s in segs.values()], dim=1)
    mask = torch.cat([m[rows] for m in masks.values()], dim=1)
    if aggregation == "token_mean":
        total = sum(float(m.sum()) for m in masks.values())
        return mean(joint, mask) * (float(mask.sum()) / total)
    per_sequence = (joint * mask).sum(1) / mask.sum(1)
    return per_sequence.mean() * (len(per_sequence) / len(adv))


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "segment_weighted"])
def test_step_normaliser_splits_the_step_loss_exactly(aggregation):
    # Micro-batches [0, 2), [2, 3), [3, 6) with the step's normaliser: the losses add up to the one-piece
    # loss, the gradients accumulate to its gradient, the statistics add up to its statistics, and each
    # micro-batch's loss equals the old per-micro-batch mean times its share (bit-for-bit up to round-off).
    weights = {"plan": 0.7, "image": 0.3}
    common = dict(beta=0.05, eps_low=0.2, eps_high=0.28, aggregation=aggregation, segment_weights=weights)
    segs, adv = _step()
    whole, whole_stats = grpo_loss(segs, adv, **common)
    whole.backward()
    whole_grads = {k: s.logp.grad.clone() for k, s in segs.items()}

    segs, adv = _step()
    normalizer = LossNormalizer.from_masks({k: s.mask for k, s in segs.items()})
    total, summed = 0.0, {}
    for rows in (slice(0, 2), slice(2, 3), slice(3, 6)):
        loss, stats = grpo_loss(_part(segs, rows), adv[rows], normalizer=normalizer, **common)
        close(loss, _old_trainer_loss(segs, adv, rows, aggregation, weights, 0.05))
        loss.backward()
        total = total + loss.detach()
        for k, v in stats.items():
            summed[k] = summed.get(k, 0.0) + v
    close(total, whole)
    for k, s in segs.items():
        close(s.logp.grad, whole_grads[k])
    assert summed.keys() == whole_stats.keys()
    for k in whole_stats:
        close(summed[k], whole_stats[k])


def test_normaliser_counts():
    # plan: rows with 3, 0, 2 valid tokens; image: 0, 0, 1 -> 5 plan tokens, 1 image token, 2 sequences with any
    plan = torch.tensor([[1, 1, 1], [0, 0, 0], [1, 1, 0]], dtype=torch.bool)
    image = torch.tensor([[0], [0], [1]], dtype=torch.bool)
    normalizer = LossNormalizer.from_masks({"plan": plan, "image": image})
    assert normalizer.segment_tokens == {"plan": 5.0, "image": 1.0}
    assert normalizer.tokens == 6.0 and normalizer.sequences == 2.0
    # a normaliser must count every segment it normalises
    with pytest.raises(ValueError, match=r"no token count for segment\(s\) \['image'\]"):
        aggregate_loss(PER_TOKEN, MASK, "segment_weighted", {"plan": PLAN, "image": IMAGE}, {"plan": 1.0, "image": 1.0},
                       normalizer=LossNormalizer({"plan": 4.0}, 2.0))

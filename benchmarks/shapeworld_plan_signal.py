"""How much of a GRPO group's reward a right plan explains, on ShapeWorld training prompts.

For the demo's seed-0 training prompts (``--n`` per category and training phrasing family), 8 plans at
``--temperature`` and one image each: the share of groups whose plans are all wrong, all right or
mixed (only mixed groups carry a plan-correctness signal), the reward gap between right and wrong
plans inside mixed groups, the share of the within-group reward variance that plan correctness
explains, and the prompts whose 8 plans were all wrong, with three of their plans.

    python -m benchmarks.shapeworld_plan_signal --n 3 --temperature 1.0
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

GROUP = 8


def explained_share(right: np.ndarray, reward: np.ndarray) -> float:
    """(B, G) bool, (B, G) -> mean over groups of the variance of each sample's class mean (right or
    wrong plan), over the mean within-group variance: how much of the spread plan correctness explains."""
    between = []
    for is_right, r in zip(right, reward):
        class_mean = np.where(is_right, r[is_right].mean() if is_right.any() else 0.0, r[~is_right].mean() if (~is_right).any() else 0.0)
        between.append(class_mean.var())
    return float(np.mean(between) / reward.var(1).mean())


def main(argv: list[str] | None = None) -> None:
    from t2i_r1.shapeworld.grammar import prompt_set
    from t2i_r1.shapeworld.model import DEFAULT_ASSET, evaluate_policy, load_policy
    from t2i_r1.shapeworld.phrasing import TRAIN_FAMILIES
    from t2i_r1.shapeworld.protocol import phrasing_group

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_ASSET))
    parser.add_argument("--temperature", type=float, default=1.0, help="plan sampling temperature")
    parser.add_argument("--n", type=int, default=3, help="prompts per category and training phrasing family")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    policy = load_policy(args.model)
    prompts = prompt_set("train", args.n, seed=100, families=TRAIN_FAMILIES)  # the demo's prompts at --seed 0
    t0 = time.time()
    r = evaluate_policy(policy, prompts, samples=GROUP, seed=1, plan_temperature=args.temperature)
    right = np.array(r.plan_scores).reshape(-1, GROUP) == 1  # (B, G)
    partial = np.array(r.partials).reshape(-1, GROUP)  # (B, G)
    success = np.array(r.scores).reshape(-1, GROUP)  # (B, G)
    rate = right.mean(1)  # (B,)
    mixed = (rate > 0) & (rate < 1)
    print(f"{len(prompts)} prompts x {GROUP} plans, plan temperature {args.temperature:g} ({time.time() - t0:.0f}s)")
    print(f"plans right {right.mean():.3f}, success {success.mean():.3f}, partial reward {partial.mean():.3f}")
    print(f"groups: all wrong {(rate == 0).mean():.2f}, mixed {mixed.mean():.2f} ({mixed.sum()} of {len(rate)}), "
          f"all right {(rate == 1).mean():.2f}")
    gap = {name: np.mean([v[g][right[g]].mean() - v[g][~right[g]].mean() for g in np.flatnonzero(mixed)])
           for name, v in (("partial", partial), ("success", success))}
    print(f"mixed groups, right minus wrong plans: partial reward {gap['partial']:+.3f}, success {gap['success']:+.3f}")
    print(f"within-group reward variance explained by plan correctness: {explained_share(right, partial):.0%}")
    for group in dict.fromkeys(phrasing_group(p) for p in prompts):
        v = rate[[phrasing_group(p) == group for p in prompts]]
        print(f"{group:<20} prompts {len(v):3d}  plans right {v.mean():.3f}  all wrong {(v == 0).mean():.2f}  "
              f"all right {(v == 1).mean():.2f}")
    print("\nprompts whose plans were all wrong:")
    for g in np.flatnonzero(rate == 0)[:14]:
        print(f"[{prompts[g].phrasing}/{prompts[g].category}] {prompts[g].text!r}\n"
              f"    plans: {sorted(set(r.plans[g * GROUP : (g + 1) * GROUP]))[:3]}")


if __name__ == "__main__":
    main()

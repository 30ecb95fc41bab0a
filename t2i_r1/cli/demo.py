"""``t2i-r1 demo`` (``make demo``): BiCoT-GRPO improving the packaged ShapeWorld Janus on a CPU.

Scores the model with the ShapeWorld protocol, trains it for ``--steps`` steps (``shapeworld.demo``:
the reward, training prompts and settings, and why they differ from the paper), scores it again and
prints before/after tables; grids, numbers and the trained checkpoint go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from t2i_r1.cli.options import add_model_argument, add_runtime_arguments

REWARD_CHOICES = ("exact", "partial")
"""``--reward``: the keys of ``shapeworld.demo.REWARDS`` (kept here so that ``--help`` imports nothing heavy)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, what="checkpoint to train")
    parser.add_argument("--out", default="runs/demo", help="directory for grids, log and results.json")
    parser.add_argument("--mode", default="bicot", choices=["bicot", "semantic", "token"], help="training mode (ablation)")
    parser.add_argument("--steps", type=int, default=600, help="BiCoT-GRPO steps")
    parser.add_argument("--per-cell", type=int, default=6, help="held-out prompts per category and phrasing family")
    parser.add_argument("--samples", type=int, default=2, help="images per held-out prompt")
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("--group", type=int, default=8, help="plans per prompt (the GRPO group is group x images-per-plan)")
    parser.add_argument("--images-per-plan", type=int, default=1,
                        help="images drawn from each plan; a plan's update follows the mean advantage of its images")
    parser.add_argument("--plan-temperature", type=float, default=1.0,
                        help="plan sampling temperature in training rollouts (held-out scoring stays at 1)")
    parser.add_argument("--train-prompts", type=int, default=10,
                        help="distinct training prompts per category and training phrasing family")
    parser.add_argument("--reward", default="partial", choices=REWARD_CHOICES,
                        help="partial: share of the evaluator's checks passed; exact: 1 if all pass (the score reported)")
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--beta", type=float, default=0.0, help="KL weight (paper: 0.01; 0 skips the reference passes)")
    parser.add_argument("--scale-rewards", default="group", choices=["group", "none"],
                        help="group: advantages divided by the group's reward std (the paper); none: centred only (Dr. GRPO)")
    parser.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance, in training and evaluation")
    parser.add_argument("--logprob-mode", default="guided", choices=["conditional", "guided"],
                        help="image log-probs trained: the conditional branch, or the CFG mix that was sampled")
    parser.add_argument("--plan-weight", type=float, default=16.0,
                        help="!= 1: segment-weighted loss, plan part x this, image part x 1 (1: the paper's token mean)")
    parser.add_argument("--train-generation", action="store_true",
                        help="also train the generation embeddings, aligner and head (the paper freezes them)")
    parser.add_argument("--lora-r", type=int, default=0, help="> 0: train LoRA adapters of this rank (alpha 2r) instead of all weights")
    parser.add_argument("--iterations", type=int, default=1,
                        help="optimisation passes per batch of rollouts (GRPO's mu; > 1 uses the clipped ratio)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (prompts drawn, rollouts sampled)")
    parser.add_argument("--eval-seed", type=int, default=0,
                        help="held-out sample and its sampling seed; fixed by default so training seeds compare")
    add_runtime_arguments(parser)



def run(args: argparse.Namespace) -> None:
    import torch

    from t2i_r1.shapeworld.demo import compare, expected_spread, run_grpo, save_grid, tables_of
    from t2i_r1.shapeworld.model import DEFAULT_ASSET, load_policy
    from t2i_r1.shapeworld.protocol import Protocol, print_table

    torch.set_num_threads(args.threads)
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = str(args.model or DEFAULT_ASSET)
    policy = load_policy(model_dir)
    protocol = Protocol(per_cell=args.per_cell, samples=args.samples, seed=args.eval_seed, guidance=args.guidance)
    prompts = protocol.prompts()
    use_plan = args.mode != "token"
    print(f"held-out: {protocol.describe()}", flush=True)
    before = protocol.evaluate(policy, use_plan=use_plan, prompts=prompts)
    print(f"before: overall {100 * before.table()['overall']:.1f}% ({time.time() - t0:.0f}s)", flush=True)
    save_grid(before, out / "before.png")
    training = run_grpo(policy, model_dir, args)
    after = protocol.evaluate(policy, use_plan=use_plan, prompts=prompts)
    save_grid(after, out / "after.png")
    policy.save_pretrained(out / "model")  # the trained checkpoint: t2i-r1 shapeworld eval --model it
    tables = compare(tables_of(before), tables_of(after))
    print(f"\nBiCoT-GRPO ({args.mode}), {training['steps']} steps in {training['seconds']:.0f}s; held-out, exact evaluator:")
    for name, table in tables.items():
        print()
        print_table(table, first=name)
    spread = expected_spread(model_dir)
    if spread:
        print("\n" + spread)
    wall = time.time() - t0
    print(f"\ntotal wall time {wall:.0f}s; grids: {out / 'before.png'}, {out / 'after.png'}; trained model: {out / 'model'}")
    (out / "results.json").write_text(json.dumps(
        {"tables": tables, "protocol": protocol.to_dict(), "training": training, "wall_seconds": wall, "args": vars(args)},
        indent=2, default=str,
    ) + "\n")

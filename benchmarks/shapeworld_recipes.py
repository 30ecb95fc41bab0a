"""The paper's baselines in miniature on ShapeWorld: SFT, SFT then RL, RL only and an external planner,
next to the base model; and the exploration potential that explains why SFT before RL can hurt.

Rows, each scored on the same held-out prompts with the same sampling seeds, once per seed:
- ``base``: the packaged ShapeWorld Janus, its own plans.
- ``SFT``: ``t2i_r1.train.sft.SFTTrainer`` from the packaged model on rendered training triples
  (``recipes.write_triples``: exact images, each with the plan of its scene).
- ``SFT -> RL``: the demo's BiCoT-GRPO (``demo.run_grpo``) from that SFT model.
- ``RL``: the same BiCoT-GRPO from the packaged model.
- ``planner + base``: plans from a separate small ``LlamaForCausalLM`` (``recipes.train_planner``),
  images from the packaged Janus (``generate_rollouts(..., external_plans=...)``).
Tables: held-out success rate and share of plans that satisfy the prompt (``check_plan``), mean +- std
over seeds per category; exploration potential (``t2i_r1.analysis.exploration_potential``): the
within-group std of ShapeWorld's partial reward over ``--group`` samples of a prompt, for base, SFT,
RL and SFT -> RL.

    python -m benchmarks.shapeworld_recipes --seeds 3 --per-cell 6 --samples 2 --sft-steps 200 \
        --steps 600 --planner-steps 1500 --threads 1 --json runs/shapeworld-recipes/results.json

    python -m benchmarks.shapeworld_recipes --smoke      # every row at toy size, about a minute

Choices: the triples are written once (``--triples-per-cell``, seed 0) and shared by the seeds;
each seed reshuffles SFT, seeds RL and the planner, and samples the evaluation with its own seed.
``--planner DIR`` reuses a trained planner instead of training one per seed. Not run by the tests
beyond ``--smoke``-size budgets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

SMOKE = {
    "seeds": 2, "per_cell": 1, "samples": 1, "sft_steps": 2, "sft_batch": 2, "triples_per_cell": 1,
    "steps": 1, "group": 2, "prompts_per_step": 1, "planner_steps": 3, "planner_examples": 64,
    "explore_per_category": 1,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from t2i_r1.cli.demo import add_arguments as demo_arguments

    demo_arguments(parser)  # the RL and protocol knobs of the demo (--steps, --lr, --group, --per-cell, ...)
    parser.set_defaults(out="runs/shapeworld-recipes")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per row (seed, seed + 1, ...)")
    parser.add_argument("--sft-steps", type=int, default=200)
    parser.add_argument("--sft-lr", type=float, default=5e-5)
    parser.add_argument("--sft-batch", type=int, default=8)
    parser.add_argument("--triples-per-cell", type=int, default=8,
                        help="SFT triples per category and training phrasing family")
    parser.add_argument("--planner-steps", type=int, default=1500, help="planner training steps per seed")
    parser.add_argument("--planner-examples", type=int, default=10_000)
    parser.add_argument("--planner", default=None, help="a trained planner directory to use for every seed")
    parser.add_argument("--explore-per-category", type=int, default=4,
                        help="held-out prompts per category for the exploration potential (--group samples each)")
    parser.add_argument("--json", default=None, help="also write all numbers here")
    parser.add_argument("--smoke", action="store_true", help="toy budgets for every row (explicit flags win): " + ", ".join(f"{k}={v}" for k, v in SMOKE.items()))


def print_rows(title: str, rows: dict[str, list[dict[str, float]]], scale: float = 100.0, digits: int = 1) -> None:
    rows = {name: tables for name, tables in rows.items() if tables}
    if not rows:
        return
    categories = list(next(iter(rows.values()))[0])
    print(f"\n{title}")
    print(f"{'':<16}" + "".join(f"{c:>14}" for c in categories))
    for name, tables in rows.items():
        cells = []
        for c in categories:
            values = [scale * t[c] for t in tables]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.{digits}f}+-{sd:<.{digits}f}")
        print(f"{name:<16}" + "".join(f"{cell:>14}" for cell in cells))


def main(argv: list[str] | None = None) -> dict:
    from t2i_r1.analysis import exploration_potential
    from t2i_r1.data import PromptRecord
    from t2i_r1.rewards.ensemble import RewardEnsemble
    from t2i_r1.rewards.programmatic import ProgrammaticReward
    from t2i_r1.rollout.sampling import ImageSamplingConfig, PlanSamplingConfig
    from t2i_r1.train.sft import SFTConfig, SFTTrainer
    from t2i_r1.shapeworld.demo import run_grpo
    from t2i_r1.shapeworld.evaluator import partial_reward, summarize
    from t2i_r1.shapeworld.grammar import CATEGORIES, prompt_set
    from t2i_r1.shapeworld.model import DEFAULT_ASSET, evaluate_policy, load_policy
    from t2i_r1.shapeworld.recipes import PlannerConfig, load_planner, train_planner, write_triples
    from t2i_r1.shapeworld.protocol import Protocol
    from t2i_r1.train.config import ModelConfig, OptimConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    if parser.parse_args(argv).smoke:  # toy budgets become the defaults; flags given explicitly still win
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    log = lambda s: print(s, flush=True)
    out = Path(args.out)
    model_dir = str(args.model or DEFAULT_ASSET)
    use_plan = args.mode != "token"  # the RL rows are scored the way they were trained
    held = Protocol(per_cell=args.per_cell, samples=args.samples, guidance=args.guidance).prompts()
    explore_prompts = prompt_set("heldout", args.explore_per_category, seed=0)  # the plain wording
    triples = write_triples(out / "triples", args.triples_per_cell, seed=0)
    log(f"{len(held)} held-out prompts x {args.samples}; triples: {triples} ({time.time() - t0:.0f}s)")
    rewards = RewardEnsemble({"shapeworld": ProgrammaticReward(partial_reward, name="shapeworld")})
    plan_cfg = PlanSamplingConfig(max_new_tokens=64)
    image_cfg = ImageSamplingConfig(guidance_scale=args.guidance)

    names = ("base", "SFT", "SFT -> RL", "RL", "planner + base")
    rows: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    plan_rows: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    explore: dict[str, list[dict[str, float]]] = {n: [] for n in ("base", "SFT", "SFT -> RL", "RL")}
    training: dict[str, list[dict]] = {"SFT": [], "SFT -> RL": [], "RL": [], "planner": []}

    def record(name: str, result, seed: int) -> None:
        rows[name].append(result.table())
        if result.plans[0] is not None:
            plan_rows[name].append(summarize([p.category for p in held for _ in range(args.samples)], result.plan_scores))
        log(f"{name} seed {seed}: overall {100 * rows[name][-1]['overall']:.1f}% ({time.time() - t0:.0f}s)")

    def score(name: str, policy, seed: int, plans: bool = True) -> None:
        record(name, evaluate_policy(policy, held, use_plan=plans, samples=args.samples, seed=seed + 1,
                                     guidance_scale=args.guidance), seed)

    def potential(name: str, policy, seed: int, plans: bool = True) -> None:
        table = {}
        for category in CATEGORIES:
            records = [PromptRecord(p.text, p.metadata()) for p in explore_prompts if p.category == category]
            table[category] = exploration_potential(
                policy, records, rewards, group_size=args.group, use_plan=plans, plan_config=plan_cfg,
                image_config=image_cfg, seed=seed + 2,
            )["shapeworld"]
        table["overall"] = statistics.mean(table.values())
        explore[name].append(table)

    def rl(policy, seed: int, tag: str) -> dict:
        run_args = argparse.Namespace(**{**vars(args), "seed": seed, "out": str(out / f"seed{seed}" / tag)})
        return run_grpo(policy, model_dir, run_args, log=lambda s: None)

    base = load_policy(model_dir)
    for seed in range(args.seed, args.seed + args.seeds):
        score("base", base, seed)
        potential("base", base, seed)

        policy = load_policy(model_dir)
        sft = SFTTrainer(SFTConfig(
            model=ModelConfig(path=model_dir), data=str(triples), output_dir=str(out / f"seed{seed}" / "sft"),
            optim=OptimConfig(lr=args.sft_lr), steps=args.sft_steps, batch_size=args.sft_batch, seed=seed,
            save_every=0, resume=False, log_every=0,
        ), policy=policy)
        start = time.time()
        while sft.step < args.sft_steps:
            stats = sft.train_step()
        policy.model.eval()
        training["SFT"].append({"steps": sft.step, "seconds": time.time() - start, **stats})
        score("SFT", policy, seed)
        potential("SFT", policy, seed)
        training["SFT -> RL"].append(rl(policy, seed, "sft-rl"))
        score("SFT -> RL", policy, seed, use_plan)
        potential("SFT -> RL", policy, seed, use_plan)

        policy = load_policy(model_dir)
        training["RL"].append(rl(policy, seed, "rl"))
        score("RL", policy, seed, use_plan)
        potential("RL", policy, seed, use_plan)
        del policy, sft

        planner_dir = args.planner
        if planner_dir is None:
            planner_dir = out / f"seed{seed}" / "planner"
            config = PlannerConfig(steps=args.planner_steps, examples=args.planner_examples, seed=seed)
            training["planner"].append(train_planner(planner_dir, config, log=lambda s: None))
        record("planner + base", evaluate_policy(
            base, held, planner=load_planner(planner_dir), samples=args.samples, seed=seed + 1,
            guidance_scale=args.guidance,
        ), seed)

    print_rows(f"Held-out success rate (%), mean +- std over {args.seeds} seeds; {len(held)} prompts x {args.samples} images", rows)
    print_rows("Plans that satisfy their prompt (check_plan, %)", plan_rows)
    print_rows(f"Exploration potential: within-group std of the partial reward, G = {args.group}, "
               f"{len(explore_prompts)} prompts", explore, scale=1.0, digits=3)
    for name, runs in training.items():
        if runs:
            steps = [r["steps"] for r in runs]
            print(f"{name}: steps {steps}, {statistics.mean(r.get('seconds', r.get('train_seconds', 0)) for r in runs):.0f}s each")
    print(f"\ntotal {time.time() - t0:.0f}s")
    results = {"rows": rows, "plan_rows": plan_rows, "exploration": explore, "training": training,
               "seconds": time.time() - t0, "args": vars(args)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


if __name__ == "__main__":
    main()

"""The reference-exact recipe against our defaults on ShapeWorld, over seeds (docs/reference-differences.md).

Two configurations of the same BiCoT-GRPO run on a ShapeWorld checkpoint, trained once per seed and
scored on the same held-out prompts with the same sampling seed:
- ``ours``: ``configs/recipes/rl_shapeworld.yaml``, the demo's settings (guided image log-probs, the
  plan part of the loss weighted 16x, no KL pass, constant learning rate; the committed results were
  measured when the file weighted it 4x).
- ``reference-exact``: the same file with the math of ``configs/recipes/reference_exact_7b.yaml`` laid
  over it (``REFERENCE_MATH`` below: conditional image log-probs, one update per rollout, the paper's
  token mean, rewards summed then normalised, beta 0.01, plans sampled with top-k 50, the learning rate
  decaying linearly to 0). ShapeWorld's reward is its exact evaluator, so the reward behaviour of the
  7B recipe (GroundingDINO, GIT, ORM) has nothing to act on here; model size, learning rate, guidance,
  group and prompts per step stay ShapeWorld's.

    python -m benchmarks.reference_exact_shapeworld --model DIR --seeds 3 --steps 600 --per-cell 10 \
        --samples 2 --threads 2 --json benchmarks/results/reference_exact_shapeworld.json
    # 2 configurations x 3 seeds x 600 steps: 89 minutes on 2 CPU cores, 755-882 s of training per run
    # (measured; results and analysis in docs/reference-differences.md)

Training prompts: ``--train-prompts`` per category and training phrasing family
(``prompt_set("train", n, seed=100 + seed, families=TRAIN_FAMILIES)``, as the demo draws them). Work is bounded by ``--steps``; the time is reported, never a budget.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
OURS_RECIPE = REPO / "configs" / "recipes" / "rl_shapeworld.yaml"
REFERENCE_RECIPE = REPO / "configs" / "recipes" / "reference_exact_7b.yaml"
# The entries of the reference-exact recipe that are its math (the rest is Janus-Pro-7B's scale and rewards).
REFERENCE_MATH = ("grpo", "rollout.plan.top_k", "rollout.image.logprob_mode", "optim.scheduler", "optim.warmup_steps")


def reference_math_overrides(recipe: Path = REFERENCE_RECIPE) -> list[str]:
    """``key.sub=value`` overrides of the ``REFERENCE_MATH`` entries, read from the 7B recipe (one home)."""
    tree = yaml.safe_load(recipe.read_text())
    out = []
    for entry in REFERENCE_MATH:
        node = tree
        for part in entry.split("."):
            node = node[part]
        items = node.items() if isinstance(node, dict) else [(None, node)]
        for key, value in items:
            name = entry if key is None else f"{entry}.{key}"
            out.append(f"{name}={json.dumps(value)}")
    return out


def configs(args: argparse.Namespace, seed: int, prompts: Path) -> dict:
    """{"ours": TrainConfig, "reference-exact": TrainConfig} for one seed."""
    from t2i_r1.config_io import load_config
    from t2i_r1.train.config import TrainConfig

    common = [f"model.path={args.model}", f"data={prompts}", f"steps={args.steps}", f"seed={seed}",
              "save_every=0", "image_log_every=0", "resume=false", f"prompts_per_step={args.prompts_per_step}",
              f"rollout.plans_per_prompt={args.group}", f"micro_batch_size={args.prompts_per_step * args.group}"]
    if args.lr is not None:
        common.append(f"optim.lr={args.lr}")
    out = {}
    for name, extra in (("ours", []), ("reference-exact", reference_math_overrides())):
        where = Path(args.out) / f"{name}-seed{seed}"
        out[name] = load_config(TrainConfig, OURS_RECIPE, [*common, f"output_dir={where}", *extra])
    return out


def evaluate(policy, args: argparse.Namespace, guidance: float) -> dict[str, float]:
    """Held-out success per category under the ShapeWorld protocol (``t2i_r1.shapeworld.protocol``)."""
    from t2i_r1.shapeworld.protocol import Protocol

    protocol = Protocol(per_cell=args.per_cell, samples=args.samples, seed=args.eval_seed, guidance=guidance)
    return protocol.evaluate(policy).table()


def train_and_score(config, args: argparse.Namespace) -> dict:
    from t2i_r1.train.trainer import BiCoTGRPOTrainer

    trainer = BiCoTGRPOTrainer(config)
    start, rewards = time.time(), []
    while trainer.step < config.steps:
        rewards.append(trainer.train_step(trainer.prompts_for_step(trainer.step)).stats["reward/total"])
    seconds = time.time() - start
    trainer.policy.model.eval()
    return {"steps": trainer.step, "seconds": round(seconds, 1), "train_reward": rewards,
            "table": evaluate(trainer.policy, args, config.rollout.image.guidance_scale)}


def main(argv: list[str] | None = None) -> dict:
    from benchmarks.shapeworld_recipes import print_rows
    from t2i_r1.shapeworld.model import DEFAULT_ASSET, load_policy
    from t2i_r1.shapeworld.recipes import write_prompts

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_ASSET), help="ShapeWorld checkpoint (default: the packaged one)")
    parser.add_argument("--out", default="runs/reference-exact-shapeworld")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0 .. N-1")
    parser.add_argument("--steps", type=int, default=600, help="BiCoT-GRPO steps per run (the demo's 600)")
    parser.add_argument("--group", type=int, default=8, help="plans per prompt (the recipe's 8)")
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("--train-prompts", type=int, default=10,
                        help="training prompts per category and training phrasing family (the demo's 10)")
    parser.add_argument("--lr", type=float, default=None, help="default: the ShapeWorld recipe's (3e-5), for both")
    parser.add_argument("--per-cell", type=int, default=10, help="held-out prompts per category and phrasing family (the protocol's 10)")
    parser.add_argument("--samples", type=int, default=2, help="images per held-out prompt")
    parser.add_argument("--eval-seed", type=int, default=0, help="held-out sample and its sampling seed, shared by every row")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write every number here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    print("reference-exact math laid over the ShapeWorld recipe: " + " ".join(reference_math_overrides()), flush=True)

    base = evaluate(load_policy(args.model), args, guidance=3.0)
    rows: dict[str, list[dict[str, float]]] = {"base": [base], "ours": [], "reference-exact": []}
    runs: dict[str, list[dict]] = {"ours": [], "reference-exact": []}
    for seed in range(args.seeds):
        prompts = write_prompts(Path(args.out) / f"prompts-seed{seed}.jsonl", args.train_prompts, seed=100 + seed)
        for name, config in configs(args, seed, prompts).items():
            result = train_and_score(config, args)
            runs[name].append({"seed": seed, **result})
            rows[name].append(result["table"])
            print(f"{name} seed {seed}: {result['steps']} steps in {result['seconds']:.0f}s, held-out overall "
                  f"{100 * result['table']['overall']:.1f}% ({time.time() - t0:.0f}s)", flush=True)
    print_rows(f"Held-out success rate (%), mean +- std over {args.seeds} seeds ({args.per_cell} prompts per "
               f"category and phrasing family x {args.samples} images, eval seed {args.eval_seed}):", rows)
    print(f"\ntotal {time.time() - t0:.0f}s")
    results = {"rows": rows, "runs": runs, "reference_math": reference_math_overrides(), "args": vars(args)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()

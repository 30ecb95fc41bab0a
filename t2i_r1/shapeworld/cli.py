"""``t2i-r1 shapeworld pretrain|eval|prompts|triples|planner``: pretrain the ShapeWorld Janus from scratch,
score a checkpoint, write training prompts or SFT triples, or train a separate planner.

    t2i-r1 shapeworld pretrain --out runs/shapeworld-base            # VQ then LM, 40 min on 2 cores (LM too short there: README)
    t2i-r1 shapeworld eval --model t2i_r1/assets/shapeworld          # held-out, with and without plans
    t2i-r1 shapeworld prompts --out runs/sw-prompts.jsonl            # prompts + ground truth for t2i-r1 train
    t2i-r1 shapeworld triples --out runs/sw-triples --per-category 50   # images/ + triples.jsonl (SFT data)
    t2i-r1 shapeworld planner --out runs/sw-planner --minutes 3      # a LlamaForCausalLM for ExternalPlanner

The same recipes as for real checkpoints then run through the generic commands:
``t2i-r1 sft configs/recipes/sft_shapeworld.yaml``, ``t2i-r1 train configs/recipes/rl_shapeworld.yaml``,
``t2i-r1 train configs/recipes/sft_then_rl_shapeworld.yaml``; ``benchmarks/shapeworld_recipes.py`` runs
SFT, RL and the planner over seeds in one table.

Also runnable as ``python -m t2i_r1.shapeworld.cli ...`` (the device scripts do that).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="shapeworld_command", required=True, metavar="SUBCOMMAND")
    p = sub.add_parser("pretrain", help="train the VQ tokenizer and the language model from scratch")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--minutes", type=float, default=27.0, help="language-model budget in wall-clock minutes")
    p.add_argument("--vq-minutes", type=float, default=15.0, help="VQ budget in wall-clock minutes")
    p.add_argument("--examples", type=int, default=12_000, help="training examples for the language model")
    p.add_argument("--batch", type=int, default=32, help="language-model batch size")
    p.add_argument("--lr", type=float, default=2e-3, help="language-model peak learning rate (warmup, then cosine)")
    p.add_argument("--vq-batch", type=int, default=16, help="VQ batch size")
    p.add_argument("--eval-every", type=float, default=5.0, help="minutes between held-out evaluations")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=1, help="processes drawing training scenes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snapshot-dir", default=None,
                   help="also write vq.safetensors and lm-<step>.safetensors (trained weights) at each evaluation")
    e = sub.add_parser("eval", help="score a checkpoint on held-out prompts, with and without plans")
    e.add_argument("--model", default=None, help="checkpoint directory (default: the packaged one)")
    e.add_argument("--per-category", type=int, default=20, help="held-out prompts per category")
    e.add_argument("--samples", type=int, default=2, help="images per prompt")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--json", default=None, help="also write the tables to this file")
    pr = sub.add_parser("prompts", help="write prompts with their ground truth (JSON lines) for t2i-r1 train")
    pr.add_argument("--out", required=True, help="file to write (.jsonl)")
    pr.add_argument("--per-category", type=int, default=60, help="prompts per category")
    pr.add_argument("--seed", type=int, default=100, help="100 draws the demo's training prompts")
    pr.add_argument("--split", default="train", choices=["train", "heldout"])
    t = sub.add_parser("triples", help="render training scenes and write triples.jsonl (image, prompt, exact plan) for SFT")
    t.add_argument("--out", required=True, help="directory for images/ and triples.jsonl")
    t.add_argument("--per-category", type=int, default=50, help="prompts per category")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--split", default="train", choices=["train", "heldout"])
    pl = sub.add_parser("planner", help="train a small separate planner (LlamaForCausalLM) on prompt -> plan")
    pl.add_argument("--out", required=True, help="directory to save the planner (model, tokenizer, reasoning.txt)")
    pl.add_argument("--minutes", type=float, default=3.0, help="training budget in wall-clock minutes")
    pl.add_argument("--steps", type=int, default=None, help="fixed number of steps (reproducible; overrides --minutes)")
    pl.add_argument("--examples", type=int, default=10_000, help="training examples drawn once")
    pl.add_argument("--batch", type=int, default=32)
    pl.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (warm-up, then cosine)")
    pl.add_argument("--hidden", type=int, default=128)
    pl.add_argument("--layers", type=int, default=2)
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--eval-per-category", type=int, default=10, help="held-out prompts per category for plan accuracy")
    pl.add_argument("--threads", type=int, default=2)


def print_table(tables: dict[str, dict[str, float]], file=None) -> None:
    """Rows = categories (then overall), one column per table; ``file`` defaults to the *current*
    ``sys.stdout`` (not the one at import time, which a redirection may since have closed)."""
    file = file or sys.stdout
    names = list(tables)
    rows = [r for r in next(iter(tables.values())) if r != "overall"] + ["overall"]
    print(f"{'category':<11}" + "".join(f"{n:>14}" for n in names), file=file)
    for r in rows:
        print(f"{r:<11}" + "".join(f"{100 * tables[n].get(r, float('nan')):>13.1f}%" for n in names), file=file)


def _pretrain(args: argparse.Namespace) -> None:
    import torch
    from safetensors.torch import save_file

    from t2i_r1.shapeworld.model import ShapeWorldModelSpec
    from t2i_r1.shapeworld.pretrain import TRAINED_PREFIXES, LMTrainConfig, VQTrainConfig, pretrain

    torch.set_num_threads(args.threads)
    log = lambda s: print(s, flush=True)
    snapshot = Path(args.snapshot_dir) if args.snapshot_dir else None
    lm = LMTrainConfig(minutes=args.minutes, examples=args.examples, batch=args.batch, eval_every_minutes=args.eval_every,
                       lr=args.lr, seed=args.seed, workers=args.workers)
    vq = VQTrainConfig(minutes=args.vq_minutes, batch=args.vq_batch, seed=args.seed, workers=args.workers)

    def on_stage(policy, stage: str, step: int) -> None:
        if snapshot is None:
            return
        snapshot.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in policy.model.state_dict().items()}
        if stage == "vq":
            save_file({k: v for k, v in state.items() if k.startswith("model.vqmodel.")}, snapshot / "vq.safetensors")
        else:
            save_file({k: v for k, v in state.items() if k.startswith(TRAINED_PREFIXES)}, snapshot / f"lm-{step:06d}.safetensors")

    pretrain(args.out, spec=ShapeWorldModelSpec(seed=args.seed), vq=vq, lm=lm, log=log, device=args.device,
             on_stage=on_stage)


def _eval(args: argparse.Namespace) -> None:
    import torch

    from t2i_r1.shapeworld.grammar import prompt_set
    from t2i_r1.shapeworld.model import DEFAULT_ASSET, evaluate_policy, load_policy

    torch.set_num_threads(args.threads)
    policy = load_policy(args.model or DEFAULT_ASSET)
    prompts = prompt_set("heldout", args.per_category, seed=args.seed)
    tables, t0 = {}, time.time()
    for name, use_plan in (("with plan", True), ("without plan", False)):
        result = evaluate_policy(policy, prompts, use_plan=use_plan, samples=args.samples, seed=args.seed,
                                 guidance_scale=args.guidance)
        tables[name] = result.table()
        if use_plan:
            tables["plan correct"] = _plan_table(prompts, result.plan_scores, args.samples)
    print(f"held-out: {len(prompts)} prompts x {args.samples} images ({time.time() - t0:.0f}s)")
    print_table(tables)
    if args.json:
        Path(args.json).write_text(json.dumps(tables, indent=2) + "\n")


def _plan_table(prompts, scores, samples):
    from t2i_r1.shapeworld.evaluator import summarize

    return summarize([p.category for p in prompts for _ in range(samples)], scores)


def _prompts(args: argparse.Namespace) -> None:
    from t2i_r1.shapeworld.recipes import write_prompts

    path = write_prompts(args.out, args.per_category, seed=args.seed, split=args.split)
    print(f"wrote {sum(1 for _ in path.open())} {args.split} prompts to {path}")


def _triples(args: argparse.Namespace) -> None:
    from t2i_r1.shapeworld.recipes import write_triples

    path = write_triples(args.out, args.per_category, seed=args.seed, split=args.split)
    n = sum(1 for line in path.read_text().splitlines() if line.strip())
    print(f"wrote {n} triples to {path}")


def _planner(args: argparse.Namespace) -> None:
    import torch

    from t2i_r1.shapeworld.grammar import prompt_set
    from t2i_r1.shapeworld.recipes import PlannerConfig, train_planner

    torch.set_num_threads(args.threads)
    config = PlannerConfig(hidden=args.hidden, layers=args.layers, intermediate=4 * args.hidden, steps=args.steps,
                           minutes=args.minutes, examples=args.examples, batch=args.batch, lr=args.lr, seed=args.seed)
    held = prompt_set("heldout", args.eval_per_category, seed=0) if args.eval_per_category > 0 else None
    summary = train_planner(args.out, config, eval_prompts=held, log=lambda s: print(s, flush=True))
    if "plan_accuracy" in summary:
        print_table({"plan correct": summary["plan_accuracy"]})
    print(f"saved {args.out} ({summary['steps']} steps, {summary['train_seconds']:.0f}s of training)")


def run(args: argparse.Namespace) -> None:
    commands = {"pretrain": _pretrain, "eval": _eval, "prompts": _prompts, "triples": _triples, "planner": _planner}
    commands[args.shapeworld_command](args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="t2i-r1 shapeworld")
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

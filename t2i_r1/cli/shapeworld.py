"""``t2i-r1 shapeworld pretrain|eval|prompts|triples|planner|extend-vocab|expose``: pretrain the ShapeWorld
Janus from scratch, score a checkpoint, write training prompts or SFT triples, train a separate planner,
give a checkpoint the words of every phrasing family, or continue its pretraining with the RL families'
prompts as prompt -> image rows (their words get a meaning; no plan is taught on them).

    t2i-r1 shapeworld pretrain --out runs/shapeworld-base            # VQ, LM, exposure; bounded by steps (docs/shapeworld.md)
    t2i-r1 shapeworld eval --model t2i_r1/assets/shapeworld          # held-out, with and without plans
    t2i-r1 shapeworld prompts --out runs/sw-prompts.jsonl            # prompts + ground truth for t2i-r1 train
    t2i-r1 shapeworld triples --out runs/sw-triples --per-cell 8     # images/ + triples.jsonl (SFT data)
    t2i-r1 shapeworld planner --out runs/sw-planner --steps 1500     # a LlamaForCausalLM for ExternalPlanner
    t2i-r1 shapeworld extend-vocab --model OLD --out NEW             # new words as copies of <unk>
    t2i-r1 shapeworld expose --model OLD --out NEW                   # 600 steps, RL families image-only

The same recipes as for real checkpoints then run through the generic commands:
``t2i-r1 sft configs/recipes/sft_shapeworld.yaml``, ``t2i-r1 train configs/recipes/rl_shapeworld.yaml``,
``t2i-r1 train configs/recipes/sft_then_rl_shapeworld.yaml``; ``benchmarks/shapeworld_recipes.py`` runs
SFT, RL and the planner over seeds in one table.

Also runnable as ``python -m t2i_r1.cli shapeworld ...``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from t2i_r1.cli.options import add_model_argument, add_runtime_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="shapeworld_command", required=True, metavar="SUBCOMMAND")
    p = sub.add_parser("pretrain", help="train the VQ tokenizer and the language model from scratch")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--steps", type=int, default=3900, help="language-model steps")
    p.add_argument("--vq-steps", type=int, default=2000,
                   help="most VQ steps (it stops earlier once reconstructions keep the evaluator's verdict)")
    p.add_argument("--minutes", type=float, default=None, help="optional wall-clock cap of the language model (off)")
    p.add_argument("--vq-minutes", type=float, default=None, help="optional wall-clock cap of the VQ (off)")
    p.add_argument("--examples", type=int, default=36_000, help="training examples for the language model")
    p.add_argument("--batch", type=int, default=128, help="language-model batch size")
    p.add_argument("--lr", type=float, default=2e-3, help="language-model peak learning rate (warmup, then cosine)")
    p.add_argument("--vq-batch", type=int, default=16, help="VQ batch size")
    p.add_argument("--eval-every", type=int, default=1000, help="steps between held-out evaluations (0: none)")
    p.add_argument("--image-only-families", nargs="*", default=[],
                   help="phrasing families taught only prompt -> image, never with a plan (default: none)")
    p.add_argument("--image-only-share", type=float, default=0.25,
                   help="share of the language model's examples worded by --image-only-families")
    add_exposure_arguments(p, prefix="expose-")  # the CPU recipe ends with it; --expose-steps 0 skips it
    p.add_argument("--device", default="cpu")
    add_runtime_arguments(p)
    p.add_argument("--workers", type=int, default=1, help="processes drawing training scenes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snapshot-dir", default=None,
                   help="also write vq.safetensors and lm-<step>.safetensors (trained weights) at each evaluation")
    e = sub.add_parser("eval", help="score a checkpoint on held-out prompts, with and without plans")
    add_model_argument(e)
    e.add_argument("--per-cell", type=int, default=10, help="held-out prompts per category and phrasing family")
    e.add_argument("--samples", type=int, default=2, help="images per prompt")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    add_runtime_arguments(e)
    e.add_argument("--json", default=None, help="also write the tables to this file")
    pr = sub.add_parser("prompts", help="write prompts with their ground truth (JSON lines) for t2i-r1 train")
    pr.add_argument("--out", required=True, help="file to write (.jsonl)")
    pr.add_argument("--per-cell", type=int, default=10, help="prompts per category and phrasing family")
    pr.add_argument("--families", nargs="+", default=None, help="phrasing families (default: the training families)")
    pr.add_argument("--seed", type=int, default=100, help="100 draws the demo's training prompts")
    pr.add_argument("--split", default="train", choices=["train", "heldout"])
    t = sub.add_parser("triples", help="render training scenes and write triples.jsonl (image, prompt, exact plan) for SFT")
    t.add_argument("--out", required=True, help="directory for images/ and triples.jsonl")
    t.add_argument("--per-cell", type=int, default=8, help="prompts per category and phrasing family")
    t.add_argument("--families", nargs="+", default=None, help="phrasing families (default: the training families)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--split", default="train", choices=["train", "heldout"])
    pl = sub.add_parser("planner", help="train a small separate planner (LlamaForCausalLM) on prompt -> plan")
    pl.add_argument("--out", required=True, help="directory to save the planner (model, tokenizer, reasoning.txt)")
    pl.add_argument("--steps", type=int, default=1500, help="training steps")
    pl.add_argument("--minutes", type=float, default=None,
                    help="instead of --steps: as many steps as fit this many minutes (depends on the machine's load)")
    pl.add_argument("--examples", type=int, default=10_000, help="training examples drawn once")
    pl.add_argument("--batch", type=int, default=32)
    pl.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (warm-up, then cosine)")
    pl.add_argument("--hidden", type=int, default=128)
    pl.add_argument("--layers", type=int, default=2)
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--eval-per-category", type=int, default=10, help="held-out prompts per category for plan accuracy")
    add_runtime_arguments(pl)
    x = sub.add_parser("extend-vocab", help="give a checkpoint's tokenizer every word of the phrasing families "
                       "(new words start as copies of <unk>, so behaviour is unchanged until training)")
    add_model_argument(x)
    x.add_argument("--out", required=True, help="directory to write the extended checkpoint to")
    xp = sub.add_parser("expose", help="continue a checkpoint's pretraining with the RL families' prompts as "
                        "prompt -> image rows only, beside the pretraining families' usual rows")
    add_model_argument(xp)
    xp.add_argument("--out", required=True, help="directory to write the exposed checkpoint to")
    add_exposure_arguments(xp)
    xp.add_argument("--seed", type=int, default=0)
    xp.add_argument("--device", default="cpu")
    add_runtime_arguments(xp)


EXPOSURE_FIELDS = {
    "steps": (int, "exposure steps: the RL families' prompts only as prompt -> image rows (0: none)"),
    "batch": (int, "exposure batch size"),
    "lr": (float, "exposure learning rate (constant after 20 warm-up steps)"),
    "examples": (int, "examples the exposure draws"),
    "share": (float, "share of them worded by the RL families"),
}
"""``ExposureConfig`` fields the commands expose; a flag left out keeps the config's default."""


def add_exposure_arguments(parser: argparse.ArgumentParser, prefix: str = "", **defaults) -> None:
    for name, (kind, text) in EXPOSURE_FIELDS.items():
        default = defaults.get(name)
        shown = "ExposureConfig's" if default is None else default
        parser.add_argument(f"--{prefix}{name}", type=kind, default=default, help=f"{text} (default: {shown})")


def exposure_config(args: argparse.Namespace, prefix: str = ""):
    from t2i_r1.shapeworld.pretrain import ExposureConfig

    given = {name: getattr(args, f"{prefix}{name}") for name in EXPOSURE_FIELDS}
    return ExposureConfig(seed=args.seed, **{k: v for k, v in given.items() if v is not None})


def _pretrain(args: argparse.Namespace) -> None:
    import torch
    from safetensors.torch import save_file

    from t2i_r1.shapeworld.model import ShapeWorldModelSpec
    from t2i_r1.shapeworld.pretrain import TRAINED_PREFIXES, LMTrainConfig, VQTrainConfig, pretrain

    torch.set_num_threads(args.threads)
    log = lambda s: print(s, flush=True)
    snapshot = Path(args.snapshot_dir) if args.snapshot_dir else None
    lm = LMTrainConfig(max_steps=args.steps, minutes=args.minutes, examples=args.examples, batch=args.batch,
                       eval_every=args.eval_every, lr=args.lr, seed=args.seed, workers=args.workers,
                       image_only_families=tuple(args.image_only_families), image_only_share=args.image_only_share)
    vq = VQTrainConfig(max_steps=args.vq_steps, minutes=args.vq_minutes, batch=args.vq_batch, seed=args.seed,
                       workers=args.workers)

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
             on_stage=on_stage, exposure=exposure_config(args, "expose_"))


def _eval(args: argparse.Namespace) -> None:
    import torch

    from t2i_r1.shapeworld.model import DEFAULT_ASSET, load_policy
    from t2i_r1.shapeworld.protocol import Protocol, print_table, report

    torch.set_num_threads(args.threads)
    policy = load_policy(args.model or DEFAULT_ASSET)
    protocol = Protocol(per_cell=args.per_cell, samples=args.samples, seed=args.seed, guidance=args.guidance)
    prompts = protocol.prompts()
    t0 = time.time()
    with_plan = protocol.evaluate(policy, use_plan=True, prompts=prompts)
    without_plan = protocol.evaluate(policy, use_plan=False, prompts=prompts)
    tables = {}
    for view in ("by category", "by phrasing"):
        tables[view] = {"with plan": report(prompts, with_plan.scores)[view],
                        "without plan": report(prompts, without_plan.scores)[view],
                        "plans right": report(prompts, with_plan.plan_scores)[view]}
    print(f"held-out: {protocol.describe()} ({time.time() - t0:.0f}s); exact evaluator, success rate")
    for view, table in tables.items():
        print()
        print_table(table, first=view)
    if args.json:
        Path(args.json).write_text(json.dumps({"protocol": protocol.to_dict(), **tables}, indent=2) + "\n")


def _families(args: argparse.Namespace) -> tuple[str, ...]:
    from t2i_r1.shapeworld.phrasing import TRAIN_FAMILIES

    return tuple(args.families) if args.families else TRAIN_FAMILIES


def _prompts(args: argparse.Namespace) -> None:
    from t2i_r1.shapeworld.recipes import write_prompts

    path = write_prompts(args.out, args.per_cell, seed=args.seed, split=args.split, families=_families(args))
    print(f"wrote {sum(1 for _ in path.open())} {args.split} prompts to {path}")


def _triples(args: argparse.Namespace) -> None:
    from t2i_r1.shapeworld.recipes import write_triples

    path = write_triples(args.out, args.per_cell, seed=args.seed, split=args.split, families=_families(args))
    n = sum(1 for line in path.read_text().splitlines() if line.strip())
    print(f"wrote {n} triples to {path}")


def _planner(args: argparse.Namespace) -> None:
    import torch

    from t2i_r1.shapeworld.grammar import prompt_set
    from t2i_r1.shapeworld.recipes import PlannerConfig, train_planner

    torch.set_num_threads(args.threads)
    budget = {"steps": None, "minutes": args.minutes} if args.minutes is not None else {"steps": args.steps}
    config = PlannerConfig(hidden=args.hidden, layers=args.layers, intermediate=4 * args.hidden, examples=args.examples,
                           batch=args.batch, lr=args.lr, seed=args.seed, **budget)
    held = prompt_set("heldout", args.eval_per_category, seed=0) if args.eval_per_category > 0 else None
    summary = train_planner(args.out, config, eval_prompts=held, log=lambda s: print(s, flush=True))
    if "plan_accuracy" in summary:
        from t2i_r1.shapeworld.protocol import print_table

        print_table({"plans right": summary["plan_accuracy"]})
    print(f"saved {args.out} ({summary['steps']} steps, {summary['train_seconds']:.0f}s of training)")


def _extend_vocab(args: argparse.Namespace) -> None:
    from t2i_r1.shapeworld.model import DEFAULT_ASSET, FORMAT_WORDS, extend_vocabulary, load_policy
    from t2i_r1.shapeworld.phrasing import vocabulary

    source = Path(args.model or DEFAULT_ASSET)
    policy = load_policy(source)
    added = extend_vocabulary(policy, [*vocabulary(), *FORMAT_WORDS])
    out = Path(args.out)
    policy.save_pretrained(out)
    _write_record(source, out, "vocabulary_extension", {"command": f"t2i-r1 shapeworld extend-vocab --model {source.name} --out DIR",
                                                        "added": added, "initialised_as": "<unk>"})
    print(f"saved {out}: {len(added)} words added ({' '.join(added) or 'none'})")


def _expose(args: argparse.Namespace) -> None:
    import torch

    from t2i_r1.shapeworld.model import DEFAULT_ASSET, load_policy
    from t2i_r1.shapeworld.pretrain import expose

    torch.set_num_threads(args.threads)
    source = Path(args.model or DEFAULT_ASSET)
    policy = load_policy(source)
    policy.model.to(args.device)
    config = exposure_config(args)
    summary = expose(policy, config, log=lambda s: print(s, flush=True))
    policy.model.to("cpu")
    out = Path(args.out)
    policy.save_pretrained(out)
    _write_record(source, out, "exposure", {"config": asdict(config), "result": summary, "device": args.device,
                                            "command": f"t2i-r1 shapeworld expose --model {source.name} --out DIR"})
    print(f"saved {out} ({summary['steps']} exposure steps in {summary['seconds']:.0f}s)")


def _write_record(source: Path, out: Path, key: str, entry: dict) -> None:
    """``out/pretrain.json``: the source's record with ``key`` set to ``entry`` (what was done to it)."""
    record_file = source / "pretrain.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    record[key] = entry
    (out / "pretrain.json").write_text(json.dumps(record, indent=1) + "\n")


def run(args: argparse.Namespace) -> None:
    commands = {"pretrain": _pretrain, "eval": _eval, "prompts": _prompts, "triples": _triples, "planner": _planner,
                "extend-vocab": _extend_vocab, "expose": _expose}
    commands[args.shapeworld_command](args)

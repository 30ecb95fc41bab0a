"""The paper's ablation in miniature on ShapeWorld: base / token-only / semantic-only / BiCoT-GRPO.

Each trained row runs the demo's BiCoT-GRPO (``t2i_r1.shapeworld.demo.run_grpo``: same reward, steps
and training prompts) from the checkpoint with ``rollout.mode`` set to ``token``, ``semantic`` or
``bicot``, once per training seed, and every row is scored with one ShapeWorld protocol
(``t2i_r1.shapeworld.protocol.Protocol``: the same held-out prompts and sampling seed). Token-only
draws images without plans (and is scored that way); the others plan first. The base rows do not
train, so they have one value; the protocol's own sampling noise is reported beside them (bootstrap
over held-out prompts). Gaps between rows come with their standard error (independent seeds).
Diversity: 16 images of one simple prompt per row, as the mean pairwise pixel distance and the
share of distinct detected layouts.

    python -m benchmarks.shapeworld_ablation --seeds 5 --jobs 2 --threads 1 --per-cell 10 --out runs/shapeworld_ablation

``--jobs N`` trains N (mode, seed) runs at once in separate processes (``--threads`` each); the
numbers do not depend on it. Every finished row entry is kept in ``OUT/rows/`` as it lands, so an
interrupted ablation rerun with the same ``--out`` and settings picks up where it stopped (a run
started with other settings refuses that folder). The tests run a one-step, one-seed version of it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import math
import multiprocessing
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from t2i_r1.utils.io import atomic_path

MODES = ("token", "semantic", "bicot")
ROWS = ("base, plan", "base, no plan", *MODES)
DIVERSITY_PROMPT = "a yellow circle and a red triangle"


def diversity(images: list[np.ndarray], prompt) -> dict[str, float]:
    """Mean pairwise mean-absolute pixel difference (0..1) and share of distinct detected layouts."""
    from t2i_r1.shapeworld.evaluator import evaluate

    arr = np.stack(images).astype(np.float32) / 255  # (N, S, S, 3)
    pairs = [float(np.abs(arr[i] - arr[j]).mean()) for i, j in itertools.combinations(range(len(arr)), 2)]
    layouts = {layout_key(evaluate(prompt, image).detections) for image in images}
    return {"pixel_distance": float(np.mean(pairs)), "distinct_layouts": len(layouts) / len(images)}


def layout_key(detections) -> tuple:
    """What two images with the same layout share: each object's attributes and its place on an 8 px grid.
    An attribute the detector could not read is None, kept apart from every read value ("")."""
    objects = ((tuple(sorted((k, v or "") for k, v in d.attributes().items())), tuple(int(c) // 8 for c in d.centre))
               for d in detections)
    return tuple(sorted(objects))


def protocol_of(args):
    from t2i_r1.shapeworld.protocol import Protocol

    return Protocol(per_cell=args.per_cell, samples=args.samples, seed=args.eval_seed, guidance=args.guidance)


def simple_prompt():
    from t2i_r1.shapeworld.grammar import ObjectSpec, Prompt

    return Prompt(DIVERSITY_PROMPT, "color", (ObjectSpec(shape="circle", color="yellow"), ObjectSpec(shape="triangle", color="red")))


def score_row(policy, args, use_plan: bool) -> dict:
    """Tables of one model under the protocol, the per-prompt scores (for the bootstrap) and diversity."""
    from t2i_r1.shapeworld.demo import tables_of
    from t2i_r1.shapeworld.model import evaluate_policy

    result = protocol_of(args).evaluate(policy, use_plan=use_plan)
    k = args.samples
    per_prompt = [float(np.mean(result.scores[i * k : (i + 1) * k])) for i in range(len(result.prompts))]
    simple = simple_prompt()
    div = evaluate_policy(policy, [simple], use_plan=use_plan, samples=args.diversity_samples, seed=99,
                          guidance_scale=args.guidance)
    return {"tables": tables_of(result), "per_prompt": per_prompt, "diversity": diversity(div.images, simple)}


def exit_with_parent(parent: int, every: float = 5.0) -> None:
    """Worker initializer: end this worker once the process that started it is gone. Ctrl-C reaches the
    whole process group, but ``kill PID`` of the ablation reaches only its own process, and its workers
    would train on as orphans, each holding a core."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def train_and_score(args: argparse.Namespace, mode: str, seed: int) -> dict:
    """One trained row entry: BiCoT-GRPO in ``mode`` from the checkpoint, then the protocol's tables."""
    from t2i_r1.shapeworld.demo import run_grpo
    from t2i_r1.shapeworld.model import load_policy

    torch.set_num_threads(args.threads)
    policy = load_policy(args.model_dir)
    run_args = argparse.Namespace(**{**vars(args), "mode": mode, "seed": seed,
                                     "out": str(Path(args.out) / f"{mode}-seed{seed}")})
    t0 = time.time()
    training = run_grpo(policy, args.model_dir, run_args, log=lambda s: None, progress=False)
    row = score_row(policy, args, mode != "token")
    return {"mode": mode, "seed": seed, "steps": training["steps"], "train_seconds": training["seconds"],
            "seconds": time.time() - t0, "reward_history": training["history"][-1:], **row}


SCORING_SETTINGS = ("model", "model_dir", "per_cell", "samples", "eval_seed", "guidance", "diversity_samples", "threads")
"""What a base row's numbers depend on: the checkpoint and the protocol, not the training knobs."""


def load_entry(path: Path, settings: dict, defaults: dict | None = None, keys: tuple[str, ...] | None = None) -> dict | None:
    """The row entry stored at ``path`` (None if there is none); one measured under other settings is refused.

    ``keys``: compare only these settings (a base row does not depend on training knobs). ``defaults``: the
    value of a setting that a row stored before the setting existed was measured with (the option's default)."""
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    then = {**(defaults or {}), **stored["settings"]}
    if keys is not None:
        then, settings = ({k: v for k, v in d.items() if k in keys} for d in (then, settings))
    if then != settings:
        raise SystemExit(f"{path} was measured with other settings; use another --out or delete it\n"
                         f"  stored: {then}\n  now:    {settings}")
    return stored["entry"]


def store_entry(path: Path, settings: dict, entry: dict) -> dict:
    """Keep ``entry`` at ``path`` atomically (an interrupted run never leaves half an entry behind)."""
    with atomic_path(path) as tmp:  # keys in their order: the tables' columns follow it
        tmp.write_text(json.dumps({"settings": settings, "entry": entry}, indent=1))
    return entry


def bootstrap_se(per_prompt: list[float], categories: list[str], draws: int = 1000, seed: int = 0) -> float:
    """Standard error (points) of the overall score from resampling held-out prompts within categories:
    the protocol's own sampling noise, with the model fixed."""
    rng = np.random.default_rng(seed)
    by_cat: dict[str, np.ndarray] = {}
    for c in dict.fromkeys(categories):
        by_cat[c] = np.asarray([v for v, cc in zip(per_prompt, categories) if cc == c])
    overall = []
    for _ in range(draws):
        overall.append(np.mean([rng.choice(v, size=len(v)).mean() for v in by_cat.values()]))
    return 100 * float(np.std(overall))


def summary(values: list[float]) -> dict[str, float]:
    n = len(values)
    sd = statistics.stdev(values) if n > 1 else 0.0
    return {"mean": statistics.mean(values), "std": sd, "se": sd / math.sqrt(n), "n": n}


def has_view(entries: list[dict], measure: str, view: str) -> bool:
    """Whether every entry of a row has this table (rows stored before a view existed lack it)."""
    return all(view in e["tables"].get(measure, {}) for e in entries)


def format_report(rows: dict[str, list[dict]], protocol_text: str, eval_se: float, args) -> str:
    """The tables: success per category, per phrasing group and by plan, plans right and diversity, each
    row mean +- std over training seeds [standard error]; then the gaps between rows."""
    lines = [f"Held-out success rate (%), {protocol_text}; trained rows: mean +- std [standard error] over "
             f"{args.seeds} training seeds, {args.steps} steps each; base rows: one model "
             f"(protocol sampling noise: SE {eval_se:.1f} points on overall, bootstrap over prompts)"]
    views = (("success", "by category"), ("success", "by phrasing"), ("success", "by plan"),
             ("plans right", "by category"), ("plans right", "by phrasing"))
    for measure, view in views:
        shown = {name: entries for name, entries in rows.items() if has_view(entries, measure, view)}
        if not shown:
            continue
        first = next(iter(shown.values()))[0]["tables"][measure][view]
        keys = [k for k in first if k != "overall"] + (["overall"] if "overall" in first else [])
        lines += ["", f"{measure}, {view}", f"{'':<15}" + "".join(f"{k:>24}" for k in keys)]
        for name, entries in shown.items():
            cells = []
            for k in keys:
                s = summary([100 * e["tables"][measure][view][k] for e in entries])
                cells.append(f"{s['mean']:.1f}+-{s['std']:.1f} [{s['se']:.1f}]" if s["n"] > 1 else f"{s['mean']:.1f}")
            lines.append(f"{name:<15}" + "".join(f"{c:>24}" for c in cells))
    lines += ["", f"diversity on {DIVERSITY_PROMPT!r} ({args.diversity_samples} images per model; "
                  "trained rows: mean (lowest-highest) over training seeds)"]
    for name, entries in rows.items():
        cells = []
        for key, scale, digits in (("pixel_distance", 1, 3), ("distinct_layouts", 100, 0)):
            values = [scale * e["diversity"][key] for e in entries]
            spread = f" ({min(values):.{digits}f}-{max(values):.{digits}f})" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.{digits}f}{spread}")
        lines.append(f"{name:<15} pixel distance {cells[0]}   distinct layouts (%) {cells[1]}")
    lines += ["", "gaps in overall success (points): gap, its standard error (seeds independent), gap / SE"]
    for a, b in (("bicot", "base, plan"), ("bicot", "semantic"), ("semantic", "token"), ("token", "base, no plan")):
        if a not in rows or b not in rows:  # a run of some modes only (--modes)
            continue
        sa, sb = (summary([100 * e["tables"]["success"]["by category"]["overall"] for e in rows[r]]) for r in (a, b))
        se = math.sqrt(sa["se"] ** 2 + sb["se"] ** 2 + (eval_se**2 if min(sa["n"], sb["n"]) == 1 else 0.0))
        gap = sa["mean"] - sb["mean"]
        lines.append(f"{a} - {b}: {gap:+.1f}, SE {se:.1f}, {gap / se if se else float('inf'):.1f} SE")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from t2i_r1.cli.demo import add_arguments as demo_arguments
    from t2i_r1.shapeworld.model import DEFAULT_ASSET, load_policy

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo_arguments(parser)  # the demo's training and protocol knobs (--steps, --lr, --per-cell, ...)
    parser.set_defaults(per_cell=20, out="runs/shapeworld_ablation")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1, help="training runs at once, each in its own process")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--diversity-samples", type=int, default=16)
    parser.add_argument("--write-spread", default=None,
                        help="write the BiCoT row's change over the base (mean, std over seeds) to this JSON file "
                             "(the demo prints it when it sits in the checkpoint as seed_spread.json)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    torch.set_num_threads(args.threads)
    args.model_dir = str(args.model or DEFAULT_ASSET)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    protocol = protocol_of(args)
    t0 = time.time()

    # what decides an entry's numbers (not --jobs, --out or --seeds: more seeds reuse the finished ones)
    def decisive(namespace: argparse.Namespace) -> dict:
        return json.loads(json.dumps(
            {k: v for k, v in vars(namespace).items() if k not in ("jobs", "out", "seeds", "modes", "write_spread")}, default=str))

    settings, defaults = decisive(args), decisive(parser.parse_args([]))
    rows_dir = out / "rows"
    base_files = {"base, plan": (rows_dir / "base-plan.json", True), "base, no plan": (rows_dir / "base-no-plan.json", False)}
    rows: dict[str, list[dict]] = {name: [load_entry(path, settings, defaults, SCORING_SETTINGS)]
                                     for name, (path, _) in base_files.items()}
    if any(entries[0] is None for entries in rows.values()):
        base = load_policy(args.model_dir)
        for name, (path, use_plan) in base_files.items():
            if rows[name][0] is None:
                rows[name] = [store_entry(path, settings, score_row(base, args, use_plan))]
    prompts = protocol.prompts()
    eval_se = bootstrap_se(rows["base, plan"][0]["per_prompt"], [p.category for p in prompts])
    print(f"base: {100 * rows['base, plan'][0]['tables']['success']['by category']['overall']:.1f}% with plan, "
          f"{100 * rows['base, no plan'][0]['tables']['success']['by category']['overall']:.1f}% without "
          f"({time.time() - t0:.0f}s)", flush=True)

    def run_file(mode: str, seed: int) -> Path:
        return rows_dir / f"{mode}-seed{seed}.json"

    stored = {(mode, seed): load_entry(run_file(mode, seed), settings, defaults) for mode in args.modes for seed in range(args.seeds)}
    results = [entry for entry in stored.values() if entry is not None]
    todo = [run for run, entry in stored.items() if entry is None]
    if results:
        print(f"resuming: {len(results)} of {len(stored)} runs already measured in {rows_dir}", flush=True)
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(train_and_score, args, mode, seed) for mode, seed in todo]
        for future in concurrent.futures.as_completed(futures):
            r = future.result()
            results.append(store_entry(run_file(r["mode"], r["seed"]), settings, r))
            print(f"{r['mode']} seed {r['seed']}: {r['steps']} steps in {r['train_seconds']:.0f}s, overall "
                  f"{100 * r['tables']['success']['by category']['overall']:.1f}% ({time.time() - t0:.0f}s)", flush=True)
    for mode in args.modes:
        rows[mode] = sorted((r for r in results if r["mode"] == mode), key=lambda r: r["seed"])
    text = format_report(rows, protocol.describe(), eval_se, args)
    text += f"\n\ntotal {time.time() - t0:.0f}s"
    print("\n" + text)
    (out / "report.txt").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(
        {"rows": {k: [{kk: vv for kk, vv in e.items() if kk != "per_prompt"} for e in v] for k, v in rows.items()},
         "protocol": protocol.to_dict(), "eval_se": eval_se, "args": vars(args)}, indent=2, default=str) + "\n")
    if args.write_spread and "bicot" in rows:
        base_overall = 100 * rows["base, plan"][0]["tables"]["success"]["by category"]["overall"]
        changes = [100 * e["tables"]["success"]["by category"]["overall"] - base_overall for e in rows["bicot"]]
        s = summary(changes)
        command = "python -m benchmarks.shapeworld_ablation " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.write_spread).write_text(json.dumps(
            {"seeds": s["n"], "mean": s["mean"], "std": s["std"], "changes": changes, "command": command}, indent=2) + "\n")


if __name__ == "__main__":
    main()

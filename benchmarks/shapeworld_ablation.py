"""The paper's ablation in miniature on ShapeWorld: base / token-only / semantic-only / BiCoT-GRPO.

Each trained row runs the demo's BiCoT-GRPO (``t2i_r1.shapeworld.demo.run_grpo``, same reward,
budget and prompts) from the committed checkpoint with ``rollout.mode`` set to ``token``, ``semantic``
or ``bicot``, once per seed, and is scored on the same held-out prompts; the table prints the mean and
standard deviation over seeds per category. Token-only draws images without plans (and is evaluated
that way); the others plan first. Diversity: images for one simple prompt, base vs each trained mode,
measured as the mean pairwise pixel distance and the share of distinct detected layouts.

    python -m benchmarks.shapeworld_ablation --seeds 3 --minutes 6     # about 1 hour on 2 cores
    python -m benchmarks.shapeworld_ablation --seeds 3 --jobs 2 --threads 1   # two runs at a time

``--jobs N`` trains N (mode, seed) runs at once in separate processes (``--threads`` each); the
numbers do not depend on it.

Not run by the tests.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import numpy as np
import torch

MODES = ("token", "semantic", "bicot")


def diversity(images: list[np.ndarray], prompt) -> dict[str, float]:
    """Mean pairwise mean-absolute pixel difference (0..1) and share of distinct detected layouts."""
    from t2i_r1.shapeworld.evaluator import evaluate

    arr = np.stack(images).astype(np.float32) / 255  # (N, S, S, 3)
    pairs = [float(np.abs(arr[i] - arr[j]).mean()) for i, j in itertools.combinations(range(len(arr)), 2)]
    layouts = set()
    for image in images:
        dets = evaluate(prompt, image).detections
        layouts.add(tuple(sorted((tuple(sorted(d.attributes().items())), tuple(int(c) // 8 for c in d.centre)) for d in dets)))
    return {"pixel_distance": float(np.mean(pairs)), "distinct_layouts": len(layouts) / len(images)}


def held_out(args):
    """The held-out prompts every row is scored on, and the simple prompt of the diversity figure."""
    from t2i_r1.shapeworld.grammar import prompt_set

    return prompt_set("heldout", args.per_category, seed=0), prompt_set("heldout", 1, seed=0, categories=("color",))[0]


def score(policy, held, args, use_plan: bool, seed: int) -> dict[str, float]:
    from t2i_r1.shapeworld.model import evaluate_policy

    return evaluate_policy(policy, held, use_plan=use_plan, samples=args.samples, seed=seed + 1,
                           guidance_scale=args.guidance).table()


def diverse(policy, simple, args, use_plan: bool) -> dict[str, float]:
    from t2i_r1.shapeworld.model import evaluate_policy

    r = evaluate_policy(policy, [simple], use_plan=use_plan, samples=args.diversity_samples, seed=99,
                        guidance_scale=args.guidance)
    return diversity(r.images, simple)


def train_and_score(args: argparse.Namespace, mode: str, seed: int) -> dict:
    """One trained row entry: BiCoT-GRPO in ``mode`` from the checkpoint, then the held-out table (and the
    diversity of the last seed's model)."""
    from t2i_r1.shapeworld.demo import run_grpo
    from t2i_r1.shapeworld.model import load_policy

    torch.set_num_threads(args.threads)
    held, simple = held_out(args)
    policy = load_policy(args.model_dir)
    run_args = argparse.Namespace(**{**vars(args), "mode": mode, "seed": seed,
                                     "out": str(Path(args.out) / f"{mode}-seed{seed}")})  # one log per run
    training = run_grpo(policy, args.model_dir, run_args, log=lambda s: None)
    out = {"mode": mode, "seed": seed, "steps": training["steps"],
           "table": score(policy, held, args, mode != "token", seed)}
    if seed == args.seeds - 1:
        out["diversity"] = diverse(policy, simple, args, mode != "token")
    return out


def main(argv: list[str] | None = None) -> None:
    from t2i_r1.shapeworld.demo import add_arguments as demo_arguments
    from t2i_r1.shapeworld.model import DEFAULT_ASSET, load_policy

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo_arguments(parser)  # same training knobs as the demo (--steps, --minutes, --lr, --group, ...)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="training runs at once, each in its own process")
    parser.add_argument("--diversity-samples", type=int, default=16)
    parser.add_argument("--json", default=None, help="also write all numbers here")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    torch.set_num_threads(args.threads)
    args.model_dir = str(args.model or DEFAULT_ASSET)
    held, simple = held_out(args)
    t0 = time.time()

    base = load_policy(args.model_dir)
    rows: dict[str, list[dict[str, float]]] = {
        "base (plan)": [score(base, held, args, True, s) for s in range(args.seeds)],
        "base (no plan)": [score(base, held, args, False, s) for s in range(args.seeds)],
    }
    div = {"base (plan)": diverse(base, simple, args, True), "base (no plan)": diverse(base, simple, args, False)}
    runs = [(mode, seed) for mode in MODES for seed in range(args.seeds)]
    results = []
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_and_score, args, mode, seed) for mode, seed in runs]
        for future in concurrent.futures.as_completed(futures):
            r = future.result()
            results.append(r)
            print(f"{r['mode']} seed {r['seed']}: {r['steps']} steps, overall {100 * r['table']['overall']:.1f}% "
                  f"({time.time() - t0:.0f}s)", flush=True)
    for mode in MODES:
        mine = sorted((r for r in results if r["mode"] == mode), key=lambda r: r["seed"])
        rows[mode] = [r["table"] for r in mine]
        div[mode] = mine[-1]["diversity"]  # the last seed's model

    categories = list(rows["base (plan)"][0])
    print(f"\nHeld-out success rate (%), mean +- std over {args.seeds} seeds; {len(held)} prompts x {args.samples} images")
    print(f"{'':<16}" + "".join(f"{c:>14}" for c in categories))
    for name, tables in rows.items():
        cells = []
        for c in categories:
            values = [100 * t[c] for t in tables]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):7.1f}+-{sd:<5.1f}")
        print(f"{name:<16}" + "".join(f"{cell:>14}" for cell in cells))
    print(f"\nDiversity on {simple.text!r} ({args.diversity_samples} images)")
    for name, d in div.items():
        print(f"{name:<16} pixel distance {d['pixel_distance']:.3f}   distinct layouts {100 * d['distinct_layouts']:.0f}%")
    print(f"\ntotal {time.time() - t0:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "diversity": div, "args": vars(args)}, indent=2, default=str))


if __name__ == "__main__":
    main()

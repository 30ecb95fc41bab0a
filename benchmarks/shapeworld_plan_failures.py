"""Why plans fail, and what the images drawn from them score: a breakdown of the protocol's plans.

For each model, the ShapeWorld protocol's held-out prompts are planned and drawn as in
``t2i-r1 shapeworld eval``; each plan is classified by ``grammar.plan_failure`` (right, unparseable,
objects wrong, a relation with an unplaced object, a relation wrong) and the table gives, per category,
the share of plans of each kind and the success of the images drawn from them. Comparing a model before
and after RL shows whether a fall in plans right is plans that get objects wrong or plans that stop
placing them, and whether the images from unplaced plans still get the layout right (drawn from the prompt).

    python -m benchmarks.shapeworld_plan_failures --model shapeworld runs/demo/model --per-cell 10 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def breakdown(prompts, plans, scores) -> dict[str, dict]:
    """Per category and "overall": plans of each kind (share, %), success of their images (%) and plan words."""
    from t2i_r1.shapeworld.grammar import PLAN_FAILURES, plan_failure

    groups: dict[str, list[tuple[str, float, int]]] = defaultdict(list)
    for i, (plan, score) in enumerate(zip(plans, scores)):
        prompt = prompts[i * len(prompts) // len(plans)]
        entry = (plan_failure(prompt, plan), score, sum(w != ";" for w in plan.split()))
        groups[prompt.category].append(entry)
    groups["overall"] = [entry for entries in list(groups.values()) for entry in entries]
    out = {}
    for name, entries in groups.items():
        row = {"plans": len(entries), "words": float(np.mean([w for _, _, w in entries]))}
        for kind in PLAN_FAILURES:
            hits = [s for k, s, _ in entries if k == kind]
            row[kind] = {"share": 100 * len(hits) / len(entries), "success": 100 * float(np.mean(hits)) if hits else None}
        out[name] = row
    return out


def format_table(name: str, table: dict[str, dict]) -> str:
    from t2i_r1.shapeworld.grammar import PLAN_FAILURES

    def cell(v: dict) -> str:
        success = "  -  " if v["success"] is None else f"{v['success']:5.1f}"
        return f"{v['share']:5.1f} ({success})"

    lines = [f"{name}: share of plans % (success of their images %)",
             f"{'category':10s} {'words':>5s} " + " ".join(f"{k:>13s}" for k in PLAN_FAILURES)]
    for category, row in table.items():
        lines.append(f"{category:10s} {row['words']:5.1f} " + " ".join(f"{cell(row[k]):>13s}" for k in PLAN_FAILURES))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import torch

    from t2i_r1.bundled import resolve_model
    from t2i_r1.shapeworld.model import load_policy
    from t2i_r1.shapeworld.protocol import Protocol

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=["shapeworld"], help="checkpoints, each scored on the same prompts and seeds")
    parser.add_argument("--per-cell", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the tables here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    protocol = Protocol(per_cell=args.per_cell, samples=args.samples)
    tables = {}
    for model in args.model:
        result = protocol.evaluate(load_policy(resolve_model(model)))
        tables[model] = breakdown(result.prompts, result.plans, result.scores)
        print(format_table(model, tables[model]) + "\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"protocol": protocol.to_dict(), "tables": tables,
                                               "command": " ".join(argv if argv is not None else sys.argv[1:])}, indent=2) + "\n")


if __name__ == "__main__":
    main()

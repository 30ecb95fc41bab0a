"""Side-by-side step timing: the reference step script and ours, run alternately (A B A B ...).

Each round runs ``reference_step.py`` and ``python -m benchmarks.step`` once each as subprocesses with
the same preset and flags; every run prints one JSON line with its median seconds per step and per
phase. On a shared machine absolute times drift by several x within minutes, so only ratios of runs
made side by side mean anything: this prints, per phase, the median over rounds of each side's
per-run median and the ratio reference / ours, as a Markdown table and as one JSON line. The CPU
seconds of each whole process (imports, model build, warm-up and timed steps) are reported too: with
``--threads 1`` they move far less than wall time when other jobs share the cores.

Phase map (reference -> ours):
    cot_gen                -> plan_sampling
    img_gen                -> image_sampling
    cot_logp + img_logp    -> reference_logprob + logprob (+ old_logprob)   (teacher-forced passes)
    decode                 -> decode
    reward                 -> reward
    update                 -> update + advantage   (the reference computes advantages in its update)

    python -m benchmarks.compare_step --rounds 3 -- --size medium --steps 3
    python -m benchmarks.compare_step --rounds 3 --ours-args="--kernel-floor" -- --size medium --steps 3

With ``--kernel-floor`` among our flags, each row also gets our kernel floor (seconds inside the
matrix-product, attention and convolution kernels, see ``benchmarks/step.py``) and the ceiling
reference / floor: the most any implementation doing our arithmetic could gain on that phase.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = ROOT.parent / "shared" / "bench" / "reference_step.py"
PHASES = {  # row name: (reference phases, our phases)
    "plan sampling": (("cot_gen",), ("plan_sampling",)),
    "image sampling": (("img_gen",), ("image_sampling",)),
    "log-probs (policy + reference)": (("cot_logp", "img_logp"), ("reference_logprob", "logprob", "old_logprob")),
    "decode": (("decode",), ("decode",)),
    "reward": (("reward",), ("reward",)),
    "update": (("update",), ("update", "advantage")),
}


def run_json(command: list[str], env: dict[str, str]) -> dict:
    """Run one benchmark process and return the JSON object on its last stdout line, plus the CPU
    seconds the process used (whole run: imports, model build and warm-up step included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1])
    result["process_cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)
    return result


def phase_seconds(result: dict, names: tuple[str, ...]) -> float:
    return sum(result["phases"].get(n, 0.0) for n in names)


def _with_floor(row: dict, reference_s: float, floors: list[float] | None) -> dict:
    if floors:
        f = statistics.median(floors)
        row.update(kernel_floor_s=round(f, 4), ceiling=round(reference_s / f, 2) if f > 0 else None)
    return row


def summarise(reference: list[dict], ours: list[dict]) -> dict:
    """Median over runs per side, per mapped phase and for the whole step; ratio = reference / ours.
    Rows get ``kernel_floor_s`` and ``ceiling`` when our runs carry ``kernel_seconds``."""
    profiled = all("kernel_seconds" in x for x in ours)
    rows = {}
    for row, (ref_names, our_names) in PHASES.items():
        r = statistics.median(phase_seconds(x, ref_names) for x in reference)
        o = statistics.median(phase_seconds(x, our_names) for x in ours)
        floors = [sum(x["kernel_seconds"].get(n, 0.0) for n in our_names) for x in ours] if profiled else None
        rows[row] = _with_floor({"reference_s": round(r, 4), "ours_s": round(o, 4),
                                 "ratio": round(r / o, 2) if o > 0 else None}, r, floors)
    r = statistics.median(x["sec_per_step_median"] for x in reference)
    o = statistics.median(x["sec_per_step_median"] for x in ours)
    floors = [x["kernel_seconds_total"] for x in ours] if profiled else None
    rows["whole step"] = _with_floor({"reference_s": round(r, 4), "ours_s": round(o, 4), "ratio": round(r / o, 2)},
                                     r, floors)
    per_round = [round(a["sec_per_step_median"] / b["sec_per_step_median"], 2) for a, b in zip(reference, ours)]
    r_cpu = statistics.median(x["process_cpu_s"] for x in reference)
    o_cpu = statistics.median(x["process_cpu_s"] for x in ours)
    rows["process CPU s (whole run)"] = {"reference_s": r_cpu, "ours_s": o_cpu, "ratio": round(r_cpu / o_cpu, 2)}
    return {
        "phases": rows,
        "step_ratio_per_round": per_round,
        "peak_rss_mb": {"reference": max(x["peak_rss_mb"] for x in reference),
                        "ours": max(x["peak_rss_mb"] for x in ours)},
        "lm_passes_per_step": {"reference": reference[0].get("lm_passes_per_step"),
                               "ours": ours[0].get("lm_passes_per_step")},
    }


def markdown(summary: dict) -> str:
    profiled = any("ceiling" in v for v in summary["phases"].values())
    extra = " our kernel floor s | ceiling: reference / floor |" if profiled else ""
    lines = ["| phase | reference s | ours s | reference / ours |" + extra, "|---|---|---|---|" + "---|---|" * profiled]
    times = lambda x: "n/a" if x is None else f"{x:.2f}x"
    for row, v in summary["phases"].items():
        name = f"**{row}**" if row == "whole step" else row
        line = f"| {name} | {v['reference_s']:.3f} | {v['ours_s']:.3f} | {times(v['ratio'])} |"
        if "kernel_floor_s" in v:
            line += f" {v['kernel_floor_s']:.3f} | {times(v['ceiling'])} |"
        elif profiled:
            line += " | |"
        lines.append(line)
    rss = summary["peak_rss_mb"]
    lines.append(f"| peak RSS (MB) | {rss['reference']:.0f} | {rss['ours']:.0f} | "
                 f"{rss['reference'] / rss['ours']:.2f}x |" + " | |" * profiled)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        cut = argv.index("--")
        argv, shared = argv[:cut], argv[cut + 1 :]
    else:
        shared = []
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog="flags after -- go to both scripts (e.g. -- --size medium --steps 3)")
    p.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="path of reference_step.py")
    p.add_argument("--rounds", type=int, default=3, help="A B pairs to run")
    p.add_argument("--python", default=sys.executable, help="interpreter for both scripts")
    p.add_argument("--ours-args", default="", help="extra flags for benchmarks.step only (e.g. '--device cuda')")
    p.add_argument("--reference-args", default="", help="extra flags for the reference script only")
    p.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for our runs only (repeatable)")
    a = p.parse_args(argv)
    if not a.reference.is_file():
        raise SystemExit(f"--reference: no reference script at {a.reference}")
    if a.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    ref_cmd = [a.python, str(a.reference), *shared, *a.reference_args.split()]
    our_cmd = [a.python, "-m", "benchmarks.step", *shared, *a.ours_args.split()]
    env = dict(os.environ)
    our_env = dict(env, **dict(kv.split("=", 1) for kv in a.ours_env))
    reference, ours = [], []
    started = time.perf_counter()
    for i in range(a.rounds):
        reference.append(run_json(ref_cmd, env))
        ours.append(run_json(our_cmd, our_env))
        print(f"round {i + 1}/{a.rounds}: reference {reference[-1]['sec_per_step_median']:.3f} s/step, "
              f"ours {ours[-1]['sec_per_step_median']:.3f} s/step", file=sys.stderr, flush=True)
    summary = summarise(reference, ours)
    summary.update(command={"reference": " ".join(ref_cmd), "ours": " ".join(our_cmd), "ours_env": a.ours_env},
                   rounds=a.rounds, wall_s=round(time.perf_counter() - started, 1),
                   runs={"reference": reference, "ours": ours})
    print(markdown(summary))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

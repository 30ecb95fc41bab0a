"""The ShapeWorld ablation benchmark end to end at one step and one seed, its resume, and its workers' lifetime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t2i_r1.shapeworld.model import DEFAULT_ASSET

needs_asset = pytest.mark.skipif(not (DEFAULT_ASSET / "config.json").is_file(), reason="needs the packaged ShapeWorld model")


@needs_asset
def test_ablation_runs_reports_and_resumes(tmp_path, capsys):
    from benchmarks import shapeworld_ablation

    out = tmp_path / "abl"
    spread = tmp_path / "seed_spread.json"
    argv = ["--steps", "1", "--seeds", "1", "--modes", "bicot", "--per-cell", "1", "--samples", "1",
            "--prompts-per-step", "1", "--group", "2", "--diversity-samples", "2", "--threads", "1",
            "--out", str(out), "--write-spread", str(spread)]
    shapeworld_ablation.main(argv)
    first = capsys.readouterr().out
    assert "bicot seed 0: 1 steps" in first and "gaps in overall success" in first
    stored = sorted(p.name for p in (out / "rows").iterdir())
    assert stored == ["base-no-plan.json", "base-plan.json", "bicot-seed0.json"]
    results = json.loads((out / "results.json").read_text())
    assert set(results["rows"]) == {"base, plan", "base, no plan", "bicot"}
    assert json.loads(spread.read_text())["seeds"] == 1

    # Rerun with the same settings: nothing is trained or scored again, the report is the same.
    before = {p.name: p.stat().st_mtime_ns for p in (out / "rows").iterdir()}
    shapeworld_ablation.main(argv)
    second = capsys.readouterr().out
    assert "resuming: 1 of 1 runs already measured" in second
    assert {p.name: p.stat().st_mtime_ns for p in (out / "rows").iterdir()} == before

    def report(text):
        return text[text.index("Held-out success rate"):text.index("total")]

    assert report(second) == report(first)

    # Other settings refuse the folder rather than mixing measurements.
    with pytest.raises(SystemExit, match="measured with other settings"):
        shapeworld_ablation.main([*argv, "--lr", "1e-4"])

    # A row stored before a setting existed was measured with that setting's default: it still resumes.
    bicot = out / "rows" / "bicot-seed0.json"
    entry = json.loads(bicot.read_text())
    del entry["settings"]["images_per_plan"]
    bicot.write_text(json.dumps(entry))
    shapeworld_ablation.main(argv)
    assert "resuming: 1 of 1 runs already measured" in capsys.readouterr().out

    # The base rows depend on the checkpoint and the protocol only: other training knobs reuse them.
    other = tmp_path / "other"
    (other / "rows").mkdir(parents=True)
    for name in ("base-plan.json", "base-no-plan.json"):
        (other / "rows" / name).write_bytes((out / "rows" / name).read_bytes())
    (other / "rows" / "bicot-seed0.json").write_bytes(bicot.read_bytes())
    with pytest.raises(SystemExit, match="bicot-seed0.json was measured with other settings"):  # not base-*.json
        shapeworld_ablation.main([*argv[:-4], "--out", str(other), "--lr", "1e-4"])


def test_demo_rollout_switches_reach_the_train_config():
    import argparse

    from t2i_r1.cli.demo import add_arguments
    from t2i_r1.shapeworld.demo import train_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    default = train_config("m", parser.parse_args([]))
    assert (default.rollout.images_per_plan, default.rollout.plan.temperature) == (1, 1.0)
    cfg = train_config("m", parser.parse_args(["--images-per-plan", "2", "--group", "4", "--plan-temperature", "1.3"]))
    assert (cfg.rollout.plans_per_prompt, cfg.rollout.images_per_plan, cfg.rollout.plan.temperature) == (4, 2, 1.3)
    assert cfg.rollout.group_size == cfg.micro_batch_size // cfg.prompts_per_step == 8  # whole groups per micro-batch


def test_report_gives_every_seeds_diversity_and_plans_right_overall():
    """Diversity is a mean with its range over the training seeds (not the last seed's model), and plans
    right is reported per category with its overall, the figure the README quotes."""
    import argparse

    from benchmarks.shapeworld_ablation import format_report

    def entry(success: float, plans: float, distance: float, layouts: float) -> dict:
        return {"tables": {"success": {"by category": {"color": success, "overall": success}},
                           "plans right": {"by category": {"color": plans, "overall": plans}}},
                "diversity": {"pixel_distance": distance, "distinct_layouts": layouts}}

    rows = {"base, plan": [entry(0.10, 0.60, 0.075, 1.0)],
            "bicot": [entry(0.30, 0.50, 0.060, 0.75), entry(0.34, 0.70, 0.070, 1.0)]}
    text = format_report(rows, "a protocol", 1.2, argparse.Namespace(seeds=2, steps=5, diversity_samples=16))
    lines = text.splitlines()
    plans = lines[lines.index("plans right, by category") + 1:]
    assert plans[1].split()[:2] == ["base,", "plan"] and plans[1].split()[-1] == "60.0"
    assert plans[2].split() == ["bicot", "60.0+-14.1", "[10.0]", "60.0+-14.1", "[10.0]"]
    diversity = next(line for line in lines if line.startswith("bicot") and "pixel distance" in line)
    assert diversity.split()[1:] == ["pixel", "distance", "0.065", "(0.060-0.070)", "distinct", "layouts", "(%)",
                                     "88", "(75-100)"]
    base = next(line for line in lines if line.startswith("base, plan") and "pixel distance" in line)
    assert base.endswith("pixel distance 0.075   distinct layouts (%) 100")
    assert "bicot - base, plan: +22.0" in text


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
def test_workers_do_not_outlive_a_killed_ablation(tmp_path):
    """``kill -9`` of the ablation's process ends its training workers too instead of orphaning them."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import concurrent.futures, multiprocessing, os, time\n"
        "from benchmarks.shapeworld_ablation import exit_with_parent\n"
        "if __name__ == '__main__':\n"
        "    ctx = multiprocessing.get_context('spawn')\n"
        "    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx, initializer=exit_with_parent,\n"
        "                                                initargs=(os.getpid(), 0.05)) as pool:\n"
        "        print(pool.submit(os.getpid).result(), flush=True)\n"
        "        pool.submit(time.sleep, 600)\n"
        "        time.sleep(600)\n"
    )
    root = Path(__file__).resolve().parents[1]
    parent = subprocess.Popen([sys.executable, str(script)], cwd=root, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(root)})
    worker = int(parent.stdout.readline())
    assert running(worker)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 30
    while running(worker) and time.time() < deadline:
        time.sleep(0.1)
    if running(worker):
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its killed parent")


def test_layout_key_orders_objects_whose_shape_the_detector_could_not_read():
    from benchmarks.shapeworld_ablation import layout_key
    from t2i_r1.shapeworld.evaluator import Detection

    def det(shape, cx):
        return Detection(shape=shape, color="red", texture="solid", size="small", cx=cx, cy=20.0,
                         box=(0, 0, 1, 1), area=30, fill=1.0, coverage=1.0)

    unread, circle = det(None, 20.0), det("circle", 20.0)
    assert layout_key([unread, circle]) == layout_key([circle, unread])
    assert layout_key([unread]) != layout_key([circle])
    assert layout_key([det("circle", 20.0)]) != layout_key([det("circle", 40.0)])

"""The ShapeWorld ablation benchmark end to end at one step and one seed, and its resume."""

from __future__ import annotations

import json

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

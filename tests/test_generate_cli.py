"""``t2i-r1 generate`` end to end on a tiny checkpoint, and its errors."""

import json

import pytest
from PIL import Image

from t2i_r1.cli import main


def test_generate_writes_images_jsonl_and_grid(tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    rc = main(["generate", "--model", str(tiny_checkpoint), "--prompt", "a red cube", "--prompt", "two cats",
               "-n", "2", "--out", str(out), "--plan-max-tokens", "8", "--seed", "3"])
    assert rc == 0
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["a red cube"] * 2 + ["two cats"] * 2
    assert all(isinstance(r["plan"], str) for r in records)
    assert records[0]["seed"] == 3 and records[2]["seed"] == 4
    assert records[0]["image_sampling"]["guidance_scale"] == 5.0
    for r in records:
        assert Image.open(out / r["file"]).size == (64, 64)
    grid = Image.open(out / "grid.png")
    assert grid.size[0] == 2 * 256 and grid.size[1] > 2 * 256  # two rows of cells plus caption space

    again = tmp_path / "again"
    main(["generate", "--model", str(tiny_checkpoint), "--prompt", "a red cube", "--prompt", "two cats",
          "-n", "2", "--out", str(again), "--plan-max-tokens", "8", "--seed", "3"])
    assert (again / "generations.jsonl").read_text() == (out / "generations.jsonl").read_text()
    assert (again / records[3]["file"]).read_bytes() == (out / records[3]["file"]).read_bytes()


def test_generate_with_an_external_planner(tiny_checkpoint, tiny_planner, tmp_path, capsys):
    from t2i_r1.planner import ExternalPlanner

    out = tmp_path / "out"
    rc = main(["generate", "--model", str(tiny_checkpoint), "--planner", str(tiny_planner), "--prompt", "a red cube",
               "--prompt", "two cats", "-n", "2", "--out", str(out), "--plan-max-tokens", "6", "--seed", "3"])
    assert rc == 0
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    planner = ExternalPlanner.from_pretrained(tiny_planner, max_new_tokens=6)
    # Prompt i is planned with seed + i, two plans each, by the separate model.
    assert [r["plan"] for r in records] == planner.plan(["a red cube"], 2, seed=3) + planner.plan(["two cats"], 2, seed=4)
    assert records[0]["planner"] == str(tiny_planner)
    assert main(["generate", "--model", str(tiny_checkpoint), "--planner", str(tiny_planner), "--no-plan",
                 "--prompt", "x", "--out", str(tmp_path / "bad")]) != 0
    assert "--planner and --no-plan exclude each other" in capsys.readouterr().err


def test_generate_without_plan_from_prompts_file(tiny_checkpoint, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n\na blue ball\n")
    out = tmp_path / "out"
    assert main(["generate", "--model", str(tiny_checkpoint), "--prompts-file", str(prompts), "-n", "1",
                 "--out", str(out), "--no-plan"]) == 0
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["a red cube", "a blue ball"]
    assert all(r["plan"] is None and r["plan_sampling"] is None for r in records)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompt", " "], "--prompt 1 is empty"),
        (["--prompt", "a cat", "--prompt", "cat " * 2000], "--prompt 2: the prompt is too long"),
        (["--prompt", "a cat", "--template", "/nonexistent/template.txt"], "reasoning template file not found"),
    ],
)
def test_generate_bad_input(tiny_checkpoint, tmp_path, capsys, extra, message):
    assert main(["generate", "--model", str(tiny_checkpoint), "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_generate_rejects_non_janus_directory(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path), "--prompt", "a", "--out", str(tmp_path / "o")]) == 2
    assert "config.json is missing" in capsys.readouterr().err

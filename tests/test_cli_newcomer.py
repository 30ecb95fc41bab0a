"""The command line as a newcomer meets it (issue 21): instant help, the bundled model one word away, one
ShapeWorld protocol, a thread default that does not collapse on a shared machine, one-line errors checked
before drawing, files readable like any other, quiet output, grids that explain themselves."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t2i_r1.bundled import BUNDLED_MODELS
from t2i_r1.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).parents[1]
HELP_BUDGET_S = 5.0  # "well under a second" on a quiet machine; generous for a loaded CI box
BUNDLED = str(BUNDLED_MODELS["shapeworld"])


def _run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "t2i_r1.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=120)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_is_instant(command):
    started = time.perf_counter()
    done = _run(*([command] if command else []), "--help")
    seconds = time.perf_counter() - started
    assert done.returncode == 0 and "usage: t2i-r1" in done.stdout, done.stderr
    assert seconds < HELP_BUDGET_S, f"t2i-r1 {command} --help took {seconds:.1f} s"


def test_help_imports_neither_torch_nor_transformers():
    """The structural reason help is fast, checked without a clock: parsing any command's flags imports no
    torch (the top level's help imports no command module at all)."""
    code = ("import sys\nfrom t2i_r1.cli import COMMANDS, build_parser\n"
            "for name in COMMANDS:\n    build_parser(name)\n"
            "print(sorted(m for m in ('torch', 'transformers', 'accelerate', 'gradio') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_first_steps_are_in_the_top_level_help():
    assert 't2i-r1 generate --prompt "a red circle left of a blue square"' in _run("--help").stdout


# ------------------------------------------------------------------------------ the bundled model
@pytest.mark.parametrize("argv", [
    ["generate", "--prompt", "x", "--out", "o"],
    ["eval", "--benchmark", "shapeworld", "--out", "o"],
    ["demo"],
    ["shapeworld", "eval"],
])
def test_the_bundled_model_is_the_default_and_has_a_name(argv):
    parser = build_parser(argv[0])
    assert parser.parse_args(argv).model == BUNDLED
    assert parser.parse_args([*argv, "--model", "shapeworld"]).model == BUNDLED
    assert parser.parse_args([*argv, "--model", "runs/x"]).model == "runs/x"


def test_serve_takes_the_bundled_name_too():
    args = build_parser("serve").parse_args(["serve", "--model", "shapeworld", "--compare", "shapeworld"])
    assert args.model == args.compare == BUNDLED


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_generate_with_the_bundled_model_writes_readable_files_and_an_explained_grid(tmp_path, monkeypatch, umask_022):
    import t2i_r1.utils.grid as grid_module

    seen = {}
    original = grid_module.captioned_grid

    def spy(images, captions, **kwargs):
        seen["captions"] = list(captions)
        return original(images, captions, **kwargs)

    monkeypatch.setattr(grid_module, "captioned_grid", spy)
    out = tmp_path / "first"
    assert main(["generate", "--prompt", "a red circle left of a blue square", "-n", "1", "--out", str(out),
                 "--plan-max-tokens", "24"]) == 0
    record = json.loads((out / "generations.jsonl").read_text())
    assert record["image_sampling"]["guidance_scale"] == 3.0  # the bundled model's (its protocol's) guidance
    assert seen["captions"][0].startswith("prompt: a red circle left of a blue square\nplan: ")
    for path in [out / "generations.jsonl", out / "grid.png", out / record["file"]]:
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_saved_checkpoints_respect_the_umask(tmp_path, umask_022):
    assert main(["make-tiny", "--out", str(tmp_path / "tiny")]) == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "tiny").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}


def test_atomic_files_follow_a_stricter_umask_too(tmp_path):
    from t2i_r1.utils.io import write_json_atomic

    old = os.umask(0o077)
    try:
        write_json_atomic(tmp_path / "a.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o600


# ------------------------------------------------------------------------------ one-line errors, nothing drawn
@pytest.mark.parametrize("extra, message", [
    (["--model", "no/such/dir"], "'no/such/dir' does not exist (relative to"),
    (["--prompts-file", "missing.txt"], "prompt file not found: missing.txt"),
])
def test_missing_paths_give_one_line_and_draw_nothing(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    argv = ["generate", "--out", "o", *extra]
    if "--prompts-file" not in extra:
        argv += ["--prompt", "a cat"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "o" / "images").exists()


def test_a_bad_line_in_the_prompts_file_is_found_before_drawing(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n" + "circle " * 1500 + "\n")
    out = tmp_path / "o"
    assert main(["generate", "--prompts-file", str(prompts), "--out", str(out)]) == 2
    assert f"{prompts}:3: the prompt is too long" in capsys.readouterr().err
    assert not (out / "images").exists() and not (out / "generations.jsonl").exists()


# ------------------------------------------------------------------------------ threads
def test_the_thread_default_is_one_unless_omp_num_threads_says_otherwise(monkeypatch):
    from t2i_r1.cli.options import default_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    for name in ("generate", "eval", "serve", "demo"):
        help_text = build_parser(name)._subparsers._group_actions[0].choices[name].format_help()
        assert "$OMP_NUM_THREADS" in help_text and "shared machine" in help_text, name


# ------------------------------------------------------------------------------ quiet by default
def test_library_progress_bars_only_with_verbose(tmp_path):
    quiet = _run("make-tiny", "--out", str(tmp_path / "a"), env={"OMP_NUM_THREADS": "1"})
    loud = _run("make-tiny", "--out", str(tmp_path / "b"), "--verbose", env={"OMP_NUM_THREADS": "1"})
    assert quiet.returncode == loud.returncode == 0
    assert "Writing model shards" not in quiet.stderr and "Writing model shards" in loud.stderr
    # DeepSpeed, when installed, announces its CPU fallback on every save: only with --verbose.
    assert "Setting accelerator to CPU" not in quiet.stdout + quiet.stderr
    if importlib.util.find_spec("deepspeed") is not None:
        assert "Setting accelerator to CPU" in loud.stdout + loud.stderr


# ------------------------------------------------------------------------------ one ShapeWorld protocol
def test_eval_shapeworld_uses_the_protocol(monkeypatch, tmp_path):
    import t2i_r1.eval.runner as runner
    from t2i_r1.shapeworld.protocol import Protocol

    seen = {}
    monkeypatch.setattr(runner, "run_eval", lambda config, benchmark, metrics: seen.update(config=config, bench=benchmark))
    assert main(["eval", "--benchmark", "shapeworld", "--out", str(tmp_path), "--per-cell", "2", "--seed", "5"]) == 0
    config, bench = seen["config"], seen["bench"]
    protocol = Protocol(per_cell=2, seed=5)
    assert [i.prompt for i in bench.prompts()] == [p.text for p in protocol.prompts()]
    assert config.generation.image.guidance_scale == protocol.guidance == 3.0
    assert (config.images_per_prompt or bench.images_per_prompt) == protocol.samples
    assert main(["eval", "--benchmark", "shapeworld", "--out", str(tmp_path), "--guidance-scale", "5"]) == 0
    assert seen["config"].generation.image.guidance_scale == 5.0  # the user's explicit choice wins

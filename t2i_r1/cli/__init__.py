"""The ``t2i-r1`` command. Each subcommand is one module of this package, named after it (``write-plans`` ->
``t2i_r1.cli.write_plans``), with ``add_arguments(parser)`` and ``run(args)``; it is imported only when
its command is parsed or run.

    t2i-r1 COMMAND ...          python -m t2i_r1.cli COMMAND ...      (the same; for accelerate launch -m)
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

# name -> help; the command's module is t2i_r1.cli.<name with "-" as "_">
COMMANDS = {
    "generate": "plan and draw images for prompts",
    "train": "BiCoT-GRPO training from a YAML config (use under accelerate launch)",
    "sft": "supervised fine-tuning on (prompt, plan, image) triples",
    "write-plans": "write plans for an image-caption dataset with a VLM (SFT triples)",
    "eval": "generate a benchmark's images and score them (T2I-CompBench, GenEval, WISE, ShapeWorld)",
    "serve": "web page to try the model (needs the demo extra: gradio)",
    "demo": "BiCoT-GRPO on the packaged ShapeWorld model: held-out scores before/after, grids",
    "shapeworld": "ShapeWorld: pretrain, evaluate, write SFT triples, train a separate planner",
    "make-tiny": "write a tiny random Janus checkpoint (tests, smoke runs)",
}


def command_module(name: str):
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


EPILOG = """first steps (the bundled ShapeWorld model runs on a CPU):
  t2i-r1 generate --prompt "a red circle left of a blue square" -n 4 --out runs/first
  t2i-r1 demo                      # BiCoT-GRPO on the bundled model, before/after scores
  t2i-r1 COMMAND --help            # each command's options"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command's arguments, or (``command`` given) only that command's: a command
    module is imported only when its command is parsed, so ``t2i-r1 --help`` and ``t2i-r1 X --help`` import
    no torch (``command=""``: none)."""
    parser = argparse.ArgumentParser(prog="t2i-r1", description="T2I-R1: reasoning text-to-image with BiCoT-GRPO",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        parsed = sub.add_parser(name, help=help_text, description=help_text)
        if command is None or command == name:
            command_module(name).add_arguments(parsed)
    return parser


# Disk and permission failures a user fixes outside the program: one line, not a traceback.
_USER_OS_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                   errno.EACCES: "permission denied", errno.EROFS: "read-only file system"}


def user_error(err: BaseException) -> str | None:
    """The one-line message for an error the user can act on (bad input, missing file, full disk, a reward
    or a run that stopped), or None for a bug, which keeps its traceback."""
    from t2i_r1.rewards.ensemble import RewardError
    from t2i_r1.train.loop import TrainingStopped

    if isinstance(err, (ValueError, FileNotFoundError, RewardError, TrainingStopped)):  # ConfigError, PromptFileError
        return str(err)
    if isinstance(err, OSError) and err.errno in _USER_OS_ERRORS:
        where = f" writing {err.filename}" if err.filename else ""
        return f"{_USER_OS_ERRORS[err.errno]}{where}"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    named = next((a for a in argv if not a.startswith("-")), "")
    args = build_parser(named if named in COMMANDS else "").parse_args(argv)
    try:
        from t2i_r1.cli.options import configure_runtime

        configure_runtime(args)
        command_module(args.command).run(args)
    except Exception as err:
        message = user_error(err)
        if message is None or os.environ.get("T2I_R1_TRACEBACK"):
            raise
        print(f"t2i-r1 {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0

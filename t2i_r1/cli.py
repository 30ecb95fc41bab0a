"""The ``t2i-r1`` command. Each subcommand lives in its own module and is imported only when run."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with add_arguments(parser) and run(args), help)
COMMANDS = {
    "generate": ("t2i_r1.generate", "plan and draw images for prompts"),
    "demo": ("t2i_r1.shapeworld.demo", "BiCoT-GRPO on the packaged ShapeWorld model: held-out scores before/after, grids"),
    "shapeworld": ("t2i_r1.shapeworld.cli", "ShapeWorld: pretrain, evaluate, write SFT triples, train a separate planner"),
    "train": ("t2i_r1.train.cli", "BiCoT-GRPO training from a YAML config (use under accelerate launch)"),
    "eval": ("t2i_r1.eval.cli", "generate a benchmark's images and score them (T2I-CompBench, GenEval, WISE, ShapeWorld)"),
    "sft": ("t2i_r1.sft_cli", "supervised fine-tuning on (prompt, plan, image) triples"),
    "write-plans": ("t2i_r1.caption_plans", "write plans for an image-caption dataset with a VLM (SFT triples)"),
    "serve": ("t2i_r1.serve.cli", "web page to try the model (needs the demo extra: gradio)"),
    "make-tiny": ("t2i_r1.policy.tiny_cli", "write a tiny random Janus checkpoint (tests, smoke runs)"),
}


def register_command(name: str, module: str, help_text: str) -> None:
    COMMANDS[name] = (module, help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t2i-r1", description="T2I-R1: reasoning text-to-image with BiCoT-GRPO")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module)
        _module_or_none(module, lambda m: m.add_arguments(command))
    return parser


def _module_or_none(name: str, use):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            return None  # a command whose module is not there yet
        raise
    return use(module)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        module.run(args)
    except (ValueError, FileNotFoundError) as err:  # ConfigError, PromptFileError are ValueErrors
        print(f"t2i-r1 {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

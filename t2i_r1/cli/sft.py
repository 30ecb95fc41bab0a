"""``t2i-r1 sft CONFIG.yaml [key.sub=value ...]``: supervised fine-tuning on (prompt, plan, image) triples."""

from __future__ import annotations

import argparse

from t2i_r1.cli.options import add_runtime_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML SFT config (see configs/recipes/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    parser.add_argument("--max-steps", type=int, default=None)
    add_runtime_arguments(parser)


def run(args: argparse.Namespace) -> None:
    from t2i_r1.config_io import load_config
    from t2i_r1.train.sft import SFTConfig, SFTTrainer

    SFTTrainer(load_config(SFTConfig, args.config, args.overrides)).train(max_steps=args.max_steps)

"""``t2i-r1 train CONFIG.yaml [key.sub=value ...]``: BiCoT-GRPO training (run it under ``accelerate launch``)."""

from __future__ import annotations

import argparse

from t2i_r1.cli.options import add_runtime_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML training config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. grpo.beta=0.02 rollout.mode=token")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps of this run")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_runtime_arguments(parser)


def run(args: argparse.Namespace) -> None:
    from t2i_r1.config_io import dump_yaml, load_config
    from t2i_r1.train.config import TrainConfig

    config = load_config(TrainConfig, args.config, args.overrides)
    if args.print_config:
        print(dump_yaml(config))
        return
    from t2i_r1.train.trainer import BiCoTGRPOTrainer

    BiCoTGRPOTrainer(config).train(max_steps=args.max_steps)

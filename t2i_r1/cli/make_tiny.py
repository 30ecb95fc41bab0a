"""``t2i-r1 make-tiny``: write a tiny random Janus checkpoint directory (for smoke runs and tests)."""

from __future__ import annotations

import argparse

from t2i_r1.cli.options import add_runtime_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory to write")
    parser.add_argument("--preset", default="tiny", help="a preset of t2i_r1.testing.PRESETS: tiny, medium")
    add_runtime_arguments(parser)


def run(args: argparse.Namespace) -> None:
    from t2i_r1.testing import PRESETS, save_tiny_janus

    if args.preset not in PRESETS:
        raise ValueError(f"--preset {args.preset!r}: expected one of {sorted(PRESETS)}")
    path = save_tiny_janus(args.out, PRESETS[args.preset])
    print(f"wrote a random {args.preset} Janus to {path}")

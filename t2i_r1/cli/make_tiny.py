"""``t2i-r1 make-tiny``: write a tiny random Janus checkpoint directory (for smoke runs and tests)."""

from __future__ import annotations

import argparse

from t2i_r1.testing import PRESETS, save_tiny_janus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory to write")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")


def run(args: argparse.Namespace) -> None:
    path = save_tiny_janus(args.out, PRESETS[args.preset])
    print(f"wrote a random {args.preset} Janus to {path}")

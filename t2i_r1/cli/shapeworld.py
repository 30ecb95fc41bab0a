"""``t2i-r1 shapeworld``: pretrain, evaluate, write SFT triples, train a planner; the command lives with ShapeWorld."""

from t2i_r1.shapeworld.cli import add_arguments, run

__all__ = ["add_arguments", "run"]

"""``t2i-r1 demo``: BiCoT-GRPO on the packaged ShapeWorld model; the command lives with ShapeWorld."""

from t2i_r1.shapeworld.demo import add_arguments, run

__all__ = ["add_arguments", "run"]

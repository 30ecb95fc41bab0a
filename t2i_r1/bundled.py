"""Models that ship inside the package, addressable by name wherever a model is taken (``--model shapeworld``).

Importing this module imports nothing heavy (the command line's help reads it).
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_MODELS: dict[str, Path] = {
    "shapeworld": Path(__file__).resolve().parent / "assets" / "shapeworld",
}
"""Name -> checkpoint directory. ``shapeworld``: the 2.4M-parameter ShapeWorld Janus (``t2i_r1.shapeworld``),
which draws prompts of the ShapeWorld language ("a red circle left of a blue square") on a CPU."""


def resolve_model(name_or_path: str | Path) -> str:
    """A bundled model's directory for its name; any other value unchanged (a path or a hub id)."""
    return str(BUNDLED_MODELS.get(str(name_or_path), name_or_path))

"""Batches of images for scoring models: chunking, batch-size checks, RGB conversion."""

from __future__ import annotations

from collections.abc import Iterator

from PIL import Image


def check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices ``[0, size), [size, 2 size), ...`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def to_rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"scorers take PIL images, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")

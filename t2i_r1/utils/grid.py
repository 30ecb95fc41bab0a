"""Image grids with a caption (the plan) printed under each image."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont


def captioned_grid(
    images: Sequence[Image.Image],
    captions: Sequence[str | None] | None = None,
    *,
    columns: int | None = None,
    cell: int = 256,
    caption_lines: int = 8,
) -> Image.Image:
    """Tile ``images`` (upscaled to ``cell`` px) with up to ``caption_lines`` wrapped lines under each."""
    if not images:
        raise ValueError("captioned_grid needs at least one image")
    captions = list(captions) if captions is not None else [None] * len(images)
    columns = columns or min(len(images), 4)
    rows = -(-len(images) // columns)
    font = ImageFont.load_default()
    line_height = 12
    chars_per_line = max(8, cell // 6)
    text_height = line_height * caption_lines + 6 if any(captions) else 0
    grid = Image.new("RGB", (columns * cell, rows * (cell + text_height)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (image, caption) in enumerate(zip(images, captions)):
        x, y = (i % columns) * cell, (i // columns) * (cell + text_height)
        grid.paste(image.convert("RGB").resize((cell, cell), Image.NEAREST), (x, y))
        if caption:
            lines = textwrap.wrap(caption, chars_per_line)
            if len(lines) > caption_lines:
                lines = lines[: caption_lines - 1] + [lines[caption_lines - 1][: chars_per_line - 3] + "..."]
            for j, line in enumerate(lines):
                draw.text((x + 3, y + cell + 3 + j * line_height), line, fill="black", font=font)
    return grid

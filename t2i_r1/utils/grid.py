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
    title: str | None = None,
) -> Image.Image:
    """Tile ``images`` (upscaled to ``cell`` px) with up to ``caption_lines`` wrapped lines under each
    (a newline in a caption starts a new line) and an optional ``title`` line above the grid (a legend)."""
    if not images:
        raise ValueError("captioned_grid needs at least one image")
    captions = list(captions) if captions is not None else [None] * len(images)
    columns = columns or min(len(images), 4)
    rows = -(-len(images) // columns)
    font = ImageFont.load_default()
    line_height = 12
    chars_per_line = max(8, cell // 6)
    text_height = line_height * caption_lines + 6 if any(captions) else 0
    top = 0
    title_lines = []
    if title:
        title_lines = textwrap.wrap(title, max(8, columns * cell // 6))
        top = line_height * len(title_lines) + 8
    grid = Image.new("RGB", (columns * cell, top + rows * (cell + text_height)), "white")
    draw = ImageDraw.Draw(grid)
    for j, line in enumerate(title_lines):
        draw.text((3, 4 + j * line_height), line, fill="black", font=font)
    for i, (image, caption) in enumerate(zip(images, captions)):
        x, y = (i % columns) * cell, top + (i // columns) * (cell + text_height)
        grid.paste(image.convert("RGB").resize((cell, cell), Image.NEAREST), (x, y))
        if caption:
            lines = [line for part in caption.split("\n") for line in textwrap.wrap(part, chars_per_line)]
            if len(lines) > caption_lines:
                lines = lines[: caption_lines - 1] + [lines[caption_lines - 1][: chars_per_line - 3] + "..."]
            for j, line in enumerate(lines):
                draw.text((x + 3, y + cell + 3 + j * line_height), line, fill="black", font=font)
    return grid

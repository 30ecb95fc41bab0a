"""Pixel-statistic rewards: cheap stand-ins for smoke runs and speed benchmarks, not for real training.

The same four numbers ``../shared/bench/reference_step.py`` uses in place of the four reward models, so
step timings compare like with like: the mean of one colour channel / 255, or the pixel std / 255.
Scored for the whole batch with one numpy call (the reference loops image by image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image

_CHANNEL = {"red": 0, "green": 1, "blue": 2}


class PixelStatReward:
    def __init__(self, stat: Literal["red", "green", "blue", "std"] = "red"):
        if stat not in (*_CHANNEL, "std"):
            raise ValueError(f"stat must be one of red, green, blue, std; got {stat!r}")
        self.stat = stat
        self.name = f"pixel_{stat}"

    def __call__(self, prompts: Sequence[str], images: Sequence[Image.Image], metadata=None) -> list[float]:
        pixels = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])  # (N, S, S, 3)
        if self.stat == "std":
            values = pixels.reshape(len(images), -1).std(1) / 255
        else:
            values = pixels[..., _CHANNEL[self.stat]].reshape(len(images), -1).mean(1) / 255
        return values.tolist()

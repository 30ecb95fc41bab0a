"""Programmatic reward: a plain function scores each image, for worlds where the truth is known.

In a synthetic world (for example ShapeWorld-style scenes) the generator's output can be checked
exactly: ``score(prompt, image, metadata) -> float``. ``ProgrammaticReward`` wraps such a function as
a reward (registered as ``"programmatic"``). The function may be given as a callable or, so that it can
be named in a YAML config, as a ``"package.module:function"`` string. With ``batched=True`` the
function instead takes the three lists and returns one value per image (for scorers that vectorise
over the batch themselves). ``None`` from the function means "not applicable" and becomes NaN.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from t2i_r1.rewards.base import Metadata


def load_callable(target: str) -> Callable[..., Any]:
    """``"package.module:function"`` (or ``"package.module:Class.method"``) -> the object it names."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected 'package.module:function', got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {module_name!r} named in {target!r}: {err}") from err
    for part in attribute.split("."):
        if not hasattr(obj, part):
            owner = getattr(obj, "__name__", type(obj).__name__)
            raise ValueError(f"{target!r}: {owner!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{target!r} names a {type(obj).__name__}, not a function")
    return obj


def _as_float(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{where} returned {value!r}; expected a number or None") from None


class ProgrammaticReward:
    """Wrap ``score(prompt, image, metadata) -> float`` (or its batched form) as a reward."""

    name = "programmatic"

    def __init__(
        self,
        score: Callable[..., Any] | str,
        *,
        batched: bool = False,
        name: str | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        """``device`` is accepted for a uniform interface and ignored: the function places its own work."""
        self.score = load_callable(score) if isinstance(score, str) else score
        if not callable(self.score):
            raise TypeError(f"ProgrammaticReward needs a callable or 'module:function', got {type(score).__name__}")
        self.batched = batched
        if name is not None:
            self.name = name
        self._label = getattr(self.score, "__qualname__", repr(self.score))

    def __call__(
        self, prompts: Sequence[str], images: Sequence[Image.Image], metadata: Sequence[Metadata]
    ) -> list[float]:
        if not len(prompts) == len(images) == len(metadata):
            raise ValueError(f"got {len(prompts)} prompts, {len(images)} images, {len(metadata)} metadata")
        if self.batched:
            values = list(self.score(list(prompts), list(images), list(metadata)))
            if len(values) != len(prompts):
                raise ValueError(f"{self._label} returned {len(values)} values for {len(prompts)} images")
            return [_as_float(v, self._label) for v in values]
        return [_as_float(self.score(p, im, m), self._label) for p, im, m in zip(prompts, images, metadata)]

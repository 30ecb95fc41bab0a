"""The reward interface and its registry.

A reward is a plain callable, as in TRL: ``reward(prompts, images, metadata) -> list[float]``, one float
per image. NaN means "not applicable to this prompt" (for example the VQA attribute reward on a prompt
without attribute phrases); the ensemble and the GRPO normalisation treat NaN as missing, never as 0.

``metadata`` holds one mapping per image in the reference schema (see ``t2i_r1.rewards.metadata``):
``prompt``, ``task_type``, ``nouns``, ``attr_nouns``, ``spatial_info``, ``numeracy_info``; worlds with
exact ground truth add their own keys.

The registry maps a name to ``"module:Class"`` and imports lazily, so a CPU install never imports the
heavy reward models it does not use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from PIL import Image

Metadata = Mapping[str, Any]


@runtime_checkable
class RewardFunction(Protocol):
    """One float per image; NaN where the reward does not apply."""

    name: str

    def __call__(
        self, prompts: Sequence[str], images: Sequence[Image.Image], metadata: Sequence[Metadata]
    ) -> list[float]: ...


# name -> "module:Class". Each class takes its own keyword arguments (checkpoint path, device, batch size...).
REWARD_REGISTRY: dict[str, str] = {}


def register_reward(name: str, target: str) -> None:
    """Register ``name`` -> ``"package.module:ClassName"`` (imported only when built)."""
    if name in REWARD_REGISTRY and REWARD_REGISTRY[name] != target:
        raise ValueError(f"reward {name!r} is already registered as {REWARD_REGISTRY[name]!r}")
    REWARD_REGISTRY[name] = target


def build_reward(name: str, **kwargs: Any) -> RewardFunction:
    """Instantiate a registered reward by name, importing its module only now."""
    try:
        target = REWARD_REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REWARD_REGISTRY)) or "(none)"
        raise ValueError(f"unknown reward {name!r}; registered rewards: {known}") from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**kwargs)

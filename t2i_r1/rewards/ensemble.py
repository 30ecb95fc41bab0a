"""Several rewards scored together: one call per reward per batch, per-reward values kept apart.

``RewardEnsemble`` is built from a mapping ``name -> spec`` where a spec is
- a reward object (weight 1),
- ``(reward_or_config, weight)``,
- or a mapping ``{"weight": w, "type": registry_name, **kwargs}`` (the YAML form);
a config (``{"type": ..., **kwargs}``) is built through the registry (``build_reward``), ``type``
defaulting to the entry's name. Rewards built from configs get the ensemble's ``device`` (default: this
process's accelerate device, see ``_common.resolve_device``) unless their config names one.

It returns ``EnsembleScores``: ``per_reward[name]`` (N,) float32 with NaN where that reward does not
apply, and ``total`` (N,) = the weighted sum over the rewards that apply to each sample,
``sum_r w_r * v_r`` over the ``v_r`` that are not NaN (the paper sums its rewards with weight 1). A
sample no reward applies to gets NaN; a reward's ``None`` counts as NaN, and so does +-inf (no score
is infinite: it is a reward's bug, counted per reward in ``nonfinite`` so the log shows it). A reward
that raises is reported as ``RewardError`` naming it. Within a GRPO group every sample shares its prompt, so it also shares which
rewards apply, and the sums stay comparable inside the group. The trainer can instead normalise each
``per_reward`` entry within its group and sum those (``normalize_then_sum``); that is its business.

Dimensions: N images in the batch, R rewards.
"""

from __future__ import annotations

import importlib
import inspect
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from t2i_r1.grpo.core import weighted_nansum
from t2i_r1.rewards.base import REWARD_REGISTRY, Metadata, RewardFunction, build_reward
from t2i_r1.utils.checkpoints import resolve_device


class RewardError(RuntimeError):
    """A reward raised while scoring a batch; the message names the reward (and, from the trainer, the step)."""


@dataclass
class EnsembleScores:
    """Per-reward values (NaN = not applicable) and their weighted total, each of shape (N,)."""

    per_reward: dict[str, torch.Tensor]
    total: torch.Tensor
    weights: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each reward's call
    nonfinite: dict[str, int] = field(default_factory=dict)  # values of +-inf, made NaN, per reward

    def means(self) -> dict[str, float]:
        """Mean of each reward over the samples it applies to (NaN if none), for logging."""
        out = {}
        for name, values in self.per_reward.items():
            finite = values[~values.isnan()]
            out[name] = float(finite.mean()) if len(finite) else math.nan
        return out


@dataclass
class _Entry:
    reward: RewardFunction
    weight: float


def _accepts_device(kind: str) -> bool:
    """Whether the registered class ``kind`` takes a ``device`` keyword (imports its module)."""
    target = REWARD_REGISTRY.get(kind)
    if target is None:
        return False  # build_reward raises the error listing the known names
    module_name, _, class_name = target.partition(":")
    params = inspect.signature(getattr(importlib.import_module(module_name), class_name)).parameters
    return "device" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _build(name: str, config: Mapping[str, Any], device: torch.device) -> RewardFunction:
    kwargs = dict(config)
    kind = kwargs.pop("type", name)
    if "device" not in kwargs and _accepts_device(kind):
        kwargs["device"] = device
    return build_reward(kind, **kwargs)


class RewardEnsemble:
    """Calls each reward once per batch; see the module docstring for the spec forms and the total."""

    def __init__(self, rewards: Mapping[str, Any], device: str | torch.device | None = None) -> None:
        if not rewards:
            raise ValueError("RewardEnsemble needs at least one reward")
        self.device = resolve_device(device)
        self.entries: dict[str, _Entry] = {}
        for name, spec in rewards.items():
            self.entries[name] = self._entry(name, spec)

    def _entry(self, name: str, spec: Any) -> _Entry:
        weight: Any = 1.0
        if isinstance(spec, tuple | list):
            if len(spec) != 2:
                raise ValueError(f"reward {name!r}: expected (reward or config, weight), got {spec!r}")
            spec, weight = spec
        elif isinstance(spec, Mapping) and "weight" in spec:
            spec = dict(spec)
            weight = spec.pop("weight")
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"reward {name!r}: weight must be a number, got {weight!r}") from None
        if not math.isfinite(weight):
            raise ValueError(f"reward {name!r}: weight must be finite, got {weight}")
        if isinstance(spec, Mapping):
            reward = _build(name, spec, self.device)
        elif callable(spec):
            reward = spec
        else:
            kind = type(spec).__name__
            raise ValueError(f"reward {name!r}: expected a reward callable or a config mapping, got {kind}")
        return _Entry(reward, weight)

    @property
    def weights(self) -> dict[str, float]:
        return {name: entry.weight for name, entry in self.entries.items()}

    def __call__(
        self, prompts: Sequence[str], images: Sequence[Image.Image], metadata: Sequence[Metadata]
    ) -> EnsembleScores:
        n = len(prompts)
        if not len(images) == len(metadata) == n:
            raise ValueError(f"got {n} prompts, {len(images)} images, {len(metadata)} metadata")
        per_reward: dict[str, torch.Tensor] = {}
        seconds: dict[str, float] = {}
        nonfinite: dict[str, int] = {}
        for name, entry in self.entries.items():
            start = time.perf_counter()
            try:
                values = entry.reward(prompts, images, metadata)
                if len(values) != n:
                    raise ValueError(f"returned {len(values)} values for {n} images")
                column = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32)  # (N,)
            except Exception as err:  # any failure inside a reward: say which one
                raise RewardError(f"reward {name!r} failed on a batch of {n} images: {type(err).__name__}: {err}") from err
            seconds[name] = time.perf_counter() - start
            infinite = torch.isinf(column)  # (N,) also finite values beyond float32's range
            nonfinite[name] = int(infinite.sum())
            per_reward[name] = torch.where(infinite, torch.full_like(column, math.nan), column)  # (N,)
        stacked = torch.stack(list(per_reward.values()), dim=1)  # (N, R)
        weights = torch.tensor([e.weight for e in self.entries.values()], dtype=torch.float32)  # (R,)
        total = weighted_nansum(stacked, weights)  # (N,) the same total GRPO's sum_then_normalize forms
        return EnsembleScores(per_reward=per_reward, total=total, weights=self.weights, seconds=seconds,
                              nonfinite=nonfinite)

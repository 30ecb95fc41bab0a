"""The tensors of one training step, grouped by what their rows are.

Two kinds of rows, each its own dataclass:
    ``PlanRows``    B * G (prompt, plan) pairs: the plan prompt, the plan tokens and their old and
                    reference log-probs
    ``SampleRows``  N = B * G * K (plan, image) samples: the image prompt, the image tokens, the advantage
                    and the old and reference log-probs of the image tokens
Sample n was drawn from plan n // K. ``TrainingBatch`` holds both and is the only thing that selects or
slices them: it keeps a plan exactly when it keeps that plan's samples, so no caller has to know which
tensor is per plan and which per sample. SFT uses the same batch with K = 1 and no advantages.

Dimension letters: B prompts, G plans per prompt, K images per plan, N = B*G*K samples, P prompt tokens,
L plan tokens, T image tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from t2i_r1.rollout.rollout import Rollout


def _rows(rows, index):
    """The same dataclass with every tensor field indexed along its first (row) dimension."""
    return replace(rows, **{f.name: value[index] for f in fields(rows) if (value := getattr(rows, f.name)) is not None})


@dataclass
class PlanRows:
    """One row per plan."""

    prompt_ids: Tensor  # (B*G, P) left-padded plan prompts
    prompt_mask: Tensor  # (B*G, P)
    plan_ids: Tensor  # (B*G, L)
    plan_mask: Tensor  # (B*G, L) 1 up to and including EOS
    old_logp: Tensor | None = None  # (B*G, L) log-probs before this step's updates (num_iterations > 1)
    ref_logp: Tensor | None = None  # (B*G, L) reference policy (beta > 0)


@dataclass
class SampleRows:
    """One row per (plan, image) sample."""

    prompt_ids: Tensor  # (N, P) left-padded image prompts ending with <begin_of_image>
    prompt_mask: Tensor  # (N, P)
    tokens: Tensor  # (N, T) image tokens
    advantages: Tensor | None = None  # (N,) GRPO; None for SFT
    old_logp: Tensor | None = None  # (N, T)
    ref_logp: Tensor | None = None  # (N, T)
    trained: Tensor | None = None  # (N,) bool: False for a sample that only pads the batch (no loss); None = all


@dataclass
class TrainingBatch:
    samples: SampleRows
    plans: PlanRows | None  # None without a plan level (the token ablation)
    images_per_plan: int = 1  # K

    def __post_init__(self):
        if self.plans is not None and len(self.plans.plan_ids) * self.images_per_plan != len(self):
            raise ValueError(
                f"{len(self.plans.plan_ids)} plans x {self.images_per_plan} images per plan != {len(self)} samples"
            )

    @classmethod
    def from_rollout(cls, rollout: Rollout, advantages: Tensor) -> TrainingBatch:
        im, p = rollout.images, rollout.plans
        plans = None if p is None else PlanRows(p.prompt_ids, p.prompt_mask, p.plan_ids, p.plan_mask)
        return cls(SampleRows(im.prompt_ids, im.prompt_mask, im.tokens, advantages), plans, rollout.images_per_plan)

    def __len__(self) -> int:
        return len(self.samples.tokens)

    def select(self, keep: Tensor, size: int | None = None) -> TrainingBatch:
        """The samples where ``keep`` (N,) bool is True, and their plans; ``keep`` must take whole plans.

        ``size`` (default: the kept count) pads the result with dropped samples, marked untrained (``trained``
        False: they run forward and backward but add nothing to the loss), so that every process can run as
        many micro-batches as the busiest one."""
        K, kept = self.images_per_plan, int(keep.sum())
        size = kept if size is None else size
        if not kept <= size <= len(self) or size % K:
            raise ValueError(f"select: size {size} must lie in [{kept} kept, {len(self)}] and be a multiple of K={K}")
        if bool(keep.all()):
            return self
        per_plan = keep.view(-1, K)  # (B*G, K)
        if not bool((per_plan == per_plan[:, :1]).all()):
            raise ValueError("select keeps or drops whole plans: all K samples of a plan alike")
        order = torch.cat([keep.nonzero()[:, 0], (~keep).nonzero()[:, 0]])[:size]  # (size,) kept samples first
        samples = _rows(self.samples, order)
        trained = keep[order] if self.samples.trained is None else keep[order] & self.samples.trained[order]
        samples = replace(samples, trained=trained)  # (size,)
        plans = None if self.plans is None else _rows(self.plans, order.view(-1, K)[:, 0] // K)  # whole plans
        return TrainingBatch(samples, plans, K)

    def slice(self, start: int, end: int) -> TrainingBatch:
        """Samples [start, end) and their plans [start / K, end / K); both ends on plan boundaries."""
        K = self.images_per_plan
        if start % K or end % K:
            raise ValueError(f"slice [{start}, {end}) cuts a plan's {K} samples apart")
        plans = None if self.plans is None else _rows(self.plans, slice(start // K, end // K))
        return TrainingBatch(_rows(self.samples, slice(start, end)), plans, K)

    def micro_batches(self, size: int) -> Iterator[TrainingBatch]:
        """Consecutive slices of ``size`` samples (a multiple of K, so whole plans), the last possibly shorter."""
        for start in range(0, len(self), size):
            yield self.slice(start, min(start + size, len(self)))

    def with_log_probs(self, kind: str, plan_lp: Tensor | None, image_lp: Tensor | None) -> TrainingBatch:
        """A copy holding ``kind`` ("old" or "ref") log-probs: plan (B*G, L) and image (N, T), None if not taken."""
        if kind not in ("old", "ref"):
            raise ValueError(f"kind must be 'old' or 'ref', got {kind!r}")
        field = f"{kind}_logp"
        plans = self.plans if plan_lp is None else replace(self.plans, **{field: plan_lp})
        samples = self.samples if image_lp is None else replace(self.samples, **{field: image_lp})
        return TrainingBatch(samples, plans, self.images_per_plan)

    def per_sample(self, plan_tensor: Tensor | None) -> Tensor | None:
        """A per-plan tensor (B*G, ...) repeated for each of the plan's K samples: (N, ...)."""
        return None if plan_tensor is None else plan_tensor.repeat_interleave(self.images_per_plan, 0)

    def segment_masks(self, plan: bool, image: bool) -> dict[str, Tensor]:
        """The trained tokens of each sample, per segment: "plan" (N, L) and "image" (N, T), bool; none in
        an untrained (padding) sample."""
        masks = {}
        if plan:
            masks["plan"] = self.per_sample(self.plans.plan_mask).bool()  # (N, L)
        if image:
            masks["image"] = torch.ones_like(self.samples.tokens, dtype=torch.bool)  # (N, T)
        if self.samples.trained is not None:
            masks = {name: mask & self.samples.trained[:, None] for name, mask in masks.items()}
        return masks

"""The ShapeWorld evaluation protocol: one held-out prompt set, one sampling setting, one set of tables.

Every command that scores a model on ShapeWorld (``t2i-r1 demo``, ``t2i-r1 shapeworld eval``,
``t2i-r1 eval --benchmark shapeworld``, the ablation benchmark) uses ``Protocol``:
1. Prompts: ``per_cell`` held-out prompts for each category and each phrasing family that can word it
   (``grammar.prompt_set("heldout", ...)`` over ``phrasing.ALL_FAMILIES``): held-out *combinations*
   in every family, including the families that neither pretraining nor RL saw.
2. Sampling: ``samples`` images per prompt, each from its own plan (plan temperature 1), image
   temperature 1, classifier-free guidance ``guidance`` (3: higher scales drew worse on ShapeWorld).
3. Scores: the exact evaluator's all-or-nothing score, in percent. A category's score is the mean over
   its images; "overall" is the mean of the category means (as GenEval). Phrasing groups: families
   seen in pretraining, families seen only in RL training, and families seen by neither; a group's
   score is again the mean of its category means.
4. Plans right: the share of sampled plans that satisfy the prompt (``grammar.check_plan``), same
   grouping.
5. Success by plan: the success of the images drawn from a right plan and from a wrong one, pooled
   over images. It tells the two ways a plan-level update can raise success apart: more right plans
   (plans right rises) or right plans that the image model draws better (success from a right plan
   rises).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from t2i_r1.shapeworld.evaluator import summarize
from t2i_r1.shapeworld.grammar import CATEGORIES, Prompt, prompt_set
from t2i_r1.shapeworld.phrasing import ALL_FAMILIES, FAMILIES

PHRASING_GROUPS: dict[str, str] = {
    "pretrain": "seen in pretraining",
    "rl": "seen in RL only",
    "heldout": "unseen",
}
"""Family role -> the name of its group in the tables."""


@dataclass(frozen=True)
class Protocol:
    per_cell: int = 10
    """Held-out prompts per category and phrasing family."""
    samples: int = 2
    """Images per prompt (each from its own plan)."""
    seed: int = 0
    """Draws the prompts and seeds the sampling."""
    guidance: float = 3.0
    """Classifier-free guidance scale."""
    families: tuple[str, ...] = ALL_FAMILIES
    categories: tuple[str, ...] = CATEGORIES

    def __post_init__(self) -> None:
        if self.per_cell < 1 or self.samples < 1:
            raise ValueError(f"Protocol: per_cell and samples must be >= 1, got {self.per_cell}, {self.samples}")

    def prompts(self) -> list[Prompt]:
        return prompt_set("heldout", self.per_cell, seed=self.seed, categories=self.categories, families=self.families)

    def evaluate(self, policy, *, use_plan: bool = True, prompts: Sequence[Prompt] | None = None, planner=None):
        """``model.evaluate_policy`` with this protocol's prompts and sampling settings."""
        from t2i_r1.shapeworld.model import evaluate_policy

        return evaluate_policy(policy, list(prompts if prompts is not None else self.prompts()), use_plan=use_plan,
                               samples=self.samples, seed=self.seed + 1, guidance_scale=self.guidance, planner=planner)

    def describe(self) -> str:
        n = len(self.prompts())
        return (f"{n} held-out prompts ({self.per_cell} per category and phrasing family) x {self.samples} images, "
                f"guidance {self.guidance:g}, seed {self.seed}")

    def to_dict(self) -> dict:
        return asdict(self)


def phrasing_group(prompt: Prompt) -> str:
    return PHRASING_GROUPS[FAMILIES[prompt.phrasing].role]


def report(prompts: Sequence[Prompt], values: Sequence[float]) -> dict[str, dict[str, float]]:
    """``values`` (one per image, prompts' images contiguous) as two tables: "by category" (and
    overall) and "by phrasing" (one row per phrasing group present, each the mean of its category means)."""
    if not prompts or len(values) % len(prompts):
        raise ValueError(f"report: {len(values)} values for {len(prompts)} prompts")
    k = len(values) // len(prompts)
    per_image = [p for p in prompts for _ in range(k)]
    by_phrasing = {}
    for group in PHRASING_GROUPS.values():
        rows = [(p.category, v) for p, v in zip(per_image, values) if phrasing_group(p) == group]
        if rows:
            by_phrasing[group] = summarize([c for c, _ in rows], [v for _, v in rows])["overall"]
    return {"by category": summarize([p.category for p in per_image], values), "by phrasing": by_phrasing}


def by_plan(scores: Sequence[float], plan_scores: Sequence[float]) -> dict[str, float]:
    """Mean success of the images whose plan is right ("plan right") and of those whose plan is wrong
    ("plan wrong"), pooled over images (not category-balanced: right plans are commoner in some
    categories); NaN for a side with no image."""
    if len(scores) != len(plan_scores):
        raise ValueError(f"by_plan: {len(scores)} scores for {len(plan_scores)} plan scores")
    sides = {"plan right": [s for s, p in zip(scores, plan_scores) if p == 1.0],
             "plan wrong": [s for s, p in zip(scores, plan_scores) if p == 0.0]}
    return {side: sum(v) / len(v) if v else float("nan") for side, v in sides.items()}


def print_table(tables: Mapping[str, Mapping[str, float]], file=None, first: str = "category") -> None:
    """Rows = the first table's keys ("overall" last), one column per table, in percent; ``file``
    defaults to the *current* ``sys.stdout`` (not the one at import time, which a redirection may
    since have closed)."""
    file = file or sys.stdout
    names = list(tables)
    keys = list(next(iter(tables.values())))
    rows = [r for r in keys if r != "overall"] + (["overall"] if "overall" in keys else [])
    width = max([len(first), *(len(r) for r in rows)]) + 2
    print(f"{first:<{width}}" + "".join(f"{n:>14}" for n in names), file=file)
    for r in rows:
        print(f"{r:<{width}}" + "".join(f"{100 * tables[n].get(r, float('nan')):>13.1f}%" for n in names), file=file)

"""ShapeWorld as a benchmark of the evaluation harness: held-out prompts, the exact classical evaluator.

Scores are exact (the evaluator reads the rendered world's palette, components, shapes and fills), so
no model is loaded for scoring. Per image: ``score`` 1 when every constraint of the prompt holds, else 0,
and ``partial``, the share of checks passed. Per category: the mean; overall: the mean of the category
means (as GenEval), so a category's weight does not depend on how many prompts it has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from t2i_r1.eval.base import PromptGroup, PromptItem, mean_or_none
from t2i_r1.shapeworld import CATEGORIES, ShapeWorldEvaluator, prompt_set, summarize


class ShapeWorldBenchmark:
    name = "shapeworld"
    images_per_prompt = 4
    published = None

    def __init__(self, split: str = "heldout", prompts_per_category: int = 20, seed: int = 0,
                 categories: Sequence[str] | None = None, images_per_prompt: int | None = None, **_unused):
        self.split, self.n, self.seed = split, int(prompts_per_category), int(seed)
        self.categories = tuple(categories) if categories else CATEGORIES
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown ShapeWorld categories {unknown}; expected some of {list(CATEGORIES)}")
        if images_per_prompt is not None:
            self.images_per_prompt = int(images_per_prompt)
        self.evaluator = ShapeWorldEvaluator()

    def prompts(self) -> list[PromptItem]:
        prompts = prompt_set(self.split, self.n, seed=self.seed, categories=self.categories)
        return [PromptItem(f"{p.category}/{i:04d}", p.text, p.category, i, p.metadata())
                for i, p in enumerate(prompts)]

    def config(self) -> dict[str, Any]:
        return {"split": self.split, "prompts_per_category": self.n, "seed": self.seed,
                "categories": list(self.categories)}

    def notes(self) -> list[str]:
        return [f"ShapeWorld {self.split} prompts ({self.n} per category), exact classical evaluator."]

    def score(self, groups: Sequence[PromptGroup]) -> list[dict[str, Any]]:
        results = []
        for group in groups:
            images = []
            for record in group.images:
                image = record.load()
                images.append({"score": self.evaluator.score(group.item.metadata, image),
                               "partial": self.evaluator.score(group.item.metadata, image, partial=True)})
            results.append({"images": images})
        return results

    def summarize(self, groups: Sequence[PromptGroup], results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        categories, scores, partial = [], [], []
        for group, result in zip(groups, results):
            for image in result["images"]:
                categories.append(group.item.category)
                scores.append(image["score"])
                partial.append(image["partial"])
        out: dict[str, Any] = summarize(categories, scores)
        out["partial"] = mean_or_none(partial)
        return out

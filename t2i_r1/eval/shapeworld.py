"""ShapeWorld as a benchmark of the evaluation harness, under the one ShapeWorld protocol.

Prompts, images per prompt, guidance and tables are those of ``t2i_r1.shapeworld.protocol.Protocol`` (see
its docstring: held-out prompts, ``per_cell`` per category and phrasing family, ``samples`` images per
prompt, guidance 3), so ``t2i-r1 eval --benchmark shapeworld --per-cell N --seed S`` scores the prompt set
``t2i-r1 shapeworld eval --per-cell N --seed S`` scores, at the same guidance (``guidance_scale``: the
command uses it unless ``--guidance-scale`` is given), in the same units: success rates in percent.

Scores are exact (the evaluator reads the rendered world's palette, components, shapes and fills), so
no model is loaded for scoring. Per image: ``score`` 1 when every constraint of the prompt holds, else 0,
and ``partial``, the share of checks passed. Results: the protocol's "by category" table (each category
the mean over its images, overall the mean of the category means, as GenEval) and its "by phrasing"
table (``phrasing: <group>``), all in percent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from t2i_r1.eval.base import PromptGroup, PromptItem, mean_or_none
from t2i_r1.shapeworld import CATEGORIES, ShapeWorldEvaluator
from t2i_r1.shapeworld.protocol import Protocol, report


class ShapeWorldBenchmark:
    name = "shapeworld"
    published = None

    def __init__(self, per_cell: int = Protocol.per_cell, seed: int = 0, categories: Sequence[str] | None = None,
                 images_per_prompt: int | None = None, **_unused):
        categories = tuple(categories) if categories else CATEGORIES
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown ShapeWorld categories {unknown}; expected some of {list(CATEGORIES)}")
        self.protocol = Protocol(per_cell=int(per_cell), samples=int(images_per_prompt or Protocol.samples),
                                 seed=int(seed), categories=categories)
        self.images_per_prompt = self.protocol.samples
        self.guidance_scale = self.protocol.guidance  # the protocol's; used unless the user sets another
        self.evaluator = ShapeWorldEvaluator()
        self._prompts = self.protocol.prompts()

    def prompts(self) -> list[PromptItem]:
        return [PromptItem(f"{p.category}/{i:04d}", p.text, p.category, i, p.metadata())
                for i, p in enumerate(self._prompts)]

    def config(self) -> dict[str, Any]:
        return {"protocol": self.protocol.to_dict()}

    def notes(self) -> list[str]:
        return [f"ShapeWorld protocol (t2i_r1/shapeworld/protocol.py): {self.protocol.describe()}; exact "
                "evaluator; success rates in percent."]

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
        """The protocol's tables in percent: categories and overall, then ``phrasing: <group>``, then partial."""
        per_prompt = [len(r["images"]) for r in results]
        if len(set(per_prompt)) != 1:
            raise ValueError(f"ShapeWorld: every prompt needs the same number of images, got {sorted(set(per_prompt))}")
        prompts = [self._prompts[g.item.index] for g in groups]
        scores = [image["score"] for r in results for image in r["images"]]
        tables = report(prompts, scores)
        out: dict[str, Any] = {k: 100 * v for k, v in tables["by category"].items()}
        out.update({f"phrasing: {k}": 100 * v for k, v in tables["by phrasing"].items()})
        partial = mean_or_none([image["partial"] for r in results for image in r["images"]])
        out["partial"] = None if partial is None else 100 * partial
        return out

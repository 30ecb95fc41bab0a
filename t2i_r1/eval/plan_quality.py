"""Plan quality: a (V)LM judge rates each semantic-level plan (the CoT written before the image).

The T2I-R1 authors' rebuttal names the aspects: alignment with the prompt (object existence,
attributes, relationships, focus), details, purity and clarity. Their exact judge prompt is not
public, so the rubric below is this project's: each aspect is an integer 1-5; ``alignment`` is the
mean of its four sub-aspects and ``overall`` the mean of alignment, details, purity and clarity.
The judge sees the prompt and the plan only (no image): it rates the plan as a plan.
Images generated without a plan are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from t2i_r1.eval.base import PromptGroup, mean_or_none
from t2i_r1.eval.judges import Judge, JudgeRequest, build_judge

ALIGNMENT = ("existence", "attributes", "relationships", "focus")
DIMENSIONS = (*ALIGNMENT, "details", "purity", "clarity")

SYSTEM_PROMPT = "You are a strict, careful judge of the plans text-to-image models write before drawing."
JUDGE_PROMPT = """A text-to-image model was given a PROMPT. Before drawing, it wrote a PLAN: a short description of the image it is about to draw. Rate the PLAN on each aspect below with an integer from 1 (very poor) to 5 (excellent).

Existence: every object the prompt names is in the plan; none is dropped or replaced.
Attributes: the prompt's colours, shapes, textures, counts and other attributes are kept and bound to the right objects.
Relationships: the prompt's spatial and other relations are kept, between the right objects.
Focus: the plan stays on what the prompt asks for; it does not shift the subject or add competing subjects.
Details: it adds useful visual detail (layout, appearance, setting, lighting) that helps drawing, without changing the prompt's meaning.
Purity: nothing irrelevant to the image: no reasoning chatter, meta-commentary, instructions or repetition.
Clarity: clear, concrete, unambiguous language a drawing model can follow.

PROMPT: "{prompt}"
PLAN: "{plan}"

Answer with exactly these seven lines and nothing else:
Existence: <1-5>
Attributes: <1-5>
Relationships: <1-5>
Focus: <1-5>
Details: <1-5>
Purity: <1-5>
Clarity: <1-5>"""

_LINE = re.compile(r"\**\s*(" + "|".join(DIMENSIONS) + r")\s*\**\s*[:：=-]?\s*\**\s*([0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)


def parse_plan_scores(text: str) -> dict[str, float] | None:
    """The seven aspect scores from a reply; None unless all are present and in 1-5 (first value wins)."""
    scores: dict[str, float] = {}
    for name, value in _LINE.findall(text or ""):
        scores.setdefault(name.lower(), float(value))
    if set(scores) != set(DIMENSIONS) or not all(1 <= v <= 5 for v in scores.values()):
        return None
    return scores


def combine(scores: Mapping[str, float]) -> dict[str, float]:
    """Add ``alignment`` (mean of the four alignment aspects) and ``overall`` (mean of alignment, details, purity, clarity)."""
    alignment = sum(scores[k] for k in ALIGNMENT) / len(ALIGNMENT)
    overall = (alignment + scores["details"] + scores["purity"] + scores["clarity"]) / 4
    return {**scores, "alignment": alignment, "overall": overall}


class PlanQualityMetric:
    name = "plan_quality"

    def __init__(self, judge: str | Judge, device: str | None = None, dtype: str | None = None) -> None:
        self.judge_spec, self.device, self.dtype = judge, device, dtype
        self._judge: Judge | None = None

    def config(self) -> dict[str, Any]:
        judge = self.judge_spec if isinstance(self.judge_spec, str) else self.judge_spec.config()
        return {"judge": judge, "prompt": "t2i_r1.eval.plan_quality.JUDGE_PROMPT v1"}

    def score(self, groups: Sequence[PromptGroup]) -> list[dict[str, Any]]:
        owners = [(g, s) for g, group in enumerate(groups) for s, r in enumerate(group.images) if r.plan]
        results: list[dict[str, Any]] = [{"images": [{} for _ in g.images]} for g in groups]
        if not owners:
            return results
        if self._judge is None:
            self._judge = build_judge(self.judge_spec, device=self.device, dtype=self.dtype)
        requests = [JudgeRequest(JUDGE_PROMPT.format(prompt=groups[g].item.prompt, plan=groups[g].images[s].plan),
                                 system=SYSTEM_PROMPT) for g, s in owners]  # fmt: skip
        for (g, s), reply in zip(owners, self._judge(requests)):
            scores = parse_plan_scores(reply)
            results[g]["images"][s] = {"reply": reply, **(combine(scores) if scores else {"judge_failed": True})}
        return results

    def summarize(self, groups: Sequence[PromptGroup], results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        entries = [im for r in results for im in r["images"] if im]
        out = {f"plan_{k}": mean_or_none(e.get(k) for e in entries) for k in ("overall", "alignment", *DIMENSIONS)}
        out["plan_judged"] = sum(1 for e in entries if not e.get("judge_failed"))
        out["plan_judge_failures"] = sum(1 for e in entries if e.get("judge_failed"))
        return out

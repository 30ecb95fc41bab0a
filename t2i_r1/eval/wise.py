"""WISE (legacy protocol, the one behind published numbers): prompts, WiScore arithmetic, the benchmark.

Protocol (PKU-YuanGroup/WISE, ``WISE_legacy``): one image per prompt; a judge scores Consistency,
Realism and Aesthetic Quality, each 0-2; WiScore = (0.7 C + 0.2 R + 0.1 A) / 2 per image, in [0, 1].
Categories by ``prompt_id``: cultural 1-400, time 401-567, space 568-700, biology 701-800, physics
801-900, chemistry 901-1000; a category's score is the mean WiScore of its images; overall =
0.4 cultural + 0.167 time + 0.133 space + 0.1 (biology + physics + chemistry), the categories' shares
of the 1,000 prompts (computed only when all six have scores).

Prompts are not bundled (the repository states no licence): they are read from ``prompts_dir`` or
downloaded once from the benchmark's public repository into ``download_dir``; the SHA-256 of each
file is recorded and compared with the version this module was written against.

Differences from the original:
1. The judge prompt is this project's own wording of WISE's rubric and output format (GPT-4o-2024-05-13
   is the published judge; any OpenAI-compatible endpoint or local VLM can stand in).
2. A reply without all three scores counts as a failure: excluded from the means and counted in
   ``judge_failures``. The original writes 999 for each score, which would enter its means.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from t2i_r1.eval.base import PromptGroup, PromptItem, Published, mean_or_none
from t2i_r1.eval.judges import Judge, JudgeRequest, build_judge
from t2i_r1.utils.io import atomic_path

FILES = ("cultural_common_sense.json", "spatio-temporal_reasoning.json", "natural_science.json")
SOURCE_URL = "https://raw.githubusercontent.com/PKU-YuanGroup/WISE/main/WISE_legacy/data/{name}"
# sha256 prefixes of the files at PKU-YuanGroup/WISE @ eb511744 (../shared/data/benchmarks/MANIFEST.tsv)
KNOWN_SHA256 = {
    "cultural_common_sense.json": "7a59216c7686",
    "spatio-temporal_reasoning.json": "e27d797885ad",
    "natural_science.json": "b262fae58e41",
}
CATEGORY_RANGES = (
    ("cultural", 1, 400),
    ("time", 401, 567),
    ("space", 568, 700),
    ("biology", 701, 800),
    ("physics", 801, 900),
    ("chemistry", 901, 1000),
)
CATEGORY_WEIGHTS = {"cultural": 0.4, "time": 0.167, "space": 0.133, "biology": 0.1, "physics": 0.1, "chemistry": 0.1}
WEIGHTS = {"consistency": 0.7, "realism": 0.2, "aesthetic": 0.1}

# T2I-R1 paper (arXiv 2505.00703, Table 2: WISE overall WiScore). Taken from the project brief; its
# abstract's "+19% on WISE" matches 0.35 -> 0.54.
PUBLISHED = Published(
    source="T2I-R1 paper, arXiv 2505.00703, Table 2 (WISE overall WiScore, GPT-4o-2024-05-13 judge)",
    rows={"Janus-Pro-7B": {"overall": 0.35}, "T2I-R1": {"overall": 0.54}},
)

SYSTEM_PROMPT = "You are a strict, careful judge of images made by text-to-image models."
JUDGE_PROMPT = """Rate the image against the prompt on three criteria, each with an integer 0, 1 or 2.

Consistency: does the image show what the prompt asks for? The explanation says what the prompt refers to.
  0 = the key content is missing or contradicted; 1 = partly shown, or shown inaccurately; 2 = every element shown accurately and completely.
Realism: how real does the image look?
  0 = physically implausible, clearly artificial; 1 = believable but with noticeable flaws; 2 = photographic quality, physically coherent, no sign of generation.
Aesthetic Quality: how good is it as a picture?
  0 = poor composition, unappealing; 1 = acceptable composition and colours, nothing more; 2 = exceptional composition, colour and style.

Be strict: give 2 only when the criterion is met beyond any doubt.

PROMPT: "{prompt}"
EXPLANATION: "{explanation}"

Answer with exactly these three lines and nothing else:
Consistency: <0-2>
Realism: <0-2>
Aesthetic Quality: <0-2>"""

_SCORE_LINE = re.compile(r"\**\s*(consistency|realism|aesthetic(?:\s+quality)?)\s*\**\s*[:：=-]?\s*\**\s*([0-9]+(?:\.[0-9]+)?)",
                         re.IGNORECASE)  # fmt: skip


def wiscore(consistency: float, realism: float, aesthetic: float) -> float:
    """(0.7 C + 0.2 R + 0.1 A) / 2, each score in 0-2, so WiScore is in [0, 1]."""
    return (WEIGHTS["consistency"] * consistency + WEIGHTS["realism"] * realism + WEIGHTS["aesthetic"] * aesthetic) / 2


def category_of(prompt_id: int) -> str:
    for name, first, last in CATEGORY_RANGES:
        if first <= prompt_id <= last:
            return name
    raise ValueError(f"WISE prompt_id {prompt_id} is outside 1-1000")


def parse_judge_scores(text: str) -> dict[str, float] | None:
    """The three scores from a judge's reply; None unless all three are present and in 0-2.

    Accepts "Consistency: 2", "**Realism**: 1", "Aesthetic Quality - 0"; the first value of each wins.
    """
    scores: dict[str, float] = {}
    for name, value in _SCORE_LINE.findall(text or ""):
        key = name.lower().split()[0]
        scores.setdefault(key, float(value))
    if set(scores) != set(WEIGHTS) or not all(0 <= v <= 2 for v in scores.values()):
        return None
    return scores


def overall_wiscore(category_scores: Mapping[str, float | None]) -> float | None:
    """The benchmark's weighted overall; None unless all six categories have a score."""
    if any(category_scores.get(c) is None for c in CATEGORY_WEIGHTS):
        return None
    return sum(w * category_scores[c] for c, w in CATEGORY_WEIGHTS.items())


def download_prompts(directory: Path, source_url: str = SOURCE_URL, timeout_s: float = 60.0) -> Path:
    """Fetch the three legacy prompt files into ``directory`` unless already there."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        target = directory / name
        if target.is_file():
            continue
        url = source_url.format(name=name)
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                data = response.read()
            json.loads(data)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(
                f"could not download WISE prompts from {url} ({err}); download WISE_legacy/data/{name} from "
                f"https://github.com/PKU-YuanGroup/WISE yourself and pass its folder as --prompts-dir"
            ) from None
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    return directory


class WISE:
    """WISE legacy: 1,000 prompts x 1 image, judged 0-2 on consistency / realism / aesthetics."""

    name = "wise"
    images_per_prompt = 1
    published = PUBLISHED

    def __init__(
        self,
        prompts_dir: str | os.PathLike | None = None,
        categories: Sequence[str] | None = None,
        judge: str | Judge = "openai:gpt-4o-2024-05-13",
        download_dir: str | os.PathLike | None = None,
        source_url: str = SOURCE_URL,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        self.prompts_dir = Path(prompts_dir) if prompts_dir is not None else None
        self.download_dir = Path(download_dir) if download_dir is not None else Path(
            os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "t2i_r1" / "wise"  # fmt: skip
        self.source_url = source_url
        self.categories = tuple(categories) if categories else None
        if self.categories and any(c not in CATEGORY_WEIGHTS for c in self.categories):
            raise ValueError(f"unknown WISE categories {self.categories}; expected some of {tuple(CATEGORY_WEIGHTS)}")
        self.judge_spec, self.device, self.dtype = judge, device, dtype
        self._judge: Judge | None = None
        self.file_hashes: dict[str, str] = {}

    @property
    def judge(self) -> Judge:
        if self._judge is None:
            self._judge = build_judge(self.judge_spec, device=self.device, dtype=self.dtype)
        return self._judge

    def prompts(self) -> list[PromptItem]:
        directory = self.prompts_dir or download_prompts(self.download_dir, self.source_url)
        items = []
        for name in FILES:
            path = directory / name
            if not path.is_file():
                raise FileNotFoundError(f"WISE prompt file not found: {path}")
            raw = path.read_bytes()
            self.file_hashes[name] = hashlib.sha256(raw).hexdigest()
            try:
                rows = json.loads(raw)
                for row in rows:
                    pid, prompt, explanation = int(row["prompt_id"]), row["Prompt"], row.get("Explanation", "")
                    category = category_of(pid)
                    if self.categories is None or category in self.categories:
                        meta = {"prompt_id": pid, "explanation": explanation, "subcategory": row.get("Subcategory")}
                        items.append(PromptItem(f"{pid:04d}", prompt, category, pid, meta))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}: not a WISE legacy prompt file ({err!r})") from None
        return sorted(items, key=lambda item: item.index)

    def config(self) -> dict[str, Any]:
        judge = self.judge_spec if isinstance(self.judge_spec, str) else self.judge_spec.config()
        return {"judge": judge, "prompt": "t2i_r1.eval.wise.JUDGE_PROMPT v1"}

    def notes(self) -> list[str]:
        notes = [
            f"Judge: {self.judge_spec if isinstance(self.judge_spec, str) else self.judge_spec.name} with this "
            "project's wording of WISE's rubric; published numbers used GPT-4o-2024-05-13 with WISE's prompt.",
            "Unparsable judge replies are excluded from the means (the original scores them 999).",
        ]
        changed = [n for n, h in self.file_hashes.items() if not h.startswith(KNOWN_SHA256[n])]
        if changed:
            notes.append(f"WISE prompt files differ from PKU-YuanGroup/WISE @ eb511744: {changed}")
        return notes

    def request(self, item: PromptItem, image) -> JudgeRequest:
        text = JUDGE_PROMPT.format(prompt=item.prompt, explanation=item.metadata.get("explanation", ""))
        return JudgeRequest(text=text, images=[image], system=SYSTEM_PROMPT)

    def score(self, groups: Sequence[PromptGroup]) -> list[dict[str, Any]]:
        owners = [(g, s) for g, group in enumerate(groups) for s in range(len(group.images))]
        requests = [self.request(groups[g].item, groups[g].images[s].load()) for g, s in owners]
        replies = self.judge(requests)
        results: list[dict[str, Any]] = [{"images": [None] * len(g.images)} for g in groups]
        for (g, s), reply in zip(owners, replies):
            scores = parse_judge_scores(reply)
            entry: dict[str, Any] = {"reply": reply}
            if scores is None:
                entry.update(wiscore=None, judge_failed=True)
            else:
                entry.update(scores, wiscore=wiscore(scores["consistency"], scores["realism"], scores["aesthetic"]))
            results[g]["images"][s] = entry
        return results

    def summarize(self, groups: Sequence[PromptGroup], results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        per_category: dict[str, list[Any]] = {}
        parts: dict[str, list[Any]] = {k: [] for k in WEIGHTS}
        failures = 0
        for group, result in zip(groups, results):
            for entry in result["images"]:
                per_category.setdefault(group.item.category, []).append(entry.get("wiscore"))
                failures += bool(entry.get("judge_failed"))
                for k in parts:
                    parts[k].append(entry.get(k))
        categories = {c: mean_or_none(per_category.get(c, [])) for c in CATEGORY_WEIGHTS if c in per_category}
        return {"overall": overall_wiscore(categories), **categories,
                **{f"mean_{k}": mean_or_none(v) for k, v in parts.items()}, "judge_failures": failures}  # fmt: skip

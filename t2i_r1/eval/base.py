"""What a benchmark is to the evaluation runner, and the registry of benchmarks.

A benchmark lists its prompts and scores groups of generated images (all images of one prompt form a
group); the runner does everything else (generation with resume, sharding across processes, caching
scores, writing results). Metrics that apply to any benchmark (aesthetic score, diversity, plan
quality) implement the smaller ``Metric`` protocol and run beside the benchmark's own scoring.

Choices:
1. Scoring works on prompt groups, not single images, so per-prompt measures (diversity) and per-prompt
   work (noun phrases, detector queries) happen once, and the score cache resumes prompt by prompt.
2. ``score`` returns plain JSON-serialisable dicts (one per group, with one dict per image under
   ``"images"``), so results survive a crash as JSON lines and ``summarize`` can run on cached results
   from earlier processes.
3. ``config()`` lists every setting that changes the numbers (checkpoints, thresholds, judge); the
   runner keys its score cache by it, so changing a scorer never reuses stale scores.
4. The registry maps a name to ``"module:Class"`` and imports lazily (a CPU install need not import
   detectors it does not use). ``shapeworld`` is registered ahead of its module.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image


@dataclass(frozen=True)
class PromptItem:
    """One benchmark prompt.

    ``key`` names its images on disk (``images/<key>/<sample>.png``): unique, only ``[A-Za-z0-9_./-]``.
    ``index`` is its position in the full benchmark list; generation seeds derive from it, so a prompt
    gets the same images whatever ``--limit`` or sharding selects.
    """

    key: str
    prompt: str
    category: str
    index: int
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.key or any(not (c.isalnum() or c in "_.-/") for c in self.key) or ".." in self.key:
            raise ValueError(f"PromptItem.key {self.key!r} must be non-empty and use only letters, digits, _ . - /")
        if not self.prompt.strip():
            raise ValueError(f"PromptItem {self.key!r}: prompt is empty")


@dataclass(frozen=True)
class ImageRecord:
    """One generated image on disk."""

    sample: int
    path: Path
    plan: str | None = None
    seed: int | None = None

    def load(self) -> Image.Image:
        with Image.open(self.path) as image:
            return image.convert("RGB")


@dataclass(frozen=True)
class PromptGroup:
    """All images of one prompt, in sample order."""

    item: PromptItem
    images: tuple[ImageRecord, ...]


@runtime_checkable
class Metric(Protocol):
    """Anything that scores prompt groups: a benchmark's own scoring or an extra metric."""

    name: str

    def config(self) -> dict[str, Any]: ...

    def score(self, groups: Sequence[PromptGroup]) -> list[dict[str, Any]]:
        """One JSON-serialisable dict per group, holding ``"images"``: one dict per image."""
        ...

    def summarize(self, groups: Sequence[PromptGroup], results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Headline numbers from every group's result."""
        ...


@dataclass(frozen=True)
class Published:
    """Published numbers to print beside ours: model name -> metric -> value, and where they come from."""

    source: str
    rows: Mapping[str, Mapping[str, float]]
    note: str = ""


@runtime_checkable
class Benchmark(Metric, Protocol):
    name: str
    images_per_prompt: int  # the benchmark's protocol (10 for T2I-CompBench, 4 for GenEval, 1 for WISE)
    published: Published | None

    def prompts(self) -> list[PromptItem]: ...

    def notes(self) -> list[str]:
        """What differs from the original protocol (detector substitution, approximations): printed with results."""
        ...


# name -> "module:Class"
BENCHMARKS: dict[str, str] = {}


def register_benchmark(name: str, target: str) -> None:
    if name in BENCHMARKS and BENCHMARKS[name] != target:
        raise ValueError(f"benchmark {name!r} is already registered as {BENCHMARKS[name]!r}")
    BENCHMARKS[name] = target


def benchmark_class(name: str) -> type:
    try:
        target = BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; registered: {', '.join(sorted(BENCHMARKS))}") from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise ValueError(f"benchmark {name!r} is registered as {target} but that module is not installed yet") from None
        raise
    return getattr(module, class_name)


def build_benchmark(name: str, **kwargs: Any) -> Benchmark:
    """Instantiate a registered benchmark, importing its module only now."""
    return benchmark_class(name)(**kwargs)


# --------------------------------------------------------------------------------------------------
# Small helpers shared by the benchmarks
# --------------------------------------------------------------------------------------------------


def finite(values: Iterable[Any]) -> list[float]:
    """The finite numbers among ``values`` (None, NaN and inf dropped)."""
    return [float(v) for v in values if v is not None and isinstance(v, (int, float)) and math.isfinite(v)]


def mean_or_none(values: Iterable[Any]) -> float | None:
    """Mean of the finite values, None when there are none (not 0: an empty category has no score)."""
    kept = finite(values)
    return sum(kept) / len(kept) if kept else None


def limit_per_category(items: Sequence[PromptItem], limit: int | None) -> list[PromptItem]:
    """The first ``limit`` prompts of each category, in benchmark order (all when ``limit`` is None)."""
    if limit is None:
        return list(items)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    seen: dict[str, int] = {}
    out = []
    for item in items:
        if seen.get(item.category, 0) < limit:
            out.append(item)
            seen[item.category] = seen.get(item.category, 0) + 1
    return out


def read_lines(path: Path) -> list[str]:
    """Non-blank lines of a prompt file, stripped; a clear error when the file is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


DATA_DIR = Path(__file__).resolve().parent / "data"

"""Run a benchmark end to end: generate (resuming), score (resuming), write results.json and results.md.

Output directory:
    run.json                      generation settings; a later run into the same folder must match them
    images/<key>/<sample>.png     one file per image; <sample>.json beside it holds plan, seed, prompt
    scores/<metric>-<hash>/       cached scores: config.json and rank<r>.jsonl (one line per prompt)
    per_prompt.jsonl              every prompt with its files, plans and each metric's result
    results.json, results.md      headline numbers, published numbers beside ours, notes

Choices:
1. Resume: a prompt is generated only if one of its images is missing, and only missing files are
   written (an image on disk is never regenerated or overwritten). Prompt ``i`` of the benchmark list
   is drawn with seed ``seed + i`` (``PromptItem.index``), so an interrupted and resumed run, a
   ``--limit`` run and a sharded run give the images an uninterrupted run would (same device and
   dtype). Files are written atomically (temporary file + rename): a kill leaves none half written.
2. Scores are cached per prompt in JSON lines, appended and flushed chunk by chunk, under a folder
   named by the metric and a hash of its ``config()``: re-running rescores nothing already scored,
   and changing a scorer (another detector, another judge) starts a fresh cache instead of mixing.
3. Sharding: ``accelerate``'s ``PartialState().split_between_processes`` splits the prompts to
   generate, then the prompts to score, across processes (``accelerate launch -m t2i_r1.cli eval ...``);
   each rank writes its own cache file; the main process assembles the results. Progress bars (with
   ETA) show the main process's share.
4. The generation model is freed before scoring models load, so both fit on one GPU in turn.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from t2i_r1.eval.base import (
    Benchmark,
    ImageRecord,
    Metric,
    PromptGroup,
    PromptItem,
    build_benchmark,
    limit_per_category,
)
from t2i_r1.utils.io import atomic_path, write_json_atomic

if TYPE_CHECKING:  # the pipeline (torch, transformers) is imported only when images are drawn
    from t2i_r1.pipeline import PipelineConfig

# Settings that change which images are drawn: a run folder must keep them. ``run.json`` holds them flat.
IMAGE_DEFINING = ("benchmark", "model", "images_per_prompt", "use_plan", "seed", "guidance_scale", "temperature",
                  "top_k", "plan_temperature", "plan_top_p", "plan_max_tokens", "template", "image_prompt_format", "dtype",
                  "planner")  # fmt: skip


def run_info(benchmark: str, images_per_prompt: int, generation: PipelineConfig) -> dict[str, Any]:
    """What ``run.json`` records: the benchmark and the image-defining generation settings, flat."""
    g = generation
    return {
        "benchmark": benchmark, "images_per_prompt": images_per_prompt, "model": g.model, "use_plan": g.use_plan,
        "seed": g.seed, "guidance_scale": g.image.guidance_scale, "temperature": g.image.temperature,
        "top_k": g.image.top_k, "plan_temperature": g.plan.temperature, "plan_top_p": g.plan.top_p,
        "plan_max_tokens": g.plan.max_new_tokens, "template": g.template, "image_prompt_format": g.image_prompt_format,
        "dtype": g.dtype, "planner": g.planner,
    }  # fmt: skip


@dataclass
class EvalConfig:
    benchmark: str
    out: Path
    generation: PipelineConfig | None = None  # None: score the images already in ``out``
    benchmark_options: dict[str, Any] = field(default_factory=dict)
    images_per_prompt: int | None = None  # None: the benchmark's protocol
    limit: int | None = None  # first N prompts of each category
    score: bool = True
    score_chunk: int = 8  # prompts scored (and cached) together

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.images_per_prompt is not None and self.images_per_prompt < 1:
            raise ValueError(f"images_per_prompt must be >= 1, got {self.images_per_prompt}")
        if self.score_chunk < 1:
            raise ValueError(f"score_chunk must be >= 1, got {self.score_chunk}")


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def image_path(out: Path, item: PromptItem, sample: int) -> Path:
    return out / "images" / item.key / f"{sample:02d}.png"


def read_groups(out: Path, items: Sequence[PromptItem], n_images: int) -> list[PromptGroup]:
    """The prompt groups on disk; an error naming the first missing image if any is absent."""
    groups, missing = [], []
    for item in items:
        records = []
        for s in range(n_images):
            path = image_path(out, item, s)
            if not path.is_file():
                missing.append(path)
                continue
            side = path.with_suffix(".json")
            info = json.loads(side.read_text()) if side.is_file() else {}
            records.append(ImageRecord(s, path, info.get("plan"), info.get("seed")))
        groups.append(PromptGroup(item, tuple(records)))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} benchmark images are missing, e.g. {missing[0]}; run with --model to generate them"
        )
    return groups


def check_run_file(out: Path, info: Mapping[str, Any]) -> None:
    """Write ``run.json``, or check that the folder's earlier run drew images the same way."""
    path = out / "run.json"
    if path.is_file():
        old = json.loads(path.read_text())
        changed = [k for k in IMAGE_DEFINING if k in old and old.get(k) != info.get(k)]
        if changed:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {info.get(k)!r}" for k in changed)
            raise ValueError(f"{out} holds images drawn with other settings ({details}); use another --out")
        return
    write_json_atomic(path, _jsonable(info))


def _hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]


def cache_dir(out: Path, metric: Metric) -> Path:
    return out / "scores" / f"{metric.name}-{_hash(metric.config())}"


def _files(group: PromptGroup, out: Path) -> list[str]:
    return [str(r.path.relative_to(out)) for r in group.images]


def read_cache(directory: Path) -> dict[str, dict[str, Any]]:
    """key -> cached line, from every rank's file. A line cut short by a kill is ignored."""
    cached: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("rank*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            cached[row["key"]] = row
    return cached


def _jsonable(value: Any) -> Any:
    """NaN / inf become None and paths strings, so the files are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------------


def _state():
    import torch
    from accelerate import PartialState

    # cpu=True on a machine without CUDA lets torchrun / accelerate launch shard across CPU processes (gloo).
    return PartialState(cpu=not torch.cuda.is_available())


def generate_missing(
    out: Path, items: Sequence[PromptItem], n_images: int, settings: PipelineConfig, pipeline=None
) -> int:
    """Draw the images that are not on disk yet, this process's share of them; returns prompts generated here."""
    state = _state()
    pending = [it for it in items if not all(image_path(out, it, s).is_file() for s in range(n_images))]
    done = 0
    with state.split_between_processes(pending) as mine:
        if mine and pipeline is None:
            from t2i_r1.pipeline import T2IR1Pipeline

            pipeline = T2IR1Pipeline.from_config(settings, settings.device or str(state.device))
        bar = tqdm(mine, desc=f"generating ({len(pending)} prompts left)", unit="prompt",
                   disable=not state.is_local_main_process)  # fmt: skip
        for item in bar:
            seed = settings.seed + item.index
            generations = pipeline.generate([item.prompt], n_images, use_plan=settings.use_plan, seed=seed)
            if len(generations) != n_images:
                raise RuntimeError(f"the pipeline returned {len(generations)} images for {n_images} asked")
            for s, gen in enumerate(generations):
                path = image_path(out, item, s)
                if path.is_file():
                    continue
                info = {"prompt": item.prompt, "key": item.key, "sample": s, "seed": seed, "plan": gen.plan}
                write_json_atomic(path.with_suffix(".json"), info)
                with atomic_path(path) as tmp:
                    gen.image.save(tmp, format="PNG")
            done += 1
    del pipeline
    gc.collect()
    _empty_cuda_cache()
    state.wait_for_everyone()
    return done


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def score_missing(out: Path, metric: Metric, groups: Sequence[PromptGroup], chunk: int) -> int:
    """Score the groups this metric's cache lacks (this process's share); returns groups scored here."""
    state = _state()
    directory = cache_dir(out, metric)
    if state.is_main_process:
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(directory / "config.json", _jsonable(metric.config()))
    state.wait_for_everyone()
    cached = read_cache(directory)
    todo = [g for g in groups if cached.get(g.item.key, {}).get("files") != _files(g, out)]
    state.wait_for_everyone()  # every rank has read the cache before any appends to it: the same split everywhere
    scored = 0
    with state.split_between_processes(todo) as mine:
        bar = tqdm(total=len(mine), desc=f"scoring {metric.name}", unit="prompt", disable=not state.is_local_main_process)
        path = directory / f"rank{state.process_index}.jsonl"
        with open(path, "a", encoding="utf-8") as handle:
            if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
                handle.write("\n")  # end a line a kill cut short, so it does not swallow the next one
            for start in range(0, len(mine), chunk):
                part = mine[start : start + chunk]
                results = metric.score(part)
                if len(results) != len(part):
                    raise RuntimeError(f"{metric.name}.score returned {len(results)} results for {len(part)} prompts")
                for group, result in zip(part, results):
                    row = {"key": group.item.key, "files": _files(group, out), "result": _jsonable(result)}
                    handle.write(json.dumps(row) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
                scored += len(part)
                bar.update(len(part))
        bar.close()
    state.wait_for_everyone()
    return scored


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown(results: Mapping[str, Any]) -> str:
    """Our numbers beside the published ones, then extras and notes."""
    metrics = results["metrics"]
    published = results.get("published") or {}
    rows = published.get("rows", {})
    columns = [k for k in metrics if isinstance(metrics[k], (int, float)) or metrics[k] is None]
    if rows:  # lead with the published columns, in our order
        shown = {c for r in rows.values() for c in r}
        columns = [c for c in columns if c in shown] + [c for c in columns if c not in shown]
    label = f"ours: {results['model']} ({'plan' if results.get('use_plan') else 'no plan'})"
    lines = [f"# {results['benchmark']}", ""]
    if not results["complete"]:
        lines += ["**Partial run** (" + results["partial_reason"] + "): not comparable with published numbers.", ""]
    lines += ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in rows.items():
        lines.append(f"| {name} (published) | " + " | ".join(_fmt(values.get(c)) for c in columns) + " |")
    lines.append(f"| {label} | " + " | ".join(_fmt(metrics.get(c)) for c in columns) + " |")
    if published:
        lines += ["", f"Published: {published['source']}." + (f" {published['note']}" if published.get("note") else "")]
    if results.get("extras"):
        lines += ["", "| extra metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in results["extras"].items()]
    lines += ["", f"{results['n_prompts']} prompts, {results['n_images']} images ({results['images_per_prompt']} per prompt)."]
    if results.get("notes"):
        lines += ["", "Notes:"] + [f"- {n}" for n in results["notes"]]
    return "\n".join(lines) + "\n"


def assemble(
    out: Path,
    config: EvalConfig,
    benchmark: Benchmark,
    metrics: Sequence[Metric],
    groups: Sequence[PromptGroup],
    n_images: int,
    all_items: int,
) -> dict[str, Any]:
    per_metric: dict[str, list[dict[str, Any]]] = {}
    for metric in [benchmark, *metrics]:
        cached = read_cache(cache_dir(out, metric))
        per_metric[metric.name] = [cached[g.item.key]["result"] for g in groups]
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    extras: dict[str, Any] = {}
    for metric in metrics:
        extras.update(metric.summarize(groups, per_metric[metric.name]))
    reasons = []
    if config.limit is not None:
        reasons.append(f"--limit {config.limit}")
    if len(groups) != all_items or config.benchmark_options.get("categories"):
        reasons.append(f"{len(groups)} of {all_items} prompts")
    if n_images != benchmark.images_per_prompt:
        reasons.append(f"{n_images} images per prompt instead of {benchmark.images_per_prompt}")
    published = benchmark.published
    results = {
        "benchmark": benchmark.name,
        "model": run.get("model"),
        "use_plan": run.get("use_plan"),
        "complete": not reasons,
        "partial_reason": "; ".join(reasons),
        "n_prompts": len(groups),
        "n_images": sum(len(g.images) for g in groups),
        "images_per_prompt": n_images,
        "categories": {c: sum(g.item.category == c for g in groups) for c in dict.fromkeys(g.item.category for g in groups)},
        "metrics": benchmark.summarize(groups, per_metric[benchmark.name]),
        "extras": extras,
        "published": None
        if published is None
        else {"source": published.source, "rows": published.rows, "note": published.note},
        "notes": benchmark.notes(),
        "scorers": {m.name: m.config() for m in [benchmark, *metrics]},  # made JSON-safe below
        "generation": run,
    }
    results = _jsonable(results)
    with atomic_path(out / "per_prompt.jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for i, g in enumerate(groups):
                row = {"key": g.item.key, "category": g.item.category, "prompt": g.item.prompt,
                       "files": _files(g, out), "plans": [r.plan for r in g.images],
                       **{name: per_metric[name][i] for name in per_metric}}  # fmt: skip
                handle.write(json.dumps(_jsonable(row)) + "\n")
    write_json_atomic(out / "results.json", results)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(markdown(results))
    return results


def run_eval(
    config: EvalConfig,
    *,
    benchmark: Benchmark | None = None,
    metrics: Sequence[Metric] = (),
    pipeline=None,
) -> dict[str, Any] | None:
    """Generate what is missing, score what is unscored, and (main process) write and return the results.

    ``benchmark`` / ``pipeline`` may be given as objects (tests, notebooks); otherwise they are built from
    ``config``. ``metrics``: extra metrics (aesthetic, diversity, plan quality) run on the same images.
    """
    state = _state()
    out = config.out
    benchmark = benchmark or build_benchmark(config.benchmark, **config.benchmark_options)
    all_items = benchmark.prompts()
    items = limit_per_category(all_items, config.limit)
    if not items:
        raise ValueError(f"{benchmark.name}: no prompts selected")
    n_images = config.images_per_prompt or benchmark.images_per_prompt
    if config.generation is not None:
        info = run_info(benchmark.name, n_images, config.generation)
        if state.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            check_run_file(out, info)
        state.wait_for_everyone()
        generate_missing(out, items, n_images, config.generation, pipeline)
    groups = read_groups(out, items, n_images)
    if not config.score:
        return None
    for metric in [benchmark, *metrics]:
        score_missing(out, metric, groups, config.score_chunk)
    if not state.is_main_process:
        return None
    return assemble(out, config, benchmark, metrics, groups, n_images, len(all_items))

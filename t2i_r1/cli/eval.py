"""``t2i-r1 eval``: generate a benchmark's images (resuming) and score them.

    t2i-r1 eval --benchmark t2i-compbench --model PATH --out runs/eval/t2i-r1 [--no-plan]
    accelerate launch -m t2i_r1.cli eval --benchmark geneval --model PATH --out DIR   # one shard per GPU
    t2i-r1 eval --benchmark wise --model PATH --out DIR --judge openai:gpt-4o-2024-05-13
    t2i-r1 eval --benchmark geneval --out DIR --score-only          # rescore images already in DIR
    t2i-r1 eval --benchmark shapeworld --out DIR                     # the bundled model, the ShapeWorld protocol

Scorer options apply to the benchmarks that use them (an option a benchmark does not take is an
error, not silently ignored). Extra metrics: ``--aesthetic-head`` (LAION predictor), ``--diversity``,
``--plan-judge``.
"""

from __future__ import annotations

import argparse
import inspect
from dataclasses import replace
from pathlib import Path

from t2i_r1.cli.options import add_model_argument, add_pipeline_arguments, add_runtime_arguments, pipeline_config

# CLI option -> benchmark keyword
SCORER_OPTIONS = {
    "prompts_dir": "prompts_dir",
    "categories": "categories",
    "per_cell": "per_cell",
    "vqa_model": "vqa_model",
    "clip_model": "clip_model",
    "color_clip_model": "color_clip_model",
    "detector": "detector",
    "detector_model": "detector_model",
    "detector_threshold": "detector_threshold",
    "judge": "judge",
    "wise_download_dir": "download_dir",
    "color_prompts": "color_prompts",
    "scorer_dtype": "dtype",
    "scorer_batch_size": "batch_size",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from t2i_r1.eval import BENCHMARKS

    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    add_model_argument(parser)
    parser.add_argument("--out", required=True, help="run folder: images, score caches, results.json, results.md")
    parser.add_argument("--prompts-dir", help="folder with the benchmark's prompt files (default: bundled; WISE: downloaded)")
    parser.add_argument("--categories", help="comma-separated subset of the benchmark's categories / tasks")
    parser.add_argument("--limit", type=int, help="only the first N prompts of each category (smoke runs; not comparable)")
    parser.add_argument("--images-per-prompt", type=int, help="default: the benchmark's protocol (10 / 4 / 1 / 2)")
    parser.add_argument("--per-cell", type=int, help="ShapeWorld: held-out prompts per category and phrasing family "
                                                      "(default: the protocol's, 10); --seed draws them")
    parser.add_argument("--score-only", action="store_true", help="score the images already in --out; generate nothing")
    parser.add_argument("--generate-only", action="store_true", help="generate the images; score nothing")
    parser.add_argument("--score-chunk", type=int, default=8, help="prompts scored and cached together")
    add_pipeline_arguments(parser.add_argument_group("generation (as t2i-r1 generate)"), device=None,
                           device_help="default: this process's accelerate device")  # fmt: skip
    s = parser.add_argument_group("scorers (defaults: each benchmark's own models)")
    s.add_argument("--vqa-model", help="BLIP VQA checkpoint (T2I-CompBench; default Salesforce/blip-vqa-capfilt-large)")
    s.add_argument("--clip-model", help="CLIP for T2I-CompBench non-spatial / complex (default openai/clip-vit-base-patch32)")
    s.add_argument("--color-clip-model", help="CLIP for GenEval colours (default openai/clip-vit-large-patch14)")
    s.add_argument("--detector", choices=["owlv2", "gdino", "mask2former"],
                   help="default: owlv2 for T2I-CompBench, mask2former for GenEval")  # fmt: skip
    s.add_argument("--detector-model", help="detector checkpoint (default: the detector's public release)")
    s.add_argument("--detector-threshold", type=float, help="the detector's score floor")
    s.add_argument("--color-prompts", choices=["pre-2025-09-03", "current"], help="T2I-CompBench color_val.txt version")
    s.add_argument("--judge", help="WISE judge: openai:MODEL (endpoint from $T2I_R1_JUDGE_URL, key from "
                                   "$T2I_R1_JUDGE_API_KEY or $OPENAI_API_KEY) or transformers:PATH")  # fmt: skip
    s.add_argument("--wise-download-dir", help="where WISE prompts are downloaded (default: OUT/wise-prompts)")
    s.add_argument("--scorer-dtype", choices=["float32", "bfloat16", "float16"])
    s.add_argument("--scorer-batch-size", type=int)
    x = parser.add_argument_group("extra metrics")
    x.add_argument("--aesthetic-head", help="LAION aesthetic predictor v2 file (sac+logos+ava1-l14-linearMSE.pth)")
    x.add_argument("--aesthetic-clip", default="openai/clip-vit-large-patch14")
    x.add_argument("--diversity", action="store_true", help="mean pairwise CLIP cosine distance among a prompt's images")
    x.add_argument("--diversity-clip", default="openai/clip-vit-base-patch32")
    x.add_argument("--plan-judge", help="judge the plans: openai:MODEL or transformers:PATH")
    add_runtime_arguments(parser)


def benchmark_options(args: argparse.Namespace) -> dict:
    """The scorer options given on the command line, as keyword arguments of the chosen benchmark."""
    from t2i_r1.eval.base import benchmark_class

    accepted = set(inspect.signature(benchmark_class(args.benchmark)).parameters)
    options = {}
    for option, keyword in SCORER_OPTIONS.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        if keyword not in accepted:
            raise ValueError(f"--{option.replace('_', '-')} does not apply to --benchmark {args.benchmark}")
        options[keyword] = [c.strip() for c in value.split(",") if c.strip()] if option == "categories" else value
    if "seed" in accepted:  # ShapeWorld: the protocol's seed draws the prompts, as in t2i-r1 shapeworld eval
        options["seed"] = args.seed
    if "download_dir" in accepted and "download_dir" not in options:  # WISE: downloads stay inside --out
        options["download_dir"] = str(Path(args.out) / "wise-prompts")
    return options


def extra_metrics(args: argparse.Namespace) -> list:
    from t2i_r1.eval.aesthetic_diversity import AestheticMetric, DiversityMetric
    from t2i_r1.eval.plan_quality import PlanQualityMetric

    metrics: list = []
    kwargs = {"dtype": args.scorer_dtype}
    if args.aesthetic_head:
        metrics.append(AestheticMetric(args.aesthetic_head, args.aesthetic_clip, **kwargs))
    if args.diversity:
        metrics.append(DiversityMetric(args.diversity_clip, **kwargs))
    if args.plan_judge:
        if args.no_plan:
            raise ValueError("--plan-judge needs plans: drop --no-plan")
        metrics.append(PlanQualityMetric(args.plan_judge, **kwargs))
    return metrics


def run(args: argparse.Namespace) -> dict | None:
    from t2i_r1.eval.runner import EvalConfig, run_eval

    from t2i_r1.eval.base import build_benchmark

    if args.score_only and args.generate_only:
        raise ValueError("--score-only and --generate-only exclude each other")
    options = benchmark_options(args)
    benchmark = build_benchmark(args.benchmark, **options)
    generation = None
    if not args.score_only:
        generation = pipeline_config(args)
        protocol_guidance = getattr(benchmark, "guidance_scale", None)
        if args.guidance_scale is None and protocol_guidance is not None:  # the benchmark's protocol decides
            generation.image = replace(generation.image, guidance_scale=protocol_guidance)
    config = EvalConfig(
        benchmark=args.benchmark, out=Path(args.out), generation=generation, benchmark_options=options,
        images_per_prompt=args.images_per_prompt, limit=args.limit, score=not args.generate_only,
        score_chunk=args.score_chunk,
    )  # fmt: skip
    results = run_eval(config, benchmark=benchmark, metrics=extra_metrics(args) if not args.generate_only else ())
    if results is not None:
        print((Path(args.out) / "results.md").read_text())
        print(f"wrote {Path(args.out) / 'results.json'} and results.md")
    return results

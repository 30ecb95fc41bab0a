"""Command-line flags shared by several commands.

- ``add_model_argument``: ``--model``, a checkpoint directory, a hub id, or a bundled model's name
  (``shapeworld``, the default where a user expects one: generate, eval, serve, demo, shapeworld eval).
- ``add_pipeline_arguments`` / ``pipeline_config``: the generation settings of a ``PipelineConfig``
  (``t2i-r1 generate``, ``t2i-r1 eval`` and ``t2i-r1 serve``).
- ``add_runtime_arguments`` / ``configure_runtime``: ``--threads`` and ``--verbose`` for every command that
  computes.

This module imports no torch: ``--help`` must stay instant.
"""

from __future__ import annotations

import argparse
import logging
import os

from t2i_r1.bundled import BUNDLED_MODELS, resolve_model
from t2i_r1.rollout.settings import DEFAULT_IMAGE_PROMPT_FORMAT, ImageSamplingConfig, PlanSamplingConfig

DTYPES = ("float32", "bfloat16", "float16")
SHAPEWORLD_GUIDANCE = 3.0
"""The ShapeWorld protocol's guidance (``t2i_r1.shapeworld.protocol.Protocol.guidance``; a test keeps them equal)."""
BUNDLED_NAMES = ", ".join(BUNDLED_MODELS)


def add_model_argument(parser, *, default: str | None = "shapeworld", flag: str = "--model", what: str = "Janus checkpoint") -> None:
    """``--model``: a directory, a hub id (fetched only because you wrote it) or a bundled model's name."""
    default_text = f" (default: {default}, the bundled model)" if default in BUNDLED_MODELS else ""
    parser.add_argument(flag, default=default, type=resolve_model, metavar="MODEL",
                        help=f"{what}: a directory, a hub id, or a bundled model ({BUNDLED_NAMES}){default_text}")


def default_threads() -> int:
    """$OMP_NUM_THREADS when set, else 1: on a machine others use, more threads than idle cores make
    every OpenMP region wait for the slowest thread (measured: docs/performance.md, "Threads")."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


THREADS_HELP = ("torch CPU threads (default: $OMP_NUM_THREADS if set, else 1). More threads help only on idle "
                "cores: on a shared machine 2 threads made a demo step 5x slower than 1")


def add_runtime_arguments(parser, *, threads: bool = True) -> None:
    """``--threads`` (CPU threads) and ``--verbose`` (library progress bars and messages)."""
    if threads:
        parser.add_argument("--threads", type=int, default=default_threads(), help=THREADS_HELP)
    parser.add_argument("--verbose", action="store_true",
                        help="also show the libraries' progress bars and messages (weights loading, saving)")


def configure_runtime(args: argparse.Namespace) -> None:
    """Apply ``--threads`` and ``--verbose`` before a command runs. Quiet by default: transformers' and the
    hub's progress bars ("Loading weights", "Writing model shards") and info messages are hidden."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    # DeepSpeed (installed with [dev] and [deepspeed]) warns "Setting accelerator to CPU" whenever
    # transformers imports it, e.g. on every save; its import resets its logger's level, a filter stays.
    deepspeed_logger = logging.getLogger("DeepSpeed")
    deepspeed_logger.removeFilter(_only_errors)
    if getattr(args, "verbose", False):
        hf_logging.set_verbosity_info()
        hf_logging.enable_progress_bar()
        hub_utils.enable_progress_bars()
    else:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        hub_utils.disable_progress_bars()
        deepspeed_logger.addFilter(_only_errors)


def _only_errors(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def add_pipeline_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    device: str | None = "cpu",
    device_help: str = "cpu, cuda, cuda:1...",
    dtype: str = "float32",
    dtypes: tuple[str, ...] = DTYPES,
    dtype_help: str | None = None,
    drawing: bool = True,
) -> None:
    """Flags of every ``PipelineConfig`` field but ``model``. ``drawing=False`` leaves out ``--no-plan``,
    ``--seed`` and ``--planner`` (for the web page, where each request sets its seed and plan switch)."""
    plan, image = PlanSamplingConfig(), ImageSamplingConfig()
    if drawing:
        parser.add_argument("--no-plan", action="store_true", help="draw straight from the prompt (no semantic CoT)")
        parser.add_argument("--seed", type=int, default=0, help="prompt i is drawn with seed + i")
        parser.add_argument("--planner", help="a causal LM (directory or hub id) that writes the plans instead of "
                                              "the Janus model (the external-planner setting)")  # fmt: skip
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help=f"classifier-free guidance (default: {image.guidance_scale:g}; the bundled ShapeWorld "
                             f"model and ShapeWorld scoring: {SHAPEWORLD_GUIDANCE:g}, its protocol's)")
    parser.add_argument("--temperature", type=float, default=image.temperature, help="image-token temperature")
    parser.add_argument("--top-k", type=int, default=image.top_k)
    parser.add_argument("--plan-temperature", type=float, default=plan.temperature)
    parser.add_argument("--plan-top-p", type=float, default=plan.top_p)
    parser.add_argument("--plan-max-tokens", type=int, default=plan.max_new_tokens)
    parser.add_argument("--template", help="reasoning-instruction template file with a {prompt} slot")
    parser.add_argument("--image-prompt-format", default=DEFAULT_IMAGE_PROMPT_FORMAT)
    parser.add_argument("--dtype", default=dtype, choices=list(dtypes), help=dtype_help)
    parser.add_argument("--device", default=device, help=device_help)
    parser.add_argument("--memory-budget-gb", type=float, default=image.memory_budget_gb,
                        help="KV-cache budget per image chunk")  # fmt: skip


def pipeline_config(args: argparse.Namespace, model: str | None = None):
    """The ``PipelineConfig`` of the flags ``add_pipeline_arguments`` added (``model`` defaults to ``--model``)."""
    from t2i_r1.pipeline import PipelineConfig

    planner, use_plan = getattr(args, "planner", None), not getattr(args, "no_plan", False)
    if planner and not use_plan:
        raise ValueError("--planner and --no-plan exclude each other")
    model = model if model is not None else args.model
    guidance = args.guidance_scale
    if guidance is None:  # the bundled ShapeWorld model draws best at its protocol's guidance
        guidance = SHAPEWORLD_GUIDANCE if model == resolve_model("shapeworld") else ImageSamplingConfig().guidance_scale
    return PipelineConfig(
        model=model, dtype=args.dtype, device=args.device,
        template=args.template, image_prompt_format=args.image_prompt_format, planner=planner, use_plan=use_plan,
        seed=getattr(args, "seed", 0),
        plan=PlanSamplingConfig(args.plan_max_tokens, args.plan_temperature, args.plan_top_p),
        image=ImageSamplingConfig(guidance_scale=guidance, temperature=args.temperature, top_k=args.top_k,
                                  memory_budget_gb=args.memory_budget_gb),
    )  # fmt: skip

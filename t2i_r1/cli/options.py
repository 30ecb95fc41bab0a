"""Command-line flags shared by several commands: the generation settings of a ``PipelineConfig``.

``t2i-r1 generate``, ``t2i-r1 eval`` and ``t2i-r1 serve`` add them with ``add_pipeline_arguments`` and read
them back with ``pipeline_config``; each command adds its own ``--model`` (required, optional, or with a
bundled default).
"""

from __future__ import annotations

import argparse

from t2i_r1.pipeline import PipelineConfig
from t2i_r1.policy.janus import DEFAULT_IMAGE_PROMPT_FORMAT
from t2i_r1.rollout.sampling import ImageSamplingConfig, PlanSamplingConfig

DTYPES = ("float32", "bfloat16", "float16")


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
    parser.add_argument("--guidance-scale", type=float, default=image.guidance_scale)
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


def pipeline_config(args: argparse.Namespace, model: str | None = None) -> PipelineConfig:
    """The ``PipelineConfig`` of the flags ``add_pipeline_arguments`` added (``model`` defaults to ``--model``)."""
    planner, use_plan = getattr(args, "planner", None), not getattr(args, "no_plan", False)
    if planner and not use_plan:
        raise ValueError("--planner and --no-plan exclude each other")
    return PipelineConfig(
        model=model if model is not None else args.model, dtype=args.dtype, device=args.device,
        template=args.template, image_prompt_format=args.image_prompt_format, planner=planner, use_plan=use_plan,
        seed=getattr(args, "seed", 0),
        plan=PlanSamplingConfig(args.plan_max_tokens, args.plan_temperature, args.plan_top_p),
        image=ImageSamplingConfig(guidance_scale=args.guidance_scale, temperature=args.temperature, top_k=args.top_k,
                                  memory_budget_gb=args.memory_budget_gb),
    )  # fmt: skip

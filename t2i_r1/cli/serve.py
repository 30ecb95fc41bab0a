"""``t2i-r1 serve``: the web page on http://127.0.0.1:7860 (local only unless ``--host`` says otherwise).

Without ``--model`` it serves the bundled small checkpoint (``t2i_r1.serve.DEFAULT_MODEL``); while none
is bundled, a tiny random Janus built in memory stands in, and the page says it is a placeholder.
Generation flags are those of ``t2i-r1 generate`` (``t2i_r1.cli.options``) but the plan switch and
the seed, which each request sets on the page; guidance scale and temperature set the page's defaults.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from t2i_r1 import serve
from t2i_r1.bundled import resolve_model
from t2i_r1.cli.options import DTYPES, add_pipeline_arguments, add_runtime_arguments, pipeline_config

PLACEHOLDER_NOTE = (
    "untrained weights. No trained checkpoint is bundled yet (t2i_r1/assets/shapeworld), so the plans are "
    "gibberish and the images noise; start the page with --model PATH to try a real checkpoint."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=resolve_model, metavar="MODEL",
                        help="Janus checkpoint: a directory, a hub id, or a bundled model (shapeworld; the default)")
    parser.add_argument("--compare", type=resolve_model, metavar="MODEL",
                        help="a second checkpoint shown side by side (e.g. base vs trained)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; anything but loopback exposes the page")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--queue-size", type=int, default=16, help="requests that may wait in the queue; more are refused")
    parser.add_argument("--concurrency-limit", type=int, default=1, help="requests sampled at the same time")
    parser.add_argument("--max-images", type=int, default=8, help="most images per model a request may ask for")
    parser.add_argument("--title", default="T2I-R1")
    add_pipeline_arguments(parser, device="auto", device_help="cpu, cuda, cuda:1...; auto = cuda when available",
                           dtype="auto", dtypes=("auto", *DTYPES), dtype_help="auto = bfloat16 on cuda, float32 on cpu",
                           drawing=False)  # fmt: skip
    add_runtime_arguments(parser)


def _device_and_dtype(device: str, dtype: str) -> tuple[str, str]:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


def load_model(path_or_id: str | None, args: argparse.Namespace):
    """A ``ServedModel``: the checkpoint at ``path_or_id``, or with None the default one (or the placeholder)."""
    from dataclasses import replace

    from t2i_r1.pipeline import T2IR1Pipeline
    from t2i_r1.policy.janus import load_template
    from t2i_r1.serve.handler import ServedModel

    device, dtype = _device_and_dtype(args.device, args.dtype)
    note = None
    if path_or_id is None and not serve.DEFAULT_MODEL.is_dir():
        from t2i_r1.testing import build_tiny_janus

        config = pipeline_config(args, model="")
        policy = build_tiny_janus()
        policy.model.to(device)
        policy.image_prompt_format = config.image_prompt_format
        if args.template:
            policy.reasoning_template = load_template(args.template)
        pipeline = T2IR1Pipeline(policy, plan_config=config.plan, image_config=config.image)
        source, note = "placeholder: tiny random Janus (t2i_r1.testing)", PLACEHOLDER_NOTE
    else:
        source = str(path_or_id if path_or_id is not None else serve.DEFAULT_MODEL)
        config = replace(pipeline_config(args, model=source), device=device, dtype=dtype)
        pipeline = T2IR1Pipeline.from_config(config)
    if path_or_id is not None:
        label = os.path.basename(source.rstrip("/")) or source
    else:
        label = "bundled model" if note is None else "random placeholder"
    return ServedModel(label, pipeline, source, note)


def build_handler(args: argparse.Namespace):
    from t2i_r1.serve.handler import GenerationHandler

    models = []
    for path in [args.model] + ([args.compare] if args.compare else []):
        model = load_model(path, args)
        if any(m.name == model.name for m in models):
            model.name += " (2)"  # the same checkpoint twice, or two with the same directory name
        models.append(model)
    return GenerationHandler(models, max_images=args.max_images)


def _check_arguments(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if args.queue_size < 1:
        raise ValueError(f"--queue-size must be >= 1, got {args.queue_size}")
    if args.concurrency_limit < 1:
        raise ValueError(f"--concurrency-limit must be >= 1, got {args.concurrency_limit}")
    if args.max_images < 1:
        raise ValueError(f"--max-images must be >= 1, got {args.max_images}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> None:
    _check_arguments(args)
    # Gradio's usage analytics would phone home; the page must work offline.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from t2i_r1.serve.app import build_app, launch_options, require_gradio

    try:
        require_gradio()
    except ModuleNotFoundError as err:
        raise ValueError(str(err)) from None  # the t2i-r1 command prints ValueErrors as one-line errors
    handler = build_handler(args)
    demo = build_app(handler, title=args.title, queue_size=args.queue_size, concurrency_limit=args.concurrency_limit)
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the page", file=sys.stderr)
    names = ", ".join(f"{m.name} ({m.source})" for m in handler.models)
    print(f"loaded {names}; starting the page on http://{args.host}:{args.port}", flush=True)
    try:
        demo.launch(**launch_options(args.host, args.port))
    except OSError as err:  # e.g. the port is taken
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {err}") from err

"""``t2i-r1 generate``: plans and images for prompts, written as PNGs, JSON lines and a captioned grid.

    t2i-r1 generate --prompt "a red circle left of a blue square" -n 4 --out runs/first   # the bundled model

Output directory layout:
    images/{prompt:05d}_{sample:02d}.png
    generations.jsonl     one line per image: file, prompt, plan, seed, settings
    grid.png              every image with its prompt and plan printed under it

Everything is checked before the first image is drawn: the prompts (the whole file: UTF-8, JSON, each
prompt's length against the model's context, errors naming file and line), the model path, the output
directory; so a bad input leaves nothing half written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from t2i_r1.cli.options import add_model_argument, add_pipeline_arguments, add_runtime_arguments, pipeline_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    source.add_argument("--prompts-file", help="one prompt per line, or reference-schema JSON lines")
    parser.add_argument("-n", "--num-images", type=int, default=4, help="images per prompt (each with its own plan)")
    parser.add_argument("--out", required=True, help="output directory")
    add_pipeline_arguments(parser)
    add_runtime_arguments(parser)


def check_output_dir(out: Path) -> None:
    """Create ``out`` or fail with one line if it cannot be written (before any model loads)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--out {out} is not writable ({err.strerror or err})") from None


def run(args: argparse.Namespace) -> list[dict]:
    from t2i_r1.data import PromptRecord, check_prompt_lengths, load_prompt_file

    if args.prompt:
        records = [PromptRecord(p.strip(), {}, f"--prompt {i + 1}") for i, p in enumerate(args.prompt)]
        for record in records:
            if not record.prompt:
                raise ValueError(f"{record.source} is empty")
    else:
        records = load_prompt_file(args.prompts_file)
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    config = pipeline_config(args)
    out = Path(args.out)
    check_output_dir(out)

    from tqdm.auto import tqdm

    from t2i_r1.pipeline import T2IR1Pipeline
    from t2i_r1.utils.grid import captioned_grid
    from t2i_r1.utils.io import atomic_path

    pipe = T2IR1Pipeline.from_config(config)
    check_prompt_lengths(pipe.policy, records, use_plan=config.use_plan and not config.planner,
                         plan_tokens=config.plan.max_new_tokens)
    prompts = [r.prompt for r in records]
    (out / "images").mkdir(parents=True, exist_ok=True)
    records, images, captions = [], [], []
    for index, prompt in enumerate(tqdm(prompts, desc="generating", unit="prompt", disable=len(prompts) < 2)):
        generations = pipe.generate([prompt], args.num_images, use_plan=config.use_plan, seed=config.seed + index)
        for sample, gen in enumerate(generations):
            name = f"images/{index:05d}_{sample:02d}.png"
            with atomic_path(out / name) as tmp:
                gen.image.save(tmp, format="PNG")
            records.append({"file": name, **gen.record()})
            images.append(gen.image)
            captions.append(f"prompt: {gen.prompt}" + (f"\nplan: {gen.plan}" if gen.plan is not None else ""))
    with atomic_path(out / "generations.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    with atomic_path(out / "grid.png") as tmp:
        captioned_grid(images, captions, columns=min(args.num_images, 8), caption_lines=10).save(tmp, format="PNG")
    print(f"wrote {len(records)} images, generations.jsonl and grid.png to {out}")
    return records

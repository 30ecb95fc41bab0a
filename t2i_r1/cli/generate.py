"""``t2i-r1 generate``: plans and images for prompts, written as PNGs, JSON lines and a captioned grid.

Output directory layout:
    images/{prompt:05d}_{sample:02d}.png
    generations.jsonl     one line per image: file, prompt, plan, seed, settings
    grid.png              every image with its plan printed under it
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm.auto import tqdm

from t2i_r1.cli.options import add_pipeline_arguments, pipeline_config
from t2i_r1.utils.grid import captioned_grid
from t2i_r1.utils.io import atomic_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Janus checkpoint directory or hub id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    source.add_argument("--prompts-file", help="one prompt per line, or reference-schema JSON lines")
    parser.add_argument("-n", "--num-images", type=int, default=4, help="images per prompt (each with its own plan)")
    parser.add_argument("--out", required=True, help="output directory")
    add_pipeline_arguments(parser)


def run(args: argparse.Namespace) -> list[dict]:
    from t2i_r1.data import load_prompt_file
    from t2i_r1.pipeline import T2IR1Pipeline

    prompts = args.prompt if args.prompt else [r.prompt for r in load_prompt_file(args.prompts_file)]
    for i, p in enumerate(prompts):
        if not p.strip():
            raise ValueError(f"--prompt {i} is empty")
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    config = pipeline_config(args)
    pipe = T2IR1Pipeline.from_config(config)
    out = Path(args.out)
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
            captions.append(gen.plan if gen.plan is not None else gen.prompt)
    with atomic_path(out / "generations.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    with atomic_path(out / "grid.png") as tmp:
        captioned_grid(images, captions, columns=min(args.num_images, 8)).save(tmp, format="PNG")
    print(f"wrote {len(records)} images, generations.jsonl and grid.png to {out}")
    return records

"""``t2i-r1 write-plans``: plans for an image-caption dataset, written by any ``transformers`` VLM (SFT triples).

Input: JSON lines ``{"image": path, "prompt": caption}``. Output: the same lines with ``"plan"`` added,
written atomically. The VLM (``AutoModelForImageTextToText`` + ``AutoProcessor``: Qwen2-VL, LLaVA,
Janus, ...) sees the image and the caption and is asked for a plan in the style the reasoning
instruction asks the policy for, so SFT teaches the same kind of plan RL later rewards.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from t2i_r1.cli.options import add_runtime_arguments

INSTRUCTION = (
    "This image was drawn for the prompt: \"{prompt}\". Write a short plan of the image, as an artist would "
    "before drawing it: every object, its count, colour, shape, texture and size, and where it sits relative "
    "to the others. At most 50 words; output the plan only."
)


def write_plans(vlm, processor, rows: list[dict], base: Path, *, instruction: str = INSTRUCTION,
                max_new_tokens: int = 128, batch_size: int = 4) -> list[dict]:
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    with torch.no_grad():
        return _write_plans(vlm, processor, rows, base, instruction, max_new_tokens, batch_size, Image, tqdm)


def _write_plans(vlm, processor, rows, base, instruction, max_new_tokens, batch_size, Image, tqdm) -> list[dict]:
    out = []
    for start in tqdm(range(0, len(rows), batch_size), desc="plans", disable=len(rows) <= batch_size):
        batch = rows[start : start + batch_size]
        texts = [processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"},
                                          {"type": "text", "text": instruction.format(prompt=r["prompt"])}]}],
            add_generation_prompt=True, tokenize=False) for r in batch]
        images = [Image.open(base / r["image"] if not Path(r["image"]).is_absolute() else r["image"]).convert("RGB")
                  for r in batch]
        inputs = processor(text=texts, images=images, return_tensors="pt", padding=True).to(vlm.device)
        generated = vlm.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        plans = processor.batch_decode(generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        out += [{**r, "plan": plan.strip()} for r, plan in zip(batch, plans)]
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vlm", required=True, help="a transformers image-text-to-text model (path or hub id)")
    parser.add_argument("--data", required=True, help='JSON lines {"image": path, "prompt": caption}')
    parser.add_argument("--out", required=True, help="JSON lines with a plan added (SFT triples)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    add_runtime_arguments(parser)


def run(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from t2i_r1.data import parse_json_line, read_lines
    from t2i_r1.utils.io import atomic_path

    data = Path(args.data)
    rows = []
    for number, line in read_lines(data, "--data file"):
        row = parse_json_line(data, number, line)
        if not isinstance(row.get("image"), str) or not isinstance(row.get("prompt"), str):
            raise ValueError(f"{data}:{number}: each line needs 'image' and 'prompt' strings")
        rows.append(row)
    processor = AutoProcessor.from_pretrained(args.vlm)
    vlm = AutoModelForImageTextToText.from_pretrained(args.vlm, dtype=getattr(torch, args.dtype)).to(args.device).eval()
    triples = write_plans(vlm, processor, rows, data.parent, max_new_tokens=args.max_new_tokens,
                          batch_size=args.batch_size)
    with atomic_path(args.out) as tmp:
        tmp.write_text("".join(json.dumps(t) + "\n" for t in triples))
    print(f"wrote {len(triples)} triples to {args.out}")

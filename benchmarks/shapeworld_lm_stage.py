"""The ShapeWorld LM pretraining stage alone, for tuning it: a fresh language model on a trained VQ, a fixed
number of steps, then held-out losses per format (and optionally held-out success).

    python -m benchmarks.shapeworld_lm_stage --vq-from DIR --steps 2000 --lr 4e-3 --threads 1

The full pretraining spends a fifth of its time on the VQ; probing the LM's settings from a saved VQ
(``t2i-r1 shapeworld pretrain`` output, or the packaged checkpoint) costs only the LM's time. The
learning-rate schedule runs over ``--steps``, so runs at different thread counts or beside another job
are comparable step for step. Held-out losses are over prompts of the held-out split, each format apart:
plan text after the reasoning instruction, image tokens after prompt + plan, image tokens after the prompt.
A lower loss need not mean a higher success rate: at 2,000 steps lr 4e-3 beat 2e-3 on image loss
(3.51 vs 3.91), yet a full-length run at 4e-3 ended with worse plans and success (README, "ShapeWorld").
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from t2i_r1.shapeworld.model import DEFAULT_ASSET, build_model, evaluate_policy, load_policy
from t2i_r1.shapeworld.pretrain import LMTrainConfig, encode_examples, lm_loss, make_batch, sample_examples, train_lm

FORMATS = {
    "plan": LMTrainConfig(p_plan=1.0),
    "image after prompt + plan": LMTrainConfig(p_plan=0.0, p_image_without_plan=0.0, p_uncond=0.0),
    "image after prompt": LMTrainConfig(p_plan=0.0, p_image_without_plan=1.0, p_uncond=0.0),
}
"""Held-out loss formats -> the mixture that draws only rows of that format."""


@torch.no_grad()
def heldout_losses(policy, examples: int, seed: int = 99) -> dict[str, float]:
    """Mean cross-entropy per token, per format, over ``examples`` held-out-split examples (text loss for
    plans, image loss otherwise); all rows in one batch, run in length groups."""
    enc = encode_examples(policy, sample_examples(examples, np.random.default_rng(seed), split="heldout"))
    rows = list(range(examples))
    return {
        name: lm_loss(policy, make_batch(policy, enc, rows, config, np.random.default_rng(0)), chunks=3)[1][
            "text" if name == "plan" else "image"]
        for name, config in FORMATS.items()
    }


def main(argv: list[str] | None = None) -> None:
    defaults = LMTrainConfig()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shapeworld_lm_stage")
    parser.add_argument("--vq-from", default=str(DEFAULT_ASSET), help="checkpoint whose VQ model is kept")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--examples", type=int, default=defaults.examples, help="training examples")
    parser.add_argument("--length-chunks", type=int, default=defaults.length_chunks)
    parser.add_argument("--heldout-examples", type=int, default=256)
    parser.add_argument("--eval-per-category", type=int, default=0,
                        help="> 0: also score held-out success (own plans, 2 images per prompt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="also save the trained checkpoint here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    policy = build_model()
    policy.model.model.vqmodel.load_state_dict(load_policy(args.vq_from).model.model.vqmodel.state_dict())
    config = LMTrainConfig(max_steps=args.steps, batch=args.batch, lr=args.lr, examples=args.examples,
                           length_chunks=args.length_chunks, eval_every=0, seed=args.seed)
    summary = train_lm(policy, config, log=lambda s: print(s, flush=True))
    result = {
        "steps": summary["steps"],
        "seconds": round(summary["seconds"], 1),
        "sequences_per_second": round(summary["steps"] * args.batch / summary["seconds"], 1),
        "heldout_loss": {k: round(v, 4) for k, v in heldout_losses(policy, args.heldout_examples).items()},
    }
    if args.eval_per_category > 0:
        from t2i_r1.shapeworld.grammar import prompt_set

        prompts = prompt_set("heldout", args.eval_per_category, seed=0)
        result["success_with_plan"] = evaluate_policy(policy, prompts, use_plan=True, samples=2, seed=0).table()["overall"]
    if args.out:
        policy.save_pretrained(args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

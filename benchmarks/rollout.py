"""Rollouts per second: plans + CFG images for a fixed tiny Janus and batch; one JSON line.

A rollout is one (plan, image) pair: ``--prompts`` distinct prompts x ``--samples`` plans each, one
image per plan (64 image tokens on the tiny preset), sampled by ``generate_rollouts`` exactly as the
trainer does. The first repeat is a warm-up; the median of the others is reported, with the peak
resident memory of the process (and of the GPU when one is used).

    python -m benchmarks.rollout                        # 4 prompts x 8 samples, tiny preset
    T2I_R1_FAST_DECODE=0 python -m benchmarks.rollout   # transformers' cached forward, for comparison
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch

from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.rollout import fast_decode
from t2i_r1.rollout.rollout import generate_rollouts
from t2i_r1.rollout.sampling import ImageSamplingConfig, PlanSamplingConfig
from t2i_r1.testing import PRESETS, build_tiny_janus
from t2i_r1.train.trainer import PhaseTimer

PROMPTS = [
    "a photo of two red cubes left of a small blue sphere on a wooden table",
    "a green cat on top of a yellow dog",
    "three purple circles above a large orange square with striped texture",
    "a small blue sphere",
    "a wooden table with a red cube and a green cube",
    "two yellow dogs left of a purple cat",
    "an orange square below a blue circle",
    "a large red sphere next to a small green cube",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=PRESETS, default="tiny")
    p.add_argument("--prompts", type=int, default=4, help=f"distinct prompts (at most {len(PROMPTS)})")
    p.add_argument("--samples", type=int, default=8, help="plans (and images) per prompt, G")
    p.add_argument("--plan-tokens", type=int, default=48, help="longest plan")
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=4, help="timed batches after one warm-up")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if not 1 <= a.prompts <= len(PROMPTS):
        raise SystemExit(f"--prompts must be in 1..{len(PROMPTS)}")
    torch.set_num_threads(a.threads)
    tiny = build_tiny_janus(PRESETS[a.size])
    policy = JanusPolicy(tiny.model.to(device=a.device, dtype=getattr(torch, a.dtype)), tiny.processor,
                         reasoning_template="{prompt}")
    prompts = PROMPTS[: a.prompts]
    generator = torch.Generator(a.device).manual_seed(a.seed)
    seconds, phases, plan_lengths = [], {"plan_sampling": [], "image_sampling": []}, []
    for i in range(a.repeats + 1):
        timer = PhaseTimer()
        start = time.perf_counter()
        rollout = generate_rollouts(
            policy, prompts, plans_per_prompt=a.samples, plan_config=PlanSamplingConfig(max_new_tokens=a.plan_tokens),
            image_config=ImageSamplingConfig(guidance_scale=a.guidance), generator=generator, timer=timer,
        )
        if a.device != "cpu":
            torch.cuda.synchronize()
        if i == 0:
            continue  # warm-up
        seconds.append(time.perf_counter() - start)
        for k in phases:
            phases[k].append(timer.seconds.get(k, 0.0))
        plan_lengths.append(float(rollout.plans.plan_mask.sum(1).float().mean()))
    median = statistics.median(seconds)
    out = {
        "benchmark": "rollout", "size": a.size, "prompts": a.prompts, "samples": a.samples,
        "rollouts": a.prompts * a.samples, "image_tokens": policy.num_image_tokens, "plan_tokens_max": a.plan_tokens,
        "plan_tokens_mean": round(statistics.mean(plan_lengths), 2), "guidance": a.guidance,
        "threads": a.threads, "device": a.device, "dtype": a.dtype,
        "fast_decode": fast_decode.unsupported_reason(policy.backbone) is None and fast_decode._ENABLED,
        "rollouts_per_s": round(a.prompts * a.samples / median, 3), "sec_per_batch_median": round(median, 4),
        "phases": {k: round(statistics.median(v), 4) for k, v in phases.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if a.device != "cpu":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

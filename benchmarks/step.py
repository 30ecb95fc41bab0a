"""Our BiCoT-GRPO step on the model of ``../shared/bench/reference_step.py``, with the same JSON fields.

Same presets and flags as the reference script (hidden, layers, heads, image tokens, codebook, vocab,
plan length, G, guidance, beta, lr, activation checkpointing) and the same four pixel stand-in rewards;
the step itself is ``BiCoTGRPOTrainer.train_step``, unmodified. Prints one JSON line:

    python -m benchmarks.step --size medium --steps 5
    T2I_R1_FAST_DECODE=0 python -m benchmarks.step --size medium   # transformers' cached forward instead
    python -m benchmarks.step --size 1b --device cuda --dtype bfloat16   # Janus-Pro-1B shapes, random weights
    nice -n 10 python -m benchmarks.step --size 1b --G 2 --lora-r 16 --steps 1 --warmup 0 --cot-len 48   # on a CPU

``--size 1b`` / ``7b`` build every part at Janus-Pro's real shapes (``t2i_r1.testing.build_janus_pro_shaped``:
102,400-word vocabulary, 576 image tokens decoded to 384 px by the real VQ decoder); the other presets
keep the reference script's tiny vision and VQ parts. ``phase_peak_mb`` is the peak memory inside each
phase: on a CPU the process's resident high-water mark (reset at each phase start through
``/proc/self/clear_refs``), on CUDA ``max_memory_allocated``.

``--image-logprob-mode conditional`` trains what the reference trains (half the image rows in the
log-prob passes); our default, ``guided``, trains the distribution that was sampled.

``--kernel-floor`` (CPU) profiles one more step and adds ``kernel_seconds``: per phase, the time spent
inside the arithmetic kernels themselves (matrix products, attention, convolutions; their backward
too). An implementation that keeps this arithmetic cannot take less, whatever it does about Python,
masks, caches or elementwise work, so reference time / kernel floor bounds the speed-up still to be had.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

from t2i_r1.data import PromptRecord
from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.rewards.pixel import PixelStatReward
from t2i_r1.rollout.sampling import ImageSamplingConfig, PlanSamplingConfig
from t2i_r1.testing import TinyJanusSpec, build_janus_pro_shaped, build_tiny_janus
from t2i_r1.train import BiCoTGRPOTrainer, GRPOConfig, ModelConfig, OptimConfig, RewardSpec, RolloutConfig, TrainConfig
from t2i_r1.train.config import LoraSettings
from t2i_r1.train.trainer import PhaseTimer

SIZES = {"tiny": dict(hidden=128, layers=2, heads=4, image_tokens=64),
         "medium": dict(hidden=256, layers=4, heads=4, image_tokens=256),
         "1b": dict(hidden=2048, layers=24, heads=16, image_tokens=576, vocab=102400, codebook=16384),
         "7b": dict(hidden=4096, layers=30, heads=32, image_tokens=576, vocab=102400, codebook=16384)}
REAL_SHAPES = ("1b", "7b")  # built with Janus-Pro's own vision encoder and VQ model
PROMPT = "a photo of two red cubes left of a small blue sphere on a wooden table"  # ~ the reference's 40 tokens


class CountingTimer(PhaseTimer):
    """Phase times, the number of language-model passes (layer-0 input-norm calls) and the peak memory in
    each phase."""

    current = "other"
    passes: dict[str, int] = defaultdict(int)
    peaks: dict[str, float] = defaultdict(float)  # MB
    verbose = False

    @contextmanager
    def __call__(self, name):
        previous, CountingTimer.current = CountingTimer.current, name
        reset_peak_memory()
        with super().__call__(name), torch.profiler.record_function(PHASE_PREFIX + name):
            yield
        CountingTimer.peaks[name] = max(CountingTimer.peaks[name], peak_memory_mb())
        CountingTimer.current = previous
        if CountingTimer.verbose:  # a step too slow to finish still reports the phases it completed
            print(json.dumps({"phase": name, "seconds": round(self.seconds[name], 2),
                              "peak_mb": round(CountingTimer.peaks[name], 1)}), file=sys.stderr, flush=True)


def reset_peak_memory() -> None:
    """Start a new peak: CUDA's allocator statistics, or the process's resident high-water mark (Linux)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    else:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident size
        except OSError:
            pass  # not Linux: the peak then covers everything before too


def peak_memory_mb() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


PHASE_PREFIX = "phase/"
KERNEL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm"}
KERNEL_MARKERS = ("scaled_dot_product", "flash_attention", "mkldnn_convolution", "slow_conv", "convolution_backward")


def is_kernel(op: str) -> bool:
    """Aten ops that are the arithmetic itself (their self time is the kernel's), not glue around it."""
    return op in KERNEL_OPS or any(marker in op for marker in KERNEL_MARKERS)


def kernel_seconds(events) -> dict[str, float]:
    """Self CPU time of the kernel ops in profiler ``events``, summed per enclosing timer phase."""
    out: dict[str, float] = defaultdict(float)
    for event in events:
        if not is_kernel(event.name):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith(PHASE_PREFIX):
            parent = parent.cpu_parent
        phase = parent.name[len(PHASE_PREFIX):] if parent is not None else "other"
        out[phase] += event.self_cpu_time_total / 1e6
    return dict(out)


def count_passes(model: torch.nn.Module, suffix: str = ""):
    def hook(*_):
        CountingTimer.passes[CountingTimer.current + suffix] += 1
    # the input norm, not the attention module: the fast decoding step calls the norm module but runs
    # attention itself; each pass (and each checkpoint recompute) calls it once, as the reference's hook
    model.model.language_model.layers[0].input_layernorm.register_forward_pre_hook(hook)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=SIZES, default="tiny")
    for k in ("hidden", "layers", "heads", "image-tokens"):
        p.add_argument(f"--{k}", type=int, help="overrides the --size preset")
    for k, v in dict(vocab=512, codebook=1024, cot_len=48, G=8, steps=5, threads=2, seed=0).items():
        p.add_argument(f"--{k.replace('_', '-')}", type=int, default=v)
    for k, v in dict(cfg=5.0, beta=0.01, lr=1e-6).items():
        p.add_argument(f"--{k}", type=float, default=v)
    p.add_argument("--no-ckpt", dest="ckpt", action="store_false", help="no activation checkpointing")
    p.add_argument("--image-logprob-mode", default="guided", choices=["guided", "conditional"],
                   help="ours trains the guided distribution (2x image rows in the log-prob passes); the "
                        "reference trains the conditional one")
    p.add_argument("--micro-batch", type=int, default=None,
                   help="samples per forward/backward in the update (default G: one pass, as the reference); "
                        "smaller lowers the activation peak, same gradient")
    p.add_argument("--kernel-floor", action="store_true",
                   help="profile one more step: seconds inside arithmetic kernels per phase (CPU only)")
    p.add_argument("--lora-r", type=int, default=0, help="train LoRA adapters of this rank (0: full fine-tuning)")
    p.add_argument("--verbose", action="store_true", help="print each phase's time and peak to stderr as it ends")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    a = p.parse_args()
    if a.kernel_floor and a.device != "cpu":
        p.error("--kernel-floor reads CPU profiler times; use it with --device cpu")
    for k, v in SIZES[a.size].items():
        if getattr(a, k, None) is None or k in ("vocab", "codebook"):
            setattr(a, k, v)
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()

    spec = TinyJanusSpec(hidden=a.hidden, layers=a.layers, heads=a.heads, image_tokens=a.image_tokens,
                         codebook=a.codebook, vocab=a.vocab, max_positions=4096, seed=a.seed)
    rss_before_model_mb = peak_memory_mb()
    t_build = time.perf_counter()
    with torch.device(a.device):  # a 1B-shaped model initialises in seconds on a GPU, minutes on a CPU
        policy = build_janus_pro_shaped(a.size, seed=a.seed) if a.size in REAL_SHAPES else build_tiny_janus(spec)
    build_seconds = time.perf_counter() - t_build
    policy = JanusPolicy(policy.model.to(device=a.device, dtype=getattr(torch, a.dtype)), policy.processor,
                         reasoning_template="{prompt}")
    config = TrainConfig(
        model=ModelConfig(path="in-memory", gradient_checkpointing=a.ckpt,
                          lora=LoraSettings(r=a.lora_r, alpha=2 * a.lora_r) if a.lora_r else None), data="in-memory",
        output_dir=tempfile.mkdtemp(prefix="bench-step-"),
        rollout=RolloutConfig(plans_per_prompt=a.G, plan=PlanSamplingConfig(max_new_tokens=a.cot_len),
                              image=ImageSamplingConfig(guidance_scale=a.cfg, logprob_mode=a.image_logprob_mode)),
        rewards={f"pixel_{s}": RewardSpec() for s in ("red", "green", "blue", "std")},
        grpo=GRPOConfig(beta=a.beta), optim=OptimConfig(lr=a.lr), steps=a.warmup + a.steps, prompts_per_step=1,
        micro_batch_size=a.micro_batch or a.G, save_every=0, image_log_every=0, log_every=0, seed=a.seed,
    )
    rewards = {f"pixel_{s}": PixelStatReward(s) for s in ("red", "green", "blue", "std")}
    prompts = [PromptRecord(PROMPT)]
    trainer = BiCoTGRPOTrainer(config, policy=policy, rewards=rewards, prompts=prompts)
    trainer.timer_factory = CountingTimer
    CountingTimer.verbose = a.verbose
    if a.verbose:
        print(json.dumps({"phase": "build", "seconds": round(build_seconds, 2), "peak_mb": round(peak_memory_mb(), 1),
                          "params": sum(q.numel() for q in policy.model.parameters())}), file=sys.stderr, flush=True)
    count_passes(policy.model)
    if isinstance(trainer.reference, JanusPolicy):  # LoRA: the reference is the same model, adapters off
        count_passes(trainer.reference.model, ":ref")
    prompt_tokens = policy.tokenize([policy.plan_prompt_text(PROMPT)]).ids.shape[1]

    totals, phases, passes, losses, plan_lens = [], defaultdict(list), defaultdict(list), [], []
    for i in range(a.warmup + a.steps):  # the first ``warmup`` steps are not timed
        CountingTimer.passes = defaultdict(int)
        CountingTimer.peaks = defaultdict(float)
        start = time.perf_counter()
        result = trainer.train_step(prompts)
        if a.device != "cpu":
            torch.cuda.synchronize()
        if i < a.warmup:
            continue
        totals.append(time.perf_counter() - start)
        losses.append(float(f"{result.stats.get('loss', math.nan):.6g}"))
        plan_lens.append(result.stats.get("plan/length", 0.0))
        for k, v in result.stats.items():
            if k.startswith("time/") and k != "time/step" and not k.startswith("time/reward_"):
                phases[k[5:]].append(v)
        for k, v in CountingTimer.passes.items():
            passes[k].append(v)
    peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # before the profiler's own
    floor = None
    if a.kernel_floor:  # after the timed steps, so the profiler's overhead never reaches their times
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            trainer.train_step(prompts)
        floor = {k: round(v, 4) for k, v in sorted(kernel_seconds(prof.events()).items())}
    by_phase = {k: statistics.mean(v) for k, v in passes.items()}
    out = {
        "impl": "t2i-r1", "size": a.size, "G": a.G, "image_tokens": a.image_tokens, "hidden": a.hidden,
        "layers": a.layers, "threads": a.threads, "steps": a.steps, "device": a.device, "dtype": a.dtype,
        "image_logprob_mode": a.image_logprob_mode, "micro_batch": a.micro_batch or a.G,
        "sec_per_step_median": round(statistics.median(totals), 4),
        "phases": {k: round(statistics.median(v), 4) for k, v in phases.items()},
        "peak_rss_mb": peak_rss_mb, "rss_before_model_mb": round(rss_before_model_mb, 1),
        "phase_peak_mb": {k: round(v, 1) for k, v in CountingTimer.peaks.items()},
        "build_seconds": round(build_seconds, 2), "lora_r": a.lora_r,
        "lm_passes_per_step": sum(by_phase.values()), "lm_passes_by_phase": by_phase,
        "cot_len_mean": round(statistics.mean(plan_lens), 2), "prompt_tokens": prompt_tokens,
        "loss_per_step": losses,
        "trainable_params": sum(q.numel() for q in policy.model.parameters() if q.requires_grad),
        "params": sum(q.numel() for q in policy.model.parameters()),
        "wall_total_s": round(time.perf_counter() - t_start, 2),
    }
    if floor is not None:
        out["kernel_seconds"] = floor
        out["kernel_seconds_total"] = round(sum(floor.values()), 4)
    if a.device != "cpu":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

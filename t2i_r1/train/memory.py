"""Per-device memory of a BiCoT-GRPO run, estimated before renting the hardware.

    python -m t2i_r1.train.memory --size 7b --engine zero3 --processes 8 --rollouts 16
    python -m t2i_r1.train.memory --size 7b --engine ddp --processes 1 --lora-r 16 --table
    python -m t2i_r1.train.memory --size 1b --engine ddp --processes 1 --lora-r 16 --rollouts 2 --dtype float32 \\
        --attention math --overhead-gb 0.43 --measured benchmarks/results/step_1b_cpu_lora.json

Parameters are counted exactly on the meta device (Janus-Pro's published shapes, ``t2i_r1.testing.janus``;
with LoRA, peft's own adapters) and the largest layer comes from accelerate's ``calculate_maximum_sizes``.
The model states per engine follow DeepSpeed's ZeRO accounting (``estimate_zero2/3_model_states_mem_needs``;
the tests check ours against it where deepspeed is installed), generalised to frozen parameters:

    engine   weights                 gradients      optimiser (AdamW)                 during the rollout
    ddp      P w                     T w            2 T w  (torch keeps states in w)  -
    zero2    P w                     (w + 4) T / n  (4 + 8) T / n  (fp32 master, m, v) -
    zero3    P w / n                 4 T / n        (4 + 8) T / n                     + P w (all gathered)
    fsdp     (4 T + w F) / n         4 T / n        8 T / n (accelerate keeps trained + P w (all unsharded)
                                                    FSDP2 parameters in fp32)

P parameters, T trained, F = P - T frozen, w bytes per weight (``--dtype``), n processes. With
``--dtype float32`` ZeRO keeps no extra master copy nor 16-bit gradients (4 T / n and 8 T / n). For T = P and
16-bit weights these are DeepSpeed's 2 P + 18 P / n (ZeRO-2) and 18 P / n + 4 x largest layer (ZeRO-3). Full fine-tuning with beta > 0 adds a frozen
reference copy, P w on every device (the trainer copies the model before sharding; LoRA's reference is the
same model with its adapters off).

On top of the model states, the larger of the two phases of a step:
- rollout: the KV cache of one sampling chunk (the rows of ``--rollouts`` samples, doubled by CFG, capped by
  ``image.memory_budget_gb``) and the VQ decoder's feature maps at 384 px;
- update: per micro-batch, the checkpointed layer inputs of every layer, one layer recomputed with its
  gradients, the float32 image logits (rows x 576 x 16,384) and plan logits (plans x L x 102,400) with their
  gradients; under ZeRO-3 / FSDP two gathered layers. ``--attention math`` (CPU SDPA) also stores the
  attention probabilities of the recomputed layer; ``efficient`` (flash / memory-efficient SDPA on a GPU) does not.
plus ``--overhead-gb`` (CUDA context and allocator slack on a GPU; the interpreter and libraries on a CPU).
Rewards models are not included: add their size with ``--reward-gb``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch

GB = 2**30
ENGINES = ("ddp", "zero2", "zero3", "fsdp")
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class ModelShape:
    params: int  # P, all parameters
    trained: int  # T
    largest_layer: int  # parameters of the largest decoder layer (accelerate's calculate_maximum_sizes)
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    codebook: int
    image_tokens: int


@lru_cache(maxsize=None)
def model_shape(size: str, lora_r: int = 0, trainable: tuple[str, ...] | None = None) -> ModelShape:
    """Exact counts of Janus-Pro-``size`` built on the meta device, with LoRA adapters of rank ``lora_r``
    (the trainer's target modules) or, for full fine-tuning, the trainer's default trainable prefixes."""
    from accelerate.utils import calculate_maximum_sizes
    from transformers import JanusConfig, JanusForConditionalGeneration

    from t2i_r1.testing.janus import janus_pro_configs
    from t2i_r1.train.config import DEFAULT_TRAINABLE, LoraSettings, ModelConfig
    from t2i_r1.train.loop import setup_trainable

    text, vision, vq = janus_pro_configs(size)
    with torch.device("meta"):
        model = JanusForConditionalGeneration(JanusConfig(text_config=text, vision_config=vision, vq_config=vq,
                                                          tie_word_embeddings=False))
        largest = calculate_maximum_sizes(model.model.language_model)[1][0] // 4  # float32 bytes -> parameters
        config = ModelConfig(path="meta", lora=LoraSettings(r=lora_r, alpha=2 * lora_r) if lora_r else None,
                             trainable=list(trainable or DEFAULT_TRAINABLE))
        trained_model, trained = setup_trainable(model, config)
    return ModelShape(
        params=sum(p.numel() for p in trained_model.parameters()), trained=sum(p.numel() for p in trained),
        largest_layer=largest, layers=text.num_hidden_layers, hidden=text.hidden_size,
        intermediate=text.intermediate_size, heads=text.num_attention_heads, kv_heads=text.num_key_value_heads,
        vocab=text.vocab_size, codebook=vq.num_embeddings, image_tokens=vision.num_image_tokens,
    )


@dataclass(frozen=True)
class RunShape:
    """What a run puts on one device (the trainer's config names in brackets)."""

    engine: str = "ddp"
    processes: int = 1  # n
    rollouts: int = 8  # samples per device per step (prompts_per_step x G x K)
    micro_batch: int = 8  # samples per forward / backward (micro_batch_size)
    dtype: str = "bfloat16"  # model.dtype
    reference_copy: bool = True  # full fine-tuning with beta > 0
    prompt_tokens: int = 64  # plan prompt (reasoning instruction + prompt); the image prompt adds the plan
    plan_tokens: int = 256  # rollout.plan.max_new_tokens
    kv_budget_gb: float = 16.0  # rollout.image.memory_budget_gb
    attention: str = "efficient"  # efficient (GPU SDPA) | math (CPU SDPA)
    overhead_gb: float = 1.0
    reward_gb: float = 0.0

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {self.dtype!r}")


def model_states(shape: ModelShape, run: RunShape) -> dict[str, float]:
    """Bytes per device of weights, gradients, optimiser states and the reference copy (see the table above)."""
    P, T, n, w = shape.params, shape.trained, run.processes, DTYPE_BYTES[run.dtype]
    F = P - T
    master = 0 if w == 4 else 4  # ZeRO's fp32 master copy of trained weights under 16-bit training
    if run.engine == "ddp":
        states = {"weights": P * w, "gradients": T * w, "optimizer": 2 * T * w}
    elif run.engine == "zero2":
        states = {"weights": P * w, "gradients": (4 + (w if master else 0)) * T / n,
                  "optimizer": (master + 2 * 4) * T / n}
    elif run.engine == "zero3":
        states = {"weights": P * w / n, "gradients": 4 * T / n, "optimizer": (master + 2 * 4) * T / n}
    else:  # fsdp: accelerate upcasts trained parameters to fp32 under mixed precision
        states = {"weights": (4 * T + w * F) / n, "gradients": 4 * T / n, "optimizer": 8 * T / n}
    states["reference"] = P * w if run.reference_copy else 0
    return states


def phase_peaks(shape: ModelShape, run: RunShape) -> dict[str, float]:
    """Bytes per device on top of the model states: the rollout's and the update's working memory."""
    w, H, I, L_layers = DTYPE_BYTES[run.dtype], shape.hidden, shape.intermediate, shape.layers
    head_dim = H // shape.heads
    image_seq = run.prompt_tokens + run.plan_tokens + shape.image_tokens  # image prompt (with its plan) + tokens
    sharded = run.engine in ("zero3", "fsdp")
    # rollout: KV cache of the rows sampled at once (CFG doubles them), capped by the chunk budget
    kv_per_sample = 2 * 2 * L_layers * shape.kv_heads * head_dim * image_seq * w
    kv = min(run.rollouts * kv_per_sample, max(run.kv_budget_gb * GB, kv_per_sample))
    side = 384
    decode = run.rollouts * 8 * 128 * side * side * w  # a few full-resolution 128-channel maps per image
    rollout = kv + decode + (shape.params * w if sharded else 0)  # the gathered weights
    # update, one micro-batch: rows = 2 per sample (guided CFG) + one plan row per sample
    m = run.micro_batch
    rows = 2 * m
    checkpoints = L_layers * (rows * image_seq + m * (run.prompt_tokens + run.plan_tokens)) * H * w
    one_layer = rows * image_seq * (12 * H + 4 * I) * w  # recomputed activations and their gradients
    if run.attention == "math":
        one_layer += 3 * rows * shape.heads * image_seq * image_seq * 4  # probabilities, their gradient
    logits = 3 * 4 * (rows * shape.image_tokens * shape.codebook + m * run.plan_tokens * shape.vocab)
    gathered = 2 * shape.largest_layer * w if sharded else 0
    update = checkpoints + one_layer + logits + gathered
    return {"rollout": rollout, "update": update}


def estimate(size: str, run: RunShape, lora_r: int = 0) -> dict:
    """The estimate in GB: model states, phase peaks and the peak per device."""
    shape = model_shape(size, lora_r)
    run = RunShape(**{**asdict(run), "reference_copy": run.reference_copy and not lora_r})
    states, phases = model_states(shape, run), phase_peaks(shape, run)
    base = sum(states.values()) + (run.overhead_gb + run.reward_gb) * GB
    to_gb = lambda d: {k: round(v / GB, 2) for k, v in d.items()}
    return {
        "size": size, "lora_r": lora_r, **asdict(run), "params": shape.params, "trained": shape.trained,
        "model_states_gb": to_gb(states), "phases_gb": to_gb(phases),
        "peak_gb": round((base + max(phases.values())) / GB, 2),
        "peak_by_phase_gb": {k: round((base + v) / GB, 2) for k, v in phases.items()},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=["1b", "7b"], default="7b")
    p.add_argument("--lora-r", type=int, default=0, help="LoRA rank (0: full fine-tuning of the language model)")
    p.add_argument("--table", action="store_true", help="every engine, full and LoRA, for 1B and 7B")
    p.add_argument("--measured", help="a benchmarks.step JSON line: print the measured peak beside the estimate")
    defaults = RunShape()
    for field, value in asdict(defaults).items():
        if field == "reference_copy":
            p.add_argument("--no-reference", dest="reference_copy", action="store_false", help="beta = 0")
            continue
        p.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    a = p.parse_args(argv)
    run = RunShape(**{k: getattr(a, k) for k in asdict(defaults)})
    if a.table:
        print("| model | train | engine | processes | rollouts/device | weights+grads+optimiser | rollout | update | peak GB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for size in ("1b", "7b"):
            for lora_r in (0, 16):
                for eng in ENGINES:
                    r = estimate(size, RunShape(**{**asdict(run), "engine": eng}), lora_r)
                    print(f"| {size} | {'LoRA r' + str(lora_r) if lora_r else 'full'} | {eng} | {run.processes} | "
                          f"{run.rollouts} | {sum(r['model_states_gb'].values()):.1f} | {r['phases_gb']['rollout']:.1f} | "
                          f"{r['phases_gb']['update']:.1f} | {r['peak_gb']:.1f} |")
        return
    result = estimate(a.size, run, a.lora_r)
    if a.measured:
        measured = json.loads(open(a.measured).read().strip().splitlines()[-1])
        peak_mb = max(measured["phase_peak_mb"].values())
        result["measured_peak_gb"] = round(peak_mb / 1024, 2)
        result["estimate_over_measured"] = round(result["peak_gb"] / result["measured_peak_gb"], 3)
        result["measured_by_phase_gb"] = {k: round(v / 1024, 2) for k, v in measured["phase_peak_mb"].items()}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""The memory estimate (t2i_r1.train.memory): exact parameter counts, DeepSpeed's own ZeRO accounting, and
the 1B LoRA prediction against the CPU measurement committed in benchmarks/results/."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from t2i_r1.train.memory import RunShape, estimate, model_shape, model_states, phase_peaks

MEASURED = Path(__file__).parents[1] / "benchmarks" / "results" / "step_1b_cpu_lora.json"


def test_janus_pro_shapes_count_their_parameters():
    one, seven = model_shape("1b"), model_shape("7b")
    # the published checkpoints hold ~2.09B and ~7.42B parameters (bf16 safetensors of 4.2 GB and 14.8 GB)
    assert 2.0e9 < one.params < 2.1e9 and 7.3e9 < seven.params < 7.5e9
    assert (one.layers, one.hidden, one.vocab, one.codebook, one.image_tokens) == (24, 2048, 102400, 16384, 576)
    assert (seven.layers, seven.hidden) == (30, 4096)
    lora = model_shape("1b", lora_r=16)
    # r (in + out) per adapted projection: 24 layers x (4 x (2048 + 2048) + 3 x (2048 + 5632)) x 16
    assert lora.trained == 24 * (4 * 4096 + 3 * 7680) * 16
    assert lora.params == one.params + lora.trained


def test_zero_model_states_are_deepspeeds():
    stage2 = pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")
    stage3 = pytest.importorskip("deepspeed.runtime.zero.stage3")
    shape = replace(model_shape("1b"), trained=model_shape("1b").params)  # DeepSpeed counts every parameter as trained
    P, n = shape.params, 8
    run = RunShape(processes=n, reference_copy=False)
    _, ds2 = stage2.estimate_zero2_model_states_mem_needs(P, num_gpus_per_node=n, cpu_offload=False)
    _, ds3, largest = stage3.estimate_zero3_model_states_mem_needs(P, shape.largest_layer, num_gpus_per_node=n,
                                                                   cpu_offload=False)
    ours2 = sum(model_states(shape, replace(run, engine="zero2")).values())
    ours3 = sum(model_states(shape, replace(run, engine="zero3")).values())
    gathered3 = 2 * shape.largest_layer * 2  # the update's two gathered layers (bf16)
    assert ours2 == pytest.approx(ds2, rel=1e-6)
    assert ours3 + gathered3 == pytest.approx(ds3, rel=1e-6) and gathered3 == largest


def test_sharding_divides_the_states_and_the_rollout_gathers():
    run = RunShape(processes=8, rollouts=8, reference_copy=False)
    ddp = estimate("7b", replace(run, engine="ddp"))
    zero3 = estimate("7b", replace(run, engine="zero3"))
    assert sum(zero3["model_states_gb"].values()) < sum(ddp["model_states_gb"].values()) / 3
    assert zero3["phases_gb"]["rollout"] - ddp["phases_gb"]["rollout"] == pytest.approx(7.4e9 * 2 / 2**30, rel=0.02)


@pytest.mark.skipif(not MEASURED.is_file(), reason=f"needs the measured CPU run {MEASURED}")
def test_1b_lora_estimate_is_within_20_percent_of_the_cpu_measurement():
    measured = json.loads(MEASURED.read_text())
    run = RunShape(**measured["estimate_run"])
    shape = model_shape("1b", lora_r=measured["lora_r"])
    states = sum(model_states(shape, run).values())
    phases = phase_peaks(shape, run)
    checked = 0
    for phase, peak_mb in measured["phase_peak_mb"].items():
        # the model's build and the plan sampling (2 rows x 80 tokens of KV cache, ~30 MB) hold the model states
        # only; the rollout and update phases are compared once a run completes them
        working = phases.get(phase, 0.0) if phase in ("rollout", "update") else 0.0
        predicted = (states + working) / 2**20 + run.overhead_gb * 1024
        assert abs(predicted - peak_mb) <= 0.2 * peak_mb, (phase, predicted, peak_mb)
        checked += 1
    assert checked

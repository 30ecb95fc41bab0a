"""Sharded training on 2 CPU processes (gloo): FSDP2 and DeepSpeed ZeRO-3 reach the single process's weights
(and DDP's), resume exactly, export a gathered and merged LoRA model, and never hang when only one process
has groups to train on. The runs are ``tests/scripts/sharded_steps.py``, one scenario per launch.

Tolerance: the processes all train on the same rollout, so every engine computes the same mean gradient
up to the order of float additions (DDP's all-reduce, FSDP's reduce-scatter, ZeRO's partitioned Adam); after
3 AdamW steps at lr 1e-3 the trained parameters agree with the single process's to ``ATOL`` (measured
differences are reported by the assertion). A resumed run repeats the same arithmetic: equal exactly up to
``RESUME_ATOL``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from t2i_r1.testing import TinyJanusSpec, build_tiny_janus
from t2i_r1.train import PlanRows, SampleRows, TrainingBatch
from t2i_r1.train.loop import plain_model
from t2i_r1.train.sharding import agreed_max, any_process, engine, reduce_stats

SCRIPT = Path(__file__).parent / "scripts" / "sharded_steps.py"
ROOT = Path(__file__).parents[1]
ATOL = 1e-5
RESUME_ATOL = 1e-6
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def launch(out: Path, engine_name: str, scenario: str, port: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if engine_name == "zero3":
        env["ACCELERATE_USE_DEEPSPEED"] = "true"  # DeepSpeed's own CPU accelerator, gloo process group
    else:
        env["ACCELERATE_USE_CPU"] = "true"
    if engine_name == "single":
        command = [sys.executable, str(SCRIPT), str(out), engine_name, scenario]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                   str(SCRIPT), str(out), engine_name, scenario]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, f"{engine_name} {scenario}:\n{done.stderr[-4000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every launch the tests compare, once (about 3 minutes on 2 busy cores)."""
    out = tmp_path_factory.mktemp("sharded")
    plan = [("single", "straight"), ("single", "lora"), ("ddp", "straight"), ("ddp", "skip"),
            ("fsdp", "straight"), ("fsdp", "resumed"), ("fsdp", "lora"), ("fsdp", "skip")]
    if HAS_DEEPSPEED:
        plan += [("zero3", "straight"), ("zero3", "resumed")]
    for i, (engine_name, scenario) in enumerate(plan):
        launch(out, engine_name, scenario, 29540 + i)
    return out


def assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys() and a
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"largest difference {worst:.3g} > {atol}"


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["ddp", "fsdp", pytest.param("zero3", marks=pytest.mark.skipif(
    not HAS_DEEPSPEED, reason="needs deepspeed (pip install deepspeed; it runs ZeRO-3 on CPU processes)"))])
def test_two_processes_reach_the_single_process_weights(runs, engine_name):
    single = load_file(runs / "single-straight.safetensors")
    sharded = load_file(runs / f"{engine_name}-straight.safetensors")
    assert_close(sharded, single, ATOL)
    # training moved the weights far beyond the tolerance, so the comparison means something
    initial = dict(build_tiny_janus(TinyJanusSpec(hidden=64, heads=2, image_tokens=16, codebook=64)).model.named_parameters())
    moved = max((single[k] - initial[k.removeprefix("model.")]).abs().max().item() for k in single)
    assert moved > 100 * ATOL
    # the export of the sharded run is the gathered trained model
    exported = load_file(runs / f"{engine_name}-straight" / "final" / "model.safetensors")
    assert_close({f"model.{k}": v for k, v in exported.items() if f"model.{k}" in sharded}, sharded, 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["fsdp", pytest.param("zero3", marks=pytest.mark.skipif(
    not HAS_DEEPSPEED, reason="needs deepspeed"))])
def test_resumed_sharded_run_equals_the_uninterrupted_one(runs, engine_name):
    straight = load_file(runs / f"{engine_name}-straight.safetensors")
    resumed = load_file(runs / f"{engine_name}-resumed.safetensors")
    assert_close(resumed, straight, RESUME_ATOL)


@pytest.mark.slow
def test_sharded_lora_export_is_gathered_and_merged(runs):
    single = load_file(runs / "single-lora" / "final" / "model.safetensors")
    sharded = load_file(runs / "fsdp-lora" / "final" / "model.safetensors")
    assert not any("lora" in k for k in sharded), "the export must merge the adapters"
    assert_close({k: v.float() for k, v in sharded.items()}, {k: v.float() for k, v in single.items()}, ATOL)


@pytest.mark.slow
def test_one_process_without_varied_groups_neither_hangs_nor_diverges(runs):
    # process 0's reward is constant, so drop_zero_variance_groups leaves it nothing to train on
    rank0 = load_file(runs / "ddp-skip-rank0.safetensors")
    rank1 = load_file(runs / "ddp-skip-rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    for engine_name in ("ddp", "fsdp"):
        log = [json.loads(line) for line in (runs / f"{engine_name}-skip" / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == [1, 2]
        assert all("loss" in r and "advantage/kept_fraction" in r for r in log), log  # process 1 trained
        assert all(r["advantage/kept_fraction"] == pytest.approx(0.5) for r in log)  # 0 on process 0, 1 on process 1


# ------------------------------------------------------------------------------------------- one process
def fake_accelerator(distributed_type: str, fsdp2: bool = True, zero_stage: int = 3):
    from accelerate.utils import DistributedType

    return SimpleNamespace(distributed_type=getattr(DistributedType, distributed_type), is_fsdp2=fsdp2,
                           state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=zero_stage)),
                           num_processes=1, device=torch.device("cpu"))


def test_engines_are_named_and_fsdp1_is_refused():
    assert engine(fake_accelerator("NO")) == "replicated"
    assert engine(fake_accelerator("MULTI_GPU")) == "replicated"
    assert engine(fake_accelerator("FSDP")) == "fsdp2"
    assert engine(fake_accelerator("DEEPSPEED", zero_stage=2)) == "replicated"
    assert engine(fake_accelerator("DEEPSPEED", zero_stage=3)) == "zero3"
    with pytest.raises(ValueError, match="fsdp_version: 2"):
        engine(fake_accelerator("FSDP", fsdp2=False))


def test_one_process_agrees_with_itself():
    acc = fake_accelerator("NO")
    assert any_process(acc, True) and not any_process(acc, False)
    assert agreed_max(acc, 7) == 7
    assert reduce_stats(acc, {"loss": 1.5, "kl": float("nan")})["loss"] == 1.5


def test_select_pads_with_untrained_samples():
    # 3 plans x K=2 samples; plan 1 (samples 2, 3) is kept, padded to 4 samples with plan 0
    K, N = 2, 6
    samples = SampleRows(torch.zeros(N, 3, dtype=torch.long), torch.ones(N, 3, dtype=torch.long),
                         torch.arange(N)[:, None].repeat(1, 4), advantages=torch.arange(N, dtype=torch.float))
    plans = PlanRows(torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2, dtype=torch.long),
                     torch.arange(3)[:, None].repeat(1, 5), torch.ones(3, 5, dtype=torch.long))
    batch = TrainingBatch(samples, plans, K)
    keep = torch.tensor([False, False, True, True, False, False])
    padded = batch.select(keep, 4)
    assert padded.samples.tokens[:, 0].tolist() == [2, 3, 0, 1]  # kept first, then dropped ones
    assert padded.plans.plan_ids[:, 0].tolist() == [1, 0]
    assert padded.samples.trained.tolist() == [True, True, False, False]
    masks = padded.segment_masks(plan=True, image=True)
    assert masks["image"].sum(1).tolist() == [4, 4, 0, 0] and masks["plan"].sum(1).tolist() == [5, 5, 0, 0]
    assert batch.select(keep).samples.trained.tolist() == [True, True]  # no padding: as before
    with pytest.raises(ValueError, match="size 3"):
        batch.select(keep, 3)  # not whole plans


def test_lora_export_merges_like_peft():
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    policy = build_tiny_janus(TinyJanusSpec(hidden=64, heads=2, image_tokens=16, codebook=64))
    model = get_peft_model(policy.model, LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)"))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param)  # B starts at 0: make the merge change something
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    merged = plain_model(model, state, torch.float32).state_dict()
    assert merged.keys() == expected.keys()
    for k in expected:
        assert torch.equal(merged[k], expected[k]), k

"""Fault injection (issue 20): training never writes poisoned weights, never destroys a run, never reaches
the network unasked, and every bad input gets a clear error before compute starts.

One test (or parametrised group) per row of the issue's table, on a tiny Janus with programmatic rewards:
1. non-finite rewards (+inf, -inf, NaN, huge) and non-finite losses: skipped, counted, stopped after N in a
   row, no checkpoint with non-finite weights; a raising reward names itself and the step;
2. the log: same keys every step, null for non-finite values, resume drops lines past its checkpoint;
3. runs are never destroyed: resume compares configs, resume=false refuses a used directory, pruning
   touches only this run's checkpoints, final/ is replaced atomically;
4. no network: missing paths and unreachable hub ids fail at once with one line; the CLIP tokenizer never
   degrades;
5. validation before compute: prompt files (UTF-8, BOM, JSON columns, lengths with file:line), config
   values (NaN/inf, negative intervals, override blamed), output directory, disk full, missing model.
"""

from __future__ import annotations

import errno
import json
import math
import time
from pathlib import Path

import pytest
import torch

from t2i_r1.cli import main
from t2i_r1.config_io import ConfigError, load_config
from t2i_r1.data import PromptFileError, PromptRecord, load_prompt_file
from t2i_r1.rewards.ensemble import RewardError
from t2i_r1.rollout.sampling import ImageSamplingConfig, PlanSamplingConfig
from t2i_r1.testing import TinyJanusSpec, build_tiny_janus
from t2i_r1.train import BiCoTGRPOTrainer, GRPOConfig, ModelConfig, OptimConfig, RewardSpec, RolloutConfig, TrainConfig
from t2i_r1.train.loop import TrainingStopped
from t2i_r1.utils.checkpoints import MissingCheckpointError

SPEC = TinyJanusSpec(hidden=64, layers=2, heads=2, image_tokens=16, codebook=64)
PROMPTS = [PromptRecord("a red cube"), PromptRecord("two green cats")]


class Injected:
    """Reward 0..1 from the image tokens, with ``value`` put in sample 0 of the steps in ``at`` (1-based),
    or raising ``raises`` there."""

    name = "injected"

    def __init__(self, value=None, at=(), raises: Exception | None = None):
        self.value, self.at, self.raises, self.calls = value, set(at), raises, 0

    def __call__(self, prompts, images, metadata):
        self.calls += 1
        values = [sum(t < 16 for t in m["image_tokens"]) / len(m["image_tokens"]) for m in metadata]
        if self.calls in self.at:
            if self.raises is not None:
                raise self.raises
            values[0] = self.value
        return values


def config(tmp_path, **overrides) -> TrainConfig:
    base = dict(
        model=ModelConfig(path="in-memory"), data="in-memory", output_dir=str(tmp_path / "run"),
        rollout=RolloutConfig(plans_per_prompt=4, plan=PlanSamplingConfig(max_new_tokens=6),
                              image=ImageSamplingConfig(guidance_scale=2.0)),
        rewards={"injected": RewardSpec()}, grpo=GRPOConfig(beta=0.0), optim=OptimConfig(lr=3e-3),
        steps=3, prompts_per_step=2, micro_batch_size=8, save_every=1, image_log_every=0,
    )
    base.update(overrides)
    return TrainConfig(**base)


def trainer(cfg, reward=None, prompts=PROMPTS) -> BiCoTGRPOTrainer:
    return BiCoTGRPOTrainer(cfg, policy=build_tiny_janus(SPEC), rewards={"injected": reward or Injected()},
                            prompts=prompts)


def weights(t) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in t.policy.model.named_parameters() if p.requires_grad}


def strict_log(run: Path) -> list[dict]:
    """log.jsonl read as strict JSON (NaN or Infinity in it would raise)."""
    def refuse(constant):
        raise AssertionError(f"non-JSON constant {constant} in log.jsonl")

    return [json.loads(line, parse_constant=refuse) for line in (run / "log.jsonl").read_text().splitlines()]


def all_finite(directory: Path) -> bool:
    from safetensors.torch import load_file

    files = list(directory.rglob("*.safetensors"))
    assert files
    return all(bool(torch.isfinite(t).all()) for f in files for t in load_file(f).values() if t.is_floating_point())


# ------------------------------------------------------------------------------ 1. finite or nothing
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e39])
def test_a_non_finite_reward_is_not_applicable_and_counted(tmp_path, value):
    """+-inf (and a value beyond float32, which becomes inf) is treated as NaN ("not applicable"): the step
    trains on the other samples, the weights stay finite, the log counts it."""
    t = trainer(config(tmp_path), Injected(value, at={2}))
    final = t.train()
    log = strict_log(tmp_path / "run")
    assert [row["reward/injected/nonfinite"] for row in log] == [0, 0 if math.isnan(value) else 1, 0]
    assert [row["skipped"] for row in log] == [0, 0, 0]
    assert all(math.isfinite(row["loss"]) for row in log)
    assert all_finite(final) and all(all_finite(c) for c in (tmp_path / "run").glob("checkpoint-*"))


def test_a_huge_finite_reward_trains_normally(tmp_path):
    t = trainer(config(tmp_path, steps=2), Injected(1e30, at={1}))
    t.train()
    log = strict_log(tmp_path / "run")
    assert log[0]["reward/injected/nonfinite"] == 0 and log[0]["skipped"] == 0
    assert all(bool(torch.isfinite(p).all()) for p in weights(t).values())


def poison_loss(monkeypatch, steps: set[int]):
    """Make the GRPO loss NaN on the given steps (1-based), as an overflow would."""
    import t2i_r1.train.trainer as trainer_module

    original, calls = trainer_module.grpo_loss, {"step": 0}

    def poisoned(segments, advantages, **kwargs):
        loss, stats = original(segments, advantages, **kwargs)
        if calls["step"] in steps:
            loss = loss * math.nan
            stats = {**stats, "loss": math.nan}
        return loss, stats

    monkeypatch.setattr(trainer_module, "grpo_loss", poisoned)
    return calls


def test_a_non_finite_loss_skips_the_step_leaving_weights_and_optimizer_untouched(tmp_path, monkeypatch):
    calls = poison_loss(monkeypatch, {2})
    t = trainer(config(tmp_path, steps=3, save_every=0))
    calls["step"] = 1
    t.train_step(t.prompts_for_step(0))
    before, state_before = weights(t), {k: v.clone() for k, v in t.optimizer.state_dict()["state"][0].items()}
    calls["step"] = 2
    result = t.train_step(t.prompts_for_step(1))
    assert math.isnan(result.stats["loss"]) and t.loop.last_step_skipped and t.loop.skipped_in_a_row == 1
    for name, value in weights(t).items():
        assert torch.equal(value, before[name]), name
    for key, value in t.optimizer.state_dict()["state"][0].items():
        assert torch.equal(value, state_before[key]), key
    calls["step"] = 3
    t.train_step(t.prompts_for_step(2))
    assert t.loop.skipped_in_a_row == 0 and t.loop.skipped_total == 1
    assert all(bool(torch.isfinite(p).all()) for p in weights(t).values())


def test_steps_skipped_in_a_row_stop_the_run_with_checkpoints_intact(tmp_path, monkeypatch):
    calls = poison_loss(monkeypatch, {3, 4, 5})
    cfg = config(tmp_path, steps=8, max_skipped_steps=3)
    t = trainer(cfg)
    original_step = t.train_step

    def counted(records):
        calls["step"] += 1
        return original_step(records)

    t.train_step = counted
    with pytest.raises(TrainingStopped, match="3 steps in a row .* non-finite"):
        t.train()
    run = tmp_path / "run"  # steps 3 and 4 were skipped (weights as after step 2) and saved; 5 stopped the run
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-0000003", "checkpoint-0000004"]
    assert all(all_finite(c) for c in run.glob("checkpoint-*")) and not (run / "final").exists()
    log = strict_log(run)
    assert [row["skipped"] for row in log] == [0, 0, 1, 1, 1] and log[2]["loss"] is None


def test_no_checkpoint_and_no_export_is_written_from_non_finite_weights(tmp_path):
    """The last guard (weights cannot become NaN through a step any more, so they are poisoned by hand)."""
    t = trainer(config(tmp_path, steps=2))
    t.train(max_steps=1)
    with torch.no_grad():
        next(p for p in t.policy.model.parameters() if p.requires_grad).view(-1)[0] = math.nan
    for what in ("checkpoint", "export"):
        with pytest.raises(TrainingStopped, match=f"is not finite at step 1: no {what} written"):
            t.loop.check_finite_weights(what)
    with pytest.raises(TrainingStopped):
        t.loop.export()
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == ["checkpoint-0000001"]
    assert not (tmp_path / "run" / "final").exists()


def test_a_raising_reward_names_itself_and_the_step_and_keeps_earlier_checkpoints(tmp_path):
    t = trainer(config(tmp_path, steps=4), Injected(at={3}, raises=ValueError("bad box")))
    with pytest.raises(RewardError, match=r"step 3: reward 'injected' failed on a batch of 8 images: ValueError: bad box"):
        t.train()
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-0000001", "checkpoint-0000002"]
    assert [row["step"] for row in strict_log(run)] == [1, 2]


# ------------------------------------------------------------------------------ 2. an honest log
def test_every_step_logs_the_same_keys_with_null_for_a_step_without_update(tmp_path):
    """drop_zero_variance_groups with a constant reward at step 2: no group has a signal, no update runs;
    the line still has the update's keys, as null."""

    class ConstantAtTwo(Injected):
        def __call__(self, prompts, images, metadata):
            values = super().__call__(prompts, images, metadata)
            return [0.5] * len(values) if self.calls == 2 else values

    cfg = config(tmp_path, grpo=GRPOConfig(beta=0.0, drop_zero_variance_groups=True), save_every=0)
    trainer(cfg, ConstantAtTwo()).train()
    log = strict_log(tmp_path / "run")
    assert len({tuple(row) for row in log}) == 1, "every line has the same keys, in the same order"
    assert log[1]["loss"] is None and log[1]["grad_norm"] is None and log[0]["loss"] is not None
    assert log[1]["time/update"] == 0


def test_resume_drops_log_lines_past_its_checkpoint(tmp_path):
    cfg = config(tmp_path, steps=4, save_every=2)
    trainer(cfg).train(max_steps=3)  # killed after step 3: checkpoint-2, log lines 1..3
    assert [row["step"] for row in strict_log(tmp_path / "run")] == [1, 2, 3]
    resumed = trainer(cfg)
    assert resumed.step == 2 and [row["step"] for row in strict_log(tmp_path / "run")] == [1, 2]
    resumed.train()
    assert [row["step"] for row in strict_log(tmp_path / "run")] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------ 3. runs are never destroyed
def test_resume_refuses_changed_settings_and_lists_them(tmp_path):
    trainer(config(tmp_path, steps=2)).train()
    with pytest.raises(ValueError, match=r"other settings \(optim.lr: 0.003 -> 0.001; rollout.mode: 'bicot' -> 'token'\)"):
        trainer(config(tmp_path, steps=4, optim=OptimConfig(lr=1e-3),
                       rollout=RolloutConfig(mode="token", plans_per_prompt=4, plan=PlanSamplingConfig(max_new_tokens=6),
                                             image=ImageSamplingConfig(guidance_scale=2.0))))


def test_resume_applies_safe_changes_and_allowed_ones(tmp_path, capsys):
    trainer(config(tmp_path, steps=2)).train()
    more = trainer(config(tmp_path, steps=3, log_every=1))  # more steps: applied, reported
    assert more.step == 2 and "steps: 2 -> 3" in capsys.readouterr().out
    more.train()
    allowed = trainer(config(tmp_path, steps=4, optim=OptimConfig(lr=1e-3), allow_config_changes=True))
    assert [g["lr"] for g in allowed.optimizer.param_groups] == [1e-3]
    assert "optim.lr: 0.003 -> 0.001" in capsys.readouterr().out


def test_resume_false_refuses_a_directory_with_a_run_and_overwrite_starts_afresh(tmp_path):
    trainer(config(tmp_path, steps=2)).train()
    with pytest.raises(ValueError, match=r"holds a run .*resume=false: pass overwrite=true"):
        trainer(config(tmp_path, steps=2, resume=False))
    fresh = trainer(config(tmp_path, steps=3, resume=False, overwrite=True, keep_last=2))
    assert fresh.step == 0
    fresh.train()
    run = tmp_path / "run"
    # the new checkpoints survive their own pruning (the old run's higher steps are gone, not sorted above them)
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-0000002", "checkpoint-0000003"]
    assert [row["step"] for row in strict_log(run)] == [1, 2, 3]


def test_pruning_touches_only_this_runs_checkpoints(tmp_path):
    from accelerate import Accelerator

    from t2i_r1.train.checkpoint import save_checkpoint

    acc = Accelerator(cpu=True)
    for step in (5, 6, 7):
        save_checkpoint(acc, tmp_path, step, {"step": step, "run_id": "old"}, keep_last=2)
    for step in (1, 2, 3):
        save_checkpoint(acc, tmp_path, step, {"step": step, "run_id": "new"}, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-0000002", "checkpoint-0000003", "checkpoint-0000006", "checkpoint-0000007"]


def test_final_is_replaced_atomically(tmp_path, monkeypatch):
    from t2i_r1.policy.janus import JanusPolicy

    t = trainer(config(tmp_path, steps=1, save_every=0))
    final = t.train()
    before = sorted(p.name for p in final.iterdir())

    def half_written(self, directory):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "config.json").write_text("{")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(JanusPolicy, "save_pretrained", half_written)
    with pytest.raises(OSError):
        t.loop.export()
    assert sorted(p.name for p in final.iterdir()) == before and json.loads((final / "config.json").read_text())


# ------------------------------------------------------------------------------ 4. no network unless asked
def test_missing_paths_and_unreachable_hub_ids_fail_at_once(tmp_path, monkeypatch):
    from t2i_r1.policy.janus import JanusPolicy

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: the hub is unreachable
    (tmp_path / "runs").mkdir()
    started = time.perf_counter()
    with pytest.raises(MissingCheckpointError, match=r"'runs/tiny-janus' does not exist \(relative to"):
        JanusPolicy.from_pretrained("runs/tiny-janus")
    with pytest.raises(MissingCheckpointError, match="the hub cannot be reached"):
        JanusPolicy.from_pretrained("someone/Janus-Pro-1B")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingCheckpointError, match="not in the local hub cache and HF_HUB_OFFLINE is set"):
        JanusPolicy.from_pretrained("someone/Janus-Pro-1B")
    assert time.perf_counter() - started < 10, "no retries"


def test_the_clip_tokenizer_never_degrades(tmp_path, monkeypatch):
    from t2i_r1.rewards.hps import HPSv21Reward, load_clip_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(MissingCheckpointError, match="HF_HUB_OFFLINE"):
        load_clip_tokenizer("laion/CLIP-ViT-H-14-laion2B-s32B-b79K")
    empty = tmp_path / "CLIP-ViT-H-14"
    empty.mkdir()
    with pytest.raises((MissingCheckpointError, OSError, ValueError)):
        load_clip_tokenizer(empty)
    (tmp_path / "HPS_v2.1_compressed.pt").write_bytes(b"")
    with pytest.raises(MissingCheckpointError, match="no path was given.*CLIP tokenizer"):
        HPSv21Reward(checkpoint=tmp_path / "HPS_v2.1_compressed.pt")  # no default hub id


# ------------------------------------------------------------------------------ 5. validate before compute
def test_a_too_long_prompt_is_reported_with_file_and_line_before_sampling(tmp_path, monkeypatch):
    import t2i_r1.train.trainer as trainer_module

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\ntwo cats\n" + " ".join(["word"] * 1200) + "\n")
    monkeypatch.setattr(trainer_module, "generate_rollouts", lambda *a, **k: pytest.fail("sampled"))
    with pytest.raises(ValueError, match=rf"{prompts}:3: the prompt is too long: .* context of 1024 tokens"):
        trainer(config(tmp_path), prompts=load_prompt_file(prompts))


@pytest.mark.parametrize("content, message", [
    (b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', r":2: not UTF-8 text \(byte 0xe9 at column 16\)"),
    (b'{"prompt": "ok"}\n{"prompt": "b",}\n', r":2: not valid JSON \(.* at column 16\)"),
])
def test_prompt_files_errors_name_file_line_and_column(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    path.write_bytes(content)
    with pytest.raises(PromptFileError, match=message):
        load_prompt_file(path)


def test_a_byte_order_mark_is_accepted(tmp_path):
    for name, content in [("p.jsonl", '\ufeff{"prompt": "a cat"}\n'), ("p.txt", "\ufeffa cat\n")]:
        (tmp_path / name).write_text(content, encoding="utf-8")
        assert [r.prompt for r in load_prompt_file(tmp_path / name)] == ["a cat"]


CONFIG = Path(__file__).parents[1] / "configs" / "tiny_cpu.yaml"


@pytest.mark.parametrize("override, message", [
    ("optim.lr=.nan", "optim.lr: expected a finite number"),
    ("optim.lr=.inf", "optim.lr: expected a finite number"),
    ("rollout.image.guidance_scale=.nan", "rollout.image.guidance_scale: expected a finite number"),
    ("save_every=-1", "save_every must be >= 0"),
    ("grpo.bogus=1", "unknown field grpo.bogus"),
])
def test_bad_config_values_are_refused_naming_the_field_and_the_override(override, message):
    with pytest.raises(ConfigError, match=rf"command-line override '{override}'.*{message}"):
        load_config(TrainConfig, CONFIG, [override])


def test_command_line_flags_refuse_nan(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "o"),
                 "--guidance-scale", "nan"]) == 2
    assert "image.guidance_scale must be a finite number" in capsys.readouterr().err


def test_unwritable_output_directory_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    import t2i_r1.train.loop as loop_module

    (tmp_path / "file").write_text("")
    monkeypatch.setattr(loop_module.JanusPolicy, "from_pretrained", lambda *a, **k: pytest.fail("model loaded"))
    cfg = config(tmp_path, output_dir=str(tmp_path / "file" / "run"))
    with pytest.raises(ValueError, match="output_dir .* is not writable"):
        BiCoTGRPOTrainer(cfg, rewards={"injected": Injected()}, prompts=PROMPTS)


def test_the_command_gives_one_line_for_a_missing_model_and_a_full_disk(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    yaml = tmp_path / "c.yaml"
    yaml.write_text(CONFIG.read_text().replace("configs/data/tiny_prompts.txt", str(
        Path(__file__).parents[1] / "configs" / "data" / "tiny_prompts.txt")).replace("runs/tiny-cpu", str(tmp_path / "out")))
    assert main(["train", str(yaml)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'runs/tiny-janus' does not exist" in err and "make-tiny" in err

    import t2i_r1.cli.train as train_command

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "checkpoint-0000010"))

    monkeypatch.setattr(train_command, "run", full)
    assert main(["train", str(yaml)]) == 2
    assert capsys.readouterr().err == (f"t2i-r1 train: error: no space left on the device writing "
                                       f"{tmp_path / 'out' / 'checkpoint-0000010'}\n")

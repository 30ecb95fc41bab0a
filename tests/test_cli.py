"""The ``t2i-r1`` command: one module per command, the shared generation flags, and that the training
commands hand their config and flags to the trainers (checked with stand-in trainers: no steps run)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from t2i_r1.cli import COMMANDS, build_parser, command_module, main
from t2i_r1.cli.options import add_pipeline_arguments, pipeline_config
from t2i_r1.pipeline import PipelineConfig
from t2i_r1.rollout.sampling import ImageSamplingConfig, PlanSamplingConfig

CONFIGS = Path(__file__).parents[1] / "configs"


def test_every_command_is_a_module_named_after_it():
    for name in COMMANDS:
        module = command_module(name)
        assert module.__name__ == "t2i_r1.cli." + name.replace("-", "_")
        assert callable(module.add_arguments) and callable(module.run)
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMANDS)


def test_generation_flags_make_one_pipeline_config():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    add_pipeline_arguments(parser)
    args = parser.parse_args(["--model", "m", "--seed", "3", "--guidance-scale", "2.5", "--top-k", "7",
                              "--plan-max-tokens", "9", "--plan-top-p", "0.9", "--dtype", "bfloat16"])
    assert pipeline_config(args) == PipelineConfig(
        model="m", dtype="bfloat16", device="cpu", seed=3, plan=PlanSamplingConfig(max_new_tokens=9, top_p=0.9),
        image=ImageSamplingConfig(guidance_scale=2.5, top_k=7),
    )
    # the defaults of the flags are the defaults of the configs
    defaults = pipeline_config(parser.parse_args(["--model", "m"]))
    assert (defaults.plan, defaults.image) == (PlanSamplingConfig(), ImageSamplingConfig())
    with pytest.raises(ValueError, match="--planner and --no-plan exclude each other"):
        pipeline_config(parser.parse_args(["--model", "m", "--planner", "p", "--no-plan"]))


def test_serve_takes_the_generation_flags_but_not_the_per_request_ones():
    args = build_parser().parse_args(["serve", "--guidance-scale", "3", "--plan-temperature", "0.7"])
    config = pipeline_config(args, model="m")
    assert (config.image.guidance_scale, config.plan.temperature, args.device, args.dtype) == (3.0, 0.7, "auto", "auto")
    for flag in ("--seed", "--no-plan", "--planner"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", flag])


class FakeTrainer:
    """Stands in for a trainer class: keeps what the command built and asked for."""

    seen: list = []

    def __init__(self, config):
        self.config = config

    def train(self, max_steps=None):
        FakeTrainer.seen.append((self.config, max_steps))


def test_train_command_hands_config_overrides_and_max_steps_to_the_trainer(monkeypatch, capsys):
    import t2i_r1.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "BiCoTGRPOTrainer", FakeTrainer)
    FakeTrainer.seen = []
    config = str(CONFIGS / "tiny_cpu.yaml")
    assert main(["train", config, "grpo.beta=0.05", "rollout.images_per_plan=2", "--max-steps", "3"]) == 0
    (trained, max_steps), = FakeTrainer.seen
    assert (trained.grpo.beta, trained.rollout.images_per_plan, trained.steps, max_steps) == (0.05, 2, 20, 3)
    assert main(["train", config, "optim.lr=2e-5", "--print-config"]) == 0
    assert "lr: 2.0e-05" in capsys.readouterr().out and len(FakeTrainer.seen) == 1  # printed, not trained
    assert main(["train", config, "grpo.bogus=1"]) == 2
    assert "unknown field grpo.bogus" in capsys.readouterr().err


def test_sft_command_hands_config_and_max_steps_to_the_trainer(monkeypatch, tmp_path):
    import t2i_r1.train.sft as sft_module

    monkeypatch.setattr(sft_module, "SFTTrainer", FakeTrainer)
    FakeTrainer.seen = []
    yaml = tmp_path / "sft.yaml"
    yaml.write_text("model: {path: m}\ndata: triples.jsonl\nsteps: 50\n")
    assert main(["sft", str(yaml), "batch_size=4", "plan_weight=2", "--max-steps", "5"]) == 0
    (trained, max_steps), = FakeTrainer.seen
    assert (trained.data, trained.batch_size, trained.plan_weight) == ("triples.jsonl", 4, 2.0)
    assert (trained.steps, max_steps) == (50, 5)

"""BiCoT-GRPO trainer on a tiny Janus: learning, ablations, micro-batch exactness, resume, configs."""

from __future__ import annotations

import copy
import json
import statistics

import pytest
import torch

from t2i_r1.config_io import ConfigError, load_config
from t2i_r1.data import PromptRecord
from t2i_r1.rollout.sampling import ImageSamplingConfig, PlanSamplingConfig
from t2i_r1.testing import TinyJanusSpec, build_tiny_janus
from t2i_r1.train import BiCoTGRPOTrainer, GRPOConfig, ModelConfig, OptimConfig, RewardSpec, RolloutConfig, TrainConfig
from t2i_r1.train.config import LoraSettings

SPEC = TinyJanusSpec(hidden=64, layers=2, heads=2, image_tokens=16, codebook=64)
PROMPTS = [PromptRecord("a red cube"), PromptRecord("two green cats")]


class TokenShare:
    """Share of image tokens below 16: the codebook subset the policy should learn to prefer."""

    name = "token_share"

    def __call__(self, prompts, images, metadata):
        return [sum(t < 16 for t in m["image_tokens"]) / len(m["image_tokens"]) for m in metadata]


class PlanLetter:
    """Share of the letter 'e' in the plan text: a reward only the plan can earn."""

    name = "plan_e"

    def __call__(self, prompts, images, metadata):
        return [(m["plan"] or "").count("e") / max(1, len(m["plan"] or "")) for m in metadata]


def make_config(tmp_path, **overrides) -> TrainConfig:
    rollout = overrides.pop("rollout", RolloutConfig(
        plans_per_prompt=4, plan=PlanSamplingConfig(max_new_tokens=8), image=ImageSamplingConfig(guidance_scale=2.0)
    ))
    grpo = overrides.pop("grpo", GRPOConfig(beta=0.01))
    base = dict(
        model=ModelConfig(path="in-memory"), data="in-memory", output_dir=str(tmp_path / "run"), rollout=rollout,
        rewards={"token_share": RewardSpec(), "plan_e": RewardSpec()}, grpo=grpo, optim=OptimConfig(lr=3e-3),
        steps=4, prompts_per_step=2, micro_batch_size=8, save_every=0, image_log_every=0,
    )
    base.update(overrides)
    return TrainConfig(**base)


def make_trainer(config, seed=0) -> BiCoTGRPOTrainer:
    spec = copy.replace(SPEC, seed=seed) if hasattr(copy, "replace") else SPEC
    return BiCoTGRPOTrainer(
        config, policy=build_tiny_janus(spec), rewards={"token_share": TokenShare(), "plan_e": PlanLetter()},
        prompts=PROMPTS,
    )


def trained_state(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.policy.model.named_parameters() if v.requires_grad}


@pytest.mark.slow
def test_mean_reward_rises(tmp_path):
    config = make_config(
        tmp_path, steps=16, rollout=RolloutConfig(plans_per_prompt=8, plan=PlanSamplingConfig(max_new_tokens=8),
                                                  image=ImageSamplingConfig(guidance_scale=2.0)),
        grpo=GRPOConfig(beta=0.01, loss_aggregation="segment_weighted"), optim=OptimConfig(lr=1e-2),
    )
    rewards = []
    make_trainer(config).train(on_step=lambda r: rewards.append(r.stats["reward/total"]))
    first, last = statistics.mean(rewards[:4]), statistics.mean(rewards[-4:])
    # random init: token_share ~ 16/64 = 0.25 and plan_e ~ 1/vocab; learning must add well over the noise
    assert last > first + 0.1, rewards


@pytest.mark.parametrize("mode, segments", [("bicot", {"plan", "image"}), ("semantic", {"plan"}), ("token", {"image"})])
def test_ablation_trains_only_its_tokens(tmp_path, monkeypatch, mode, segments):
    seen = []
    import t2i_r1.train.trainer as trainer_module

    original = trainer_module.grpo_loss

    def recording(segs, *args, **kwargs):
        seen.append(set(segs))
        return original(segs, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "grpo_loss", recording)
    rollout = RolloutConfig(mode=mode, plans_per_prompt=4, plan=PlanSamplingConfig(max_new_tokens=6))
    trainer = make_trainer(make_config(tmp_path, rollout=rollout, steps=1))
    lm_head_before = trainer.policy.model.lm_head.weight.detach().clone()
    result = trainer.train_step(PROMPTS)
    assert seen and all(s == segments for s in seen)
    assert (result.rollout.plans is None) == (mode == "token")
    lm_head_changed = not torch.equal(trainer.policy.model.lm_head.weight, lm_head_before)
    # the text head only learns from plan tokens: frozen in the token ablation, trained otherwise
    assert lm_head_changed == (mode != "token")
    assert not trainer.policy.model.model.generation_head.vision_head.weight.requires_grad


def gradients_by_micro_batch(tmp_path, micro_batch_sizes, images_per_plan=1, **grpo):
    """For each micro-batch size, the accumulated gradient at every optimiser step of one training step (one
    per pass) on one trainer: the optimiser step is replaced by a recorder, so the weights never change and
    every step starts from the same model and draws the same (seeded) rollout."""
    rollout = RolloutConfig(plans_per_prompt=8 // images_per_plan, images_per_plan=images_per_plan,
                            plan=PlanSamplingConfig(max_new_tokens=8), image=ImageSamplingConfig(guidance_scale=2.0))
    trainer = make_trainer(make_config(tmp_path, rollout=rollout, grpo=GRPOConfig(**grpo), steps=4))
    runs: list[list[dict[str, torch.Tensor]]] = []

    def record(*args, **kwargs):
        runs[-1].append({n: p.grad.detach().clone() for n, p in trainer.policy.model.named_parameters()
                         if p.grad is not None})

    trainer.optimizer.step = record
    for size in micro_batch_sizes:
        trainer.config.micro_batch_size = size
        runs.append([])
        torch.manual_seed(1)  # the same rollout every time
        trainer.train_step(PROMPTS)
    return runs


def assert_same_gradients(split, whole):
    """Gradients, not weights, are compared: Adam's first step is nearly sign(gradient), so round-off on
    near-zero gradient entries would flip whole weight updates."""
    assert len(split) == len(whole) and whole[0]
    for got, expected in zip(split, whole):
        assert got.keys() == expected.keys()
        for name in expected:
            assert torch.allclose(got[name], expected[name], atol=1e-7, rtol=1e-4), name


def _grid():
    """K x beta x passes; the two corners (the paper's shape, and everything on at once) run in the fast tier."""
    for K in (1, 2):
        for beta in (0.0, 0.05):
            for iterations in (1, 2):
                corner = (K, beta, iterations) in ((1, 0.0, 1), (2, 0.05, 2))
                yield pytest.param(K, beta, iterations, marks=() if corner else pytest.mark.slow)


@pytest.mark.parametrize("images_per_plan, beta, iterations", list(_grid()))
def test_micro_batches_give_the_unsplit_gradient(tmp_path, images_per_plan, beta, iterations):
    """16 samples in micro-batches of 6, 6 and 4 (whole plans): the gradient of every pass equals the unsplit
    one, also with several images per plan, a reference model (beta > 0) and old log-probs (several passes)."""
    whole, split = gradients_by_micro_batch(tmp_path, (16, 6), images_per_plan, beta=beta, num_iterations=iterations)
    assert len(whole) == iterations
    assert_same_gradients(split, whole)


@pytest.mark.parametrize("aggregation", [pytest.param("sequence_mean", marks=pytest.mark.slow), "segment_weighted"])
def test_micro_batches_give_the_unsplit_gradient_for_every_aggregation(tmp_path, aggregation):
    grpo = dict(beta=0.05, num_iterations=2, loss_aggregation=aggregation, plan_weight=0.7, image_weight=0.3)
    assert_same_gradients(*reversed(gradients_by_micro_batch(tmp_path, (16, 4), 2, **grpo)))


def test_loss_matches_unoptimised_reference_formula(tmp_path, monkeypatch):
    """With one pass, token mean and beta: the loss is -(exp(lp - lp.detach()) * A - beta * k3) averaged over all
    plan + image tokens of the batch (the reference implementation's formula), computed here from scratch."""
    import t2i_r1.train.trainer as trainer_module

    captured = {}
    original = trainer_module.grpo_loss

    def capture(segs, advantages, **kwargs):
        captured["segments"], captured["advantages"] = segs, advantages
        loss, stats = original(segs, advantages, **kwargs)
        captured["loss"] = loss.detach()
        return loss, stats

    monkeypatch.setattr(trainer_module, "grpo_loss", capture)
    trainer = make_trainer(make_config(tmp_path, grpo=GRPOConfig(beta=0.01), steps=1))
    trainer.train_step(PROMPTS)
    segs, adv = captured["segments"], captured["advantages"]
    lp = torch.cat([segs["plan"].logp, segs["image"].logp], 1).detach()
    ref = torch.cat([segs["plan"].ref_logp, segs["image"].ref_logp], 1)
    mask = torch.cat([segs["plan"].mask, segs["image"].mask], 1).float()
    k3 = torch.exp(ref - lp) - (ref - lp) - 1
    per_token = -(torch.exp(lp - lp) * adv[:, None] - 0.01 * k3)
    expected = (per_token * mask).sum() / mask.sum()
    assert torch.allclose(captured["loss"], expected, atol=1e-6)


@pytest.mark.parametrize("scale", ["group", "none"])
def test_scale_rewards_reaches_the_advantages(tmp_path, monkeypatch, scale):
    """The step's advantages are each group's total reward centred, divided by the group's std unless
    scale_rewards="none"."""
    import t2i_r1.train.trainer as trainer_module

    captured = {}
    original = trainer_module.aggregate_rewards

    def capture(per_reward, *args, **kwargs):
        advantages, stats = original(per_reward, *args, **kwargs)
        captured.update(per_reward=per_reward.clone(), advantages=advantages.clone())
        return advantages, stats

    monkeypatch.setattr(trainer_module, "aggregate_rewards", capture)
    trainer = make_trainer(make_config(tmp_path, grpo=GRPOConfig(beta=0.0, scale_rewards=scale), steps=1))
    trainer.train_step(PROMPTS)
    total = captured["per_reward"].double().sum(dim=1).view(2, 4)  # (B, G): both rewards weigh 1
    expected = total - total.mean(dim=1, keepdim=True)
    if scale == "group":
        expected = expected / (total.std(dim=1, keepdim=True) + 1e-4)
    assert expected.abs().max() > 0  # the groups carry a signal
    torch.testing.assert_close(captured["advantages"].double(), expected.view(-1), atol=1e-6, rtol=1e-5)


def test_scale_rewards_is_checked():
    with pytest.raises(ValueError, match="grpo.scale_rewards"):
        GRPOConfig(scale_rewards="batch")


def test_resume_reaches_the_same_weights(tmp_path):
    straight = make_trainer(make_config(tmp_path / "a", steps=4, save_every=1))
    straight.train()
    reference_state = trained_state(straight)

    config = make_config(tmp_path / "b", steps=4, save_every=1, image_log_every=2)
    first = make_trainer(config)
    first.train(max_steps=2)  # "killed" after step 2: a fresh trainer must pick up from checkpoint-2
    resumed = make_trainer(config, seed=123)  # different init: everything must come from the checkpoint
    assert resumed.step == 2
    resumed.train()
    assert resumed.step == 4
    for name, value in trained_state(resumed).items():
        assert torch.allclose(value, reference_state[name], atol=1e-6), name
    assert (tmp_path / "b" / "run" / "final" / "config.json").is_file()
    run = tmp_path / "b" / "run"
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-0000002.png", "step-0000004.png"]
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]  # the resumed run appends where the first stopped
    assert {"reward/total", "kl_mean", "loss", "time/plan_sampling", "plan/length"} <= set(logged[-1])
    assert [p.name for p in run.glob("checkpoint-*")] and len(list(run.glob("checkpoint-*"))) <= 2  # keep_last


def test_lora_reference_is_the_model_with_adapters_off(tmp_path):
    pytest.importorskip("peft")
    config = make_config(tmp_path, model=ModelConfig(path="x", lora=LoraSettings(r=4, alpha=8)), steps=2)
    trainer = make_trainer(config)
    assert trainer.reference == "adapters"
    trainable = [n for n, p in trainer.trained_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    trainer.train()
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_config_yaml_overrides_and_errors(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model: {path: m}\ndata: d.txt\nrewards: {hps: {weight: 2}}\ngrpo: {beta: 0.02}\n")
    config = load_config(TrainConfig, yaml_file, ["grpo.beta=0.05", "rollout.mode=token", "optim.lr=1e-5"])
    assert config.grpo.beta == 0.05 and config.rollout.mode == "token" and config.optim.lr == 1e-5
    assert config.rewards["hps"].weight == 2.0
    with pytest.raises(ConfigError, match=r"override 'grpo.bogus=1': unknown field grpo.bogus"):
        load_config(TrainConfig, yaml_file, ["grpo.bogus=1"])
    with pytest.raises(ConfigError, match=r"rollout.mode: 'both' is not one of"):
        load_config(TrainConfig, yaml_file, ["rollout.mode=both"])
    with pytest.raises(ConfigError, match=r"grpo.*beta must be >= 0"):
        load_config(TrainConfig, yaml_file, ["grpo.beta=-1"])
    with pytest.raises(ConfigError, match="micro_batch_size must be a multiple"):
        load_config(TrainConfig, yaml_file, ["rollout.images_per_plan=3", "micro_batch_size=8"])
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")


def test_config_base_inheritance(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        "model: {path: m}\ndata: d.txt\nrewards: {hps: {weight: 1, kwargs: {checkpoint: h.pt}}, orm: {weight: 1}}\n"
    )
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nrewards: {hps: {weight: 5}}\nrollout: {mode: token}\n")
    config = load_config(TrainConfig, tmp_path / "child.yaml")
    # the child's weight wins, the parent's kwargs and other rewards stay
    assert config.rewards["hps"].weight == 5.0 and config.rewards["hps"].kwargs == {"checkpoint": "h.pt"}
    assert config.rewards["orm"].weight == 1.0 and config.rollout.mode == "token"


@pytest.mark.parametrize("name", ["janus_pro_7b", "janus_pro_1b", "tiny_cpu", "recipes/sft_then_rl_7b",
                                  "recipes/reward_x5_hps_7b", "recipes/normalize_then_sum_7b",
                                  "recipes/semantic_only_7b", "recipes/token_only_7b", "recipes/single_gpu_7b_lora",
                                  "recipes/single_gpu_1b_lora_24gb"])
def test_shipped_configs_load(name):
    from pathlib import Path

    load_config(TrainConfig, Path(__file__).parents[1] / "configs" / f"{name}.yaml")

"""Recipes of the paper's comparisons: SFT on triples, an external planner, exploration potential."""

import json

import pytest
import torch

from t2i_r1.analysis import exploration_potential, within_group_std
from t2i_r1.data import PromptFileError, PromptRecord
from t2i_r1.planner import ExternalPlanner
from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.rewards.ensemble import RewardEnsemble
from t2i_r1.rewards.pixel import PixelStatReward
from t2i_r1.rollout.rollout import generate_rollouts
from t2i_r1.rollout.sampling import PlanSamplingConfig
from t2i_r1.testing import TinyJanusSpec, build_tiny_janus
from t2i_r1.train.config import ModelConfig, OptimConfig
from t2i_r1.train.sft import SFTConfig, SFTTrainer, load_triples

SPEC = TinyJanusSpec(hidden=64, layers=2, heads=2, image_tokens=16, codebook=64)


def write_triples(tmp_path, policy, n=4):
    images = policy.to_pil(policy.decode_image_tokens(torch.randint(0, 64, (n, 16))))
    lines = []
    for i, image in enumerate(images):
        image.save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "prompt": f"a red cube {i}", "plan": "one red cube on the left"}))
    (tmp_path / "triples.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "triples.jsonl"


def test_sft_lowers_the_loss_and_exports(tmp_path):
    policy = build_tiny_janus(SPEC)
    policy.reasoning_template = "PLAN FOR: {prompt}"  # not the packaged one, so the export must carry it
    data = write_triples(tmp_path, policy)
    config = SFTConfig(model=ModelConfig(path="in-memory"), data=str(data), output_dir=str(tmp_path / "sft"),
                       optim=OptimConfig(lr=3e-3), steps=12, batch_size=4, save_every=6, uncond_prob=0.0)
    trainer = SFTTrainer(config, policy=policy)
    first = trainer.train_step()
    for _ in range(10):
        last = trainer.train_step()
    assert last["plan_nll"] < first["plan_nll"] - 0.5 and last["image_nll"] < first["image_nll"]
    final = trainer.train()
    reloaded = JanusPolicy.from_pretrained(final)
    assert reloaded.num_image_tokens == 16
    # The exported model keeps the reasoning instruction it was trained with.
    assert reloaded.reasoning_template == policy.reasoning_template


def test_triples_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"image": "missing.png", "prompt": "p", "plan": "q"}\n')
    with pytest.raises(PromptFileError, match="t.jsonl:1: image file not found"):
        load_triples(bad)
    bad.write_text('{"image": "x.png", "prompt": "p"}\n')
    with pytest.raises(PromptFileError, match="t.jsonl:1: field 'plan' is missing"):
        load_triples(bad)


def test_external_planner_feeds_the_image_model(tiny_planner):
    planner = ExternalPlanner.from_pretrained(tiny_planner, max_new_tokens=6)
    plans = planner.plan(["a red cube", "two cats"], num_samples=2)
    assert len(plans) == 4 and all(isinstance(p, str) for p in plans)
    policy = build_tiny_janus(SPEC)
    rollout = generate_rollouts(policy, ["a red cube", "two cats"], plans_per_prompt=2, external_plans=plans)
    assert rollout.plans is None and rollout.sample_plans == plans
    assert rollout.images.tokens.shape == (4, 16)


def test_within_group_std():
    values = torch.tensor([1.0, 2.0, 3.0, float("nan"), 5.0, 5.0, 5.0, 5.0])
    # group 1: [1, 2, 3] (NaN skipped), sample std = 1; group 2: constant -> 0
    assert torch.allclose(within_group_std(values, 4), torch.tensor([1.0, 0.0]))


def test_exploration_potential_is_the_mean_within_group_std():
    policy = build_tiny_janus(SPEC)
    red, std = PixelStatReward("red"), PixelStatReward("std")
    rewards = RewardEnsemble({"red": red, "std": (std, 2.0)})
    prompts = [PromptRecord("a red cube"), PromptRecord("two cats")]
    plan_config = PlanSamplingConfig(max_new_tokens=4)
    result = exploration_potential(policy, prompts, rewards, group_size=3, plan_config=plan_config, seed=5)
    # the same draws by hand: both prompts in one batch, the generator seeded as the function seeds it
    rollout = generate_rollouts(policy, [r.prompt for r in prompts], plans_per_prompt=3, plan_config=plan_config,
                                generator=torch.Generator().manual_seed(5))
    images = policy.to_pil(policy.decode_image_tokens(rollout.images.tokens))
    values = {name: torch.tensor(fn(rollout.sample_prompts, images), dtype=torch.float32)
              for name, fn in (("red", red), ("std", std))}
    values["total"] = values["red"] + 2.0 * values["std"]
    expected = {name: float(within_group_std(v, 3).mean()) for name, v in values.items()}
    assert result == pytest.approx(expected, rel=1e-5)
    assert all(v > 0 for v in result.values())  # random images differ within a group


def test_write_plans_with_a_vlm_makes_triples(tmp_path, tiny_checkpoint):
    """The tiny Janus understands images too, so it stands in for the captioning VLM."""
    from PIL import Image

    from t2i_r1.cli import main

    Image.new("RGB", (64, 64), "red").save(tmp_path / "a.png")
    Image.new("RGB", (64, 64), "blue").save(tmp_path / "b.png")
    (tmp_path / "captions.jsonl").write_text(
        '{"image": "a.png", "prompt": "a red square"}\n{"image": "b.png", "prompt": "a blue square"}\n'
    )
    assert main(["write-plans", "--vlm", str(tiny_checkpoint), "--data", str(tmp_path / "captions.jsonl"),
                 "--out", str(tmp_path / "triples.jsonl"), "--max-new-tokens", "4"]) == 0
    triples = load_triples(tmp_path / "triples.jsonl")
    assert [t.prompt for t in triples] == ["a red square", "a blue square"]
    assert all(isinstance(t.plan, str) for t in triples)

"""ShapeWorld recipes: SFT triples from the renderer, the separate planner, and the recipe benchmark at toy size."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlamaForCausalLM

from t2i_r1.planner import ExternalPlanner
from t2i_r1.train.sft import load_triples
from t2i_r1.shapeworld import CATEGORIES, ShapeWorldEvaluator, check_plan, parse_plan, prompt_set
from t2i_r1.shapeworld.model import DEFAULT_ASSET, REASONING_TEMPLATE
from t2i_r1.shapeworld.phrasing import TRAIN_FAMILIES
from t2i_r1.shapeworld.recipes import PlannerConfig, _lr, load_planner, plan_accuracy, train_planner, write_prompts, write_triples

needs_asset = pytest.mark.skipif(
    not (DEFAULT_ASSET / "model.safetensors").is_file(),
    reason=f"needs the committed ShapeWorld checkpoint in {DEFAULT_ASSET} (t2i-r1 shapeworld pretrain --out it)",
)

TINY_PLANNER = dict(hidden=32, layers=1, heads=2, intermediate=64, steps=3, batch=8, examples=32, warmup_steps=5,
                    timing_steps=1)


def test_triples_load_and_are_exact(tmp_path):
    path = write_triples(tmp_path, 2, seed=3)
    triples = load_triples(path)
    prompts = prompt_set("train", 2, seed=3, families=TRAIN_FAMILIES)
    assert len(triples) == 2 * len(CATEGORIES) * len(TRAIN_FAMILIES)  # 2 prompts per category and family, one scene each
    evaluator = ShapeWorldEvaluator()
    for triple, prompt in zip(triples, prompts):
        assert triple.prompt == prompt.text
        assert parse_plan(triple.plan).text() == triple.plan  # the plan format the model was pretrained on
        assert check_plan(prompt, triple.plan).score == 1.0
        image = np.array(Image.open(triple.image))
        assert image.shape == (64, 64, 3)
        assert evaluator.evaluate(prompt, image).score == 1.0  # rendered, not reconstructed: the verdict is exact
    # Same seed, same file; the images are identical too.
    again = write_triples(tmp_path / "again", 2, seed=3)
    assert again.read_text() == path.read_text()
    assert all((np.array(Image.open(a.image)) == np.array(Image.open(b.image))).all()
               for a, b in zip(triples, load_triples(again)))


def test_planner_schedule_warmup_does_not_depend_on_total():
    cfg = PlannerConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, timing_steps=5)
    # Warm-up: lr * (step + 1) / warmup = 1e-3 * 5 / 10, whatever the total (so timing steps fix nothing).
    assert _lr(cfg, 4, 100) == _lr(cfg, 4, 1000) == pytest.approx(5e-4)
    # End of the cosine: progress 1 -> lr * min_lr_ratio = 1e-4; middle (progress 0.5) -> lr * (0.1 + 0.9 * 0.5).
    assert _lr(cfg, 100, 100) == pytest.approx(1e-4)
    assert _lr(cfg, 55, 100) == pytest.approx(1e-3 * 0.55)
    with pytest.raises(ValueError, match="timing_steps"):
        PlannerConfig(warmup_steps=10, timing_steps=20)


def test_planner_trains_saves_reloads_and_is_deterministic(tmp_path):
    torch.set_num_threads(1)
    prompts = prompt_set("heldout", 1, seed=0)
    summary = train_planner(tmp_path / "a", PlannerConfig(**TINY_PLANNER, seed=5), eval_prompts=prompts, log=lambda s: None)
    assert summary["steps"] == 3
    assert set(summary["plan_accuracy"]) == {*CATEGORIES, "overall"}
    assert json.loads((tmp_path / "a" / "planner.json").read_text())["steps"] == 3

    # The generic loader finds the planner's own instruction beside the weights.
    generic = ExternalPlanner.from_pretrained(tmp_path / "a")
    assert isinstance(generic.model, LlamaForCausalLM) and generic.template == REASONING_TEMPLATE
    planner = load_planner(tmp_path / "a")
    assert planner.template == REASONING_TEMPLATE
    assert planner._prompt("a red circle") == "plan the image : a red circle"
    texts = [p.text for p in prompts[:3]]
    plans = planner.plan(texts, num_samples=2, seed=1)
    assert len(plans) == 6 and all(isinstance(p, str) for p in plans)
    assert planner.plan(texts, num_samples=2, seed=1) == plans  # sampling is seeded

    # Same seed and steps: the same weights and the same plans; another seed: other weights.
    train_planner(tmp_path / "b", PlannerConfig(**TINY_PLANNER, seed=5), log=lambda s: None)
    train_planner(tmp_path / "c", PlannerConfig(**TINY_PLANNER, seed=6), log=lambda s: None)
    a, b, c = (load_planner(tmp_path / d) for d in "abc")
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name
    assert not torch.equal(a.model.lm_head.weight, c.model.lm_head.weight)
    assert b.plan(texts, num_samples=2, seed=1) == plans


def test_planner_minutes_budget_becomes_a_step_count(tmp_path):
    torch.set_num_threads(1)
    config = PlannerConfig(**{**TINY_PLANNER, "steps": None, "minutes": 0.01, "timing_steps": 3}, seed=5)
    summary = train_planner(tmp_path / "timed", config, log=lambda s: None)
    # The count is fixed once the first timing_steps (3) have run; how many more fit 0.6 s depends on the
    # machine's load, so only the floor is checked here.
    assert summary["steps"] >= 3
    # The timed steps ran in the warm-up, so the run is the one that --steps <that count> makes.
    fixed = PlannerConfig(**{**TINY_PLANNER, "steps": summary["steps"], "timing_steps": 3}, seed=5)
    train_planner(tmp_path / "fixed", fixed, log=lambda s: None)
    a, b = load_planner(tmp_path / "timed"), load_planner(tmp_path / "fixed")
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name


def test_plan_accuracy_counts_valid_plans():
    prompts = prompt_set("heldout", 1, seed=0, categories=("color", "spatial"))

    class Oracle:
        """Returns a correct plan for the color prompt and an unparseable one for the spatial prompt."""

        def plan(self, texts, num_samples=1, seed=0):
            from t2i_r1.shapeworld import canonical_example

            good = canonical_example(prompts[0]).plan.text()
            return [good] * num_samples + ["not a plan"] * num_samples

    # color: 2 of 2 correct -> 1.0; spatial: 0 of 2 -> 0.0; overall = mean of category means = 0.5.
    assert plan_accuracy(Oracle(), prompts, samples=2) == {"color": 1.0, "spatial": 0.0, "overall": 0.5}


@needs_asset
def test_recipe_benchmark_runs_end_to_end(tmp_path):
    from benchmarks.shapeworld_recipes import main

    results = main(["--smoke", "--seeds", "1", "--threads", "1", "--out", str(tmp_path), "--json", str(tmp_path / "r.json")])
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert list(rows) == ["base", "SFT", "SFT -> RL", "RL", "planner + base"]
    for name, tables in rows.items():
        assert len(tables) == 1 and set(tables[0]) == {*CATEGORIES, "overall"}, name
    assert set(results["exploration"]) == {"base", "SFT", "SFT -> RL", "RL"}
    # Exploration potential is the sample std of G = 2 rewards a, b in [0, 1]: |a - b| / sqrt(2) <= 1 / sqrt(2).
    for tables in results["exploration"].values():
        assert all(0.0 <= v <= 2 ** -0.5 + 1e-9 for v in tables[0].values())
    assert results["training"]["SFT"][0]["steps"] == 2 and results["training"]["RL"][0]["steps"] == 1
    assert (tmp_path / "seed0" / "planner" / "config.json").is_file()


@needs_asset
def test_shapeworld_recipe_configs_run_through_the_generic_commands(tmp_path):
    """configs/recipes/*_shapeworld.yaml: the prompt file from write_prompts feeds the exact reward named
    in YAML; the SFT config trains on write_triples' output; the hybrid inherits the RL config."""
    import argparse

    from t2i_r1.cli.demo import add_arguments as add_demo_arguments
    from t2i_r1.config_io import load_config
    from t2i_r1.train.sft import SFTConfig, SFTTrainer
    from t2i_r1.train import BiCoTGRPOTrainer, TrainConfig

    torch.set_num_threads(1)
    recipes = Path(__file__).parents[1] / "configs" / "recipes"
    prompts = write_prompts(tmp_path / "prompts.jsonl", 1, seed=100)
    small = [f"model.path={DEFAULT_ASSET}", f"data={prompts}", f"output_dir={tmp_path / 'rl'}", "steps=1",
             "prompts_per_step=1", "rollout.plans_per_prompt=2", "micro_batch_size=2", "save_every=0",
             "image_log_every=0"]
    trainer = BiCoTGRPOTrainer(load_config(TrainConfig, recipes / "rl_shapeworld.yaml", small))
    assert trainer.policy.reasoning_template == REASONING_TEMPLATE  # read from the checkpoint directory
    stats = trainer.train_step(trainer.prompts_for_step(0)).stats
    assert 0.0 <= stats["reward/programmatic"] <= 1.0  # partial credit of the exact evaluator

    hybrid = load_config(TrainConfig, recipes / "sft_then_rl_shapeworld.yaml")
    demo = argparse.ArgumentParser()
    add_demo_arguments(demo)
    assert hybrid.model.path == "runs/sft-shapeworld/final" and hybrid.optim.lr == 3e-5
    assert hybrid.grpo.loss_aggregation == "segment_weighted"
    assert hybrid.grpo.plan_weight == demo.get_default("plan_weight") == 16.0  # the demo's, inherited from rl_shapeworld
    assert hybrid.rewards["programmatic"].kwargs["score"].endswith(":partial_reward")

    triples = write_triples(tmp_path / "triples", 1, seed=0)
    sft = SFTTrainer(load_config(SFTConfig, recipes / "sft_shapeworld.yaml", [
        f"model.path={DEFAULT_ASSET}", f"data={triples}", f"output_dir={tmp_path / 'sft'}", "steps=1",
        "batch_size=2", "save_every=0"]))
    assert sft.policy.reasoning_template == REASONING_TEMPLATE
    assert math.isfinite(sft.train_step()["plan_nll"])

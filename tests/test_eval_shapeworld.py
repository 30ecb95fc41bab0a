"""ShapeWorld behind the evaluation harness: prompts, exact scoring of rendered truth, an end-to-end run."""

import json

import pytest

from t2i_r1.eval.base import ImageRecord, PromptGroup
from t2i_r1.eval.runner import EvalConfig, run_eval
from t2i_r1.eval.shapeworld import ShapeWorldBenchmark
from t2i_r1.pipeline import PipelineConfig, T2IR1Pipeline
from t2i_r1.rollout.sampling import PlanSamplingConfig
from t2i_r1.shapeworld import CATEGORIES, prompt_set, render_image, sample_example


def test_prompts_are_heldout_with_metadata():
    bench = ShapeWorldBenchmark(prompts_per_category=2, categories=["color", "reasoning"])
    items = bench.prompts()
    assert [i.category for i in items] == ["color", "color", "reasoning", "reasoning"]
    assert all("shapeworld" in i.metadata for i in items)
    assert [i.prompt for i in items] == [p.text for p in prompt_set("heldout", 2, categories=["color", "reasoning"])]
    with pytest.raises(ValueError, match="unknown ShapeWorld categories"):
        ShapeWorldBenchmark(categories=["colour"])


def test_rendered_truth_scores_one_and_a_wrong_image_less(tmp_path):
    import numpy as np

    bench = ShapeWorldBenchmark(prompts_per_category=1, categories=["color", "numeracy"])
    items = bench.prompts()
    prompts = prompt_set("heldout", 1, categories=["color", "numeracy"])  # the benchmark's prompts, in order
    assert [p.text for p in prompts] == [i.prompt for i in items]
    groups = []
    for k, (item, prompt) in enumerate(zip(items, prompts)):
        right, wrong = tmp_path / f"{k}-right.png", tmp_path / f"{k}-wrong.png"
        render_image(sample_example(prompt, np.random.default_rng(0)).scene).save(right)
        render_image(sample_example(prompts[1 - k], np.random.default_rng(1)).scene).save(wrong)
        groups.append(PromptGroup(item, (ImageRecord(0, right), ImageRecord(1, wrong))))
    results = bench.score(groups)
    assert [r["images"][0]["score"] for r in results] == [1.0, 1.0]
    assert all(r["images"][1]["score"] == 0.0 for r in results)
    summary = bench.summarize(groups, results)
    # each category: one right (1) and one wrong (0) image -> 0.5; overall = mean of category means
    assert summary["color"] == summary["numeracy"] == summary["overall"] == 0.5


def test_end_to_end_run_writes_results(tmp_path, tiny_checkpoint):
    settings = PipelineConfig(model=str(tiny_checkpoint), plan=PlanSamplingConfig(max_new_tokens=6))
    config = EvalConfig(benchmark="shapeworld", out=tmp_path / "run", generation=settings, images_per_prompt=1,
                        benchmark_options={"prompts_per_category": 1})
    results = run_eval(config, pipeline=T2IR1Pipeline.from_config(settings))
    # one prompt per category, one image each, every category scored with a success rate in [0, 1]
    assert (results["n_prompts"], results["n_images"]) == (len(CATEGORIES), len(CATEGORIES))
    assert list(results["categories"]) == list(CATEGORIES)
    metrics = results["metrics"]
    assert {*CATEGORIES, "overall"} <= set(metrics) and all(0.0 <= metrics[c] <= 1.0 for c in CATEGORIES)
    assert metrics["overall"] == pytest.approx(sum(metrics[c] for c in CATEGORIES) / len(CATEGORIES))
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == results
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (run["benchmark"], run["model"], run["plan_max_tokens"]) == ("shapeworld", str(tiny_checkpoint), 6)

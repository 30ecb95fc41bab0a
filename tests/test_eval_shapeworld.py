"""ShapeWorld behind the evaluation harness: prompts, exact scoring of rendered truth, an end-to-end run."""

import json
import math

import pytest

from t2i_r1.eval.base import ImageRecord, PromptGroup
from t2i_r1.eval.runner import EvalConfig, run_eval
from t2i_r1.eval.shapeworld import ShapeWorldBenchmark
from t2i_r1.pipeline import PipelineConfig, T2IR1Pipeline
from t2i_r1.rollout.sampling import PlanSamplingConfig
from t2i_r1.shapeworld import CATEGORIES, render_image, sample_example
from t2i_r1.shapeworld.protocol import Protocol


def test_prompts_are_the_protocols_with_metadata():
    bench = ShapeWorldBenchmark(per_cell=1, categories=["color", "reasoning"], seed=3)
    items = bench.prompts()
    protocol = Protocol(per_cell=1, seed=3, categories=("color", "reasoning"))
    assert [i.prompt for i in items] == [p.text for p in protocol.prompts()]
    assert {i.category for i in items} == {"color", "reasoning"} and all("shapeworld" in i.metadata for i in items)
    assert (bench.images_per_prompt, bench.guidance_scale) == (protocol.samples, protocol.guidance) == (2, 3.0)
    with pytest.raises(ValueError, match="unknown ShapeWorld categories"):
        ShapeWorldBenchmark(categories=["colour"])


def test_the_command_lines_share_the_protocols_guidance():
    from t2i_r1.cli.options import SHAPEWORLD_GUIDANCE

    assert SHAPEWORLD_GUIDANCE == Protocol().guidance


def test_rendered_truth_scores_one_and_a_wrong_image_less(tmp_path):
    import numpy as np

    bench = ShapeWorldBenchmark(per_cell=1, categories=["color", "numeracy"])
    items = bench.prompts()
    prompts = Protocol(per_cell=1, categories=("color", "numeracy")).prompts()  # the benchmark's prompts, in order
    assert [p.text for p in prompts] == [i.prompt for i in items]
    groups = []
    for k, (item, prompt) in enumerate(zip(items, prompts)):
        other = next(p for p in prompts if p.category != prompt.category)
        right, wrong = tmp_path / f"{k}-right.png", tmp_path / f"{k}-wrong.png"
        render_image(sample_example(prompt, np.random.default_rng(0)).scene).save(right)
        render_image(sample_example(other, np.random.default_rng(1)).scene).save(wrong)
        groups.append(PromptGroup(item, (ImageRecord(0, right), ImageRecord(1, wrong))))
    results = bench.score(groups)
    assert all(r["images"][0]["score"] == 1.0 for r in results)
    assert all(r["images"][1]["score"] == 0.0 for r in results)
    summary = bench.summarize(groups, results)
    # each category: right (1) and wrong (0) images half and half -> 50%; overall = mean of category means;
    # the same in every phrasing group
    assert summary["color"] == summary["numeracy"] == summary["overall"] == 50.0
    phrasing = [k for k in summary if k.startswith("phrasing: ")]
    assert phrasing and all(summary[k] == 50.0 for k in phrasing)


def test_end_to_end_run_writes_results(tmp_path, tiny_checkpoint):
    settings = PipelineConfig(model=str(tiny_checkpoint), plan=PlanSamplingConfig(max_new_tokens=6))
    config = EvalConfig(benchmark="shapeworld", out=tmp_path / "run", generation=settings, images_per_prompt=1,
                        benchmark_options={"per_cell": 1}, limit=1)
    results = run_eval(config, pipeline=T2IR1Pipeline.from_config(settings))
    # one prompt per category (--limit 1), one image each, every category scored with a success rate in percent
    assert (results["n_prompts"], results["n_images"]) == (len(CATEGORIES), len(CATEGORIES))
    assert sorted(results["categories"]) == sorted(CATEGORIES)
    metrics = results["metrics"]
    assert {*CATEGORIES, "overall"} <= set(metrics) and all(0.0 <= metrics[c] <= 100.0 for c in CATEGORIES)
    assert metrics["overall"] == pytest.approx(sum(metrics[c] for c in CATEGORIES) / len(CATEGORIES))
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == results
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (run["benchmark"], run["model"], run["plan_max_tokens"]) == ("shapeworld", str(tiny_checkpoint), 6)


def test_success_by_plan_splits_the_images_by_their_plans_verdict():
    from t2i_r1.shapeworld.protocol import by_plan

    scores = [1.0, 0.0, 1.0, 1.0, 0.0]
    plans = [1.0, 1.0, 0.0, 1.0, float("nan")]  # the last image was drawn without a plan: on neither side
    assert by_plan(scores, plans) == {"plan right": 2 / 3, "plan wrong": 1.0}
    assert math.isnan(by_plan([1.0], [1.0])["plan wrong"])
    with pytest.raises(ValueError, match="2 scores for 1 plan scores"):
        by_plan([1.0, 0.0], [1.0])

"""End-to-end evaluation runs with tiny random models (a tiny Janus and tiny scorers), and resuming."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from t2i_r1.cli import build_parser, main
from t2i_r1.eval.aesthetic_diversity import AestheticMetric, DiversityMetric
from t2i_r1.eval.base import Benchmark, PromptGroup, PromptItem, Published
from t2i_r1.eval.geneval import TAGS, GenEval
from t2i_r1.eval.judges import JudgeRequest
from t2i_r1.eval.plan_quality import PlanQualityMetric
from t2i_r1.eval.runner import EvalConfig, read_cache, run_eval
from t2i_r1.eval.t2i_compbench import CATEGORIES, T2ICompBench
from t2i_r1.eval.wise import WISE
from t2i_r1.pipeline import PipelineConfig, T2IR1Pipeline
from t2i_r1.rollout.sampling import PlanSamplingConfig
from t2i_r1.testing.scorers import save_tiny_scorers


@pytest.fixture(scope="module")
def scorers(tmp_path_factory):
    return save_tiny_scorers(tmp_path_factory.mktemp("tiny-scorers"))


@pytest.fixture(scope="module")
def settings(tiny_checkpoint):
    return PipelineConfig(model=str(tiny_checkpoint), plan=PlanSamplingConfig(max_new_tokens=8))


@pytest.fixture(scope="module")
def pipeline(settings):
    return T2IR1Pipeline.from_config(settings)


class ScriptedJudge:
    """A judge that always gives the same reply and keeps the requests it saw."""

    name = "scripted"

    def __init__(self, reply: str) -> None:
        self.reply, self.requests = reply, []

    def config(self):
        return {"judge": self.name, "reply": self.reply}

    def __call__(self, requests: Sequence[JudgeRequest]) -> list[str]:
        self.requests += list(requests)
        return [self.reply] * len(requests)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_external_planner_writes_the_plans(tmp_path, settings, tiny_planner):
    from t2i_r1.eval.runner import generate_missing
    from t2i_r1.planner import ExternalPlanner

    with_planner = replace(settings, planner=str(tiny_planner))
    items = [PromptItem(index=i, key=f"p{i}", prompt=p, category="c") for i, p in enumerate(["a red cube", "two cats"])]
    assert generate_missing(tmp_path, items, 2, with_planner) == 2
    planner = ExternalPlanner.from_pretrained(tiny_planner, max_new_tokens=8)
    for item in items:
        expected = planner.plan([item.prompt], 2, seed=with_planner.seed + item.index)
        written = [json.loads(p.read_text())["plan"] for p in sorted((tmp_path / "images" / item.key).glob("*.json"))]
        assert written == expected


def test_t2i_compbench_end_to_end(tmp_path, scorers, settings, pipeline):
    bench = T2ICompBench(vqa_model=scorers["blip_vqa"], clip_model=scorers["clip"], detector_model=scorers["owlv2"],
                         detector_threshold=0.0, device="cpu", use_spacy=False)  # fmt: skip
    metrics = [DiversityMetric(scorers["clip"], device="cpu"), AestheticMetric(scorers["aesthetic_head"], scorers["clip"], device="cpu")]
    config = EvalConfig("t2i-compbench", tmp_path, settings, images_per_prompt=2, limit=1)
    results = run_eval(config, benchmark=bench, metrics=metrics, pipeline=pipeline)

    assert results == json.loads((tmp_path / "results.json").read_text())
    assert list(results["metrics"]) == list(CATEGORIES)
    assert all(-1 <= v <= 1 for v in results["metrics"].values())
    assert (results["n_prompts"], results["n_images"], results["use_plan"]) == (6, 12, True)
    assert not results["complete"] and "--limit 1" in results["partial_reason"]
    assert results["published"]["rows"]["T2I-R1"]["color"] == 0.8130
    assert any("UniDet" in note for note in results["notes"])
    assert results["extras"]["diversity_prompts"] == 6 and math.isfinite(results["extras"]["aesthetic"])
    markdown = (tmp_path / "results.md").read_text()
    assert "| Janus-Pro-7B (published) | 0.6359 |" in markdown and "ours:" in markdown and "Partial run" in markdown

    rows = {row["key"]: row for row in _lines(tmp_path / "per_prompt.jsonl")}
    assert set(rows) == {f"{c}/000" for c in CATEGORIES}
    color = rows["color/000"]
    assert color["prompt"] == "a green bench and a blue bowl" and all(p for p in color["plans"])
    scored = color["t2i-compbench"]
    assert scored["phrases"] == ["a green bench", "a blue bowl"]
    for image in scored["images"]:  # the image score is the product over its phrases
        assert image["score"] == pytest.approx(math.prod(image["phrase_probs"]))
    # ... and each phrase probability is BLIP's own yes-probability for "<phrase>?"
    from PIL import Image

    first = Image.open(tmp_path / color["files"][0]).convert("RGB")
    direct = bench.vqa.yes_probability([first], ["a green bench?"])
    assert scored["images"][0]["phrase_probs"][0] == pytest.approx(float(direct[0]), abs=1e-6)
    complex_row = rows["complex/000"]["t2i-compbench"]  # "The red hat was on top of the brown coat rack."
    assert complex_row["route"] == "spatial" and complex_row["locality"] == "on top of"
    for image in complex_row["images"]:
        assert image["score"] == pytest.approx((image["spatial"] + image["attribute"]) / 2)
    assert rows["spatial/000"]["t2i-compbench"]["obj1"] == "giraffe"
    sidecar = json.loads((tmp_path / "images/color/000/01.json").read_text())
    assert sidecar["seed"] == 0 and sidecar["sample"] == 1 and sidecar["plan"] == color["plans"][1]


def test_geneval_end_to_end(tmp_path, scorers, settings, pipeline):
    bench = GenEval(detector_model=scorers["mask2former"], color_clip_model=scorers["clip"], threshold=0.0,
                    counting_threshold=0.0, device="cpu")  # fmt: skip
    no_plan = replace(settings, use_plan=False)
    results = run_eval(EvalConfig("geneval", tmp_path, no_plan, images_per_prompt=2, limit=1), benchmark=bench, pipeline=pipeline)
    metrics = results["metrics"]
    assert set(TAGS) <= set(metrics) and results["n_prompts"] == 6
    assert metrics["overall"] == pytest.approx(sum(metrics[t] for t in TAGS) / 6)
    rows = _lines(tmp_path / "per_prompt.jsonl")
    assert [row["category"] for row in rows] == list(TAGS)
    assert all(p is None for row in rows for p in row["plans"])
    verdicts = [im["correct"] for row in rows for im in row["geneval"]["images"]]
    assert len(verdicts) == 12 and metrics["correct_images"] == pytest.approx(sum(verdicts) / 12)
    assert any("mmdetection" in note for note in results["notes"])


def test_wise_end_to_end_with_scripted_judges(tmp_path, shared_data, settings, pipeline):
    judge = ScriptedJudge("Consistency: 2\nRealism: 1\nAesthetic Quality: 0")
    plan_judge = ScriptedJudge("Existence: 5\nAttributes: 4\nRelationships: 3\nFocus: 4\nDetails: 2\nPurity: 5\nClarity: 3")
    bench = WISE(prompts_dir=shared_data / "benchmarks" / "wise", judge=judge)
    results = run_eval(EvalConfig("wise", tmp_path, settings, limit=1), benchmark=bench,
                       metrics=[PlanQualityMetric(plan_judge)], pipeline=pipeline)  # fmt: skip
    metrics = results["metrics"]
    # Every image: WiScore (0.7 * 2 + 0.2 * 1 + 0.1 * 0) / 2 = 0.8; one prompt per category, weights sum to 1
    assert metrics["overall"] == pytest.approx(0.8) and metrics["judge_failures"] == 0
    assert [metrics[c] for c in ("cultural", "time", "space", "biology", "physics", "chemistry")] == pytest.approx([0.8] * 6)
    assert results["published"]["rows"]["T2I-R1"]["overall"] == 0.54
    assert results["extras"]["plan_overall"] == pytest.approx(3.5) and results["extras"]["plan_judged"] == 6
    first = judge.requests[0]
    assert len(first.images) == 1 and "Traditional food of the Mid-Autumn Festival" in first.text and "mooncakes" in first.text
    assert [r.images for r in plan_judge.requests] == [[]] * 6
    plans = [row["plans"][0] for row in _lines(tmp_path / "per_prompt.jsonl")]
    assert all(plan in r.text for plan, r in zip(plans, plan_judge.requests))


@pytest.mark.slow
def test_cli_runs_wise_with_a_local_judge(tmp_path, shared_data, scorers, tiny_checkpoint, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = ["eval", "--benchmark", "wise", "--model", str(tiny_checkpoint), "--out", str(out), "--limit", "1",
            "--prompts-dir", str(shared_data / "benchmarks" / "wise"), "--plan-max-tokens", "4",
            "--judge", f"transformers:{scorers['vlm']}", "--categories", "time,space"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    # The random judge's replies never hold the three scores: every image is a counted failure.
    assert results["n_prompts"] == 2 and results["metrics"]["judge_failures"] == 2
    assert results["metrics"]["overall"] is None and results["scorers"]["wise"]["judge"].startswith("transformers:")
    assert "wise" in capsys.readouterr().out
    # An option the benchmark does not take is an error, not silently ignored.
    assert main(argv[:-2] + ["--detector", "owlv2"]) == 2
    assert "--detector does not apply to --benchmark wise" in capsys.readouterr().err
    args = build_parser().parse_args(["eval", "--benchmark", "geneval", "--out", "x", "--detector-model", "m2f",
                                      "--categories", "counting, colors"])  # fmt: skip
    from t2i_r1.cli.eval import benchmark_options

    assert benchmark_options(args) == {"detector_model": "m2f", "categories": ["counting", "colors"]}


# ------------------------------------------------------------------------------------------------
# Resuming
# ------------------------------------------------------------------------------------------------


class ToyBenchmark:
    """Four prompts, two images each, scored by mean brightness: the smallest Benchmark implementation."""

    name = "toy"
    images_per_prompt = 2
    published = Published(source="nowhere", rows={"baseline": {"brightness": 0.5}})

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.scored: list[str] = []
        self.calls, self.fail_on_call = 0, fail_on_call

    def prompts(self):
        return [PromptItem(f"p{i}", text, "all", i) for i, text in enumerate(
            ["a red cube", "a blue sphere", "two green cats", "a yellow dog on a table"])]  # fmt: skip

    def config(self):
        return {"measure": "brightness"}

    def notes(self):
        return []

    def score(self, groups: Sequence[PromptGroup]):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # a kill in the middle of scoring
        self.scored += [g.item.key for g in groups]
        return [{"images": [{"brightness": float(np.asarray(r.load()).mean() / 255)} for r in g.images]} for g in groups]

    def summarize(self, groups, results):
        values = [im["brightness"] for r in results for im in r["images"]]
        return {"brightness": sum(values) / len(values)}


class CountingPipeline:
    def __init__(self, inner, fail_after: int | None = None) -> None:
        self.inner, self.fail_after, self.prompts = inner, fail_after, []

    def generate(self, prompts, num_images, *, use_plan, seed):
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise KeyboardInterrupt  # a kill in the middle of generation
        self.prompts += prompts
        return self.inner.generate(prompts, num_images, use_plan=use_plan, seed=seed)


def test_killed_runs_resume_without_redoing_finished_work(tmp_path, settings, pipeline):
    assert isinstance(ToyBenchmark(), Benchmark)
    config = EvalConfig("toy", tmp_path, settings, score_chunk=1)
    images = tmp_path / "images"

    # 1. Killed after two prompts were drawn.
    with pytest.raises(KeyboardInterrupt):
        run_eval(config, benchmark=ToyBenchmark(), pipeline=CountingPipeline(pipeline, fail_after=2))
    assert sorted(p.name for p in images.iterdir()) == ["p0", "p1"]
    # A kill between two files of one prompt: its second image is missing.
    lost = (images / "p1" / "01.png").read_bytes()
    (images / "p1" / "01.png").unlink()
    kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in images.rglob("*.png")}

    # 2. Resumed, killed again while scoring (after the first prompt's scores were cached).
    counting = CountingPipeline(pipeline)
    with pytest.raises(KeyboardInterrupt):
        run_eval(config, benchmark=ToyBenchmark(fail_on_call=2), pipeline=counting)
    assert counting.prompts == ["a blue sphere", "two green cats", "a yellow dog on a table"]  # p0 is not redrawn
    assert all(p.read_bytes() == data and p.stat().st_mtime_ns == mtime for p, (data, mtime) in kept.items())
    assert (images / "p1" / "01.png").read_bytes() == lost  # seed + prompt index: the same image again
    assert json.loads((images / "p3" / "00.json").read_text())["seed"] == 3

    # 3. Resumed to the end: nothing is drawn, only the three unscored prompts are scored.
    cache = next((tmp_path / "scores").glob("toy-*"))
    with open(cache / "rank0.jsonl", "a") as handle:
        handle.write('{"key": "p3", "fi')  # a line cut short by the kill is ignored
    counting, bench = CountingPipeline(pipeline), ToyBenchmark()
    results = run_eval(config, benchmark=bench, pipeline=counting)
    assert counting.prompts == [] and bench.scored == ["p1", "p2", "p3"]
    assert results["complete"] and results["n_images"] == 8
    expected = np.mean([np.asarray(__import__("PIL.Image").Image.open(p).convert("RGB")).mean() / 255
                        for p in sorted(images.rglob("*.png"))])  # fmt: skip
    assert results["metrics"]["brightness"] == pytest.approx(expected)
    assert set(read_cache(cache)) == {"p0", "p1", "p2", "p3"}

    # 4. Run again: nothing to do at all.
    bench = ToyBenchmark()
    run_eval(config, benchmark=bench, pipeline=CountingPipeline(pipeline, fail_after=0))
    assert bench.scored == []

    # 5. Other drawing settings into the same folder are refused.
    other = EvalConfig("toy", tmp_path, replace(settings, use_plan=False))
    with pytest.raises(ValueError, match="use_plan"):
        run_eval(other, benchmark=ToyBenchmark(), pipeline=pipeline)


SHARDED_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from test_eval_runner import ToyBenchmark
from t2i_r1.eval.runner import EvalConfig, run_eval
from t2i_r1.pipeline import PipelineConfig
from t2i_r1.rollout.sampling import PlanSamplingConfig

bench = ToyBenchmark()
settings = PipelineConfig(model={model!r}, plan=PlanSamplingConfig(max_new_tokens=8))
run_eval(EvalConfig("toy", {out!r}, settings), benchmark=bench)
from accelerate import PartialState
state = PartialState()
with open({ranks!r} + f"/rank{{state.process_index}}.json", "w") as f:  # a file each: stdout of 2 ranks interleaves
    json.dump({{"rank": state.process_index, "processes": state.num_processes, "scored": bench.scored}}, f)
"""


@pytest.mark.slow
def test_two_processes_share_the_work_and_match_one(tmp_path, tiny_checkpoint, settings, pipeline):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "sharded.py"
    tests = str(Path(__file__).parent)
    (tmp_path / "ranks").mkdir()
    script.write_text(SHARDED_SCRIPT.format(tests=tests, out=str(tmp_path / "two"), model=str(tiny_checkpoint),
                                            ranks=str(tmp_path / "ranks")))
    # CPU processes (gloo) even on a GPU machine: two NCCL ranks cannot share one GPU.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads(p.read_text()) for p in sorted((tmp_path / "ranks").glob("rank*.json"))]
    # Each of the two processes scored its own half of the four prompts.
    assert [(r["rank"], r["processes"]) for r in ranks] == [(0, 2), (1, 2)]
    assert sorted(sum((r["scored"] for r in ranks), [])) == ["p0", "p1", "p2", "p3"]
    assert all(r["scored"] for r in ranks)
    # The same images and numbers as one process.
    one = run_eval(EvalConfig("toy", tmp_path / "one", settings), benchmark=ToyBenchmark(), pipeline=pipeline)
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["metrics"] == pytest.approx(one["metrics"])
    for path in sorted((tmp_path / "one" / "images").rglob("*.png")):
        assert path.read_bytes() == (tmp_path / "two" / path.relative_to(tmp_path / "one")).read_bytes()

"""The evaluation harness on a CUDA GPU: generation there, and every scorer there giving the CPU's numbers."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from t2i_r1.eval.aesthetic_diversity import AestheticMetric, DiversityMetric
from t2i_r1.eval.geneval import GenEval
from t2i_r1.eval.plan_quality import PlanQualityMetric
from t2i_r1.eval.runner import EvalConfig, run_eval
from t2i_r1.eval.t2i_compbench import T2ICompBench
from t2i_r1.eval.wise import WISE
from t2i_r1.pipeline import PipelineConfig
from t2i_r1.rollout.sampling import PlanSamplingConfig
from t2i_r1.testing.scorers import save_tiny_scorers


def _wise_prompts(directory):
    """Three legacy-format files with one prompt per category (the real ones are not shipped)."""
    directory.mkdir()
    rows = {"cultural_common_sense.json": [1], "spatio-temporal_reasoning.json": [401, 568],
            "natural_science.json": [701, 801, 901]}  # fmt: skip
    for name, ids in rows.items():
        data = [{"prompt_id": i, "Prompt": f"a red cube number {i}", "Explanation": "a cube", "Category": "c",
                 "Subcategory": "s"} for i in ids]  # fmt: skip
        (directory / name).write_text(json.dumps(data))
    return directory


def _run(benchmark_cls, kwargs, metrics, tmp_path, name, settings, images_per_prompt):
    """Generate and score on the GPU, then score a copy of the same images on the CPU."""
    gpu_out, cpu_out = tmp_path / f"{name}-gpu", tmp_path / f"{name}-cpu"
    gpu = run_eval(EvalConfig(name, gpu_out, settings, images_per_prompt=images_per_prompt, limit=1),
                   benchmark=benchmark_cls(**kwargs, device="cuda"), metrics=metrics("cuda"))  # fmt: skip
    shutil.copytree(gpu_out / "images", cpu_out / "images")
    shutil.copy(gpu_out / "run.json", cpu_out / "run.json")
    cpu = run_eval(EvalConfig(name, cpu_out, None, images_per_prompt=images_per_prompt, limit=1),
                   benchmark=benchmark_cls(**kwargs, device="cpu"), metrics=metrics("cpu"))  # fmt: skip
    return gpu, cpu


@pytest.mark.gpu
def test_benchmarks_on_gpu_match_cpu(tmp_path, tiny_checkpoint):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    tiny = save_tiny_scorers(tmp_path / "scorers")
    settings = PipelineConfig(model=str(tiny_checkpoint), device="cuda", dtype="bfloat16",
                              plan=PlanSamplingConfig(max_new_tokens=8))

    kwargs = dict(vqa_model=tiny["blip_vqa"], clip_model=tiny["clip"], detector_model=tiny["owlv2"],
                  detector_threshold=0.0, use_spacy=False)  # fmt: skip
    extras = lambda d: [DiversityMetric(tiny["clip"], device=d), AestheticMetric(tiny["aesthetic_head"], tiny["clip"], device=d)]  # noqa: E731
    gpu, cpu = _run(T2ICompBench, kwargs, extras, tmp_path, "t2i-compbench", settings, 2)
    assert gpu["n_images"] == 12 and all(v is not None for v in gpu["metrics"].values())
    assert gpu["metrics"] == pytest.approx(cpu["metrics"], abs=1e-3)
    assert gpu["extras"] == pytest.approx(cpu["extras"], abs=1e-3)

    kwargs = dict(detector_model=tiny["mask2former"], color_clip_model=tiny["clip"], threshold=0.0, counting_threshold=0.0)
    gpu, cpu = _run(GenEval, kwargs, lambda d: [], tmp_path, "geneval", settings, 2)
    assert gpu["metrics"] == pytest.approx(cpu["metrics"], abs=1e-6)

    vlm = f"transformers:{tiny['vlm']}"
    kwargs = dict(prompts_dir=_wise_prompts(tmp_path / "wise-prompts"), judge=vlm)
    gpu, cpu = _run(WISE, kwargs, lambda d: [PlanQualityMetric(vlm, device=d)], tmp_path, "wise", settings, 1)
    assert gpu["n_prompts"] == 6 and gpu["metrics"]["judge_failures"] == cpu["metrics"]["judge_failures"] == 6
    assert gpu["extras"]["plan_judge_failures"] == 6

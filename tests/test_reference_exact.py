"""The reference-exact recipe and the GRPO-math differences from TRL (docs/reference-differences.md).

Reference: CaraJ7/T2I-R1 @2d9d4d1 ("GT" = src/t2i-r1/src/open_r1/trainer/grpo_trainer.py).
TRL: huggingface/trl @f2cd577 ("TG" = trl/trainer/grpo_trainer.py, "TU" = trl/trainer/utils.py).
"""

from pathlib import Path

import pytest
import torch

from t2i_r1.config_io import load_config, to_dict
from t2i_r1.grpo.core import aggregate_loss, normalize_then_sum, sum_then_normalize
from t2i_r1.rollout import PlanSamplingConfig, plan_log_probs, sample_plans
from t2i_r1.train.config import TrainConfig
from t2i_r1.train.loop import flatten

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# Every setting in which the reference-exact recipe departs from our 7B defaults (docs/reference-differences.md).
REFERENCE_EXACT_CHANGES = {
    "output_dir": "runs/reference-exact-7b",
    "rollout.plan.max_new_tokens": 1024,
    "rollout.plan.top_k": 50,
    "rollout.image.logprob_mode": "conditional",
    "optim.scheduler": "linear",
    "rewards.git_vqa.kwargs.behavior": "reference",
    "rewards.gdino.kwargs.behavior": "reference",
    "rewards.orm.kwargs.behavior": "reference",
    "rewards.orm.kwargs.seed": 0,
}


_flatten = flatten  # nested config -> dotted keys, as resume compares configs


def test_reference_exact_recipe_changes_only_the_documented_settings():
    ours = _flatten(to_dict(load_config(TrainConfig, CONFIGS / "janus_pro_7b.yaml")))
    exact = _flatten(to_dict(load_config(TrainConfig, CONFIGS / "recipes" / "reference_exact_7b.yaml")))
    changed = {key: exact[key] for key in exact if ours.get(key, "<absent>") != exact[key]}
    assert changed == REFERENCE_EXACT_CHANGES
    # the math the issue names: conditional image log-probs, one update, token mean, sum of rewards, beta 0.01
    assert exact["grpo.num_iterations"] == 1 and exact["grpo.loss_aggregation"] == "token_mean"
    assert exact["grpo.reward_aggregation"] == "sum_then_normalize" and exact["grpo.beta"] == 0.01
    assert all(exact[f"rewards.{name}.weight"] == 1.0 for name in ("hps", "git_vqa", "gdino", "orm"))


def test_plan_top_k_one_is_greedy_and_log_probs_stay_untruncated(tiny_policy):
    # The reference samples plans with generate(do_sample=True) (GT L477-486), i.e. transformers' default
    # top-k 50. Ours applies top_k before top_p; the recorded log-prob is the untruncated one (TRL's
    # convention), so it still equals teacher forcing.
    prompts = ["a red cube", "two green cats"]
    greedy = PlanSamplingConfig(max_new_tokens=10, top_k=1)
    a = sample_plans(tiny_policy, prompts, 2, greedy, torch.Generator().manual_seed(0))
    b = sample_plans(tiny_policy, prompts, 2, greedy, torch.Generator().manual_seed(1))
    assert torch.equal(a.plan_ids, b.plan_ids)  # top-1: the draw no longer depends on the seed
    free = PlanSamplingConfig(max_new_tokens=10)
    c = sample_plans(tiny_policy, prompts, 2, free, torch.Generator().manual_seed(0))
    d = sample_plans(tiny_policy, prompts, 2, free, torch.Generator().manual_seed(1))
    assert not torch.equal(c.plan_ids, d.plan_ids)
    forced = plan_log_probs(tiny_policy, a.prompt_ids, a.prompt_mask, a.plan_ids, a.plan_mask)
    assert (forced - a.logprobs).abs().max().item() <= 1e-4
    assert (a.logprobs[a.plan_mask.bool()] < 0).any()  # not the truncated distribution's log 1 = 0
    with pytest.raises(ValueError, match="top_k"):
        PlanSamplingConfig(top_k=0)


# --- GRPO math against TRL: the two documented differences ------------------------------------------


def test_sequence_mean_divides_by_non_empty_rows_where_trl_grpo_divides_by_all():
    # TG L3124-3125 (loss_type "grpo"): ((loss * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean():
    # an empty row contributes 0 and still counts in the mean. Ours divides by the rows with tokens.
    per_token = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    # row means 2, 2 and (empty) 0: TRL (2 + 2 + 0) / 3 = 4/3; ours (2 + 2) / 2 = 2
    trl = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    assert trl.item() == pytest.approx(4 / 3)
    assert aggregate_loss(per_token, mask, "sequence_mean").item() == pytest.approx(2.0)
    # without empty rows, which is every BiCoT sample (576 image tokens each), the two agree
    full = torch.ones_like(mask)
    trl_full = ((per_token * full).sum(-1) / full.sum(-1)).mean()
    assert aggregate_loss(per_token, full, "sequence_mean").item() == pytest.approx(trl_full.item())


def _trl_nanstd(x, dim=None, keepdim=False):
    # TU L873-880: NaN-aware variance with Bessel's correction
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
    count = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    var = var * count / (count - 1)
    out = var.sqrt()
    return out if keepdim else out.squeeze() if dim is None else out.squeeze(dim)


def test_normalize_then_sum_is_trls_before_its_batch_z_score():
    # TG L2710-2718: per-reward group z-scores (eps 1e-4), weighted nansum, then a second z-score of that
    # sum over the whole batch: (s - nanmean(s)) / (nanstd(s) + 1e-4). Ours stops before the second one.
    per_reward = torch.tensor([[1.0, 0.2], [0.0, 0.4], [1.0, 0.9], [0.0, 0.1],
                               [0.5, 0.3], [0.5, 0.6], [0.0, 0.6], [1.0, 0.3]], dtype=torch.float64)  # (N=8, R=2)
    weights, G = torch.tensor([1.0, 2.0], dtype=torch.float64), 4
    grouped = per_reward.view(-1, G, 2)
    z = (grouped - grouped.mean(dim=1, keepdim=True)) / (_trl_nanstd(grouped, dim=1, keepdim=True) + 1e-4)
    summed = (z.view(-1, 2) * weights).nansum(dim=1)  # (N,)
    trl = (summed - summed.nanmean()) / (_trl_nanstd(summed) + 1e-4)
    ours, _ = normalize_then_sum(per_reward, weights, G)
    torch.testing.assert_close(ours, summed)
    assert not torch.allclose(ours, trl)
    # sum-then-normalize, the paper's and the reference's (GT L739-748), agrees with TRL's to the bit
    total = (per_reward * weights).sum(dim=1).view(-1, G)
    trl_stn = ((total - total.mean(dim=1, keepdim=True)) / (total.std(dim=1, keepdim=True) + 1e-4)).view(-1)
    assert torch.equal(sum_then_normalize(per_reward, weights, G)[0], trl_stn)


# --- benchmarks/reference_differences.py on hand-made metadata ----------------------------------------


def test_reference_differences_counts(tmp_path, capsys):
    import json

    from benchmarks.reference_differences import main

    rows = [
        {"prompt": "two cats", "task_type": "numeracy", "nouns": ["cat"], "numeracy_info": [{"obj_name": "cat", "num": 2}]},
        {"prompt": "a mug on top of a desk", "task_type": "complex", "nouns": ["mug", "desk"],
         "spatial_info": {"obj1": "mug", "obj2": "desk", "locality": "on top of"}},
        {"prompt": "a cup above a bed", "task_type": "spatial", "nouns": ["cup", "bed"],
         "spatial_info": {"obj1": "cup", "obj2": "bed", "locality": "above"}},
        {"prompt": "a roll of paper towel", "task_type": "shape", "nouns": ["roll of paper towel"], "attr_nouns": ["roll"]},
        {"prompt": "a dog and a dog and a cat", "task_type": "non", "nouns": ["dog", "dog", "cat"]},
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    main([str(path), "--scenes", "2", "--json", str(tmp_path / "out.json")])
    out = json.loads((tmp_path / "out.json").read_text())
    counts = {name.split(":")[0] if name.startswith("gdino ") else name: c["prompts"] for name, c in out["counts"].items()}
    assert counts["gdino 1"] == counts["gdino 2"] == 1  # the numeracy prompt
    assert counts["gdino 3"] == 1  # complex with spatial_info
    assert counts["gdino 4"] == 1  # "roll of paper towel"
    assert counts["gdino 6"] == 1 and counts["gdino 6b"] == 0  # dog, dog, cat
    assert out["counts"]["gdino: 'above' / 'on top of' has no branch in the reference (kept: scored)"]["prompts"] == 1
    assert out["counts"]["git: no attr_nouns (reference asks about each noun, ours NaN)"]["prompts"] == 2
    assert out["agreement"]["shape"]["scenes"] == 2
    assert "GroundingDINO, ours vs the reference" in capsys.readouterr().out


# --- benchmarks/reference_exact_shapeworld.py: two steps of each configuration on the packaged model ---


def test_reference_exact_shapeworld_benchmark_runs(tmp_path):
    import argparse
    import json

    from benchmarks.reference_exact_shapeworld import configs, main
    from t2i_r1.shapeworld.model import DEFAULT_ASSET

    if not (DEFAULT_ASSET / "model.safetensors").is_file():
        pytest.skip(f"needs the committed ShapeWorld checkpoint in {DEFAULT_ASSET}")
    args = argparse.Namespace(model=str(DEFAULT_ASSET), steps=2, prompts_per_step=1, group=2, lr=None, out=str(tmp_path))
    built = configs(args, 0, tmp_path / "p.jsonl")
    ours, exact = built["ours"], built["reference-exact"]
    # ours = the demo's settings (configs/recipes/rl_shapeworld.yaml); reference-exact = the 7B recipe's math
    assert (ours.rollout.image.logprob_mode, ours.grpo.loss_aggregation, ours.grpo.beta) == ("guided", "segment_weighted", 0.0)
    assert (exact.rollout.image.logprob_mode, exact.grpo.loss_aggregation, exact.grpo.beta) == ("conditional", "token_mean", 0.01)
    assert (exact.grpo.num_iterations, exact.grpo.reward_aggregation) == (1, "sum_then_normalize")
    assert (exact.rollout.plan.top_k, exact.optim.scheduler) == (50, "linear")
    assert exact.optim.lr == ours.optim.lr and exact.rollout.image.guidance_scale == ours.rollout.image.guidance_scale

    results = main(["--seeds", "1", "--steps", "2", "--group", "2", "--prompts-per-step", "1", "--train-prompts", "1",
                    "--per-cell", "1", "--samples", "1", "--threads", "1", "--out", str(tmp_path),
                    "--json", str(tmp_path / "r.json")])
    assert list(results["rows"]) == ["base", "ours", "reference-exact"]
    for name in ("ours", "reference-exact"):
        (run,) = results["runs"][name]
        assert run["steps"] == 2 and len(run["train_reward"]) == 2
        assert 0.0 <= run["table"]["overall"] <= 1.0
    assert json.loads((tmp_path / "r.json").read_text())["reference_math"][0] == "grpo.beta=0.01"

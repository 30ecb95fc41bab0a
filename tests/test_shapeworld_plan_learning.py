"""The plan-learning benchmark: its plan-check reward, embedding measure, and a one-step run of each switch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from t2i_r1.shapeworld.model import DEFAULT_ASSET

needs_asset = pytest.mark.skipif(not (DEFAULT_ASSET / "config.json").is_file(), reason="needs the packaged ShapeWorld model")


def test_plan_check_reward_mixes_the_plans_check_and_the_images_score():
    from benchmarks.shapeworld_plan_learning import plan_check_reward
    from t2i_r1.shapeworld.evaluator import partial_reward
    from t2i_r1.shapeworld.grammar import prompt_set, sample_example
    from t2i_r1.shapeworld.world import render

    prompt = prompt_set("train", 1, seed=0, categories=("spatial",))[0]
    example = sample_example(prompt, np.random.default_rng(0))
    image = render(example.scene)
    right = {**prompt.metadata(), "plan": example.plan.text()}
    wrong = {**prompt.metadata(), "plan": "one small red solid circle at center"}
    assert plan_check_reward(1.0)([prompt.text], [image], [right]) == [1.0]
    (plan_part,) = plan_check_reward(1.0)([prompt.text], [image], [wrong])
    assert 0.0 <= plan_part < 1.0
    image_part = partial_reward(prompt.text, image, wrong)
    for share in (0.0, 0.25, 0.5):
        (value,) = plan_check_reward(share)([prompt.text], [image], [wrong])
        assert value == pytest.approx(share * plan_part + (1 - share) * image_part)
    (value,) = plan_check_reward(1.0)([prompt.text], [image], [{"plan": "one small red solid circle at center"}])
    assert math.isnan(value)  # not a ShapeWorld prompt: not applicable


def test_embedding_movement_is_the_mean_row_distance():
    from benchmarks.shapeworld_plan_learning import embedding_movement

    before = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]])
    after = before.clone()
    after[0] += torch.tensor([0.0, 1.0])
    moves = embedding_movement(before, after, {"a": [0], "b": [1, 2]})
    assert {k: moves["a"][k] for k in ("words", "norm", "moved", "relative")} == {"words": 1, "norm": 5.0, "moved": 1.0, "relative": 0.2}
    assert moves["b"]["moved"] == 0.0 and moves["b"]["norm"] == 1.0
    assert moves["b"]["apart_after"] == pytest.approx(2 ** 0.5)  # the two rows' distance, each way


@needs_asset
def test_word_groups_name_the_words_extend_vocab_added(tmp_path):
    from benchmarks.shapeworld_plan_learning import added_words, word_groups
    from t2i_r1.shapeworld.model import load_policy

    policy = load_policy(DEFAULT_ASSET)
    groups = word_groups(policy, ["red", "circle"])
    assert groups["words added by extend-vocab"] == policy.tokenizer.convert_tokens_to_ids(["circle", "red"])
    assert len(groups["RL-only words"]) > 10 and "words added by extend-vocab" not in word_groups(policy)
    (tmp_path / "pretrain.json").write_text(json.dumps({"vocabulary_extension": {"added": ["red"]}}))
    assert added_words(tmp_path) == ["red"] and added_words(tmp_path / "none") == []


@needs_asset
def test_plan_learning_runs_with_both_switches(tmp_path, capsys):
    from benchmarks.shapeworld_plan_learning import main

    main(["--steps", "1", "--per-cell", "1", "--samples", "1", "--threads", "1", "--plan-share", "0.5",
          "--expose-steps", "1", "--expose-examples", "8", "--expose-batch", "4", "--train-prompts", "1",
          "--out", str(tmp_path)])
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["expose"]["steps"] == 1 and result["training"]["steps"] == 1
    assert (tmp_path / "exposed" / "model.safetensors").is_file()
    for when in ("before", "after"):
        assert set(result[when]) == {"plan", "no plan"} and "plans right" in result[when]["plan"]
    # The packaged CPU base knows every word from its tokenizer's start: extend-vocab added none.
    assert set(result["embeddings"]) == {"pretraining words", "RL-only words"}
    assert all(v["words"] > 10 and v["norm"] > 0 for v in result["embeddings"].values())
    from t2i_r1.shapeworld.phrasing import ALL_FAMILIES
    assert set(result["after"]["plan"]["plans right"]["by family"]) == set(ALL_FAMILIES)
    report = (tmp_path / "report.txt").read_text()
    assert "plans right" in report and "--plan-share 0.5" in report


def test_plan_share_needs_plans(tmp_path):
    from benchmarks.shapeworld_plan_learning import main

    with pytest.raises(SystemExit):
        main(["--mode", "token", "--plan-share", "1", "--out", str(tmp_path)])

"""Scoring arithmetic of the evaluation harness on hand-made detections, probabilities and judge replies.

Every expected number is derived in the comments from the benchmark's definition.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from t2i_r1.eval.aesthetic_diversity import mean_pairwise_cosine_distance
from t2i_r1.eval.base import PromptGroup, PromptItem, limit_per_category
from t2i_r1.eval.detectors import DetectedObject
from t2i_r1.eval.geneval import compute_iou, evaluate, relative_position, select_objects, summarize_correct
from t2i_r1.eval.plan_quality import combine, parse_plan_scores
from t2i_r1.eval.t2i_compbench import (
    T2ICompBench,
    attribute_score,
    determine_position,
    find_locality,
    route_key,
    spatial_image_score,
    three_in_one,
)
from t2i_r1.eval.wise import WISE, category_of, overall_wiscore, parse_judge_scores, wiscore


def det(label, score, box, mask=None):
    return DetectedObject(label, score, tuple(float(v) for v in box), mask)


# ------------------------------------------------------------------------------------------------
# T2I-CompBench
# ------------------------------------------------------------------------------------------------


def test_determine_position_rules():
    a, right_of_a = (0, 0, 10, 10), (20, 0, 30, 10)  # centres (5, 5) and (25, 5): dx = 20, dy = 0, IoU 0
    assert determine_position("on the left of", a, right_of_a) == 1.0
    assert determine_position("on the right of", a, right_of_a) == 0.0  # needs dx < 0
    assert determine_position("on the right of", right_of_a, a) == 1.0
    # Overlap: (4, 0, 14, 10): dx = 4; intersection 6 x 10 = 60, union 100 + 100 - 60 = 140, IoU = 3/7 >= 0.1
    # -> 0.1 / (3/7) = 0.7/3
    assert determine_position("on the left of", a, (4, 0, 14, 10)) == pytest.approx(0.7 / 3)
    # The axis must dominate: dx = 20, dy = 30 -> not "left of"
    assert determine_position("on the left of", a, (20, 25, 30, 35)) == 0.0
    below_a = (0, 30, 10, 40)  # dy = 30 > 0: a is on the top of it
    assert determine_position("on the top of", a, below_a) == 1.0
    assert determine_position("on the bottom of", a, below_a) == 0.0
    assert determine_position("on the bottom of", below_a, a) == 1.0
    # near: dx = 200, dy = 300, both >= 150 -> 150 / max(200, 300) = 0.5; with dx = 100 < 150 -> 1
    assert determine_position("near", a, (200, 300, 210, 310)) == pytest.approx(0.5)
    assert determine_position("next to", a, (100, 300, 110, 310)) == 1.0
    assert determine_position("near", a, (200, 300, 210, 310), distance_threshold=112.5) == pytest.approx(112.5 / 300)
    # The benchmark's quirk: "on top of" is in its vocabulary but has no branch -> 0
    assert determine_position("on top of", a, below_a) == 0.0
    assert determine_position(None, a, below_a) == 0.0


def test_find_locality_takes_the_vocabulary_order():
    assert find_locality("a girl on the top of a frog") == "on the top of"
    assert find_locality("a cat on side of a car") == "on side of"
    assert find_locality("The red hat was on top of the brown coat rack.") == "on top of"
    assert find_locality("a dog and a cat") is None


def test_spatial_score_formula_uses_each_label_s_most_confident_box():
    detections = [det("dog", 0.9, (0, 0, 10, 10)), det("cat", 0.7, (20, 0, 30, 10)), det("dog", 0.5, (50, 0, 60, 10))]
    # First dog (0.9, centre x 5) is left of the cat (centre x 25): position 1
    # -> 0.25 * 0.9 + 0.25 * 0.7 + 1 / 2 = 0.225 + 0.175 + 0.5 = 0.9. (The 0.5 dog, right of the cat, would give 0.)
    out = spatial_image_score("dog", "cat", "on the left of", detections)
    assert out["score"] == pytest.approx(0.9)
    assert (out["conf1"], out["conf2"], out["position"]) == (0.9, 0.7, 1.0)
    # Wrong relation: 0.225 + 0.175 + 0 = 0.4 < 0.5 -> set to 0
    assert spatial_image_score("dog", "cat", "on the right of", detections)["score"] == 0.0
    # One object found: 0.25 * 0.9 = 0.225 < 0.5 -> 0
    assert spatial_image_score("dog", "horse", "on the left of", detections)["score"] == 0.0
    # Confidences 1 and 1, position 0: 0.25 + 0.25 = 0.5 is not below 0.5 -> kept
    sure = [det("dog", 1.0, (0, 0, 10, 10)), det("cat", 1.0, (20, 0, 30, 10))]
    assert spatial_image_score("dog", "cat", "on the right of", sure)["score"] == pytest.approx(0.5)
    assert spatial_image_score("dog", "cat", "on the left of", [])["score"] == 0.0


def test_attribute_product_and_three_in_one_routing():
    assert attribute_score([0.9, 0.5, 0.4]) == pytest.approx(0.18)  # 0.9 * 0.5 * 0.4
    assert attribute_score([]) == 1.0  # the script initialises each phrase slot with 1
    # attribute 0.4, spatial 0.6, action 0.2
    assert three_in_one("spatial", 0.4, 0.6, 0.2) == pytest.approx(0.5)  # (0.6 + 0.4) / 2
    assert three_in_one("action", 0.4, 0.6, 0.2) == pytest.approx(0.3)  # (0.2 + 0.4) / 2
    assert three_in_one("both", 0.4, 0.6, 0.2) == pytest.approx(0.4)  # (0.4 + 0.6 + 0.2) / 3
    with pytest.raises(ValueError, match="route"):
        three_in_one("other", 0.4, 0.6, 0.2)
    assert route_key("The red hat was on top of the brown coat rack.\n") == "the red hat was on top of the brown coat rack"


def test_complex_routes_from_the_bundled_lists():
    items = T2ICompBench(categories=["complex"], use_spacy=False).prompts()
    # complex_val_spatial.txt has 58 prompts, complex_val_action.txt 212, none in both: 300 - 58 - 212 = 30 left
    assert Counter(i.metadata["route"] for i in items) == {"action": 212, "spatial": 58, "both": 30}
    assert items[0].prompt == "The red hat was on top of the brown coat rack." and items[0].metadata["route"] == "spatial"
    assert items[0].index == 5000  # complex is the sixth category: offset 5 * 1000


def test_t2i_compbench_prompt_files_and_colour_versions():
    old = T2ICompBench(categories=["color"], use_spacy=False).prompts()
    new = T2ICompBench(categories=["color"], color_prompts="current", use_spacy=False).prompts()
    assert len(old) == len(new) == 300
    # 5 prompts changed on 2025-09-03 (lines 228, 229, 272, 288, 300)
    assert sum(a.prompt != b.prompt for a, b in zip(old, new)) == 5
    assert old[227].prompt == "a yellow taxi and a black tire" and new[227].prompt == "a yellow taxi and a red tire"
    with pytest.raises(ValueError, match="categories"):
        T2ICompBench(categories=["numeracy"])


def test_limit_per_category_keeps_benchmark_order():
    items = [PromptItem(f"k{i}", f"p{i}", "ab"[i % 2], i) for i in range(7)]
    assert [i.key for i in limit_per_category(items, 2)] == ["k0", "k1", "k2", "k3"]
    assert limit_per_category(items, None) == items


# ------------------------------------------------------------------------------------------------
# GenEval
# ------------------------------------------------------------------------------------------------


def test_geneval_iou_uses_inclusive_pixels():
    assert compute_iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    # x overlap 5..9 = 5 px, 10 px tall: 50; union 100 + 100 - 50 = 150
    assert compute_iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(1 / 3)


def test_geneval_relative_position():
    a = (0, 0, 10, 10)
    # offset (5 - 35, 0) = (-30, 0); shrink 0.1 * (10 + 10) = 2 per axis -> (-28, 0); / 30 -> dx = -0.93
    assert relative_position(a, (30, 0, 40, 10)) == {"left of"}
    assert relative_position((30, 0, 40, 10), a) == {"right of"}
    # offset (-20, -20) -> (-18, -18) / 28.28 = -0.64 on both axes
    assert relative_position(a, (20, 20, 30, 30)) == {"left of", "above"}
    # offset (-12, -20) -> (-10, -18) / sqrt(544) = (-0.43, -0.77): only "above"
    assert relative_position(a, (12, 20, 22, 30)) == {"above"}
    # offset (-1, -1) is inside the 2 px margin on both axes: no relation
    assert relative_position(a, (1, 1, 11, 11)) == set()
    assert relative_position(a, (0, 30, 10, 40)) == {"above"}


def test_geneval_thresholds_and_counting_rule():
    detections = [det("clock", s, (i * 20, 0, i * 20 + 10, 10)) for i, s in enumerate([0.95, 0.5, 0.92, 0.3])]
    detections.append(det("dog", 0.2, (0, 50, 10, 60)))
    loose = select_objects(detections, 0.3)  # strictly above 0.3: the 0.3 clock and the dog drop out
    assert [d.score for d in loose["clock"]] == [0.95, 0.92, 0.5] and "dog" not in loose
    strict = select_objects(detections, 0.9)
    assert [d.score for d in strict["clock"]] == [0.95, 0.92]
    counting = {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}]}
    assert evaluate(strict, counting, lambda *_: [])[0] is True  # 2 clocks at 0.9
    ok, reason = evaluate(loose, counting, lambda *_: [])  # 3 clocks at 0.3: the exclude clause fails
    assert ok is False and "clock<3" in reason
    many = [det("cup", 0.99 - i / 100, (i, 0, i + 1, 1)) for i in range(20)]
    assert len(select_objects(many, 0.3)["cup"]) == 16  # MAX_OBJECTS


def test_geneval_colour_and_position_clauses():
    objects = {"wine glass": [det("wine glass", 0.8, (0, 0, 10, 10))], "apple": [det("apple", 0.9, (30, 0, 40, 10))]}
    meta = {"include": [{"class": "wine glass", "count": 1, "color": "purple"}, {"class": "apple", "count": 1, "color": "black"}]}
    colours = {"wine glass": ["purple"], "apple": ["red"]}
    ok, reason = evaluate(objects, meta, lambda name, objs: colours[name][: len(objs)])
    assert not ok and "expected black apple" in reason
    colours["apple"] = ["black"]
    assert evaluate(objects, meta, lambda name, objs: colours[name][: len(objs)])[0]

    bear, dog = det("teddy bear", 0.9, (0, 0, 10, 10)), det("dog", 0.9, (30, 0, 40, 10))
    position = {"include": [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}]}
    assert evaluate({"teddy bear": [bear], "dog": [dog]}, position, lambda *_: [])[0]  # dog centre 35 vs bear 5
    swapped = {"teddy bear": [det("teddy bear", 0.9, dog.box)], "dog": [det("dog", 0.9, bear.box)]}
    ok, reason = evaluate(swapped, position, lambda *_: [])
    assert not ok and "expected dog right of target, found left of" in reason
    ok, reason = evaluate({"dog": [dog]}, position, lambda *_: [])  # the target group failed
    assert not ok and "no target for dog" in reason


def test_geneval_overall_is_the_mean_of_task_means():
    tags = ["single_object"] * 2 + ["two_object"] * 2 + ["counting"] * 2 + ["colors"] + ["position"] + ["color_attr"] * 4
    correct = [1, 1, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0]
    scores = summarize_correct(tags, correct)
    # task means 1, 0.5, 0, 1, 0, 0.25 -> overall 2.75 / 6; the image mean would be 5 / 12 instead
    assert scores["overall"] == pytest.approx(2.75 / 6)
    assert scores["color_attr"] == 0.25 and scores["two_object"] == 0.5
    assert list(scores)[:7] == ["overall", "single_object", "two_object", "counting", "colors", "position", "color_attr"]


# ------------------------------------------------------------------------------------------------
# WISE
# ------------------------------------------------------------------------------------------------


def test_wiscore_and_categories():
    assert wiscore(2, 1, 0) == pytest.approx(0.8)  # (0.7 * 2 + 0.2 * 1 + 0.1 * 0) / 2 = 1.6 / 2
    assert wiscore(1, 2, 2) == pytest.approx(0.65)  # (0.7 + 0.4 + 0.2) / 2
    assert wiscore(2, 2, 2) == pytest.approx(1.0)
    edges = {1: "cultural", 400: "cultural", 401: "time", 567: "time", 568: "space", 700: "space",
             701: "biology", 800: "biology", 801: "physics", 901: "chemistry", 1000: "chemistry"}  # fmt: skip
    assert {pid: category_of(pid) for pid in edges} == edges
    with pytest.raises(ValueError):
        category_of(1001)


def test_wise_overall_weights_categories_by_prompt_count():
    scores = {"cultural": 0.5, "time": 1.0, "space": 0.0, "biology": 0.25, "physics": 0.75, "chemistry": 1.0}
    # 0.4 * 0.5 + 0.167 * 1 + 0.133 * 0 + 0.1 * (0.25 + 0.75 + 1.0) = 0.2 + 0.167 + 0 + 0.2 = 0.567
    assert overall_wiscore(scores) == pytest.approx(0.567)
    assert overall_wiscore({**scores, "space": None}) is None
    assert overall_wiscore({k: 1.0 for k in scores}) == pytest.approx(1.0)  # the weights sum to 1


def test_wise_judge_reply_parsing():
    assert parse_judge_scores("Consistency: 2\nRealism: 1\nAesthetic Quality: 0") == {"consistency": 2, "realism": 1, "aesthetic": 0}
    assert parse_judge_scores("**Consistency**: 1 **Realism**: 2 **Aesthetic Quality** - 1") == {
        "consistency": 1, "realism": 2, "aesthetic": 1}  # fmt: skip
    assert parse_judge_scores("consistency 2, realism: 3, aesthetic quality: 1") is None  # 3 is out of range
    assert parse_judge_scores("Consistency: 2\nRealism: 1") is None  # one missing
    assert parse_judge_scores("I cannot rate this image.") is None
    assert parse_judge_scores("") is None


def test_wise_summary_excludes_judge_failures(shared_data):
    bench = WISE(prompts_dir=shared_data / "benchmarks" / "wise", judge="openai:unused")
    items = {i.index: i for i in bench.prompts()}
    assert len(items) == 1000
    groups = [PromptGroup(items[1], ()), PromptGroup(items[2], ()), PromptGroup(items[401], ())]
    results = [
        {"images": [{"wiscore": 0.8, "consistency": 2, "realism": 1, "aesthetic": 0}]},
        {"images": [{"wiscore": None, "judge_failed": True}]},
        {"images": [{"wiscore": 0.65, "consistency": 1, "realism": 2, "aesthetic": 2}]},
    ]
    summary = bench.summarize(groups, results)
    assert summary["cultural"] == pytest.approx(0.8) and summary["time"] == pytest.approx(0.65)
    assert summary["judge_failures"] == 1 and summary["overall"] is None  # four categories have no score
    assert summary["mean_consistency"] == pytest.approx(1.5)  # (2 + 1) / 2, the failure left out


# ------------------------------------------------------------------------------------------------
# Diversity and plan quality
# ------------------------------------------------------------------------------------------------


def test_diversity_is_mean_pairwise_cosine_distance():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    # pairs: (1,2) cos 0 -> 1; (1,3) and (2,3) cos 1/sqrt(2) -> 1 - 0.70711 = 0.29289; mean = 1.58579 / 3
    assert mean_pairwise_cosine_distance(e) == pytest.approx((1 + 2 * (1 - 1 / math.sqrt(2))) / 3)
    assert mean_pairwise_cosine_distance(torch.ones(4, 3)) == pytest.approx(0.0, abs=1e-12)
    assert mean_pairwise_cosine_distance(e[:1]) is None


def test_plan_quality_parse_and_combine():
    reply = "Existence: 5\nAttributes: 4\nRelationships: 3\nFocus: 4\nDetails: 2\nPurity: 5\nClarity: 3"
    scores = combine(parse_plan_scores(reply))
    assert scores["alignment"] == pytest.approx(4.0)  # (5 + 4 + 3 + 4) / 4
    assert scores["overall"] == pytest.approx(3.5)  # (4 + 2 + 5 + 3) / 4
    assert parse_plan_scores(reply.replace("Clarity: 3", "Clarity: 0")) is None  # below 1
    assert parse_plan_scores(reply.replace("\nFocus: 4", "")) is None

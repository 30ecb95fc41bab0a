"""Scoring logic of the detector reward on hand-made detections; every expected value derived here.

Boxes are (x0, y0, x1, y1) in [0, 1], y pointing down. Spatial score = 0.2 per object found
+ position / 2 when both are found, so: both found and position 1 -> 0.9; both found, position 0 -> 0.4.
"""

import math

import pytest
import torch

from t2i_r1.rewards.detection import (
    NEAR_GAP,
    RELATIONS,
    Detection,
    box_gap,
    box_iou,
    existence_score,
    nms,
    numeracy_score,
    position_score,
    spatial_score,
)

LEFT = (0.0, 0.4, 0.2, 0.6)  # centre (0.1, 0.5)
RIGHT = (0.6, 0.4, 0.8, 0.6)  # centre (0.7, 0.5): 0.6 to the right of LEFT, no overlap
TOP = (0.4, 0.0, 0.6, 0.2)  # centre (0.5, 0.1)
BOTTOM = (0.4, 0.6, 0.6, 0.8)  # centre (0.5, 0.7): 0.6 below TOP, no overlap


def det(label, box, score=0.9):
    return Detection(label=label, score=score, box=box)


def spatial(obj1, obj2, locality):
    return {"obj1": obj1, "obj2": obj2, "locality": locality}


# --- boxes and NMS ------------------------------------------------------------------------------------


def test_box_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 0.2, 0.2]])
    b = torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.6, 0.6]])
    # overlap 0.1 x 0.1 = 0.01; union 0.04 + 0.04 - 0.01 = 0.07 -> 1/7; the second box is disjoint -> 0
    assert box_iou(a, b).tolist()[0] == pytest.approx([1 / 7, 0.0])


def test_nms_drops_the_less_confident_of_two_overlapping_boxes():
    boxes = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.01, 0.0, 0.21, 0.2], [0.5, 0.5, 0.7, 0.7]])
    scores = torch.tensor([0.8, 0.9, 0.7])
    # boxes 0 and 1: overlap 0.19 x 0.2 = 0.038, union 0.04 + 0.04 - 0.038 = 0.042, IoU 0.905 > 0.5:
    # box 1 (0.9) is kept and box 0 (0.8) dropped; box 2 overlaps nothing. Kept order: by score.
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]


def test_nms_keeps_boxes_at_exactly_the_threshold():
    # overlap 0.5 x 0.5 = 0.25; union 0.375 + 0.375 - 0.25 = 0.5; IoU = 0.5, not above 0.5 -> both kept
    boxes = torch.tensor([[0.0, 0.0, 0.75, 0.5], [0.25, 0.0, 1.0, 0.5]])
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]


def test_detection_rejects_bad_boxes():
    with pytest.raises(ValueError, match="x0 <= x1"):
        Detection("cat", 0.9, (0.5, 0.0, 0.4, 1.0))
    with pytest.raises(ValueError, match="finite"):
        Detection("cat", 0.9, (0.0, 0.0, math.nan, 1.0))


# --- existence -------------------------------------------------------------------------------------


def test_existence_is_the_share_of_nouns_found():
    detections = [det("cat", LEFT), det("cat", RIGHT), det("dog", TOP)]
    # cat and dog found, bird missing: 2 / 3 (two cat boxes still count once)
    assert existence_score(["cat", "dog", "bird"], detections) == pytest.approx(2 / 3)


def test_existence_matches_labels_case_and_space_insensitively_and_dedupes_nouns():
    # "Sports  Ball" and "sports ball" are one noun, found -> 1 / 1
    assert existence_score(["Sports  Ball", "sports ball"], [det("sports ball", LEFT)]) == 1.0


def test_existence_with_everything_missing_is_zero_and_without_nouns_nan():
    assert existence_score(["cat", "dog"], []) == 0.0
    assert math.isnan(existence_score([], [det("cat", LEFT)]))


# --- numeracy --------------------------------------------------------------------------------------


def test_numeracy_counts_after_nms_with_overlapping_boxes():
    cats = [
        det("cat", (0.0, 0.0, 0.2, 0.2), 0.9),
        det("cat", (0.01, 0.0, 0.21, 0.2), 0.8),  # IoU 0.905 with the first: the same cat
        det("cat", (0.5, 0.5, 0.7, 0.7), 0.7),
    ]
    info = [{"obj_name": "cat", "num": 2}, {"obj_name": "dog", "num": 1}]
    # cat: 3 boxes -> 2 after NMS == 2 -> 1.0; dog: not detected at all -> 0; mean (1.0 + 0) / 2 = 0.5
    assert numeracy_score(info, cats) == pytest.approx(0.5)


def test_numeracy_wrong_count_scores_point_two():
    cats = [det("cat", (0.0, 0.0, 0.1, 0.1)), det("cat", (0.3, 0.3, 0.4, 0.4)), det("cat", (0.6, 0.6, 0.7, 0.7))]
    # three separate cats, two asked for -> 0.2
    assert numeracy_score([{"obj_name": "cat", "num": 2}], cats) == pytest.approx(0.2)
    # three asked for -> 1.0
    assert numeracy_score([{"obj_name": "cat", "num": 3}], cats) == 1.0


def test_numeracy_object_not_detected_scores_zero_as_the_reference():
    # Decision (docs/reference-differences.md, difference 1): aligned with the reference, whose
    # get_numeracy_score skips an object with no detection (reward_gdino.py L321-322 `continue`, so it
    # adds 0) and gives 0.2 only to a detected object with another count (L329-330).
    cat = [det("cat", (0.0, 0.0, 0.1, 0.1))]
    assert numeracy_score([{"obj_name": "dog", "num": 1}], cat) == 0.0
    # cat right (1) + dog missing (0) + cat-as-two wrong count (0.2), each weighted 1/3
    info = [{"obj_name": "cat", "num": 1}, {"obj_name": "dog", "num": 2}, {"obj_name": "cat", "num": 2}]
    assert numeracy_score(info, cat) == pytest.approx((1.0 + 0.0 + 0.2) / 3)


def test_numeracy_boxes_overlapping_at_exactly_half_are_two_objects():
    cats = [det("cat", (0.0, 0.0, 0.75, 0.5)), det("cat", (0.25, 0.0, 1.0, 0.5))]  # IoU exactly 0.5
    assert numeracy_score([{"obj_name": "cat", "num": 2}], cats) == 1.0


def test_numeracy_without_objects_is_nan_and_bad_items_raise():
    assert math.isnan(numeracy_score([], []))
    with pytest.raises(ValueError, match="obj_name"):
        numeracy_score([{"name": "cat", "num": 1}], [])


# --- spatial: every relation word ------------------------------------------------------------------

# (phrase, box of obj1 that satisfies it, box of obj2)
SATISFIED = {
    "left": (LEFT, RIGHT),
    "right": (RIGHT, LEFT),
    "above": (TOP, BOTTOM),
    "below": (BOTTOM, TOP),
}


@pytest.mark.parametrize("phrase", sorted(p for p, r in RELATIONS.items() if r != "near"))
def test_every_directional_relation_word(phrase):
    good1, good2 = SATISFIED[RELATIONS[phrase]]
    dets = [det("cat", good1), det("dog", good2)]
    # satisfied: offset 0.6 along the named axis, 0 across, IoU 0 -> position 1 -> 0.2 + 0.2 + 1 / 2 = 0.9
    assert spatial_score(spatial("cat", "dog", phrase), dets) == pytest.approx(0.9)
    # the boxes swapped: the offset has the wrong sign -> position 0 -> 0.4
    swapped = [det("cat", good2), det("dog", good1)]
    assert spatial_score(spatial("cat", "dog", phrase), swapped) == pytest.approx(0.4)


@pytest.mark.parametrize("phrase", sorted(p for p, r in RELATIONS.items() if r == "near"))
def test_every_near_word(phrase):
    close = [det("cat", (0.0, 0.0, 0.2, 0.2)), det("dog", (0.25, 0.0, 0.45, 0.2))]
    # gap 0.25 - 0.2 = 0.05 <= NEAR_GAP 0.1 -> position 1 -> 0.9
    assert spatial_score(spatial("cat", "dog", phrase), close) == pytest.approx(0.9)
    far = [det("cat", (0.0, 0.0, 0.2, 0.2)), det("dog", (0.7, 0.7, 0.9, 0.9))]
    # gap = hypot(0.7 - 0.2, 0.7 - 0.2) = 0.7071 -> position 0.1 / 0.7071 = 0.1414 -> 0.4 + 0.0707
    expected = 0.4 + (NEAR_GAP / math.hypot(0.5, 0.5)) / 2
    assert spatial_score(spatial("cat", "dog", phrase), far) == pytest.approx(expected)


def test_position_needs_the_named_axis_to_dominate():
    a, b = (0.0, 0.0, 0.2, 0.2), (0.2, 0.5, 0.4, 0.7)  # centres (0.1, 0.1) and (0.3, 0.6): dx 0.2, dy 0.5
    assert position_score("left of", a, b) == 0.0  # |dx| < |dy|
    assert position_score("above", a, b) == 1.0  # dy > 0 dominates, boxes disjoint


def test_overlapping_boxes_get_iou_penalised_position():
    a, b = (0.0, 0.0, 0.4, 0.4), (0.2, 0.0, 0.6, 0.4)  # dx = 0.2, dy = 0
    # overlap 0.2 x 0.4 = 0.08; union 0.16 + 0.16 - 0.08 = 0.24; IoU 1/3 >= 0.1 -> position 0.1 / (1/3) = 0.3
    assert position_score("left of", a, b) == pytest.approx(0.3)
    # total 0.2 + 0.2 + 0.3 / 2 = 0.55
    assert spatial_score(spatial("cat", "dog", "left of"), [det("cat", a), det("dog", b)]) == pytest.approx(0.55)


def test_spatial_missing_objects():
    assert spatial_score(spatial("cat", "dog", "left of"), []) == 0.0
    assert spatial_score(spatial("cat", "dog", "left of"), [det("dog", RIGHT)]) == pytest.approx(0.2)
    assert spatial_score(spatial("cat", "dog", "left of"), [det("cat", LEFT), det("bird", RIGHT)]) == pytest.approx(0.2)


def test_spatial_uses_the_most_confident_box_of_each_object():
    middle = (0.4, 0.4, 0.5, 0.6)
    confident_left = [det("cat", LEFT, 0.9), det("cat", RIGHT, 0.5), det("dog", middle)]
    # the 0.9 cat is left of the dog -> 0.9
    assert spatial_score(spatial("cat", "dog", "left of"), confident_left) == pytest.approx(0.9)
    confident_right = [det("cat", LEFT, 0.5), det("cat", RIGHT, 0.9), det("dog", middle)]
    # the 0.9 cat is right of the dog -> position 0 -> 0.4
    assert spatial_score(spatial("cat", "dog", "left of"), confident_right) == pytest.approx(0.4)


def test_same_object_on_both_sides_compares_its_two_best_boxes():
    # "a dog left of a dog": two dogs side by side satisfy it in one order -> 0.9
    assert spatial_score(spatial("dog", "dog", "left of"), [det("dog", RIGHT), det("dog", LEFT)]) == pytest.approx(0.9)
    # one dog: found once -> 0.2 (the reference compared the box with itself)
    assert spatial_score(spatial("dog", "dog", "left of"), [det("dog", LEFT)]) == pytest.approx(0.2)


# --- the reference's defects, one test each --------------------------------------------------------


def test_defect_above_and_on_top_of_are_scored():
    # The reference had no branch for "above" / "on top of": position 0 whatever the image. Here
    # obj1 0.6 above obj2 scores 0.9 and the reverse 0.4.
    for phrase in ("above", "on top of"):
        assert spatial_score(spatial("cat", "dog", phrase), [det("cat", TOP), det("dog", BOTTOM)]) == pytest.approx(0.9)
        assert spatial_score(spatial("cat", "dog", phrase), [det("cat", BOTTOM), det("dog", TOP)]) == pytest.approx(0.4)


def test_defect_near_is_not_always_satisfied():
    # The reference compared normalised centre offsets (< 1) with 150: always "near". Opposite corners
    # here are 1.13 apart (gap hypot(0.8, 0.8)), far beyond NEAR_GAP: position 0.1 / 1.131 = 0.088.
    a, b = (0.0, 0.0, 0.1, 0.1), (0.9, 0.9, 1.0, 1.0)
    assert box_gap(a, b) == pytest.approx(math.hypot(0.8, 0.8))
    assert position_score("near", a, b) == pytest.approx(NEAR_GAP / math.hypot(0.8, 0.8))
    assert position_score("near", a, b) < 0.1


def test_defect_errors_raise_instead_of_scoring_zero():
    # The reference's bare `except` turned any error into reward 0; an unknown relation or a malformed
    # spatial_info now raises and names the field.
    with pytest.raises(ValueError, match="locality"):
        spatial_score(spatial("cat", "dog", "in front of"), [det("cat", LEFT), det("dog", RIGHT)])
    with pytest.raises(ValueError, match="obj2"):
        spatial_score({"obj1": "cat", "locality": "left of"}, [])


def test_defect_labels_are_plain_strings_never_evaluated():
    # The reference passed token spans through `eval`; labels here are compared as text, so a label
    # that is valid Python is just a name.
    label = "__import__('os').getcwd()"
    assert existence_score([label], [det(label, LEFT)]) == 1.0
    assert existence_score([label], [det("os", LEFT)]) == 0.0

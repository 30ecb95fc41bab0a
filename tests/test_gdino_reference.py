"""The reference-exact GroundingDINO scorer against the reference's code, branch by branch.

Every expected value below was derived by reading CaraJ7/T2I-R1 @2d9d4d1:
RG = src/t2i-r1/src/utils/reward_gdino.py, GP = src/t2i-r1/src/open_r1/grpo.py (line numbers of that
commit). Each was also checked by running those functions on the same detections in a scratch harness
outside the repository. Detections are (label, score, (cx, cy, w, h)) as the reference keeps them:
normalised centre, width and height, before its corner conversion (RG L285-286).
Beside each reference value stands ours (``t2i_r1.rewards.detection``) where they differ, with the
decision of docs/reference-differences.md.
"""

import math

import pytest
import torch

from t2i_r1.rewards import gdino_reference as ref
from t2i_r1.rewards.detection import Detection, existence_score, numeracy_score, spatial_score
from t2i_r1.rewards.gdino_reference import ReferenceDetection, corner_nms_count, detection_query, score


def d(label, cxcywh, s=0.9):
    return ReferenceDetection(label, s, cxcywh)


def ours(detections):
    """The same boxes as our scorer sees them: corners, clamped to the image."""
    out = []
    for r in detections:
        cx, cy, w, h = r.cxcywh
        box = tuple(min(max(v, 0.0), 1.0) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        out.append(Detection(r.label, r.score, box))
    return out


def spatial_meta(obj1, obj2, locality, task="spatial", nouns=None):
    return {"task_type": task, "nouns": nouns or [obj1, obj2], "spatial_info": {"obj1": obj1, "obj2": obj2, "locality": locality}}


# Two small boxes, 0.6 apart along one axis, no overlap. y grows downwards.
UP, DOWN = (0.5, 0.2, 0.1, 0.1), (0.5, 0.8, 0.1, 0.1)
WEST, EAST = (0.2, 0.5, 0.1, 0.1), (0.8, 0.5, 0.1, 0.1)


# --- the query -------------------------------------------------------------------------------------


def test_query_caption_spans_and_labels():
    # GP L63-82: caption ' . '.join(nouns) + '.'; one span per word for one-word nouns (pointer += len + 3);
    # first and last word for longer ones. RG L157: the label is the spans' text joined by a space.
    caption, spans, labels = detection_query(["cat", "sports ball", "roll of paper towel"])
    assert caption == "cat . sports ball . roll of paper towel."
    assert spans == [[(0, 3)], [(6, 12), (13, 17)], [(20, 24), (34, 39)]]
    assert labels == ["cat", "sports ball", "roll towel"]


def test_long_nouns_never_match_themselves():
    # Difference 4. RG L334-340: a noun counts when its exact string is among the labels; the label of
    # "roll of paper towel" is "roll towel" (above), so even a confident detection of it scores nothing:
    # nouns ["tissue box", "roll of paper towel"], both detected -> 1/2.
    meta = {"task_type": "shape", "nouns": ["tissue box", "roll of paper towel"]}
    _, _, labels = detection_query(meta["nouns"])
    found = [d(labels[0], WEST), d(labels[1], EAST)]
    assert score(meta, found) == 0.5
    # ours queries and matches the full phrase: 1.0 (kept as a fix)
    assert existence_score(meta["nouns"], ours([d("tissue box", WEST), d("roll of paper towel", EAST)])) == 1.0


def test_span_token_mask_covers_first_and_last_word_only():
    # create_positive_map_from_span (GroundingDINO vl_utils.py L19-44): each span marks the tokens from
    # char_to_token(beg) to char_to_token(end - 1). Tokens: [CLS] red sports ball . cat . [SEP]
    caption, spans, _ = detection_query(["red sports ball", "cat"])
    assert caption == "red sports ball . cat."
    offsets = torch.tensor([[0, 0], [0, 3], [4, 10], [11, 15], [16, 17], [18, 21], [21, 22], [0, 0]])
    mask = ref.span_token_mask(offsets, spans)
    assert mask.int().tolist() == [[0, 1, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0, 0]]


def test_phrase_score_is_the_mean_over_the_span_tokens_with_the_reference_epsilon():
    # RG L146-159: positive map rows / (count + 1e-6) (vl_utils.py L46) @ sigmoid logits, kept when > 0.3.
    mask = torch.tensor([[0, 1, 0, 1], [0, 0, 1, 0]], dtype=torch.bool)
    probs = torch.tensor([[0.1, 0.5, 0.1, 0.2], [0.1, 0.1, 0.9, 0.1], [0.1, 0.1, 0.3, 0.1]])
    logits = torch.log(probs / (1 - probs))
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.4, 0.4], [0.9, 0.9, 0.1, 0.1]])
    found = ref.detections_from_logits(logits, boxes, mask, ["red ball", "cat"])
    # query 0: red ball (0.5 + 0.2) / 2.000001 = 0.35 > 0.3; query 1: cat 0.9; query 2: cat 0.3 / 1.000001 < 0.3
    assert [(x.label, round(x.score, 5)) for x in found] == [("red ball", 0.35), ("cat", 0.9)]
    assert found[1].cxcywh == pytest.approx((0.1, 0.1, 0.4, 0.4))  # unclamped, as predicted


# --- routes ----------------------------------------------------------------------------------------


def test_no_nouns_scores_one_and_missing_nouns_raise():
    # RG L349-351: an empty nouns list gives 1 whatever the task. Without the key the reference crashes.
    assert score({"task_type": "spatial", "nouns": []}, []) == 1.0
    with pytest.raises(ValueError, match="nouns"):
        score({"task_type": "color"}, [])


def test_spatial_without_spatial_info_scores_zero():
    # RG L366-371: get_spatial_score subscripts spatial_info (None here) inside a bare except -> 0.
    assert score({"task_type": "spatial", "nouns": ["cat", "dog"]}, [d("cat", WEST), d("dog", EAST)]) == 0.0


def test_complex_prompt_with_spatial_info_is_scored_by_noun_existence():
    # Difference 3. RG L366 routes only task_type == "spatial" to the spatial score; a complex prompt
    # goes to get_object_score (L375) even with spatial_info: both nouns found, wrong order -> 1.0.
    meta = spatial_meta("plant", "nightstand", "on top of", task="complex")
    wrong_order = [d("plant", DOWN), d("nightstand", UP)]
    assert score(meta, wrong_order) == 1.0
    # ours scores the relation (kept as a fix): right order 0.9, wrong order 0.4
    assert spatial_score(meta["spatial_info"], ours([d("plant", UP), d("nightstand", DOWN)])) == pytest.approx(0.9)
    assert spatial_score(meta["spatial_info"], ours(wrong_order)) == pytest.approx(0.4)


# --- spatial ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "locality, first, second",
    [("left of", WEST, EAST), ("on the left of", WEST, EAST), ("right of", EAST, WEST), ("on the right of", EAST, WEST),
     ("below", DOWN, UP), ("on the bottom of", DOWN, UP), ("on the top of", UP, DOWN), ("top of", UP, DOWN)],
)
def test_directional_relations_agree_with_ours(locality, first, second):
    # RG L218-245: offset of the right sign, dominant, IoU 0 < 0.1 -> position 1 -> 0.2 + 0.2 + 1 / 2 = 0.9;
    # swapped -> position 0 -> 0.4. Ours gives the same ("top of" added to ours: difference 5).
    meta = spatial_meta("cat", "dog", locality)
    for boxes, expected in (((first, second), 0.9), ((second, first), 0.4)):
        found = [d("cat", boxes[0]), d("dog", boxes[1])]
        assert score(meta, found) == expected
        assert spatial_score(meta["spatial_info"], ours(found)) == pytest.approx(expected)


@pytest.mark.parametrize("locality", ["above", "on top of"])
def test_above_has_no_branch(locality):
    # RG L192-248: no branch for "above" / "on top of" -> else: score 0 (L246-247): 0.4 even when satisfied.
    meta = spatial_meta("cat", "dog", locality)
    found = [d("cat", UP), d("dog", DOWN)]
    assert score(meta, found) == 0.4
    assert spatial_score(meta["spatial_info"], ours(found)) == pytest.approx(0.9)  # ours: scored (kept fix)


@pytest.mark.parametrize("locality", ["near", "next to", "on side of"])
def test_near_is_always_satisfied(locality):
    # RG L213-215: |dx| < 150 on normalised boxes is always true -> position 1 -> 0.9, opposite corners included.
    meta = spatial_meta("cat", "dog", locality)
    found = [d("cat", (0.05, 0.05, 0.1, 0.1)), d("dog", (0.95, 0.95, 0.1, 0.1))]
    assert score(meta, found) == 0.9
    assert spatial_score(meta["spatial_info"], ours(found)) < 0.45  # ours: gap 1.13 -> 0.4 + 0.1 / 1.13 / 2


def test_overlap_gives_a_tenth_over_iou_in_float32():
    # RG L202-209, L228-231: cat (0.3, 0.5, 0.4, 0.4) -> corners (0.1, 0.3, 0.5, 0.7); dog (0.5, 0.5, 0.4, 0.4)
    # -> (0.3, 0.3, 0.7, 0.7); dx = 0.2 > |dy| = 0; overlap 0.2 x 0.4 = 0.08, union 0.24, IoU 1/3 ->
    # position 0.1 / (1/3) = 0.3 (float32) -> 0.4 + 0.15.
    found = [d("cat", (0.3, 0.5, 0.4, 0.4)), d("dog", (0.5, 0.5, 0.4, 0.4))]
    assert score(spatial_meta("cat", "dog", "left of"), found) == pytest.approx(0.55, abs=1e-6)


def test_most_confident_box_of_each_object():
    # RG L265-270: argmax of the phrase scores per object.
    found = [d("cat", EAST, 0.5), d("cat", WEST, 0.8), d("dog", (0.5, 0.5, 0.1, 0.1), 0.7)]
    assert score(spatial_meta("cat", "dog", "left of"), found) == 0.9


def test_same_object_on_both_sides_scores_zero():
    # RG L258-263 puts every box in obj1's list (if / elif), so torch.stack([]) of obj2's raises (L266)
    # and the bare except (L369-371) scores 0, even for two dogs side by side. Ours compares the two best.
    meta = spatial_meta("dog", "dog", "left of")
    found = [d("dog", WEST), d("dog", EAST)]
    assert score(meta, found) == 0.0
    assert spatial_score(meta["spatial_info"], ours(found)) == pytest.approx(0.9)


def test_one_object_found():
    # RG L278-282: 0.2 per object found; no position without both.
    assert score(spatial_meta("cat", "dog", "left of"), [d("dog", EAST)]) == 0.2
    assert score(spatial_meta("cat", "dog", "left of"), []) == 0.0


def test_two_empty_boxes_have_nan_iou_and_position_zero():
    # Difference 7. RG L203-209: areas 0, union 0, IoU 0/0 = NaN; NaN < 0.1 and NaN >= 0.1 are both
    # false (L220-223) -> position 0 -> 0.4. Ours: IoU 0 -> position 1 -> 0.9 (kept).
    found = [d("cat", (0.2, 0.5, 0.0, 0.0)), d("dog", (0.8, 0.5, 0.0, 0.0))]
    meta = spatial_meta("cat", "dog", "left of")
    assert score(meta, found) == 0.4
    assert spatial_score(meta["spatial_info"], ours(found)) == pytest.approx(0.9)


# --- numeracy --------------------------------------------------------------------------------------


def test_numeracy_object_not_detected_scores_zero():
    # Difference 1. RG L321-322: no detection -> continue (adds 0); L329-330: detected, other count -> 0.2.
    # Two objects, weight 1/2 each (L314): cat right (1) + dog missing (0) = 0.5; cat as 2 -> 0.2 / 2 = 0.1.
    meta = {"task_type": "numeracy", "nouns": ["cat", "dog"],
            "numeracy_info": [{"obj_name": "cat", "num": 1}, {"obj_name": "dog", "num": 1}]}
    assert score(meta, [d("cat", WEST)]) == 0.5
    meta["numeracy_info"][0]["num"] = 2
    assert score(meta, [d("cat", WEST)]) == 0.1
    assert numeracy_score(meta["numeracy_info"], ours([d("cat", WEST)])) == pytest.approx(0.1)  # ours: aligned


def test_numeracy_duplicates_survive_the_reference_nms():
    # Difference 2. RG L325 feeds (cx, cy, w, h) to torchvision's corner NMS (nms_kernel.cpp): read as
    # corners, (0.5, 0.5, 0.2, 0.2) has x2 < x1, so two identical boxes overlap by max(0, 0.2 - 0.5) = 0:
    # IoU 0 -> both kept -> count 2 != 1 -> 0.2. Ours suppresses the duplicate -> 1.0 (kept as a fix).
    meta = {"task_type": "numeracy", "nouns": ["cat"], "numeracy_info": [{"obj_name": "cat", "num": 1}]}
    twins = [d("cat", (0.5, 0.5, 0.2, 0.2), 0.9), d("cat", (0.5, 0.5, 0.2, 0.2), 0.8)]
    assert score(meta, twins) == 0.2
    assert numeracy_score(meta["numeracy_info"], ours(twins)) == 1.0
    # A box wider than its centre's x and taller than its centre's y does read as a box: (0.3, 0.3, 0.8,
    # 0.8) -> corners (0.3, 0.3) - (0.8, 0.8), area 0.25, twin overlap 0.25, IoU 1 > 0.5 -> suppressed -> 1.
    wide = [d("cat", (0.3, 0.3, 0.8, 0.8), 0.9), d("cat", (0.3, 0.3, 0.8, 0.8), 0.8)]
    assert score(meta, wide) == 1.0


def test_corner_nms_count_follows_torchvision():
    # nms_kernel.cpp: area (x2 - x1) * (y2 - y1) may be negative; suppression when inter / union > thr.
    boxes = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.01, 0.0, 0.21, 0.2], [0.5, 0.5, 0.7, 0.7]])
    assert corner_nms_count(boxes, torch.tensor([0.8, 0.9, 0.7])) == 2  # IoU 0.905 -> one dropped
    # exactly 0.5 is not above the threshold: overlap 0.25 / union 0.5
    assert corner_nms_count(torch.tensor([[0.0, 0.0, 0.75, 0.5], [0.25, 0.0, 1.0, 0.5]]), torch.tensor([0.9, 0.8])) == 2


def test_numeracy_without_info_raises():
    # RG L314 divides by len(numeracy_info): the reference crashes; we say so.
    with pytest.raises(ValueError, match="numeracy_info"):
        score({"task_type": "numeracy", "nouns": ["cat"]}, [])


# --- existence -------------------------------------------------------------------------------------


def test_repeated_nouns_count_each_copy():
    # Difference 6. RG L334-340: weight 1 / len(nouns) per copy: nouns [dog, cat, dog], only dogs found -> 2/3.
    # Ours counts distinct nouns: 1/2 (kept).
    meta = {"task_type": "color", "nouns": ["dog", "cat", "dog"]}
    assert score(meta, [d("dog", WEST)]) == pytest.approx(2 / 3)
    assert existence_score(meta["nouns"], ours([d("dog", WEST)])) == 0.5


def test_labels_match_exact_strings():
    # RG L338: `noun in pred_phrases`, no case folding: a noun "Dog" is queried (label "Dog") and matched
    # as such, but a "dog" label never counts for it.
    assert score({"task_type": "object", "nouns": ["Dog"]}, [d("dog", WEST)]) == 0.0
    assert score({"task_type": "object", "nouns": ["Dog"]}, [d("Dog", WEST)]) == 1.0


def test_scores_are_never_nan():
    # The reference has no "not applicable": every route returns a number.
    metas = [spatial_meta("cat", "dog", "in front of"), {"task_type": "non", "nouns": ["cat"]}]
    assert all(not math.isnan(score(m, [])) for m in metas)

"""Scoring object-detector output against a prompt's metadata (no model here).

The detector reward (``t2i_r1.rewards.grounding_dino``) turns an image into ``Detection``s; this module
turns detections plus the prompt's metadata (``nouns``, ``numeracy_info``, ``spatial_info``) into one
number. It is pure Python/torch so every rule can be tested on hand-written boxes.

Scores (the reference T2I-R1 scoring idea, itself taken from T2I-CompBench's UniDet script):
- existence: share of the distinct nouns with at least one detection.             range [0, 1]
- numeracy: per object, 1 if the number of its boxes left after NMS(IoU 0.5) equals the expected count,
  0.2 if it is detected with another count, 0 if it is not detected at all (as the reference); mean
  over objects.                                                                     range [0, 1]
- spatial: 0.2 per object present; if both are present, + position score / 2, the position score
  computed from the most confident box of each object.                             range [0, 0.9]
  Position score for left/right/above/below: 1 when the centre offset along the named axis has the
  named sign and dominates the other axis and the boxes' IoU is below 0.1; 0.1 / IoU when it dominates
  but the boxes overlap more; 0 otherwise.
Boxes are ``(x0, y0, x1, y1)`` in normalised image coordinates ([0, 1], y pointing down); K and M
count boxes in tensor shapes.

Differences from the reference (each has a test in ``tests/test_rewards_detection.py``):
1. "above" and "on top of" are scored (mirror of "below"); the reference had no branch for them, so
   the 364 "above" prompts among its 2,195 spatial training prompts never got position credit. "under",
   "beneath", "to the left of", "to the right of", "on the top of", "top of", "on the bottom of" are
   accepted too.
2. "near" / "next to" / "on side of": the reference compares the centre offsets of *normalised* boxes
   with a threshold of 150 (pixels in T2I-CompBench), so it is always satisfied. Here the measure is
   the gap between the two boxes (distance between their closest points, 0 when they touch or
   overlap) in normalised coordinates, with ``NEAR_GAP = 0.1`` (a tenth of the image side): score 1
   when the gap is at most 0.1, else ``0.1 / gap`` (the same soft decay T2I-CompBench uses for its
   pixel threshold). The gap rather than the centre distance, so that two large objects that touch
   count as near even though their centres are far apart.
3. No bare ``except``: a locality this module does not know raises ``ValueError`` (the reward checks
   ``canonical_relation`` first and returns NaN for such prompts instead of a silent 0).
4. No ``eval``: labels are plain strings, matched case- and space-insensitively.
5. Same object on both sides ("a dog next to a dog"): the two most confident boxes after NMS are
   compared, in whichever order satisfies the relation better; the reference compared a box with
   itself.
6. Empty ``nouns`` / ``numeracy_info`` give NaN (not applicable), not 0 or 1.
7. NMS runs on corner boxes; the reference fed centre/width/height boxes to a corner NMS, so its
   duplicates were almost never suppressed.
8. Objects are matched by their full phrase, case- and space-insensitively, each distinct noun once;
   the reference matched exact strings, queried multi-word nouns by first and last word only (so nouns
   of three or more words never matched) and counted each copy of a repeated noun.
9. The IoU of two empty boxes is 0 (they do not overlap), so their position can score 1; the
   reference's 0/0 is NaN and scores 0.
The reference's own scoring, defects included, is ``t2i_r1.rewards.gdino_reference``; every difference
and its decision is listed in ``docs/reference-differences.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Box-overlap threshold of the position rule (T2I-CompBench's value).
POSITION_IOU = 0.1
# "near": largest gap between two boxes, in normalised coordinates, that still counts as fully near.
NEAR_GAP = 0.1
# Credit for each object of a spatial prompt that is found at all.
PRESENCE_CREDIT = 0.2
# Credit for an object detected with the wrong count (the reference's value); an object not detected gets 0.
WRONG_COUNT_CREDIT = 0.2
NUMERACY_NMS_IOU = 0.5

# Every spatial phrase accepted in ``spatial_info["locality"]`` -> the relation it names.
RELATIONS: dict[str, str] = {
    "left of": "left",
    "on the left of": "left",
    "to the left of": "left",
    "right of": "right",
    "on the right of": "right",
    "to the right of": "right",
    "above": "above",
    "on top of": "above",
    "on the top of": "above",
    "top of": "above",
    "over": "above",
    "below": "below",
    "under": "below",
    "beneath": "below",
    "underneath": "below",
    "on the bottom of": "below",
    "near": "near",
    "next to": "near",
    "on side of": "near",
    "on the side of": "near",
    "beside": "near",
}


@dataclass(frozen=True)
class Detection:
    """One detected box: the phrase it was matched to, its confidence, and its corners in [0, 1]."""

    label: str
    score: float
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1), normalised, y down

    def __post_init__(self) -> None:
        if len(self.box) != 4 or not all(math.isfinite(v) for v in self.box):
            raise ValueError(f"Detection.box must be 4 finite numbers (x0, y0, x1, y1), got {self.box!r}")
        x0, y0, x1, y1 = self.box
        if x1 < x0 or y1 < y0:
            raise ValueError(f"Detection.box must have x0 <= x1 and y0 <= y1, got {self.box!r}")
        if not math.isfinite(self.score):
            raise ValueError(f"Detection.score must be finite, got {self.score!r}")


def normalise_label(text: str) -> str:
    return " ".join(text.lower().split())


def canonical_relation(locality: str) -> str | None:
    """``"on the left of"`` -> ``"left"``; None for a phrase this module cannot score."""
    return RELATIONS.get(normalise_label(locality))


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (K, 4) and (M, 4) xyxy boxes -> (K, M); 0 where a union is empty."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])  # (K,)
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])  # (M,)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (K, M, 2)
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (K, M, 2)
    wh = (bottom_right - top_left).clamp(min=0)  # (K, M, 2)
    inter = wh[..., 0] * wh[..., 1]  # (K, M)
    union = area1[:, None] + area2[None, :] - inter  # (K, M)
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept (K, 4) boxes, most confident first.

    A box is dropped when its IoU with an already kept, more confident box exceeds ``iou_threshold``
    (torchvision's rule; torchvision itself is not a dependency).
    """
    order = torch.argsort(scores, descending=True, stable=True)  # (K,)
    iou = box_iou(boxes, boxes)  # (K, K)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep: list[int] = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.long)


def _unique(items: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(normalise_label(item), None)
    return list(seen)


def detections_of(label: str, detections: Sequence[Detection]) -> list[Detection]:
    """Detections matched to ``label``, most confident first, after NMS at ``NUMERACY_NMS_IOU``."""
    key = normalise_label(label)
    mine = [d for d in detections if normalise_label(d.label) == key]
    if not mine:
        return []
    boxes = torch.tensor([d.box for d in mine], dtype=torch.float64)  # (K, 4)
    scores = torch.tensor([d.score for d in mine], dtype=torch.float64)  # (K,)
    return [mine[i] for i in nms(boxes, scores, NUMERACY_NMS_IOU).tolist()]


def existence_score(nouns: Sequence[str], detections: Sequence[Detection]) -> float:
    """Share of the distinct nouns with at least one detection; NaN without nouns."""
    wanted = _unique(nouns)
    if not wanted:
        return math.nan
    found = {normalise_label(d.label) for d in detections}
    return sum(noun in found for noun in wanted) / len(wanted)


def numeracy_score(numeracy_info: Sequence[Mapping[str, Any]], detections: Sequence[Detection]) -> float:
    """Mean over objects of 1 (count after NMS equals ``num``), 0.2 (detected, another count) or 0 (not
    detected); NaN without objects."""
    if not numeracy_info:
        return math.nan
    per_object = []
    for i, item in enumerate(numeracy_info):
        try:
            name, expected = item["obj_name"], int(item["num"])
        except KeyError as missing:
            raise ValueError(f"numeracy_info[{i}] lacks the key {missing}; got {dict(item)!r}") from None
        count = len(detections_of(name, detections))
        per_object.append(1.0 if count == expected else WRONG_COUNT_CREDIT if count else 0.0)
    return sum(per_object) / len(per_object)


def _centre(box: Sequence[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _iou(box1: Sequence[float], box2: Sequence[float]) -> float:
    return float(box_iou(torch.tensor([box1], dtype=torch.float64), torch.tensor([box2], dtype=torch.float64))[0, 0])


def box_gap(box1: Sequence[float], box2: Sequence[float]) -> float:
    """Distance between the closest points of two boxes; 0 when they touch or overlap."""
    gap_x = max(0.0, max(box1[0], box2[0]) - min(box1[2], box2[2]))
    gap_y = max(0.0, max(box1[1], box2[1]) - min(box1[3], box2[3]))
    return math.hypot(gap_x, gap_y)


def position_score(locality: str, box1: Sequence[float], box2: Sequence[float]) -> float:
    """How well ``box1`` stands in relation ``locality`` to ``box2``, in [0, 1]."""
    relation = canonical_relation(locality)
    if relation is None:
        known = ", ".join(sorted(RELATIONS))
        raise ValueError(f"spatial_info.locality {locality!r} is not a relation this scorer knows ({known})")
    if relation == "near":
        gap = box_gap(box1, box2)
        return 1.0 if gap <= NEAR_GAP else NEAR_GAP / gap
    (x1, y1), (x2, y2) = _centre(box1), _centre(box2)
    dx, dy = x2 - x1, y2 - y1  # offset from object 1 to object 2; y grows downwards
    # (sign the offset must have, is the offset along x) for "object 1 <relation> object 2"
    sign, along_x = {"left": (1, True), "right": (-1, True), "above": (1, False), "below": (-1, False)}[relation]
    along, across = (dx, dy) if along_x else (dy, dx)
    if along * sign <= 0 or abs(along) <= abs(across):
        return 0.0
    iou = _iou(box1, box2)
    return 1.0 if iou < POSITION_IOU else POSITION_IOU / iou


def spatial_score(spatial_info: Mapping[str, Any], detections: Sequence[Detection]) -> float:
    """0.2 per object found, plus half the position score of their most confident boxes."""
    try:
        obj1, obj2, locality = spatial_info["obj1"], spatial_info["obj2"], spatial_info["locality"]
    except KeyError as missing:
        raise ValueError(f"spatial_info lacks the key {missing}; got {dict(spatial_info)!r}") from None
    if canonical_relation(locality) is None:
        position_score(locality, (0, 0, 0, 0), (0, 0, 0, 0))  # raises the ValueError naming the field
    if normalise_label(obj1) == normalise_label(obj2):
        boxes = detections_of(obj1, detections)
        if len(boxes) < 2:
            return PRESENCE_CREDIT * len(boxes)
        a, b = boxes[0].box, boxes[1].box
        return 2 * PRESENCE_CREDIT + max(position_score(locality, a, b), position_score(locality, b, a)) / 2
    first, second = detections_of(obj1, detections), detections_of(obj2, detections)
    score = PRESENCE_CREDIT * (bool(first) + bool(second))
    if first and second:
        score += position_score(locality, first[0].box, second[0].box) / 2
    return score

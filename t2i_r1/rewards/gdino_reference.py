"""The reference implementation's GroundingDINO scoring, reproduced for ``behavior="reference"``.

``t2i_r1.rewards.detection`` is our scoring; this module is what CaraJ7/T2I-R1 @2d9d4d1 computes
(``src/t2i-r1/src/utils/reward_gdino.py``, "RG" below, and ``make_detection_prompt`` in
``src/t2i-r1/src/open_r1/grpo.py``, "GP"), written from reading that code, defects included, so that
the reference-exact recipe (``configs/recipes/reference_exact_7b.yaml``) trains on the same numbers.
Every difference from our scoring, and why we keep or drop it, is in ``docs/reference-differences.md``;
``tests/test_gdino_reference.py`` checks each branch on hand-made detections.

What the reference does, in order:
1. The query is the prompt's ``nouns`` list (every copy, in order), as ``"n1 . n2 . n3."``; a noun of
   several words is queried by its first and last words only (GP L63-82), and its detections carry the
   label ``"first last"`` (RG L157), so a noun of three or more words never matches itself.
2. A box is a detection of a noun when the mean of its sigmoid scores over the noun's tokens exceeds
   the box threshold 0.3 (RG L146-159); the box stays as predicted: normalised centre, width, height.
3. No nouns: score 1 (RG L349-351). ``task_type == "spatial"``: spatial score, any error scored 0 by a
   bare ``except`` (RG L366-371). ``"numeracy"``: numeracy score. Anything else, complex prompts with
   ``spatial_info`` included: the share of noun copies whose label was detected (RG L334-340).
4. Spatial (RG L274-305): 0.2 per object label present; with both, the most confident box of each is
   converted to corners and scored by ``position_score`` / 2. The same object on both sides leaves the
   second object without boxes, which raises inside the ``try``: score 0.
5. Position (RG L192-248): "near"/"next to"/"on side of" compare centre offsets of *normalised* boxes
   with 150, so they always score 1; left/right/below/"on the top of"/"top of" score 1 when the offset
   has the right sign, dominates the other axis and the IoU is below 0.1, else 0.1 / IoU; "above",
   "on top of" and anything unknown score 0. Two empty boxes have IoU 0/0 = NaN: position 0.
6. Numeracy (RG L308-332): per object, no detection at all: 0; else NMS(0.5) on the centre-width-height
   boxes *as if they were corners* (torchvision's rule; boxes whose "width" ``w - cx`` is negative
   never overlap, so duplicates almost always survive); count == ``num``: 1, else 0.2; each object
   weighs ``1 / len(numeracy_info)``.
Arithmetic is float32 where the reference's tensors are, Python floats where its sums are.
Where the reference crashes (no ``nouns``, a numeracy prompt without ``numeracy_info``) we raise.

Dimensions: K boxes, P nouns, Q detector queries, T text tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

BOX_THRESHOLD = 0.3  # RG L87
POSITION_IOU = 0.1  # RG L192 iou_threshold
NEAR_DISTANCE = 150  # RG L192 distance_threshold (pixels in T2I-CompBench; applied to normalised boxes)
PRESENCE_CREDIT = 0.2  # RG L280
WRONG_COUNT_CREDIT = 0.2  # RG L330
NUMERACY_NMS_IOU = 0.5  # RG L325


@dataclass(frozen=True)
class ReferenceDetection:
    """One box as the reference keeps it: its phrase label, its phrase score, the box as predicted."""

    label: str  # the caption text of the noun's span(s), joined by a space (RG L157)
    score: float  # mean sigmoid score over the noun's tokens
    cxcywh: tuple[float, float, float, float]  # normalised centre x, centre y, width, height; not clamped


def detection_query(nouns: Sequence[str]) -> tuple[str, list[list[tuple[int, int]]], list[str]]:
    """Caption, character spans per noun, and the label its detections get (GP L63-82, RG L157).

    ``["cat", "roll of paper towel"]`` -> ``("cat . roll of paper towel.", [[(0, 3)], [(6, 10), (20, 25)]],
    ["cat", "roll towel"])``.
    """
    caption = " . ".join(nouns) + "."
    spans: list[list[tuple[int, int]]] = []
    pointer = 0
    for noun in nouns:
        words = noun.strip().split(" ")
        if len(words) == 1:
            spans.append([(pointer, pointer + len(words[0]))])
            pointer += len(words[0]) + 3
        else:  # first and last word only; the span arithmetic uses the unstripped length, as GP L77-80
            total = len(noun)
            spans.append([(pointer, pointer + len(words[0])), (pointer + total - len(words[-1]), pointer + total)])
            pointer += total + 3
    labels = [" ".join(caption[lo:hi] for lo, hi in noun_spans) for noun_spans in spans]
    return caption, spans, labels


def span_token_mask(offsets: torch.Tensor, spans: Sequence[Sequence[tuple[int, int]]]) -> torch.Tensor:
    """(T, 2) token character offsets + P lists of spans -> (P, T) bool, GroundingDINO's span rule.

    A span covers the tokens from the one holding its first character to the one holding its last
    (``create_positive_map_from_span``: ``char_to_token(beg)`` .. ``char_to_token(end - 1)``, trying
    ``beg + 1``, ``beg + 2`` / ``end - 2``, ``end - 3`` when a character starts no token); a span whose
    ends hold no token (cut off by truncation) is skipped.
    """
    start, end = offsets[:, 0], offsets[:, 1]  # (T,)
    real = end > start  # special and padding tokens have empty offsets

    def token_at(char: int) -> int | None:
        hit = (real & (start <= char) & (char < end)).nonzero()
        return int(hit[0]) if len(hit) else None

    mask = torch.zeros(len(spans), len(offsets), dtype=torch.bool)
    for p, noun_spans in enumerate(spans):
        for lo, hi in noun_spans:
            first = next((t for t in (token_at(lo), token_at(lo + 1), token_at(lo + 2)) if t is not None), None)
            last = next((t for t in (token_at(hi - 1), token_at(hi - 2), token_at(hi - 3)) if t is not None), None)
            if first is not None and last is not None:
                mask[p, first : last + 1] = True
    return mask


def detections_from_logits(
    logits: torch.Tensor, boxes: torch.Tensor, token_mask: torch.Tensor, labels: Sequence[str],
    box_threshold: float = BOX_THRESHOLD,
) -> list[ReferenceDetection]:
    """One image's raw outputs -> detections in the reference's order (noun by noun, then query).

    logits: (Q, T) token logits; boxes: (Q, 4) normalised (cx, cy, w, h); token_mask: (P, T).
    Phrase score: token probabilities averaged with the reference's ``/ (count + 1e-6)``.
    """
    probs = logits.float().sigmoid()  # (Q, T)
    weights = token_mask.float() / (token_mask.float().sum(dim=1, keepdim=True) + 1e-6)  # (P, T)
    phrase_probs = weights @ probs.T  # (P, Q)
    out = []
    for p, label in enumerate(labels):
        for q in (phrase_probs[p] > box_threshold).nonzero().flatten().tolist():
            out.append(ReferenceDetection(label, float(phrase_probs[p, q]), tuple(float(v) for v in boxes[q])))
    return out


def _corners(cxcywh: Sequence[float]) -> tuple[torch.Tensor, ...]:
    """The reference's in-place conversion (RG L285-286), float32: x0 = cx - w / 2, x1 = w + x0."""
    cx, cy, w, h = torch.tensor(cxcywh, dtype=torch.float32).unbind()
    x0, y0 = cx - w / 2, cy - h / 2
    return x0, y0, w + x0, h + y0


def position_score(locality: str, box1: Sequence[torch.Tensor], box2: Sequence[torch.Tensor]) -> float:
    """RG L192-248 on corner boxes (x0, y0, x1, y1) of float32 scalars; relation words matched exactly."""
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = box1, box2
    dx = (bx0 + bx1) / 2 - (ax0 + ax1) / 2  # centre offset from object 1 to object 2; y grows downwards
    dy = (by0 + by1) / 2 - (ay0 + ay1) / 2
    inter = (torch.minimum(ax1, bx1) - torch.maximum(ax0, bx0)).clamp(min=0) * (
        torch.minimum(ay1, by1) - torch.maximum(ay0, by0)
    ).clamp(min=0)
    iou = inter / ((ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter)  # NaN for two empty boxes

    def directional(along: torch.Tensor, across: torch.Tensor, sign: int) -> float:
        if not along * sign > 0 or not abs(along) > abs(across):
            return 0.0
        if iou < POSITION_IOU:
            return 1.0
        if iou >= POSITION_IOU:
            return float(POSITION_IOU / iou)
        return 0.0  # NaN IoU satisfies neither comparison

    if locality in ("next to", "on side of", "near"):
        if abs(dx) < NEAR_DISTANCE or abs(dy) < NEAR_DISTANCE:
            return 1.0
        return float(NEAR_DISTANCE / torch.maximum(abs(dx), abs(dy)))
    if locality in ("on the right of", "right of"):
        return directional(dx, dy, -1)
    if locality in ("on the left of", "left of"):
        return directional(dx, dy, 1)
    if locality in ("on the bottom of", "below"):
        return directional(dy, dx, -1)
    if locality in ("on the top of", "top of"):
        return directional(dy, dx, 1)
    return 0.0  # "above", "on top of" and every other word: no branch


def spatial_score(spatial_info: Mapping[str, Any] | None, detections: Sequence[ReferenceDetection]) -> float:
    """RG L274-305, with the bare ``except`` of RG L367-371 turning every error into 0."""
    if not isinstance(spatial_info, Mapping) or not {"obj1", "obj2", "locality"} <= set(spatial_info):
        return 0.0  # subscripting a missing spatial_info raises inside the try
    obj1, obj2 = spatial_info["obj1"], spatial_info["obj2"]
    labels = [d.label for d in detections]
    score = 0.0
    for obj in (obj1, obj2):
        if obj in labels:
            score += PRESENCE_CREDIT
    if score != 2 * PRESENCE_CREDIT:
        return score
    first = [d for d in detections if d.label == obj1]
    second = [d for d in detections if d.label != obj1 and d.label == obj2]  # RG L258-263: if / elif
    if not second:
        return 0.0  # obj1 == obj2: torch.stack([]) raises (RG L266), caught as 0
    best1 = first[int(torch.tensor([d.score for d in first], dtype=torch.float32).argmax())]
    best2 = second[int(torch.tensor([d.score for d in second], dtype=torch.float32).argmax())]
    return score + position_score(spatial_info["locality"], _corners(best1.cxcywh), _corners(best2.cxcywh)) / 2


def corner_nms_count(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = NUMERACY_NMS_IOU) -> int:
    """How many of the (K, 4) rows torchvision's NMS keeps, reading each row as (x0, y0, x1, y1), float32.

    torchvision ``csrc/ops/cpu/nms_kernel.cpp``: area ``(x2 - x1) * (y2 - y1)`` (negative when x2 < x1),
    intersection clamped at 0, a box suppressed when ``inter / (area_i + area_j - inter)`` exceeds the
    threshold (NaN never does). The reference passes (cx, cy, w, h) here.
    """
    boxes, scores = boxes.float(), scores.float()  # (K, 4), (K,)
    x1, y1, x2, y2 = boxes.unbind(-1)  # (K,) each
    areas = (x2 - x1) * (y2 - y1)  # (K,)
    inter = (torch.minimum(x2[:, None], x2[None]) - torch.maximum(x1[:, None], x1[None])).clamp(min=0) * (
        torch.minimum(y2[:, None], y2[None]) - torch.maximum(y1[:, None], y1[None])
    ).clamp(min=0)  # (K, K)
    overlap = inter / (areas[:, None] + areas[None] - inter) > iou_threshold  # (K, K)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    kept = 0
    for i in torch.argsort(scores, descending=True, stable=True).tolist():
        if not suppressed[i]:
            kept += 1
            suppressed |= overlap[i]
    return kept


def numeracy_score(numeracy_info: Sequence[Mapping[str, Any]] | None, detections: Sequence[ReferenceDetection]) -> float:
    """RG L308-332: per object 0 (none detected), 1 (count after corner-NMS == num) or 0.2, weighted equally."""
    if not numeracy_info:
        raise ValueError("a numeracy prompt needs numeracy_info (the reference divides by its length and crashes)")
    weight = 1 / len(numeracy_info)
    score = 0.0
    for item in numeracy_info:
        mine = [d for d in detections if d.label == item["obj_name"]]
        if not mine:
            continue
        boxes = torch.tensor([d.cxcywh for d in mine], dtype=torch.float32)  # (K, 4), not converted
        scores = torch.tensor([d.score for d in mine], dtype=torch.float32)  # (K,)
        score += weight if corner_nms_count(boxes, scores) == item["num"] else WRONG_COUNT_CREDIT * weight
    return score


def object_score(nouns: Sequence[str], detections: Sequence[ReferenceDetection]) -> float:
    """RG L334-340: share of noun copies whose exact string is among the detections' labels."""
    labels = {d.label for d in detections}
    weight = 1 / len(nouns)
    score = 0.0
    for noun in nouns:
        if noun in labels:
            score += weight
    return score


def score(meta: Mapping[str, Any], detections: Sequence[ReferenceDetection]) -> float:
    """The reference's GroundingDINO reward of one image (RG L342-379) from its detections."""
    nouns = meta.get("nouns")
    if nouns is None:
        raise ValueError("the reference's GroundingDINO reward needs metadata 'nouns' (it crashes without them)")
    if len(nouns) == 0:
        return 1.0
    task = meta.get("task_type")
    if task == "spatial":
        return spatial_score(meta.get("spatial_info"), detections)
    if task == "numeracy":
        return numeracy_score(meta.get("numeracy_info"), detections)
    return object_score(nouns, detections)


__all__ = [
    "ReferenceDetection",
    "corner_nms_count",
    "detection_query",
    "detections_from_logits",
    "numeracy_score",
    "object_score",
    "position_score",
    "score",
    "spatial_score",
    "span_token_mask",
]

"""How many training prompts each reward difference from the reference touches, and how often the
GroundingDINO scores disagree on synthetic detections (docs/reference-differences.md).

    python -m benchmarks.reference_differences ../shared/data/t2i_r1_train/geneval_and_t2i_data_final.jsonl \
        --json benchmarks/results/reference_differences.json > benchmarks/results/reference_differences.txt

Two parts:
1. Counts from the metadata alone: for each difference, the prompts whose route or query it changes.
   Whether a touched prompt's score actually changes can depend on the image (a numeracy object that
   is missed, two duplicate boxes); the counts are an upper bound in those cases, and exact where the
   rule alone decides (a complex prompt routed to existence, a three-word noun never matched).
2. Scores on synthetic detections: per prompt, ``--scenes`` random scenes; in each, every distinct
   object the prompt names gets 0-3 boxes (random centre, size 0.05-0.6, score 0.3-1; a third of the
   boxes get a near-duplicate), seen by each scorer under the labels its own query gives them. Ours
   (``behavior="ours"``) and the reference (``"reference"``) score the same scene; the table gives the
   share of scenes where they agree, per category.
Model-free: no detector runs, so detector-level effects (phrases competing inside one caption, box
clamping) are not in part 2.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import sys
from pathlib import Path

from t2i_r1.rewards import gdino_reference
from t2i_r1.rewards.detection import RELATIONS, Detection, normalise_label
from t2i_r1.rewards.grounding_dino import route, score_detections


def category(meta: dict) -> str:
    task = meta.get("task_type", "?")
    return f"{task}+spatial_info" if task != "spatial" and meta.get("spatial_info") else task


def reference_route(meta: dict) -> str:
    """The reference GroundingDINO reward's branch (reward_gdino.py L349-375)."""
    if not meta.get("nouns"):
        return "one"
    return {"spatial": "spatial", "numeracy": "numeracy"}.get(meta.get("task_type"), "existence")


DIFFERENCES = (
    "gdino 1: numeracy object not detected (now aligned: 0)",
    "gdino 2: NMS on corner boxes (kept)",
    "gdino 3: complex prompt with spatial_info scored as spatial (kept)",
    "gdino 4: a noun of three or more words in the reference's query (kept: full phrase)",
    "gdino 5: locality 'top of' (now aligned: scored)",
    "gdino 6: repeated nouns, scores can differ (kept: distinct nouns)",
    "gdino 6b: repeated nouns, one distinct noun (same score)",
    "gdino 7: spatial scoring, two empty boxes (kept; needs degenerate detections, not expected)",
    "gdino 8: the reference queries the nouns list, ours the scored objects (kept)",
    "gdino 8b: a scored object absent from nouns (the reference can never find it)",
    "gdino: 'above' / 'on top of' has no branch in the reference (kept: scored)",
    "gdino: 'near' always satisfied in the reference (kept: gap rule)",
    "gdino: same object on both sides (reference 0 or existence; kept: two best boxes)",
    "gdino: relation ours cannot score (ours NaN, reference 0)",
    "gdino: boxes clamped to the image in ours (kept; detector-dependent)",
    "gdino: labels matched case-insensitively in ours (kept)",
    "gdino: no nouns (reference 1, ours NaN)",
    "git: spatial / numeracy prompt (reference 0, ours NaN; constant within a group)",
    "git: no attr_nouns (reference asks about each noun, ours NaN)",
    "git: no attr_nouns and no nouns (reference 1, ours NaN)",
    "orm: sampled first token gates the score; temperature 0.3 (every prompt)",
)


def count(rows: list[dict]) -> dict[str, dict]:
    """Difference name (``DIFFERENCES``) -> {prompts touched, per category}."""
    touched: dict[str, collections.Counter] = {name: collections.Counter() for name in DIFFERENCES}

    def hit(name: str, meta: dict) -> None:
        touched.setdefault(name, collections.Counter())[category(meta)] += 1

    for meta in rows:
        nouns = list(meta.get("nouns") or [])
        ours = route(meta, parse_missing=False)
        ours_route = ours[0] if ours else "nan"
        ref_route = reference_route(meta)
        spatial = meta.get("spatial_info") or {}
        task = meta.get("task_type")
        # GroundingDINO
        if task == "numeracy" and meta.get("numeracy_info"):
            hit("gdino 1: numeracy object not detected (now aligned: 0)", meta)
            hit("gdino 2: NMS on corner boxes (kept)", meta)
        if ours_route != ref_route and not (ours_route == "existence" and ref_route == "existence"):
            if task == "complex" and spatial:
                hit("gdino 3: complex prompt with spatial_info scored as spatial (kept)", meta)
            else:
                hit(f"gdino route other: ours {ours_route}, reference {ref_route}", meta)
        queried_ref = nouns if ref_route != "one" else []
        if any(len(n.split()) >= 3 for n in queried_ref):
            hit("gdino 4: a noun of three or more words in the reference's query (kept: full phrase)", meta)
        if spatial and normalise_label(str(spatial.get("locality", ""))) == "top of":
            hit("gdino 5: locality 'top of' (now aligned: scored)", meta)
        distinct = set(map(normalise_label, nouns))
        if len(distinct) < len(nouns):  # matters where either side scores noun existence
            hit("gdino 6: repeated nouns, scores can differ (kept: distinct nouns)" if len(distinct) > 1
                else "gdino 6b: repeated nouns, one distinct noun (same score)", meta)
        if ours_route == "spatial":
            hit("gdino 7: spatial scoring, two empty boxes (kept; needs degenerate detections, not expected)", meta)
        if ours and ref_route != "one" and ours_route in ("spatial", "numeracy"):
            ours_query = set(ours[1])
            if ours_query != set(map(normalise_label, queried_ref)):
                hit("gdino 8: the reference queries the nouns list, ours the scored objects (kept)", meta)
            if not ours_query <= set(map(normalise_label, queried_ref)):
                hit("gdino 8b: a scored object absent from nouns (the reference can never find it)", meta)
        if ref_route == "spatial" and spatial:
            loc = str(spatial.get("locality", ""))
            if loc in ("above", "on top of"):
                hit("gdino: 'above' / 'on top of' has no branch in the reference (kept: scored)", meta)
            if loc in ("near", "next to", "on side of"):
                hit("gdino: 'near' always satisfied in the reference (kept: gap rule)", meta)
            if normalise_label(loc) not in RELATIONS:
                hit("gdino: relation ours cannot score (ours NaN, reference 0)", meta)
        if ours_route == "spatial" and normalise_label(str(spatial.get("obj1"))) == normalise_label(str(spatial.get("obj2"))):
            hit("gdino: same object on both sides (reference 0 or existence; kept: two best boxes)", meta)
        if ours_route == "spatial" and ref_route == "spatial":
            hit("gdino: boxes clamped to the image in ours (kept; detector-dependent)", meta)
        if any(n != normalise_label(n) for n in nouns) or any(
            str(o) != normalise_label(str(o)) for o in (spatial.get("obj1"), spatial.get("obj2")) if o
        ):
            hit("gdino: labels matched case-insensitively in ours (kept)", meta)
        if not nouns:
            hit("gdino: no nouns (reference 1, ours NaN)", meta)
        # GIT VQA (reward_git.py L46-74)
        if task in ("spatial", "numeracy"):
            hit("git: spatial / numeracy prompt (reference 0, ours NaN; constant within a group)", meta)
        elif meta.get("attr_nouns") is None:
            hit("git: no attr_nouns (reference asks about each noun, ours NaN)" if nouns
                else "git: no attr_nouns and no nouns (reference 1, ours NaN)", meta)
        # ORM (reward_orm.py L77-118): every prompt
        hit("orm: sampled first token gates the score; temperature 0.3 (every prompt)", meta)
    return {name: {"prompts": sum(c.values()), "by_category": dict(sorted(c.items()))} for name, c in touched.items()}


def scene(meta: dict, rng: random.Random) -> dict[str, list[tuple[float, tuple[float, float, float, float]]]]:
    """Distinct object phrase (normalised) -> its boxes (score, (cx, cy, w, h))."""
    phrases = {normalise_label(n) for n in meta.get("nouns") or []}
    phrases |= {normalise_label(i["obj_name"]) for i in meta.get("numeracy_info") or []}
    sp = meta.get("spatial_info") or {}
    phrases |= {normalise_label(str(sp[k])) for k in ("obj1", "obj2") if k in sp}
    out = {}
    for phrase in sorted(phrases):
        boxes = []
        for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
            cx, cy, w, h = rng.random(), rng.random(), rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6)
            boxes.append((rng.uniform(0.3, 1.0), (cx, cy, w, h)))
            if rng.random() < 1 / 3:  # a near-duplicate box of the same object
                jitter = tuple(v + rng.uniform(-0.01, 0.01) for v in (cx, cy, w, h))
                boxes.append((rng.uniform(0.3, 1.0), jitter))
        out[phrase] = boxes
    return out


def ours_score(meta: dict, boxes: dict) -> float:
    r = route(meta, parse_missing=False)
    if r is None:
        return math.nan
    scorer, queried, meta = r
    dets = []
    for phrase in queried:
        for s, (cx, cy, w, h) in boxes.get(normalise_label(phrase), []):
            corners = tuple(min(max(v, 0.0), 1.0) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            dets.append(Detection(phrase, s, corners))
    return score_detections(scorer, meta, dets)


def reference_score(meta: dict, boxes: dict) -> float:
    nouns = list(meta.get("nouns") or [])
    _, _, labels = gdino_reference.detection_query(nouns)
    dets = []
    for noun, label in dict(zip(nouns, labels)).items():  # one detection set per distinct noun string
        for s, cxcywh in boxes.get(normalise_label(noun), []):
            dets.append(gdino_reference.ReferenceDetection(label, s, cxcywh))
    return gdino_reference.score(meta, dets)


def agreement(rows: list[dict], scenes: int, seed: int) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    same: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for meta in rows:
        for _ in range(scenes):
            boxes = scene(meta, rng)
            a, b = ours_score(meta, boxes), reference_score(meta, boxes)
            key = category(meta)
            same[key]["scenes"] += 1
            same[key]["agree"] += (a == b) or (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-9
    return {k: {"scenes": v["scenes"], "agree": round(v["agree"] / v["scenes"], 4)} for k, v in sorted(same.items())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompts", help="reference-schema JSON lines (the 7,223 training prompts)")
    parser.add_argument("--scenes", type=int, default=3, help="synthetic scenes per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    counts = count(rows)
    agree = agreement(rows, args.scenes, args.seed)
    by_task = collections.Counter(category(m) for m in rows)
    print(f"{len(rows)} prompts: " + ", ".join(f"{k} {v}" for k, v in sorted(by_task.items())))
    print("\nPrompts each reward difference touches (upper bounds where the image decides):")
    for name, c in counts.items():
        cats = ", ".join(f"{k} {v}" for k, v in c["by_category"].items())
        print(f"{c['prompts']:6d}  {name}  [{cats}]")
    print(f"\nGroundingDINO, ours vs the reference's rules on {args.scenes} synthetic scenes per prompt (share agreeing):")
    for k, v in agree.items():
        print(f"  {k:<24} {100 * v['agree']:5.1f}%  of {v['scenes']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"prompts": len(rows), "by_category": dict(by_task), "counts": counts,
                                               "agreement": agree, "args": vars(args)}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())

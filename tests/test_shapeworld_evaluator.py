"""ShapeWorld's evaluator: detection agreement with ground truth, scoring, reward interface."""

import dataclasses
import math
import time

import numpy as np
import pytest
from PIL import Image, ImageFilter

from t2i_r1.rewards.base import RewardFunction
from t2i_r1.shapeworld import (
    CATEGORIES,
    COLORS,
    SIZES,
    TEXTURES,
    Detector,
    ObjectSpec,
    Prompt,
    Relation,
    Scene,
    SceneObject,
    evaluate,
    partial_reward,
    random_scene,
    render,
    render_image,
    sample_example,
    sample_prompt,
    scene_for_plan,
    score,
    summarize,
)
from t2i_r1.shapeworld.evaluator import scene_agreement
from t2i_r1.shapeworld.world import SHAPES, boxes_apart


def _agreement(images_and_scenes) -> float:
    det = Detector()
    agree = total = 0
    for img, scene in images_and_scenes:
        detections = det.detect(img)
        agree += scene_agreement(scene, detections)
        total += len(scene.objects)
    return agree / total


def test_detector_agrees_with_ground_truth_on_clean_renders():
    rng = np.random.default_rng(0)
    scenes = [random_scene(rng) for _ in range(300)]
    assert _agreement((render(s), s) for s in scenes) >= 0.99


def test_detector_degrades_gracefully_under_blur_and_noise():
    # Gaussian blur of radius 1 plus N(0, 8) noise per channel: measured 100% agreement on 500 scenes.
    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(200):
        s = random_scene(rng)
        blurred = np.asarray(render_image(s).filter(ImageFilter.GaussianBlur(1)), dtype=np.float32)
        noisy = np.clip(blurred + rng.normal(0, 8, blurred.shape), 0, 255).astype(np.uint8)
        pairs.append((noisy, s))
    assert _agreement(pairs) >= 0.98


def test_detection_fields_of_one_object():
    scene = Scene((SceneObject("triangle", "orange", "striped", "large", 10, 30),))
    (d,) = Detector().detect(render(scene))
    assert (d.shape, d.color, d.texture, d.size) == ("triangle", "orange", "striped", "large")
    # Box 10..33 x 30..53, centre (10 + 24/2, 30 + 24/2) = (22, 42).
    assert d.box == (10, 30, 34, 54) and (d.cx, d.cy) == (22.0, 42.0)


def test_empty_and_upscaled_images():
    blank = np.zeros((64, 64, 3), np.uint8) + np.array([40, 40, 40], np.uint8)
    assert Detector().detect(blank) == []
    # A PIL image at 4x the size (nearest) is read back at 64 px with the same detections.
    s = random_scene(np.random.default_rng(5), 3)
    big = render_image(s).resize((256, 256), Image.NEAREST)
    assert scene_agreement(s, Detector().detect(big)) == 3


@pytest.mark.parametrize("category", CATEGORIES)
def test_sampled_scenes_score_one(category):
    rng = np.random.default_rng(2)
    for _ in range(25):
        p = sample_prompt(category, rng)
        ex = sample_example(p, rng)
        ev = evaluate(p.metadata(), render(ex.scene))
        assert ev.score == 1.0 and ev.partial == 1.0, (p.text, ev.checks)
        # A scene drawn from the plan alone (with the prompt's relations) also satisfies the prompt.
        rels = [(r.subject, r.object, r.relation) for r in p.relations]
        assert score(p, render(scene_for_plan(ex.plan, rng, relations=rels))) == 1.0


def _other(field: str, value: str) -> str:
    values = {"shape": SHAPES, "color": COLORS, "texture": TEXTURES, "size": SIZES}[field]
    return next(v for v in values if v != value)


def _fits(objects) -> bool:
    boxes = [o.box() for o in objects]
    inside = all(0 <= b[0] and 0 <= b[1] and b[2] <= 64 and b[3] <= 64 for b in boxes)
    return inside and all(boxes_apart(a, b, 4) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


@pytest.mark.parametrize("category", CATEGORIES)
def test_violating_one_constraint_scores_below_one(category):
    rng = np.random.default_rng(3)
    tried = 0
    for _ in range(25):
        p = sample_prompt(category, rng)
        objs = list(sample_example(p, rng).scene.objects)
        md = p.metadata()
        # 1) One object gets another value in a field its spec constrains.
        spec_of = [spec for spec in p.objects for _ in range(spec.count)]
        i = int(rng.integers(len(objs)))
        field = next(iter(spec_of[i].constrained()))
        changed = dataclasses.replace(objs[i], **{field: _other(field, getattr(objs[i], field))})
        variant = objs[:i] + [changed] + objs[i + 1 :]
        if _fits(variant):  # a small object made large may not fit
            assert score(md, render(Scene(tuple(variant)))) == 0.0
            tried += 1
        # 2) One object missing.
        ev = evaluate(md, render(Scene(tuple(objs[:i] + objs[i + 1 :]))))
        assert ev.score == 0.0 and ev.partial < 1.0
        # 3) For a relation, the two objects swap centres.
        for r in p.relations:
            a, b = objs[r.subject], objs[r.object]
            (ax, ay), (bx, by) = a.centre(), b.centre()
            moved = list(objs)
            moved[r.subject] = dataclasses.replace(a, x0=int(bx - a.side() / 2), y0=int(by - a.side() / 2))
            moved[r.object] = dataclasses.replace(b, x0=int(ax - b.side() / 2), y0=int(ay - b.side() / 2))
            if _fits(moved):
                assert score(md, render(Scene(tuple(moved)))) == 0.0
    assert tried >= 10


def test_partial_credit_arithmetic():
    p = Prompt(
        "two red circles left of ...",  # text is free; the specs carry the truth
        "complex",
        (ObjectSpec(2, "circle", "red"), ObjectSpec(1, "square"), ObjectSpec(1, "triangle")),
        (Relation(1, 2, "left of"),),
    )
    circle = dict(shape="circle", color="red", texture="solid", size="small")
    objs = [
        SceneObject(**circle, x0=2, y0=2),
        SceneObject(**circle, x0=24, y0=2),
        SceneObject(**circle, x0=46, y0=2),  # one circle too many: 2/3
        SceneObject("square", "blue", "hollow", "small", 44, 44),  # square right of ...
        SceneObject("triangle", "white", "solid", "small", 5, 44),  # ... the triangle: relation fails
        SceneObject("circle", "green", "solid", "small", 24, 22),  # matches nothing: extra 1/(1+1)
    ]
    assert _fits(objs)
    ev = evaluate(p, render(Scene(tuple(objs))))
    # checks: circles 2/3, square 1, triangle 1, relation 0, nothing extra 1/2.
    assert ev.score == 0.0
    assert ev.partial == pytest.approx((2 / 3 + 1 + 1 + 0 + 0.5) / 5)
    assert list(ev.checks.values()) == pytest.approx([2 / 3, 1, 1, 0, 0.5])


def test_reward_interface():
    from t2i_r1.rewards.programmatic import ProgrammaticReward

    rng = np.random.default_rng(4)
    p = sample_prompt("color", rng)
    good = render_image(sample_example(p, rng).scene)
    blank = Image.new("RGB", (64, 64), (40, 40, 40))
    strict = ProgrammaticReward("t2i_r1.shapeworld.evaluator:reward", name="shapeworld")
    assert isinstance(strict, RewardFunction)
    other = {"prompt": "a cat", "task_type": "object", "nouns": ["cat"]}
    out = strict([p.text, p.text, "a cat"], [good, blank, good], [p.metadata(), p.metadata(), other])
    assert out[:2] == [1.0, 0.0] and math.isnan(out[2])
    # Blank image: every object spec 0, nothing extra 1 -> partial = 1 / (n specs + 1).
    partial = ProgrammaticReward(partial_reward)
    assert partial([p.text], [blank], [p.metadata()])[0] == pytest.approx(1 / (len(p.objects) + 1))


def test_summarize():
    out = summarize(["color", "color", "spatial"], [1.0, 0.0, 1.0])
    # color 0.5, spatial 1.0, overall = mean of category means = 0.75 (not 2/3 over prompts).
    assert out == {"color": 0.5, "spatial": 1.0, "overall": 0.75}


def test_evaluator_is_fast():
    rng = np.random.default_rng(6)
    prompts = [sample_prompt(c, rng) for c in CATEGORIES for _ in range(10)]
    pairs = [(p.metadata(), render(sample_example(p, rng).scene)) for p in prompts]
    score(*pairs[0])  # warm-up
    start = time.process_time()  # CPU time: wall time on a shared machine counts the neighbours
    for md, img in pairs:
        score(md, img)
    per_image = (time.process_time() - start) / len(pairs)
    # ~1 ms measured; the bound leaves room for a slow CI machine.
    assert per_image < 0.010

"""ShapeWorld's renderer, prompt grammar, riddles, plans and splits."""

import json

import numpy as np
import pytest

from t2i_r1.shapeworld import (
    ALL_FAMILIES,
    CATEGORIES,
    COLORS,
    FAMILIES,
    DEFAULT_WORLD,
    PALETTE,
    REGIONS,
    RELATIONS,
    RIDDLES,
    ObjectSpec,
    Plan,
    PlanItem,
    PlanParseError,
    Prompt,
    Relation,
    Scene,
    SceneObject,
    canonical_example,
    check_plan,
    parse_plan,
    prompt_set,
    random_scene,
    relation_holds,
    render,
    sample_example,
    sample_prompt,
    split_of,
    vocabulary,
    words,
)
from t2i_r1.shapeworld.world import boxes_apart, region_of, region_relation_holds

BG = np.array(DEFAULT_WORLD.background)


def _painted(img: np.ndarray) -> int:
    return int((img != BG).any(-1).sum())


# ---------------------------------------------------------------------------------------------
# Renderer


def test_render_is_deterministic_given_seed():
    a = [render(random_scene(np.random.default_rng(3))) for _ in range(2)]
    b = render(random_scene(np.random.default_rng(4)))
    assert a[0].shape == (64, 64, 3) and a[0].dtype == np.uint8
    assert np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], b)


def test_render_pixel_counts():
    # A large (24 px) solid square: 24 * 24 = 576 pixels, all of its colour.
    img = render(Scene((SceneObject("square", "red", "solid", "large", 10, 20),)))
    assert _painted(img) == 24 * 24
    assert (img[20:44, 10:34] == PALETTE["red"]).all()
    # A large hollow square keeps a 2 px outline: 24^2 - 20^2 = 176.
    img = render(Scene((SceneObject("square", "blue", "hollow", "large", 5, 5),)))
    assert _painted(img) == 24 * 24 - 20 * 20
    # A small (16 px) striped square: outline 16^2 - 12^2 = 112, plus one 4-row bar across the
    # 12 px wide interior (rows 2..13, centre row round(7.5) = 8, bar rows 6..9): 4 * 12 = 48.
    img = render(Scene((SceneObject("square", "green", "striped", "small", 30, 30),)))
    assert _painted(img) == 112 + 48
    assert (img[36:40, 32:44] == PALETTE["green"]).all() and (img[32:36, 32:44] == BG).all()


def test_render_rejects_objects_off_canvas():
    with pytest.raises(ValueError, match="leaves the 64 px canvas"):
        render(Scene((SceneObject("circle", "red", "solid", "large", 50, 0),)))
    with pytest.raises(ValueError, match="SceneObject.color"):
        SceneObject("circle", "pink", "solid", "large", 0, 0)


def test_random_scenes_fit_and_keep_gaps():
    rng = np.random.default_rng(0)
    for _ in range(100):
        scene = random_scene(rng)
        boxes = [o.box() for o in scene.objects]
        for i, a in enumerate(boxes):
            assert 1 <= a[0] and a[2] <= 63 and 1 <= a[1] and a[3] <= 63
            for b in boxes[i + 1 :]:
                assert boxes_apart(a, b, DEFAULT_WORLD.min_gap)
        assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


def test_relations_and_regions():
    # b is 10 px right of a and 3 px lower: dx = 10 dominates |dy| = 3.
    a, b = (20.0, 30.0), (30.0, 33.0)
    assert relation_holds("left of", a, b) and relation_holds("right of", b, a)
    assert not relation_holds("above", a, b) and not relation_holds("left of", b, a)
    assert not relation_holds("left of", a, b, slack=8)  # 10 > 3 + 8 fails
    # Cells are 64 / 3 = 21.33 px: x = 20 is column 0, x = 30 column 1; y = 50 is row 2.
    assert region_of((20, 30)) == "left" and region_of((30, 50)) == "bottom" and region_of((60, 2)) == "top right"
    assert region_relation_holds("left of", "top left", "right")  # columns 0 -> 2 dominate rows 0 -> 1
    assert not region_relation_holds("left of", "top left", "center")  # 1 column vs 1 row: no dominance


# ---------------------------------------------------------------------------------------------
# Grammar and metadata


@pytest.mark.parametrize("phrasing", ALL_FAMILIES)
@pytest.mark.parametrize("category", CATEGORIES)
def test_grammar_covers_every_category(category, phrasing):
    if not FAMILIES[phrasing].covers(category):
        with pytest.raises(ValueError, match="cannot word"):
            sample_prompt(category, np.random.default_rng(1), phrasing=phrasing)
        return
    rng = np.random.default_rng(1)
    vocab = set(vocabulary())
    for _ in range(20):
        p = sample_prompt(category, rng, phrasing=phrasing)
        assert p.phrasing == phrasing and (p.text == p.canonical) == (phrasing == "plain")
        md = p.metadata()
        assert md["task_type"] == category and md["prompt"] == p.text
        assert md["nouns"] and set(md["nouns"]) <= {"circle", "square", "triangle"}
        assert Prompt.from_metadata(json.loads(json.dumps(md))) == p
        assert set(words(p.text)) <= vocab, p.text
        assert 1 <= p.n_objects <= 5
        for i, a in enumerate(p.objects):
            assert all(a.disjoint(b) for b in p.objects[i + 1 :])
        if category in ("spatial",):
            assert md["spatial_info"]["locality"] in RELATIONS and len(p.relations) == 1
        if category == "numeracy":
            assert sum(x["num"] for x in md["numeracy_info"]) == p.n_objects
        if category in ("color", "texture"):
            field = "color" if category == "color" else "texture"
            assert all(getattr(o, field) for o in p.objects)
            assert len(md["attr_nouns"]) == len(p.objects)
        if category == "shape":
            assert {o.size for o in p.objects} == {"small", "large"}
        if category == "reasoning":
            assert p.riddles
            for r in p.riddles:
                assert r.phrase in p.canonical


def test_reasoning_riddles_resolve():
    # Independent spot checks of the knowledge table, written out by hand.
    expected = {
        "with no corners": ("shape", "circle"),
        "with three corners": ("shape", "triangle"),
        "with four corners": ("shape", "square"),
        "the color of grass": ("color", "green"),
        "the color of a clear sky": ("color", "blue"),
        "the color of blue mixed with yellow": ("color", "green"),
        "the color of red mixed with blue": ("color", "purple"),
        "the color of snow": ("color", "white"),
        "patterned like a zebra": ("texture", "striped"),
        "as big as an elephant": ("size", "large"),
        "a tricycle has wheels": ("count", 3),
        "a bicycle has wheels": ("count", 2),
        "a dog has legs": ("count", 4),
        "a triangle has corners": ("count", 3),
    }
    table = {r.phrase: (r.field, r.value) for r in RIDDLES}
    assert len(table) == len(RIDDLES), "a riddle phrase appears twice"
    for phrase, answer in expected.items():
        assert table[phrase] == answer
    # Sampled prompts carry the answers in their specs.
    rng = np.random.default_rng(2)
    kinds = set()
    for _ in range(200):
        p = sample_prompt("reasoning", rng)
        for r in p.riddles:
            kinds.add(r.field)
            if r.field == "count":
                assert p.objects[0].count == r.value and p.text.startswith("as many ")
            else:
                assert any(getattr(o, r.field) == r.value for o in p.objects)
    assert kinds == {"shape", "color", "texture", "size", "count"}


def test_prompt_rejects_overlapping_specs():
    with pytest.raises(ValueError, match="not disjoint"):
        Prompt("x", "color", (ObjectSpec(shape="circle"), ObjectSpec(shape="circle", color="red")))
    with pytest.raises(ValueError, match="two single objects"):
        Prompt("x", "spatial", (ObjectSpec(2, "circle"), ObjectSpec(1, "square")), (Relation(0, 1, "above"),))


# ---------------------------------------------------------------------------------------------
# Plans


@pytest.mark.parametrize("category", CATEGORIES)
def test_plans_parse_and_agree_with_metadata(category):
    rng = np.random.default_rng(3)
    vocab = set(vocabulary())
    for _ in range(25):
        p = sample_prompt(category, rng)
        ex = sample_example(p, rng)
        text = ex.plan.text()
        assert set(words(text)) <= vocab
        assert parse_plan(text) == ex.plan
        assert check_plan(p.metadata(), text).score == 1.0
        # One clause per spec; single objects carry the region their centre lies in.
        assert len(ex.plan.items) == len(p.objects)
        assert ex.plan.n_objects == len(ex.scene.objects) == p.n_objects
        objects = iter(ex.scene.objects)
        for item in ex.plan.items:
            group = [next(objects) for _ in range(item.count)]
            for o in group:
                assert (o.shape, o.color, o.texture, o.size) == (item.shape, item.color, item.texture, item.size)
            assert item.region == (region_of(group[0].centre()) if item.count == 1 else None)


def test_canonical_example_is_fixed_per_prompt():
    p = sample_prompt("complex", np.random.default_rng(8))
    a, b = canonical_example(p), canonical_example(p)
    assert a == b and check_plan(p, a.plan).score == 1.0
    other = sample_prompt("complex", np.random.default_rng(9))
    assert other.text != p.text and canonical_example(other).plan != a.plan


def test_plan_check_catches_wrong_plans():
    p = Prompt(
        "a shape with no corners the color of grass left of a square",
        "reasoning",
        (ObjectSpec(shape="circle", color="green"), ObjectSpec(shape="square")),
        (Relation(0, 1, "left of"),),
    )
    good = "one small green solid circle at left ; one large red hollow square at right"
    assert check_plan(p, good).score == 1.0
    # The riddle read wrongly (blue): object 0 unmatched and an extra object -> score 0,
    # partial = mean(object 0: 0, object 1: 1, relation: 0 (no subject), extra: 1/2) = 1.5 / 4.
    wrong = check_plan(p, good.replace("green", "blue"))
    assert wrong.score == 0.0 and wrong.partial == pytest.approx(1.5 / 4)
    # Regions swapped: the relation fails only -> partial 3/4.
    swapped = check_plan(p, "one small green solid circle at right ; one large red hollow square at left")
    assert swapped.score == 0.0 and swapped.partial == pytest.approx(3 / 4)
    assert check_plan(p, "one green circle").score == 0.0  # too short to parse
    with pytest.raises(PlanParseError, match="not a count"):
        parse_plan("many small green solid circles")
    with pytest.raises(PlanParseError, match="region"):
        parse_plan("two small green solid circles at left")  # groups carry no region
    assert parse_plan("two small green solid circles") == Plan((PlanItem(2, "small", "green", "solid", "circle"),))


def test_plan_failure_names_what_the_plan_check_rejects():
    from t2i_r1.shapeworld.grammar import plan_failure

    p = Prompt("a green circle left of a square", "spatial",
               (ObjectSpec(shape="circle", color="green"), ObjectSpec(shape="square")), (Relation(0, 1, "left of"),))
    good = "one small green solid circle at left ; one large red hollow square at right"
    assert plan_failure(p, good) == "right"
    assert plan_failure(p, "one green circle") == "unparseable"
    assert plan_failure(p, good.replace("green", "blue")) == "objects"
    assert plan_failure(p, good + " ; one small red solid triangle") == "objects"  # an extra object
    # Every object right but unplaced: the plan is silent on the layout, not wrong about it.
    assert plan_failure(p, "one small green solid circle ; one large red hollow square") == "no region"
    assert plan_failure(p, "one small green solid circle at right ; one large red hollow square at left") == "relation"


# ---------------------------------------------------------------------------------------------
# Splits and vocabulary


def test_splits_are_deterministic_and_disjoint():
    train = prompt_set("train", 5, seed=0, families=ALL_FAMILIES)
    heldout = prompt_set("heldout", 5, seed=0, families=ALL_FAMILIES)
    assert [p.text for p in train] == [p.text for p in prompt_set("train", 5, seed=0, families=ALL_FAMILIES)]
    cells = sum(FAMILIES[f].covers(c) for f in ALL_FAMILIES for c in CATEGORIES)
    assert len(train) == len(heldout) == 5 * cells
    # Combinations are held out in every wording: no canonical content is on both sides.
    assert not {p.canonical for p in train} & {p.canonical for p in heldout}
    assert all(split_of(p) == "heldout" for p in heldout) and all(split_of(p) == "train" for p in train)
    for c in CATEGORIES:
        for f in ALL_FAMILIES:
            assert sum(p.category == c and p.phrasing == f for p in train) == 5 * FAMILIES[f].covers(c)
    # The hash sends about a fifth of all texts to held-out.
    texts = [f"prompt number {i}" for i in range(4000)]
    share = sum(split_of(t) == "heldout" for t in texts) / len(texts)
    assert 0.17 < share < 0.23


def test_vocabulary_is_small_and_complete():
    vocab = vocabulary()
    assert vocab == sorted(set(vocab))
    assert 100 <= len(vocab) <= 160
    for word in (*COLORS, *words(" ".join(REGIONS)), "as", "many", ";", ","):
        assert word in vocab

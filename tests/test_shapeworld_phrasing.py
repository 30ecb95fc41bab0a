"""ShapeWorld's phrasing families: each feature's wording, the families' roles and their vocabulary."""

import re

import numpy as np
import pytest

from t2i_r1.shapeworld.grammar import CATEGORIES, ObjectSpec, sample_prompt
from t2i_r1.shapeworld.phrasing import (
    ALL_FAMILIES,
    COUNT_SYNONYMS,
    FAMILIES,
    LEADS,
    PRETRAIN_FAMILIES,
    RIDDLES,
    SYNONYMS,
    TRAIN_FAMILIES,
    Content,
    Family,
    Mention,
    NotApplicable,
    canonical_text,
    realise,
    riddle_paraphrase,
    words,
)
from t2i_r1.shapeworld.world import COLORS, RELATIONS, SIZES, TEXTURES

RED_CIRCLE = Mention(ObjectSpec(shape="circle", color="red", size="large"))
SQUARE = Mention(ObjectSpec(shape="square"))
LEFT = Content((RED_CIRCLE, SQUARE), relation="left of")
GROUPS = Content((Mention(ObjectSpec(count=3, shape="triangle", color="green"), counted=True),
                  Mention(ObjectSpec(count=1, shape="square"), counted=True)))
AS_MANY = Content((Mention(ObjectSpec(count=4, shape="square", color="blue")),), count_riddle=RIDDLES[-4])  # a car


def _all(content, features, n=200):
    """Every wording of ``content`` with ``features`` over ``n`` seeds."""
    return {realise(content, frozenset(features), np.random.default_rng(i)) for i in range(n)}


def test_canonical_wording():
    assert canonical_text(LEFT) == "a large red circle left of a square"
    assert canonical_text(GROUPS) == "three green triangles and one square"
    assert canonical_text(AS_MANY) == "as many blue squares as a car has wheels"


def test_each_feature_words_the_same_content():
    # Written out by hand from the feature rules in phrasing's docstring.
    assert _all(LEFT, {"terse"}) == {"large red circle left of square"}
    assert _all(GROUPS, {"terse"}) == {"three green triangles and square"}
    assert _all(LEFT, {"digits"}) == {"1 large red circle left of 1 square"}
    assert _all(GROUPS, {"digits"}) == {"3 green triangles and 1 square"}
    assert _all(LEFT, {"lead"}) == {f"{lead} a large red circle left of a square" for lead in LEADS}
    # The clause holds the plain attributes of the only mention that has any.
    assert _all(LEFT, {"clauses"}) == {f"a circle {verb} large and red left of a square" for verb in ("that is", "which is")}
    # Word order only: the adjectives, the relation turned round, or both.
    reordered = _all(LEFT, {"reordered"})
    assert reordered == {"a red large circle left of a square", "left of a square is a large red circle",
                         "left of a square is a red large circle"}
    # Synonyms: at least one of size, colour, relation replaced, each by one of its synonyms.
    synonyms = _all(LEFT, {"synonyms"}, n=400)
    expected = {f"a {size} {color} circle {rel} a square"
                for size in ("large", *SYNONYMS["large"]) for color in ("red", *SYNONYMS["red"])
                for rel in ("left of", *SYNONYMS["left of"])} - {"a large red circle left of a square"}
    assert synonyms == expected
    assert _all(GROUPS, {"synonyms"}, n=400) == {
        f"{a} {color} triangles and {b} square"
        for a in ("three", "a trio of") for color in ("green", "emerald") for b in ("one", "a single")
    } - {"three green triangles and one square"}


def test_features_that_cannot_apply_raise():
    rng = np.random.default_rng(0)
    with pytest.raises(NotApplicable):
        realise(AS_MANY, frozenset({"digits"}), rng)  # the count is a riddle
    with pytest.raises(NotApplicable):
        realise(Content((SQUARE, Mention(ObjectSpec(shape="circle")))), frozenset({"clauses"}), rng)  # no attributes
    with pytest.raises(NotApplicable):
        realise(GROUPS, frozenset({"reordered"}), rng)  # one adjective each, no relation
    with pytest.raises(NotApplicable):
        realise(AS_MANY, frozenset({"terse"}), rng)


def test_synonyms_name_exactly_their_value():
    canonical = {*COLORS, *SIZES, *TEXTURES}
    for value, options in SYNONYMS.items():
        assert value in canonical or value in RELATIONS
        for word in options:
            assert word not in canonical and word not in RELATIONS, word
    # One word never stands for two values.
    owners = {}
    for value, options in SYNONYMS.items():
        for word in options:
            assert owners.setdefault(word, value) == value
    assert set(COUNT_SYNONYMS) == {1, 2, 3, 4}
    assert riddle_paraphrase(next(r for r in RIDDLES if r.phrase == "the color of grass")) == "colored like grass"
    assert riddle_paraphrase(next(r for r in RIDDLES if r.phrase == "with no corners")) == "without corners"
    assert riddle_paraphrase(next(r for r in RIDDLES if r.phrase == "a dog has legs")) is None


def test_family_roles():
    assert PRETRAIN_FAMILIES == ("plain", "terse")
    assert set(TRAIN_FAMILIES) == {"plain", "terse", "imperative", "digits", "synonyms", "clauses"}
    assert {f for f in ALL_FAMILIES if FAMILIES[f].role == "heldout"} == {"reordered", "mixed"}
    with pytest.raises(ValueError, match="unknown features"):
        Family("x", "rl", frozenset({"shouting"}))
    with pytest.raises(ValueError, match="role"):
        Family("x", "test")


def test_heldout_families_use_only_words_of_the_training_families():
    """Unseen families are unseen wordings (order, composition), never unseen words."""
    rng = np.random.default_rng(5)
    seen = set()
    for fam in TRAIN_FAMILIES:
        for category in CATEGORIES:
            for _ in range(60):
                seen.update(words(sample_prompt(category, rng, phrasing=fam).text))
    for fam in ("reordered", "mixed"):
        for category in CATEGORIES:
            if not FAMILIES[fam].covers(category):
                continue
            for _ in range(60):
                text = sample_prompt(category, rng, phrasing=fam).text
                assert set(words(text)) <= seen, (fam, text)


def test_rl_family_words_are_new_to_pretraining():
    """Every RL family brings words that the pretraining families never use (the semantic level's room)."""
    rng = np.random.default_rng(6)
    pretrain_words = set()
    for fam in PRETRAIN_FAMILIES:
        for category in CATEGORIES:
            for _ in range(80):
                pretrain_words.update(words(sample_prompt(category, rng, phrasing=fam).text))
    for fam in ("imperative", "digits", "synonyms", "clauses"):
        new = set()
        for category in CATEGORIES:
            for _ in range(30):
                new |= set(words(sample_prompt(category, rng, phrasing=fam).text)) - pretrain_words
        assert new, fam
    assert {"1", "2", "3", "4"} <= set().union(*(set(words(sample_prompt("numeracy", rng, phrasing="digits").text))
                                                 for _ in range(60)))


def test_mixed_family_draws_two_or_three_features():
    rng = np.random.default_rng(7)
    counts = [len(FAMILIES["mixed"].draw_features(rng)) for _ in range(200)]
    assert set(counts) == {2, 3}
    text = sample_prompt("numeracy", np.random.default_rng(1), phrasing="mixed").text
    assert re.fullmatch(r"[a-z0-9 ,]+", text)

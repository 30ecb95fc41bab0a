"""ShapeWorld's surface language: how a prompt's content is worded, in phrasing families.

A prompt's meaning (``Content``: who is mentioned with which attributes or riddles, one relation or a
count riddle) is drawn by ``grammar``; this module words it. The same content has one *canonical*
wording (the ``plain`` family, deterministic) and many others.

Choices:
1. A family is a set of phrasing *features*, each a rule that changes the words but not the meaning:
   ``lead`` (an imperative verb or "an image of" in front), ``terse`` (no article before a single
   object), ``digits`` ("3" for "three", "1" for "a"), ``synonyms`` (in-world synonyms of colours,
   sizes, fills, relations and counts: "crimson", "big", "outlined", "beneath", "a pair of"; riddle
   paraphrases: "colored like grass"), ``clauses`` (attributes in a relative clause after the noun:
   "a circle that is large and red") and ``reordered`` (word order only: "a red large circle", "left
   of a square is a circle").
2. Families have a role. ``pretrain`` families (``plain``, ``terse``) are all that pretraining sees.
   ``rl`` families (``imperative``, ``digits``, ``synonyms``, ``clauses``) join them in RL training:
   their words are new to the pretrained model, and reading them into a right plan is the semantic
   level's job. ``heldout`` families are seen by neither: ``reordered`` (no new word, only new word
   order) and ``mixed`` (two or three RL features in one prompt). Every word of a held-out family
   occurs in some training family, so the held-out families test composition, not unknown words.
3. A family's features must all change the wording; content where one cannot (``digits`` on "as many
   squares as a car has wheels", ``reordered`` on a numeracy prompt) is redrawn by the sampler, and a
   family that can never apply to a category (``reordered`` x numeracy) is skipped there
   (``Family.covers``).
4. Words outside the vocabulary are the tokenizer's ``<unk>``: any text can be tokenised, and
   ``t2i-r1 generate`` on the ShapeWorld model draws something for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from t2i_r1.shapeworld.world import COLORS, REGIONS, RELATIONS, SHAPE_PLURALS, SHAPES, SIZES, TEXTURES

if TYPE_CHECKING:
    from t2i_r1.shapeworld.grammar import ObjectSpec

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")
PLAIN_FIELDS: tuple[str, ...] = ("size", "texture", "color")
"""Attribute words in front of the noun, in the canonical order."""


# ---------------------------------------------------------------------------------------------
# Riddles: phrase -> the value it names. Shape riddles follow "shape"/"shapes"; colour, texture and
# size riddles follow the noun; count riddles follow "as many <things> as".


@dataclass(frozen=True)
class Riddle:
    field: str
    value: str | int
    phrase: str


RIDDLES: tuple[Riddle, ...] = (
    Riddle("shape", "circle", "with no corners"),
    Riddle("shape", "circle", "like a wheel"),
    Riddle("shape", "triangle", "with three corners"),
    Riddle("shape", "triangle", "like a pyramid"),
    Riddle("shape", "square", "with four corners"),
    Riddle("shape", "square", "like a chessboard"),
    Riddle("color", "red", "the color of a ripe tomato"),
    Riddle("color", "red", "the color of a fire truck"),
    Riddle("color", "green", "the color of grass"),
    Riddle("color", "green", "the color of a frog"),
    Riddle("color", "green", "the color of blue mixed with yellow"),
    Riddle("color", "blue", "the color of a clear sky"),
    Riddle("color", "blue", "the color of a blueberry"),
    Riddle("color", "yellow", "the color of a banana"),
    Riddle("color", "yellow", "the color of a lemon"),
    Riddle("color", "purple", "the color of an eggplant"),
    Riddle("color", "purple", "the color of red mixed with blue"),
    Riddle("color", "orange", "the color of a carrot"),
    Riddle("color", "orange", "the color of a pumpkin"),
    Riddle("color", "orange", "the color of red mixed with yellow"),
    Riddle("color", "white", "the color of snow"),
    Riddle("color", "white", "the color of milk"),
    Riddle("texture", "striped", "patterned like a zebra"),
    Riddle("texture", "striped", "patterned like a tiger"),
    Riddle("texture", "hollow", "empty like a frame"),
    Riddle("texture", "solid", "filled like a coin"),
    Riddle("size", "large", "as big as an elephant"),
    Riddle("size", "small", "as tiny as an ant"),
    Riddle("count", 1, "a unicycle has wheels"),
    Riddle("count", 2, "a bicycle has wheels"),
    Riddle("count", 2, "a bird has wings"),
    Riddle("count", 2, "one plus one"),
    Riddle("count", 3, "a tricycle has wheels"),
    Riddle("count", 3, "a triangle has corners"),
    Riddle("count", 3, "one plus two"),
    Riddle("count", 4, "a car has wheels"),
    Riddle("count", 4, "a dog has legs"),
    Riddle("count", 4, "a square has corners"),
    Riddle("count", 4, "two plus two"),
)
RIDDLE_ANSWERS: dict[str, Riddle] = {r.phrase: r for r in RIDDLES}


def riddles_for(field_name: str) -> tuple[Riddle, ...]:
    return tuple(r for r in RIDDLES if r.field == field_name)


def riddle_paraphrase(riddle: Riddle) -> str | None:
    """The ``synonyms`` family's wording of a riddle, or None where it has none."""
    p = riddle.phrase
    if p.startswith("the color of "):
        return "colored like " + p[len("the color of ") :]
    if p.startswith("like "):
        return "shaped " + p
    if p.startswith("with no "):
        return "without " + p[len("with no ") :]
    return None


# ---------------------------------------------------------------------------------------------
# In-world synonyms (``synonyms`` feature). Each names exactly the value it replaces.

SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("crimson",), "green": ("emerald",), "blue": ("azure",), "yellow": ("golden",),
    "purple": ("violet",), "orange": ("amber",), "white": ("ivory",),
    "large": ("big", "huge"), "small": ("tiny", "little"),
    "solid": ("filled",), "hollow": ("outlined", "empty"), "striped": ("stripy",),
    "left of": ("to the left of", "on the left side of"), "right of": ("to the right of", "on the right side of"),
    "above": ("on top of", "over"), "below": ("beneath", "under"),
}  # fmt: skip
COUNT_SYNONYMS: dict[int, str] = {1: "a single", 2: "a pair of", 3: "a trio of", 4: "a quartet of"}
LEADS: tuple[str, ...] = ("draw", "paint", "show", "make", "create", "an image of", "a picture of")


# ---------------------------------------------------------------------------------------------
# Families


FEATURES: tuple[str, ...] = ("lead", "terse", "digits", "synonyms", "clauses", "reordered")
RL_FEATURES: tuple[str, ...] = ("lead", "digits", "synonyms", "clauses")
ROLES: tuple[str, ...] = ("pretrain", "rl", "heldout")


@dataclass(frozen=True)
class Family:
    """A phrasing family: fixed ``features``, plus ``draw`` more from ``pool`` per prompt."""

    name: str
    role: str
    features: frozenset[str] = frozenset()
    pool: tuple[str, ...] = ()
    draw: tuple[int, int] = (0, 0)
    """Least and most features drawn from ``pool`` for each prompt."""
    doc: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"Family.role must be one of {ROLES}, got {self.role!r}")
        unknown = (set(self.features) | set(self.pool)) - set(FEATURES)
        if unknown:
            raise ValueError(f"Family {self.name!r}: unknown features {sorted(unknown)}; known: {FEATURES}")

    def draw_features(self, rng: np.random.Generator) -> frozenset[str]:
        if not self.pool:
            return self.features
        k = int(rng.integers(self.draw[0], self.draw[1] + 1))
        return self.features | {self.pool[i] for i in rng.permutation(len(self.pool))[:k]}

    def covers(self, category: str) -> bool:
        """Whether the family can word prompts of ``category`` (word order is fixed in numeracy)."""
        return not ("reordered" in self.features and category == "numeracy")


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("plain", "pretrain", doc="the canonical wording: 'a large red circle left of a square'"),
        Family("terse", "pretrain", frozenset({"terse"}), doc="no article for single objects: 'large red circle and square'"),
        Family("imperative", "rl", frozenset({"lead"}), doc="a verb or 'an image of' in front: 'draw a red circle ...'"),
        Family("digits", "rl", frozenset({"digits"}), doc="digits for counts: '3 green triangles and 1 red square'"),
        Family("synonyms", "rl", frozenset({"synonyms"}),
               doc="in-world synonyms and riddle paraphrases: 'a crimson circle beneath a big square'"),
        Family("clauses", "rl", frozenset({"clauses"}), doc="attributes in a relative clause: 'a circle that is red'"),
        Family("reordered", "heldout", frozenset({"reordered"}),
               doc="word order only: 'a red large circle', 'left of a square is a circle'"),
        Family("mixed", "heldout", pool=RL_FEATURES, draw=(2, 3), doc="two or three RL features at once"),
    )
}
PRETRAIN_FAMILIES: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.role == "pretrain")
RL_FAMILIES: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.role == "rl")
TRAIN_FAMILIES: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.role in ("pretrain", "rl"))
ALL_FAMILIES: tuple[str, ...] = tuple(FAMILIES)


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown phrasing family {name!r}; known: {list(FAMILIES)}") from None


# ---------------------------------------------------------------------------------------------
# Content: what a prompt says, before wording


@dataclass(frozen=True)
class Mention:
    """How one spec is named: which fields are said plainly, which through a riddle. ``counted``:
    its count is always said ("one red square" in numeracy); otherwise a single object gets "a"."""

    spec: ObjectSpec
    riddles: Mapping[str, Riddle] = field(default_factory=dict)
    counted: bool = False

    def plain_fields(self) -> list[str]:
        return [f for f in PLAIN_FIELDS if getattr(self.spec, f) and f not in self.riddles]


@dataclass(frozen=True)
class Content:
    """A list of mentions ("x, y and z"), two mentions and a relation ("x left of y"), or one mention
    and a count riddle ("as many x as a car has wheels")."""

    mentions: tuple[Mention, ...]
    relation: str | None = None
    count_riddle: Riddle | None = None


# ---------------------------------------------------------------------------------------------
# Wording


def article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def join_list(items: Sequence[str]) -> str:
    """"x", "x and y", "x, y and z"."""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def words(text: str) -> list[str]:
    """Word-level tokens: lower-case words, digits and the punctuation "," and ";"."""
    return re.findall(r"[a-z]+|[0-9]+|[,;]", text.lower())


class NotApplicable(Exception):
    """A feature of the family cannot change the wording of this content."""


@dataclass
class _Choices:
    """The random decisions of one wording, drawn before any text is written."""

    synonym_slots: set[tuple] = field(default_factory=set)
    clause_mentions: set[int] = field(default_factory=set)
    reordered_mentions: dict[int, list[str]] = field(default_factory=dict)
    invert_relation: bool = False
    lead: str | None = None


def _nonempty_subset(rng: np.random.Generator, items: Sequence[Any], p: float) -> set:
    """Each item with probability ``p``, at least one."""
    chosen = {x for x in items if rng.random() < p}
    return chosen or {items[int(rng.integers(len(items)))]}


def _synonym_slots(content: Content) -> list[tuple]:
    slots: list[tuple] = []
    for i, m in enumerate(content.mentions):
        slots += [("attr", i, f) for f in m.plain_fields()]
        if content.count_riddle is None and (m.spec.count > 1 or m.counted):  # a count riddle's mention is bare
            slots.append(("count", i))
        slots += [("riddle", i, f) for f, r in m.riddles.items() if riddle_paraphrase(r)]
    if content.relation:
        slots.append(("relation",))
    return slots


def _choose(content: Content, features: frozenset[str], rng: np.random.Generator) -> _Choices:
    choices = _Choices()
    mentions = content.mentions
    if "synonyms" in features:
        slots = _synonym_slots(content)
        if not slots:
            raise NotApplicable("synonyms")
        choices.synonym_slots = _nonempty_subset(rng, slots, 0.6)
    if "clauses" in features:
        eligible = [i for i, m in enumerate(mentions) if m.plain_fields()]
        if not eligible:
            raise NotApplicable("clauses")
        choices.clause_mentions = _nonempty_subset(rng, eligible, 0.7)
    if "reordered" in features:
        eligible = [i for i, m in enumerate(mentions) if len(m.plain_fields()) >= 2 and i not in choices.clause_mentions]
        options: list[Any] = [("mention", i) for i in eligible] + ([("relation",)] if content.relation else [])
        if not options:
            raise NotApplicable("reordered")
        for option in _nonempty_subset(rng, options, 0.6):
            if option[0] == "relation":
                choices.invert_relation = True
            else:
                canonical = mentions[option[1]].plain_fields()
                while (order := [canonical[j] for j in rng.permutation(len(canonical))]) == canonical:
                    pass
                choices.reordered_mentions[option[1]] = order
    if "lead" in features:
        choices.lead = LEADS[int(rng.integers(len(LEADS)))]
    # terse drops the article (or the counted "one") of single objects; digits writes every other count.
    says_count = content.count_riddle is None
    if "terse" in features and not (says_count and any(m.spec.count == 1 for m in mentions)):
        raise NotApplicable("terse")
    numbered = [m for m in mentions if m.spec.count > 1 or m.counted or "terse" not in features]
    if "digits" in features and not (says_count and numbered):
        raise NotApplicable("digits")
    return choices


def _pick_word(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _noun_phrase(
    content: Content, i: int, features: frozenset[str], choices: _Choices, rng: np.random.Generator, bare: bool = False
) -> str:
    """Mention ``i`` worded; ``bare`` for "as many <x> as ..." (plural, no determiner)."""
    m = content.mentions[i]
    s = m.spec
    plural = s.count > 1 or bare

    def value(f: str) -> str:
        v = getattr(s, f)
        return _pick_word(rng, SYNONYMS[v]) if ("attr", i, f) in choices.synonym_slots else v

    attrs = [value(f) for f in choices.reordered_mentions.get(i, m.plain_fields())]
    if "shape" in m.riddles:
        head = ("shapes " if plural else "shape ") + m.riddles["shape"].phrase
        if ("riddle", i, "shape") in choices.synonym_slots:
            head = ("shapes " if plural else "shape ") + riddle_paraphrase(m.riddles["shape"])
    else:
        head = SHAPE_PLURALS[s.shape] if plural else s.shape
    posts = []
    for f in ("color", "texture", "size"):
        if f in m.riddles:
            r = m.riddles[f]
            posts.append(riddle_paraphrase(r) if ("riddle", i, f) in choices.synonym_slots else r.phrase)
    if i in choices.clause_mentions:
        verb = _pick_word(rng, ("that are", "which are") if plural else ("that is", "which is"))
        body = " ".join([head, *posts, verb, join_list(attrs)])
    else:
        body = " ".join([*attrs, head, *posts])
    if bare:
        return body
    if s.count > 1 or m.counted:
        if ("count", i) in choices.synonym_slots:
            det = COUNT_SYNONYMS[s.count]
        elif "digits" in features:
            det = str(s.count)
        elif s.count == 1 and "terse" in features:
            return body
        else:
            det = NUMBER_WORDS[s.count]
        return f"{det} {body}"
    if "terse" in features:
        return body
    if "digits" in features:
        return f"1 {body}"
    return f"{article(body)} {body}"


def realise(content: Content, features: frozenset[str], rng: np.random.Generator) -> str:
    """The content worded with ``features`` (random choices from ``rng``); raises ``NotApplicable``
    when a feature could not change the wording. With no features the wording is canonical and
    draws nothing from ``rng``."""
    choices = _choose(content, features, rng)
    if content.count_riddle is not None:
        riddle = content.count_riddle
        text = f"as many {_noun_phrase(content, 0, features, choices, rng, bare=True)} as {riddle.phrase}"
    elif content.relation is not None:
        a = _noun_phrase(content, 0, features, choices, rng)
        b = _noun_phrase(content, 1, features, choices, rng)
        rel = _pick_word(rng, SYNONYMS[content.relation]) if ("relation",) in choices.synonym_slots else content.relation
        text = f"{rel} {b} is {a}" if choices.invert_relation else f"{a} {rel} {b}"
    else:
        text = join_list([_noun_phrase(content, i, features, choices, rng) for i in range(len(content.mentions))])
    if choices.lead:
        text = f"{choices.lead} {text}"
    return text


def canonical_text(content: Content) -> str:
    """The ``plain`` wording: one text per content, which splits and ground truth are keyed by."""
    return realise(content, frozenset(), np.random.default_rng(0))


def vocabulary() -> list[str]:
    """Every word (and punctuation token) that any family's prompts and the plans use, sorted."""
    vocab: set[str] = {",", ";", "a", "an", "and", "as", "many", "at", "shape", "shapes", "is", "are", "that", "which"}
    vocab.update(NUMBER_WORDS[1:], (str(c) for c in range(1, len(NUMBER_WORDS))))
    vocab.update(SHAPES, SHAPE_PLURALS.values(), COLORS, TEXTURES, SIZES)
    for phrase in (*RELATIONS, *REGIONS, *LEADS, *COUNT_SYNONYMS.values()):
        vocab.update(words(phrase))
    for options in SYNONYMS.values():
        for phrase in options:
            vocab.update(words(phrase))
    for r in RIDDLES:
        vocab.update(words(r.phrase))
        vocab.update(words(riddle_paraphrase(r) or ""))
    return sorted(vocab)

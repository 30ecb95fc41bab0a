"""Reference-schema metadata for plain prompts.

The detector and VQA rewards need, per prompt, the reference T2I-R1 schema: ``task_type``, ``nouns``,
``attr_nouns``, ``spatial_info`` ({obj1, obj2, locality}) and ``numeracy_info`` ([{obj_name, num}]).
The reference ships them for its 7,222 training prompts only (written by hand or by a language model);
``parse_prompt`` derives them from a plain prompt in the styles of T2I-CompBench and GenEval
("a photo of two clocks", "a bowl on the left of a man", "a green tomato and a red pepper",
"three cups, two candles and one rabbit", free sentences).

How it works (no tagger, no downloads: word lists and a few rules, so it is fast and predictable):
1. Lower-case, drop a leading "a photo of" / "an image of" / "a picture of", split into words and
   punctuation; find the first relation phrase (longest first: "on the left of" before "left of").
2. Cut the words into noun phrases: a phrase starts at a determiner or a count ("a", "the", "two",
   "his"...) and ends at punctuation, a conjunction, a preposition, the relation, the next determiner
   or a verb. Verbs come from a list of common verbs and their forms, "-ing"/"-ed" words (except right
   after a determiner or adjectives: "a sleeping cat", "the striped rug") and position ("The fluffy
   clouds pass by": a word after a plural noun; "the eraser corrects the mistakes": a word before a
   determiner). Its head is its last word, or a known two-word name ("tv remote", "teddy bear");
   a phrase ending in an adjective ("was blue", "a black and white cat") or naming a place or an
   abstraction ("the front", "a symbol") has none.
3. Heads are made singular with rules plus lists of irregular plurals ("mice", "people", "knives"),
   nouns without a singular ("scissors", "pliers") and GenEval's doubled plurals ("skises" -> "skis").
4. Fields, following the annotation conventions of the reference data:
   - ``spatial_info`` (spatial and complex prompts): the relation with a headed phrase on each side;
     obj1 = head of the nearest phrase before it, obj2 = head of the first phrase after it, as written
     (the annotations keep "shoes" plural there). Accepted relations: ``SPATIAL_PHRASES``. Relations in
     depth ("in front of", "behind") are not parsed: the detector scores 2-D relations only.
   - ``numeracy_info`` (numeracy prompts): every phrase with a count word or digit, and "a"/"an" = 1
     before the first verb ("three guitars played a soothing melody" counts the guitars only).
   - ``attr_nouns`` (colour, shape and texture prompts): each phrase holding an adjective of the
     prompt's kind, from that adjective to the singular head, through "of" after a partitive head
     ("a black piece of paper" -> "black piece of paper").
   - ``nouns``: numeracy -> the counted objects; spatial info present -> [obj1, obj2]; otherwise the
     distinct singular heads of all phrases.
5. ``task_type``, when not given (for benchmark files it is known: pass it), is inferred in order:
   a count word -> numeracy; a relation in a verbless phrase list -> spatial; a verbless list of
   phrases -> the attribute kind most phrases carry (colour, texture, shape), else object; a sentence
   with one kind of T2I-CompBench attribute word used twice -> that kind (a colour sentence opening
   with "The" -> complex, the style of T2I-CompBench's complex set); other attribute words or a
   "The ..." sentence that is not "is ...ing" -> complex; otherwise non (T2I-CompBench's
   "non-spatial").

How well the parser agrees with annotated prompts is measured by ``benchmarks/metadata_agreement.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

TASK_TYPES = ("object", "color", "shape", "texture", "spatial", "numeracy", "complex", "non")
ATTRIBUTE_TASKS = ("color", "shape", "texture")

# ---------------------------------------------------------------------------------------------------
# Word lists. Written for T2I-CompBench and GenEval prompts; extend them rather than adding rules.
# ---------------------------------------------------------------------------------------------------
COLORS = frozenset(
    "red orange yellow green blue purple pink brown black white gray grey gold golden silver beige violet "
    "indigo turquoise cyan magenta maroon navy teal tan cream ivory crimson scarlet lavender khaki bronze "
    "copper olive amber emerald lime aqua burgundy".split()
)
# The shape and texture words of T2I-CompBench's prompts; they alone mark a prompt's category.
SHAPE_MARKERS = frozenset(
    "round square rectangular triangular oval circular cubic cylindrical spherical conical pyramidal "
    "pentagonal hexagonal octagonal teardrop crescent diamond oblong heart-shaped star-shaped".split()
)
SIZE_WORDS = frozenset("tall short long big small large tiny huge wide narrow thick thin".split())
SHAPES = SHAPE_MARKERS | SIZE_WORDS | {"flat", "curved"}
TEXTURE_MARKERS = frozenset("wooden metallic plastic glass fabric leather rubber fluffy".split())
TEXTURES = TEXTURE_MARKERS | frozenset(
    "wood metal soft hard smooth rough furry silky silk velvet woolen wool woollen cotton stone ceramic "
    "marble concrete brick denim fuzzy bumpy spiky shiny glossy matte porcelain iron steel crystal "
    "knitted leather-bound".split()
)
ATTRIBUTE_WORDS = {"color": COLORS, "shape": SHAPES, "texture": TEXTURES}
_ALL_ATTRIBUTES = COLORS | SHAPES | TEXTURES
# Attribute words that also name things ("a glass", "an orange", "the square"): they can head a phrase.
_NOUN_LIKE_ATTRIBUTES = frozenset(
    "glass stone metal wood brick marble silk cotton wool diamond crescent teardrop square iron steel "
    "crystal rubber leather plastic fabric velvet denim concrete porcelain ceramic gold silver orange "
    "cream lime copper bronze amber emerald olive ivory navy teal tan".split()
)
KIND_MARKERS = {"color": COLORS, "shape": SHAPE_MARKERS, "texture": TEXTURE_MARKERS}
# Adjectives that never head a phrase (beyond the attribute lists above).
ADJECTIVES = frozenset(
    "colorful colourful vibrant bright dark old new young little beautiful cozy warm cold cool hot "
    "fresh sweet delicious crispy crisp juicy ripe sharp gentle calm quiet loud busy empty full deep "
    "pretty ugly happy sad angry cute lovely elegant fancy modern ancient vintage rustic dry wet clean "
    "dirty heavy sleek gleaming striped spotted polka-dotted sturdy delicate fragile shallow steep "
    "fragrant savory bland spicy sour bitter salty creamy crunchy sticky slimy damp rusty dusty mossy "
    "gnarled rugged jagged prickly tender fluffy puffy billowy serene peaceful majestic lush tranquil "
    "rich earthy pungent gentle soothing vast open dense thick misty foggy sunny cloudy rainy snowy "
    "stormy icy frozen golden intricate ornate plain simple tiny enormous giant miniature massive "
    "several many few some every each other another same own whole entire various single double "
    "favorite favourite first second third last next main perfect great good bad best".split()
)
DETERMINERS = frozenset(
    "a an the this that these those his her its their our my your some many several few each every "
    "another any no all both".split()
)
NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12,
}  # fmt: skip
CONJUNCTIONS = frozenset("and or but while as yet so then that which who whom whose where when because if".split())
PREPOSITIONS = frozenset(
    "of in on at with by for from to into onto under over above below near behind beside besides between "
    "through across around against along among inside outside upon within without toward towards after "
    "before during like off up down out past beneath underneath beyond via amid amidst throughout".split()
)
PRONOUNS = frozenset(
    "i you he she it we they me him us them myself yourself himself herself itself ourselves themselves "
    "everything something nothing anything everyone someone there here what away together again also very "
    "too just still even almost".split()
)
AUXILIARIES = frozenset(
    "is are was were be been being am has have had do does did can could will would shall should may "
    "might must not isn't aren't wasn't weren't".split()
)
# Common verbs of the prompt styles; inflections are generated by ``_verb_forms``.
_VERB_BASES = (
    "sit stand lie lay rest hang hold look play run walk fly float swim sleep eat drink read write wear "
    "carry ride jump sing dance wait lean bloom glisten shine gleam glow sparkle roll bounce fill "
    "contrast stretch rise fall grow sway rustle drift soar cast crash splash loom perch graze gather "
    "chat decorate provide serve add adorn protect keep make take give put bring catch throw kick hit "
    "cook bake paint draw build climb cross chase feed hug smile laugh cry talk speak listen enjoy love "
    "like want need seem appear become remain stay dream shake melt soothe lather lit illuminate reflect "
    "feel smell taste sound crawl slither hop leap dive glide zoom drive sail surf skate hike explore "
    "wander admire gaze stare observe examine study learn teach practice prepare mix pour stir chop "
    "spread hide cling dangle hover wrap fold pack arrange hung sat stood lain held flew grew rose fell "
    "shone swam ran ate wore rode sang drank stuck caught brought took gave made kept led met sent told "
    "thought won hid bit built struck swung sprang clung wove spun slid shook bent dug fed meet greet "
    "clap cheer shout scream whisper cuddle snuggle nestle huddle lounge relax tumble crunch ripple "
    "flutter twinkle shimmer glitter dazzle radiate cradle overlook surround sip savor savour "
    "invigorate rattle clatter blossom simmer clink fasten roam support tighten pass clean creak "
    "await warm secure style hold brighten go complement accentuate enhance"
).split()


def _verb_forms(base: str) -> set[str]:
    forms = {base, base + "s", base + "es", base + "ed", base + "d", base + "ing"}
    if base.endswith("e"):
        forms |= {base[:-1] + "ing", base + "d"}
    if base.endswith("y") and len(base) > 2 and base[-2] not in "aeiou":
        forms |= {base[:-1] + "ies", base[:-1] + "ied"}
    if re.fullmatch(r"[^aeiou]*[aeiou][bdgklmnprt]", base):  # sit -> sitting, stop -> stopped
        forms |= {base + base[-1] + "ing", base + base[-1] + "ed"}
    return forms


# Words that look like verbs but name things in these prompts ("a painting", "a swing", "a bed").
_NOUN_EXCEPTIONS = frozenset(
    "painting paintings building buildings ring rings king ceiling clothing string wing wings thing "
    "things pudding evening morning earring earrings swing spring icing stuffing sibling duckling seedling "
    "dumpling wedding frosting railing awning bedding stocking stockings sling sting bed shed sled seed "
    "weed reed feed bread thread head red sunset feeling offering landing lightning drawing "
    "family butterfly fly lily belly jelly holly rally ally bully dragonfly firefly".split()
)
# Irregular past forms: verbs even right after adjectives ("the tall man held...").
_PAST_FORMS = frozenset(
    "hung sat stood lain held flew grew shone swam ran ate wore rode sang drank stuck caught brought "
    "took gave made kept met sent told thought hid built struck swung sprang clung wove spun slid shook "
    "bent dug tied wrote set spoke broke chose drove froze sold sought taught threw understood woke "
    "burst hurt let shut split sank sprang stung swept wept crept slept dealt meant leapt knelt dwelt "
    "lent spent bought fought laid paid said fled bled sped spat began rang flung strung tore swore "
    "stole strove forgave came became overcame beheld found knew drew blew lost went gone".split()
)
VERBS = frozenset(form for base in _VERB_BASES for form in _verb_forms(base)) - _NOUN_EXCEPTIONS | _PAST_FORMS

# Two-word object names that stay whole (COCO / GenEval class names and a few common ones).
COMPOUND_NOUNS = frozenset(
    {
        "traffic light", "fire hydrant", "stop sign", "parking meter", "sports ball", "baseball bat",
        "baseball glove", "tennis racket", "wine glass", "hot dog", "potted plant", "dining table",
        "computer mouse", "tv remote", "computer keyboard", "cell phone", "teddy bear", "hair drier",
        "hair dryer", "ice cream", "picture frame", "oven mitt", "piggy bank", "rubber duck",
        "umbrella stand", "watering can", "living room", "hot air balloon", "air balloon",
    }
)  # fmt: skip
# Nouns that name a place or a manner rather than something to detect ("in front of", "the view").
NOT_OBJECTS = frozenset(
    "front back bottom side middle center centre view left right distance background foreground "
    "lot kind type sort variety way time day moment sight touch addition "
    # abstract nouns of T2I-CompBench's complex sentences: nothing a detector could find
    "scent aroma smell taste sound texture feel feeling sense symbol symphony display feast beauty "
    "nature invitation challenge expanse workspace resilience environment affection love grandeur "
    "opulence artistry skill movement movements whimsy reminder testament harmony contrast detail "
    "elegance sophistication comfort warmth charm character tranquility serenity joy delight peace "
    "power strength energy spirit life mood essence glimpse hint splash burst array variety mix blend "
    "combination sensation experience memory memories indulgence celebration tribute masterpiece "
    "marvel wonder flavor flavour flavors flavours color colors colour colours hue hues precision".split()
)
# Head nouns whose "of" complement belongs to the phrase ("a slice of watermelon").
PARTITIVES = frozenset("piece pieces slice slices cup bowl glass pair bunch bouquet group stack pile".split())

_IRREGULAR_PLURALS = {
    "men": "man", "women": "woman", "children": "child", "people": "person", "persons": "person",
    "mice": "mouse", "geese": "goose", "feet": "foot", "teeth": "tooth", "knives": "knife",
    "wives": "wife", "leaves": "leaf", "wolves": "wolf", "shelves": "shelf", "loaves": "loaf",
    "halves": "half", "calves": "calf", "scarves": "scarf", "thieves": "thief", "lives": "life",
    "elves": "elf", "dice": "dice", "oxen": "ox", "cacti": "cactus", "fungi": "fungus",
    "sheeps": "sheep", "tvs": "tv", "broccolis": "broccoli", "thermoses": "thermos", "fishes": "fish",
    "deers": "deer", "dices": "dice", "shoes": "shoe", "toes": "toe", "canoes": "canoe", "buses": "bus",
    "cookies": "cookie", "movies": "movie", "brownies": "brownie", "hoodies": "hoodie", "pies": "pie",
    "ties": "tie", "zombies": "zombie", "smoothies": "smoothie", "selfies": "selfie", "lies": "lie",
}  # fmt: skip
# Nouns whose plural form is the name of one thing (or that do not change).
INVARIANT_NOUNS = frozenset(
    "sheep deer fish scissors pliers tongs tweezers sunglasses headphones earphones binoculars goggles "
    "pants jeans shorts trousers skis clothes species series news physics mathematics "
    "bus gas lens canvas cactus octopus walrus platypus hippopotamus virus bonus iris tennis chess "
    "grass glass dress class mass moss boss cross compass mattress actress princess fortress "
    "rhinoceros christmas".split()
)
# Plural names of paired things that GenEval pluralises once more ("bootses" -> "boots").
_PAIR_PLURALS = frozenset("gloves boots sandals earrings socks slippers mittens crutches shoes chopsticks".split())
_F_STEMS = frozenset("leaf wolf shelf loaf half calf scarf thief elf".split())


def singular(word: str) -> str:
    """Best-effort singular of an English noun ("peaches" -> "peach", "skises" -> "skis")."""
    if word in INVARIANT_NOUNS:
        return word
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    # GenEval's doubled plurals of names that are already plural: "plierses" -> "pliers".
    if word.endswith("es") and (word[:-2] in INVARIANT_NOUNS or word[:-2] in _PAIR_PLURALS):
        return word[:-2]
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("ves") and word[:-3] + "f" in _F_STEMS:
        return word[:-3] + "f"
    if word.endswith(("sses", "ches", "shes", "xes", "zzes", "oes")):
        return word[:-2]
    return word[:-1]


# ---------------------------------------------------------------------------------------------------
# Chunking
# ---------------------------------------------------------------------------------------------------
_PREFIX = re.compile(r"^(?:a|an)\s+(?:photo|image|picture|photograph)\s+of\s+")
_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[,.;:!?()\"]")

# Relation phrases, longest first so "on the left of" wins over "left of".
SPATIAL_PHRASES = (
    "on the left of", "on the right of", "to the left of", "to the right of", "on the top of",
    "on the bottom of", "on the side of", "on side of", "on top of", "left of", "right of",
    "next to", "underneath", "beneath", "above", "below", "under", "near",
)  # fmt: skip


@dataclass
class Phrase:
    """One noun phrase: its words (determiner excluded), its count if it has one, its position."""

    words: list[str]
    start: int  # index of its first token (the determiner when there is one)
    end: int  # index one past its last word
    determiner: str | None = None
    count: int | None = None
    follows_of: bool = False  # the word before it is "of"
    open: bool = True  # only modifiers so far ("the sleeping", "a striped"), so a participle still modifies

    @property
    def head(self) -> str | None:
        if not self.words:
            return None
        last = self.words[-1]
        if len(self.words) >= 3 and " ".join(self.words[-3:-1] + [singular(last)]) in COMPOUND_NOUNS:
            return " ".join(self.words[-3:])
        if len(self.words) >= 2 and f"{self.words[-2]} {singular(last)}" in COMPOUND_NOUNS:
            return f"{self.words[-2]} {last}"
        if last in ADJECTIVES:
            return None
        if last in _ALL_ATTRIBUTES and last not in _NOUN_LIKE_ATTRIBUTES:
            return None  # "was blue", "a black and white cat": an adjective, not an object
        if last in NOT_OBJECTS:
            return None
        return last

    @property
    def singular_head(self) -> str | None:
        head = self.head
        if head is None:
            return None
        *front, last = head.split(" ")
        return " ".join([*front, singular(last)])


def tokenize(prompt: str) -> list[str]:
    text = prompt.lower().strip()
    text = _PREFIX.sub("", text)
    return _TOKEN.findall(text)


def _is_verb(word: str, in_open_phrase: bool) -> bool:
    """Verb-like word that ends a phrase; ``in_open_phrase``: only determiner/adjectives seen so far."""
    if word in AUXILIARIES:
        return True
    if word in _NOUN_EXCEPTIONS:
        return False
    if in_open_phrase and word not in _PAST_FORMS:
        # "a sleeping cat", "the striped rug", "a seated toilet": participles before a noun modify it
        return False
    if word in VERBS:
        return True
    if len(word) > 4 and word.endswith(("ing", "ed")):
        return True
    return False


def _is_predicate(tokens: Sequence[str], i: int, current: Phrase | None) -> bool:
    """Word ``i`` is the verb of the noun phrase before it, by position rather than by word list.

    "The fluffy clouds pass by": right after a plural noun. "the eraser corrects the mistakes":
    right before a determiner. "The metallic lamp shines on...": a word ending in "s" after the
    subject of a clause and before a preposition.
    """
    if current is None or current.open or not current.words:
        return False
    previous, word = current.words[-1], tokens[i]
    if previous in _ALL_ATTRIBUTES:
        return False  # "leather gloves", "glass bottles": the attribute word modifies
    following = tokens[i + 1] if i + 1 < len(tokens) else "."
    if singular(previous) != previous and previous not in INVARIANT_NOUNS:
        return True
    if following in DETERMINERS and following not in ("that", "no", "all", "both", "any"):
        return True
    starts_clause = current.start == 0 or tokens[current.start - 1] in CONJUNCTIONS | {",", ";"}
    before_preposition = following in PREPOSITIONS and following != "of"
    return starts_clause and before_preposition and singular(word) != word


def _is_breaking(word: str) -> bool:
    if not re.fullmatch(r"[a-z0-9'-]+", word):
        return True  # punctuation
    if word in CONJUNCTIONS or word in PREPOSITIONS or word in PRONOUNS:
        return True
    if word.endswith(("'re", "'ll", "'ve", "'m", "'d", "n't")):
        return True  # "they're", "can't"
    if word.endswith("'s"):
        return False
    if len(word) > 4 and word.endswith("ly") and word not in _NOUN_EXCEPTIONS:
        return True  # adverb
    return False


@dataclass
class Parse:
    """A tokenised prompt cut into noun phrases."""

    tokens: list[str]
    phrases: list[Phrase]
    relation: tuple[str, int, int] | None  # (spatial phrase, first token, one past its last token)
    verbs: list[str]  # words read as verbs (they ended a phrase)
    first_verb: int  # index of the first of them (len(tokens) when none)


def chunk(prompt: str) -> Parse:
    """Tokenise ``prompt`` and cut it into noun phrases, in order (module docstring, step 2)."""
    tokens = tokenize(prompt)
    relation = find_relation(tokens)
    relation_span = range(relation[1], relation[2]) if relation else range(0)
    phrases: list[Phrase] = []
    verbs: list[str] = []
    first_verb = len(tokens)
    current: Phrase | None = None

    def close(i: int) -> None:
        nonlocal current
        if current is not None and current.words:
            current.end = i
            phrases.append(current)
        current = None

    for i, word in enumerate(tokens):
        previous = tokens[i - 1] if i else ""
        if word in DETERMINERS or word in NUMBERS or word.isdigit():
            # "the one", "all the": a second determiner just refines the first
            if current is not None and not current.words:
                continue
            close(i)
            current = Phrase([], i, i, determiner=word, count=_count_of(word), follows_of=previous == "of")
            continue
        if i in relation_span or _is_breaking(word):
            close(i)
            continue
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        compound = (
            current is not None and current.words and f"{current.words[-1]} {singular(word)}" in COMPOUND_NOUNS
        ) or f"{word} {singular(following)}" in COMPOUND_NOUNS
        open_phrase = current is not None and current.open
        if not compound and (_is_verb(word, open_phrase) or _is_predicate(tokens, i, current)):
            verbs.append(word)
            first_verb = min(first_verb, i)
            close(i)
            continue
        if word.endswith("'s"):  # "the drummer's rhythm": the possessor is its own phrase
            if current is None:
                current = Phrase([], i, i, follows_of=previous == "of")
            current.words.append(word[:-2])
            close(i + 1)
            current = Phrase([], i + 1, i + 1, determiner="'s")
            continue
        if current is None:
            current = Phrase([], i, i, follows_of=previous == "of")
        current.words.append(word)
        # a participle may follow adjectives ("the bright flickering sign") but not another
        # participle or a noun ("the oval opening displayed...": there "displayed" is the verb)
        current.open = current.open and (
            word in ADJECTIVES
            or word in COLORS
            or word in SHAPE_MARKERS
            or (word in _ALL_ATTRIBUTES and word not in _NOUN_LIKE_ATTRIBUTES)
        )
    close(len(tokens))
    return Parse(tokens, phrases, relation, verbs, first_verb)


def _count_of(word: str) -> int | None:
    if word in ("a", "an"):
        return 1
    if word in NUMBERS:
        return NUMBERS[word]
    if word.isdigit():
        return int(word)
    return None


# ---------------------------------------------------------------------------------------------------
# Fields
# ---------------------------------------------------------------------------------------------------
def find_relation(tokens: Sequence[str]) -> tuple[str, int, int] | None:
    """First spatial phrase in ``tokens``: (phrase, start index, end index)."""
    best: tuple[str, int, int] | None = None
    for phrase in SPATIAL_PHRASES:
        words = phrase.split()
        for i in range(len(tokens) - len(words) + 1):
            if list(tokens[i : i + len(words)]) == words:
                if best is None or i < best[1] or (i == best[1] and len(words) > best[2] - best[1]):
                    best = (phrase, i, i + len(words))
                break
    return best


def spatial_info_of(parse: Parse) -> dict[str, str] | None:
    if parse.relation is None:
        return None
    locality, start, end = parse.relation
    before = [p for p in parse.phrases if p.end <= start and p.head is not None]
    after = [p for p in parse.phrases if p.start >= end and p.head is not None]
    if not before or not after:
        return None
    return {"obj1": before[-1].head, "obj2": after[0].head, "locality": locality}


def numeracy_info_of(parse: Parse) -> list[dict[str, Any]]:
    """Counted phrases; "a"/"an" counts as one only before the first verb ("three guitars played a
    soothing melody" counts guitars only)."""
    return [
        {"obj_name": p.singular_head, "num": p.count}
        for p in parse.phrases
        if p.count is not None
        and p.singular_head is not None
        and (p.determiner not in ("a", "an") or p.start < parse.first_verb)
    ]


def attr_nouns_of(phrases: Sequence[Phrase], kinds: Iterable[str]) -> list[str]:
    words_of_kind = frozenset().union(*(ATTRIBUTE_WORDS[k] for k in kinds))
    out: list[str] = []
    for index, p in enumerate(phrases):
        head = p.singular_head
        if head is None:
            continue
        n_head = len(head.split(" "))
        modifiers = p.words[:-n_head]
        first = next((j for j, w in enumerate(modifiers) if w in words_of_kind), None)
        if first is None:
            continue
        text = " ".join([*modifiers[first:], head])
        follower = phrases[index + 1] if index + 1 < len(phrases) else None
        if (
            p.words[-1] in PARTITIVES
            and follower is not None
            and follower.follows_of
            and follower.start == p.end + 1
            and follower.head is not None
        ):
            text += " of " + " ".join(follower.words)
        if text not in out:
            out.append(text)
    return out


def _unique(items: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(item for item in items if item))


def _modifiers(phrase: Phrase) -> list[str]:
    head = phrase.head
    return phrase.words[: len(phrase.words) - len(head.split(" "))] if head else phrase.words


def infer_task_type(prompt: str) -> str:
    """Guess the T2I-CompBench / GenEval category of a prompt (see the module docstring, step 5)."""
    parse = chunk(prompt)
    tokens, phrases = parse.tokens, parse.phrases
    if any(p.count is not None and p.determiner not in ("a", "an") for p in phrases):
        return "numeracy"
    if spatial_info_of(parse) is not None and not parse.verbs and tokens[:1] != ["the"]:
        return "spatial"
    in_phrases = {w for p in phrases for w in p.words}
    headed = [p for p in phrases if p.head]
    if not headed:
        return "non"
    # a list of phrases ("a green tomato and a red pepper"): determiners, phrases, "and", commas
    listing = set(tokens) <= {"a", "an", "and", "the", "of", ",", ".", *in_phrases}
    if not parse.verbs and parse.relation is None and listing:
        # the kind of attribute most phrases carry; none -> "a photo of a dog and a cat", "a dog"
        votes = {k: sum(bool(set(_modifiers(p)) & ATTRIBUTE_WORDS[k]) for p in headed) for k in ATTRIBUTE_TASKS}
        kind = max(("color", "texture", "shape"), key=lambda k: votes[k])  # ties: first of this order
        return kind if votes[kind] else "object"
    # Sentences: one kind of attribute, used at least twice, marks that category ("The fluffy
    # blanket and plastic pillows..."); mixed kinds mark T2I-CompBench's "complex"; "is ...ing"
    # without attributes marks its "non-spatial" (actions).
    per_kind = Counter(k for p in phrases for w in _modifiers(p) for k in ATTRIBUTE_TASKS if w in KIND_MARKERS[k])
    if not per_kind:  # "The big elephant and the small mouse...": sizes mark shape prompts too
        sized = sum(bool(set(_modifiers(p)) & SIZE_WORDS) for p in phrases)
        per_kind = Counter({"shape": sized} if sized >= 2 else {})
    if per_kind:
        kind, top = per_kind.most_common(1)[0]
        others = sum(per_kind.values()) - top
        # T2I-CompBench's colour sentences are captions ("A man in a black shirt..."); its complex
        # ones read "The brown dog was lying on the blue blanket."
        if top >= 2 and others <= 1 and not (kind == "color" and tokens[:1] == ["the"]):
            return kind
    progressive = any(a in ("is", "are") and b.endswith("ing") for a, b in zip(tokens, tokens[1:]))
    if per_kind or (tokens[:1] == ["the"] and not progressive):
        return "complex"
    return "non"


def parse_prompt(prompt: str, task_type: str | None = None) -> dict[str, Any]:
    """Reference-schema metadata for ``prompt``; ``task_type`` is inferred when not given."""
    if task_type is not None and task_type not in TASK_TYPES:
        raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
    task = task_type or infer_task_type(prompt)
    parse = chunk(prompt)
    out: dict[str, Any] = {"prompt": prompt, "task_type": task}
    if task == "numeracy":
        info = numeracy_info_of(parse)
        out["numeracy_info"] = info
        out["nouns"] = _unique(item["obj_name"] for item in info)
        return out
    spatial = spatial_info_of(parse) if task in ("spatial", "complex") else None
    if spatial is not None:
        out["spatial_info"] = spatial
        out["nouns"] = _unique([spatial["obj1"], spatial["obj2"]])
    else:
        out["nouns"] = _unique(p.singular_head for p in parse.phrases)
    if task in ATTRIBUTE_TASKS:
        out["attr_nouns"] = attr_nouns_of(parse.phrases, [task])
    return out

"""The ShapeWorld model reads any text: out-of-vocabulary words are ``<unk>``, and generating never fails
on odd input except with one clear error for a prompt longer than the model's context."""

import pytest
import torch

from t2i_r1.pipeline import T2IR1Pipeline
from t2i_r1.shapeworld.model import DEFAULT_ASSET, UNK, build_tokenizer
from t2i_r1.shapeworld.phrasing import vocabulary

ODD_TEXTS = [
    "draw 7 purple hexagons next to a giraffe",  # words and a count outside the world
    "Draw A RED Circle!!!",  # case and punctuation
    "ünïcödé 🙂 数字 \t\n",  # non-ASCII, emoji, whitespace
    "12345 , ; : .",  # digits and punctuation only
    "a",  # one word
]


def test_unknown_words_become_unk_and_known_words_do_not():
    tok = build_tokenizer()
    unk = tok.convert_tokens_to_ids(UNK)
    ids = tok("draw 7 purple hexagons", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["draw", UNK, "purple", UNK]
    for word in vocabulary():
        assert unk not in tok(word, add_special_tokens=False)["input_ids"], word


@pytest.mark.skipif(not (DEFAULT_ASSET / "model.safetensors").is_file(), reason="needs the committed ShapeWorld checkpoint")
def test_generate_draws_something_for_any_text():
    torch.set_num_threads(1)
    pipe = T2IR1Pipeline.from_pretrained(str(DEFAULT_ASSET))
    generations = pipe.generate(ODD_TEXTS, num_images=1, seed=0)
    assert len(generations) == len(ODD_TEXTS)
    for g in generations:
        assert g.image.size == (64, 64) and isinstance(g.plan, str)
    with pytest.raises(ValueError, match="too long"):
        pipe.generate(["a red circle " * 200], num_images=1, seed=0)

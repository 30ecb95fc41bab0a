"""Plumbing of the model-based rewards: argument checks, image tensors, yes/no scores.

Checkpoints, devices and dtypes are ``t2i_r1.utils.checkpoints``; image batches ``t2i_r1.utils.batches``
(shared with the evaluation metrics).

Choices:
1. Yes/no scores: P(yes) / (P(yes) + P(no)) from the logits of one position, computed as
   ``sigmoid(logsumexp(logits[yes]) - logsumexp(logits[no]))``: the same number as the ratio of
   softmax probabilities (the softmax normaliser cancels) without underflow when both are tiny.
   Several spellings per answer (``yes``, ``Yes``, `` yes``) are summed; spellings that are not a single
   token of the tokenizer are skipped, and an answer with no single-token spelling is an error.
2. Text batches are right-padded and read at each row's last real token, so a row's positions, and
   hence its numbers, do not depend on what else is in the batch.

Dimensions: N rows (images, or image-question pairs), V vocabulary, C channels, H x W pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from t2i_r1.utils.batches import to_rgb


def check_lengths(prompts: Sequence[Any], images: Sequence[Any], metadata: Sequence[Any] | None = None) -> None:
    if len(prompts) != len(images) or (metadata is not None and len(metadata) != len(images)):
        sizes = f"{len(prompts)} prompts, {len(images)} images" + (
            "" if metadata is None else f", {len(metadata)} metadata"
        )
        raise ValueError(f"a reward takes one prompt and one metadata mapping per image; got {sizes}")


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad the short side symmetrically with ``fill`` to a square (LLaVA's ``image_aspect_ratio="pad"``)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def normalize_images(
    images: Sequence[Image.Image], mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """Same-size RGB PIL images -> ``(x / 255 - mean) / std`` as a float32 tensor [N, C, H, W]."""
    array = np.stack([np.asarray(to_rgb(im)) for im in images])  # uint8 [N, H, W, C]
    pixels = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().float()  # [N, C, H, W], 0..255
    # (x / 255 - mean) / std == (x - 255 mean) / (255 std), in place on the one float copy
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    return pixels.sub_(mean_t).div_(std_t)  # [N, C, H, W]


# --------------------------------------------------------------------------------------------------
# Yes / no answers
# --------------------------------------------------------------------------------------------------


def single_token_id(tokenizer: Any, text: str) -> int | None:
    """The id of ``text`` if the tokenizer encodes it (without special tokens) as exactly one known token."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # A word-piece vocabulary maps any unknown word to one [UNK] token: that is not the word.
    return ids[0] if len(ids) == 1 and ids[0] != tokenizer.unk_token_id else None


def answer_token_ids(tokenizer: Any, spellings: Sequence[str]) -> list[int]:
    """Distinct single-token ids among ``spellings`` (e.g. ``["yes", "Yes", " yes"]``); error if none."""
    ids = sorted({i for s in spellings if (i := single_token_id(tokenizer, s)) is not None})
    if not ids:
        raise ValueError(
            f"none of {list(spellings)!r} is a single token of {type(tokenizer).__name__}; "
            "a yes/no score needs the answer's first token"
        )
    return ids


@dataclass(frozen=True)
class YesNoTokens:
    """Token ids counted as "yes" and as "no"."""

    yes: tuple[int, ...]
    no: tuple[int, ...]

    def __post_init__(self) -> None:
        if set(self.yes) & set(self.no):
            raise ValueError(f"a token cannot be both yes and no: {sorted(set(self.yes) & set(self.no))}")

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, yes: Sequence[str] = ("yes",), no: Sequence[str] = ("no",)
    ) -> YesNoTokens:
        return cls(tuple(answer_token_ids(tokenizer, yes)), tuple(answer_token_ids(tokenizer, no)))

    def probability(self, logits: Tensor) -> Tensor:
        """P(yes) / (P(yes) + P(no)) per row of next-token logits [N, V] -> [N], in float32."""
        logits = logits.float()
        log_yes = logits[:, list(self.yes)].logsumexp(dim=-1)  # [N]
        log_no = logits[:, list(self.no)].logsumexp(dim=-1)  # [N]
        return torch.sigmoid(log_yes - log_no)  # [N]


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index of each row's last real token in a right-padded batch: [N, T] -> [N]."""
    lengths = attention_mask.long().sum(dim=-1)  # [N]
    if bool((lengths == 0).any()):
        raise ValueError("a text row has no tokens")
    return lengths - 1

"""Plumbing shared by the model-based rewards: devices, dtypes, checkpoints, image batches, yes/no scores.

Choices:
1. Device: ``None`` means the accelerate process's device (``PartialState().device``: this rank's GPU
   under ``accelerate launch``, the CPU on a CPU machine), so every rank scores its own images.
2. A checkpoint is a local path or a hub id. A local path that does not exist, or a hub id that cannot
   be fetched, raises ``MissingCheckpointError`` naming the file expected, what it is and where the
   public release is (never a bare ``OSError`` from deep inside ``from_pretrained``).
3. Yes/no scores: P(yes) / (P(yes) + P(no)) from the logits of one position, computed as
   ``sigmoid(logsumexp(logits[yes]) - logsumexp(logits[no]))``: the same number as the ratio of
   softmax probabilities (the softmax normaliser cancels) without underflow when both are tiny.
   Several spellings per answer (``yes``, ``Yes``, `` yes``) are summed; spellings that are not a single
   token of the tokenizer are skipped, and an answer with no single-token spelling is an error.
4. Text batches are right-padded and read at each row's last real token, so a row's positions, and
   hence its numbers, do not depend on what else is in the batch.

Dimensions: N rows (images, or image-question pairs), V vocabulary, C channels, H x W pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

T = TypeVar("T")

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class MissingCheckpointError(FileNotFoundError):
    """A reward's checkpoint is not where the configuration says."""


@dataclass(frozen=True)
class CheckpointSpec:
    """What a reward expects to load, for error messages: the file(s), what they are, the public release."""

    expected: str
    what: str
    release: str

    def error(self, path: str | os.PathLike | None, reason: str = "") -> MissingCheckpointError:
        where = "no path was given" if path is None else f"{str(path)!r} {reason or 'does not exist'}"
        return MissingCheckpointError(
            f"{where}; expected {self.expected}: {self.what}. Public release: {self.release}"
        )


def looks_like_hub_id(path: str) -> bool:
    """``org/name`` (one slash, no leading ``/`` or ``.``, no file extension): worth asking the hub for."""
    parts = path.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not path.startswith((".", "~"))
        and Path(parts[1]).suffix not in {".pt", ".pth", ".bin", ".safetensors", ".gz", ".json"}
    )


def check_checkpoint(path: str | os.PathLike | None, spec: CheckpointSpec) -> str:
    """Return ``path`` as a string if it exists locally or may be a hub id; raise the spec's error if not."""
    if path is None:
        raise spec.error(None)
    path = str(path)
    if os.path.exists(path) or looks_like_hub_id(path):
        return path
    raise spec.error(path)


def load_pretrained(loader: Callable[..., T], path: str | os.PathLike | None, spec: CheckpointSpec, **kwargs: Any) -> T:
    """``loader(path, **kwargs)`` (a ``from_pretrained``), turning "not found" into ``MissingCheckpointError``."""
    path = check_checkpoint(path, spec)
    try:
        return loader(path, **kwargs)
    except OSError as err:  # what from_pretrained raises for a missing file or an unreachable hub
        raise spec.error(path, f"could not be loaded ({err})") from err


def load_state_dict_file(path: str | os.PathLike, spec: CheckpointSpec) -> dict[str, Tensor]:
    """A raw state dict from ``.safetensors`` or a torch pickle (``.pt``/``.pth``/``.bin``), on the CPU.

    Unwraps ``{"state_dict": ...}`` (how open_clip and HPS save) and a DDP ``module.`` prefix.
    """
    path = check_checkpoint(path, spec)
    if not os.path.isfile(path):
        raise spec.error(path, "is not a file")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state_dict: Any = load_file(path, device="cpu")
    else:
        # weights_only: a checkpoint is data; never run pickled code from it.
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state_dict, Mapping) and "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state_dict).__name__}")
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def build_from_state_dict(model_cls: type[torch.nn.Module], config: Any, state_dict: Mapping[str, Tensor]) -> Any:
    """Instantiate ``model_cls(config)`` without initialising weights, then load ``state_dict`` strictly.

    Parameters are created on the meta device (buffers such as ``position_ids`` are real) and replaced by
    the checkpoint's tensors, so a 1B-parameter model is not first filled with random numbers.
    """
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = model_cls(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    left = [name for name, p in model.named_parameters() if p.is_meta]
    if left:
        raise ValueError(f"{model_cls.__name__}: parameters not in the converted state dict: {left[:5]}")
    return model.eval()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> this accelerate process's device; anything else -> ``torch.device(device)``."""
    if device is None:
        from accelerate import PartialState

        return PartialState().device
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``None`` -> float32; names such as ``"bfloat16"``/``"bf16"``/``"fp16"`` -> the torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"dtype {dtype!r}: expected one of {sorted(_DTYPES)} or a torch.dtype") from None


def check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices ``[0, size), [size, 2 size), ...`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def check_lengths(prompts: Sequence[Any], images: Sequence[Any], metadata: Sequence[Any] | None = None) -> None:
    if len(prompts) != len(images) or (metadata is not None and len(metadata) != len(images)):
        sizes = f"{len(prompts)} prompts, {len(images)} images" + (
            "" if metadata is None else f", {len(metadata)} metadata"
        )
        raise ValueError(f"a reward takes one prompt and one metadata mapping per image; got {sizes}")


def to_rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"rewards score PIL images, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


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

"""Loading the models that score images (rewards and evaluation metrics): checkpoints, devices, dtypes.

Choices:
1. A checkpoint is a local path or a hub id, checked before anything loads (``check_checkpoint``). A local
   path that does not exist, or a hub id that cannot be fetched, raises ``MissingCheckpointError`` naming
   the file expected, what it is and where the public release is (never a bare ``OSError`` from deep
   inside ``from_pretrained``, never minutes of retries).
   - A name is taken for a hub id only when it has the form ``org/name`` and ``org`` is not a local
     folder (``checkpoints/CLIP-ViT-H-14`` with a ``checkpoints/`` folder is a missing path, not a repo).
   - A hub id is only ever one the user wrote (no reward defaults to one). It is accepted when it is in
     the local hub cache, or when one quick request to the hub finds it; offline
     (``HF_HUB_OFFLINE=1``, or the hub unreachable) and not cached, it fails at once, saying so.
2. Device: ``None`` means the accelerate process's device (``PartialState().device``: this rank's GPU
   under ``accelerate launch``, the CPU on a CPU machine), so every rank scores its own images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
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
    """A scoring model's checkpoint is not where the configuration says."""


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


def _hub_cached(repo_id: str) -> bool:
    """Whether the local hub cache holds a snapshot of ``repo_id`` (no network)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    snapshots = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_problem(repo_id: str, timeout_s: float = 5.0) -> str | None:
    """Why ``repo_id`` cannot be loaded from the hub, or None if it can: cached, or found by one request
    (no retries) to ``$HF_ENDPOINT/api/models/<repo_id>``."""
    import urllib.error
    import urllib.request

    if _hub_cached(repo_id):
        return None
    if _offline():
        return "is not in the local hub cache and HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    request = urllib.request.Request(f"{endpoint}/api/models/{repo_id}", method="HEAD")
    token = os.environ.get("HF_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return None
    except urllib.error.HTTPError as err:
        return f"is no local path, and the hub has no repository of that name (HTTP {err.code})"
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return f"is no local path, not in the local hub cache, and the hub cannot be reached ({reason})"


def is_hub_id(path: str) -> bool:
    """``org/name`` that is not a local path: ``looks_like_hub_id`` and ``org`` is not a local folder."""
    return looks_like_hub_id(path) and not os.path.isdir(path.split("/")[0])


def check_checkpoint(path: str | os.PathLike | None, spec: CheckpointSpec) -> str:
    """Return ``path`` as a string if it exists locally or is a hub id the hub (or its cache) holds; raise
    the spec's error, saying which, if not. Nothing is downloaded here."""
    if path is None:
        raise spec.error(None)
    path = str(path)
    if os.path.exists(path):
        return path
    if is_hub_id(path):
        problem = hub_problem(path)
        if problem is None:
            return path
        raise spec.error(path, problem)
    where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
    raise spec.error(path, f"does not exist{where}")


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

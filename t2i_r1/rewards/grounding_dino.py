"""Object-detector reward: GroundingDINO (through ``transformers``) scored against prompt metadata.

Each image is searched for the objects its prompt names; the detections are scored by
``t2i_r1.rewards.detection`` according to the prompt's ``task_type``:
- ``numeracy`` (needs ``numeracy_info``): exact counts after NMS (0 per object not found), range [0, 1]
- ``spatial``, or any prompt carrying ``spatial_info`` (T2I-CompBench's complex prompts with a relation):
  presence of both objects plus their relative position,                              range [0, 0.9]
- everything else (object, color, shape, texture, complex, non; needs ``nouns``): share of nouns found,
                                                                                      range [0, 1]
NaN where the metadata does not support the route (a numeracy prompt without ``numeracy_info``, a
spatial prompt without ``spatial_info`` or with a relation ``detection`` cannot score, no nouns).
Metadata that has neither ``task_type`` nor ``nouns`` is derived from the prompt with
``t2i_r1.rewards.metadata.parse_prompt`` (``parse_missing=True``).

Choices (and differences from the reference, which used IDEA-Research's own GroundingDINO code):
- The text query is the objects joined as ``"obj1 . obj2 ."`` (lower case), as in the reference. The
  token span of each object is found from the tokenizer's character offsets (no ``eval`` of spans).
- A box is a detection of object ``j`` when the mean of its sigmoid token scores over ``j``'s tokens
  exceeds ``text_threshold`` and its best token score exceeds ``box_threshold``; the detection's
  score is that mean. With both thresholds at 0.3 (the defaults) this is GroundingDINO's own
  ``token_spans`` rule that the reference used (phrase score > box threshold 0.3), since a mean
  above 0.3 implies a best token above 0.3.
- Unsupported prompts get NaN, not the reference's fixed values, and errors propagate (no bare
  ``except``); the scoring differences are listed in ``t2i_r1.rewards.detection``.
- Images are scored in batches of ``batch_size`` (one forward pass each); texts are padded, which
  does not change the outputs: GroundingDINO's text attention is confined to each phrase and padded
  positions are masked out of the logits (the tests check batched == one-by-one).
- Objects whose tokens fall beyond the text encoder's limit (256 tokens) cannot be detected and so
  count as missing.
- ``behavior="reference"`` reproduces the reference's reward instead (``t2i_r1.rewards.gdino_reference``:
  its query of the ``nouns`` list, labels, routes, NMS and position rule, defects included), for the
  reference-exact recipe. Every difference between the two is in ``docs/reference-differences.md``.

Dimensions: B images in one forward pass, Q detector queries, T text tokens, P objects of a prompt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from t2i_r1.rewards import gdino_reference
from t2i_r1.rewards.base import Metadata
from t2i_r1.rewards.detection import (
    Detection,
    canonical_relation,
    existence_score,
    numeracy_score,
    spatial_score,
)
from t2i_r1.rewards.metadata import parse_prompt
from t2i_r1.utils.batches import check_batch_size
from t2i_r1.utils.checkpoints import CheckpointSpec, load_pretrained, resolve_device, resolve_dtype

CHECKPOINT = CheckpointSpec(
    expected="a transformers GroundingDINO checkpoint directory (config.json, model.safetensors, "
    "preprocessor_config.json and the BERT tokenizer files)",
    what="the Swin-T GroundingDINO open-vocabulary detector the reference scores objects with",
    release="IDEA-Research/grounding-dino-tiny on the Hugging Face hub "
    "(`huggingface-cli download IDEA-Research/grounding-dino-tiny --local-dir PATH`)",
)
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
BEHAVIORS = ("ours", "reference")


def check_checkpoint_dir(path: str | Path) -> None:
    """For a local directory, name the first missing file (hub ids are left to ``from_pretrained``)."""
    path = Path(path)
    if not path.is_dir():
        return
    if not (path / "config.json").is_file():
        raise CHECKPOINT.error(path, "has no config.json")
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        raise CHECKPOINT.error(path, "has no model.safetensors")


def build_caption(phrases: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """``["cat", "sports ball"]`` -> ``("cat . sports ball .", [(0, 3), (6, 17)])`` (character spans)."""
    caption, spans = "", []
    for phrase in phrases:
        phrase = " ".join(phrase.lower().split())
        spans.append((len(caption), len(caption) + len(phrase)))
        caption += phrase + " . "
    return caption.strip(), spans


def phrase_token_mask(offsets: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(T, 2) token character offsets + P character spans -> (P, T) bool: token t lies in phrase p."""
    start, end = offsets[:, 0], offsets[:, 1]  # (T,)
    real = end > start  # special and padding tokens have empty offsets
    mask = torch.zeros(len(spans), len(offsets), dtype=torch.bool)
    for p, (lo, hi) in enumerate(spans):
        mask[p] = real & (start >= lo) & (end <= hi)
    return mask


def detections_from_logits(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    token_mask: torch.Tensor,
    labels: Sequence[str],
    box_threshold: float,
    text_threshold: float,
) -> list[Detection]:
    """One image's raw outputs -> detections.

    logits: (Q, T) token logits per query; boxes: (Q, 4) normalised (cx, cy, w, h);
    token_mask: (P, T) tokens of each of the P phrases named by ``labels``.
    """
    probs = logits.float().sigmoid()  # (Q, T)
    n_tokens = token_mask.sum(dim=1)  # (P,)
    phrase_probs = probs @ token_mask.float().T / n_tokens.clamp(min=1)  # (Q, P): mean over each phrase's tokens
    confident = probs.max(dim=1).values > box_threshold  # (Q,)
    hits = (phrase_probs > text_threshold) & confident[:, None] & (n_tokens > 0)[None, :]  # (Q, P)
    cx, cy, w, h = boxes.float().unbind(-1)  # (Q,) each
    corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1).clamp(0, 1)  # (Q, 4)
    return [
        Detection(label=labels[p], score=float(phrase_probs[q, p]), box=tuple(float(v) for v in corners[q]))
        for q, p in hits.nonzero().tolist()
    ]


def route(meta: Metadata, *, parse_missing: bool = True) -> tuple[str, list[str], Mapping[str, Any]] | None:
    """(scorer, objects to detect, metadata) for one prompt, or None when it cannot be scored."""
    if parse_missing and "task_type" not in meta and "nouns" not in meta:
        if not meta.get("prompt"):
            return None
        meta = {**parse_prompt(str(meta["prompt"])), **meta}
    task = meta.get("task_type")
    if task == "numeracy":
        info = meta.get("numeracy_info") or []
        if not info:
            return None
        return "numeracy", _unique(str(item["obj_name"]) for item in info), meta
    spatial = meta.get("spatial_info")
    if task == "spatial" or spatial:
        if not spatial or canonical_relation(str(spatial.get("locality", ""))) is None:
            return None
        return "spatial", _unique([str(spatial["obj1"]), str(spatial["obj2"])]), meta
    nouns = _unique(str(noun) for noun in meta.get("nouns") or [])
    return ("existence", nouns, meta) if nouns else None


def _unique(items: Any) -> list[str]:
    return list(dict.fromkeys(" ".join(item.lower().split()) for item in items))


def score_detections(scorer: str, meta: Mapping[str, Any], detections: Sequence[Detection]) -> float:
    if scorer == "numeracy":
        return numeracy_score(meta["numeracy_info"], detections)
    if scorer == "spatial":
        return spatial_score(meta["spatial_info"], detections)
    return existence_score(meta["nouns"], detections)


class GroundingDINOReward:
    """GroundingDINO detections scored against each prompt's metadata; one float per image, NaN if n/a."""

    name = "gdino"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model: torch.nn.Module | None = None,
        processor: Any = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        batch_size: int = 8,
        box_threshold: float = 0.3,
        text_threshold: float = 0.3,
        parse_missing: bool = True,
        behavior: str = "ours",
    ) -> None:
        """Load from ``model_path`` (checkpoint directory or hub id), or take a built ``model`` + ``processor``.

        ``behavior``: ``"ours"`` (the scoring of ``t2i_r1.rewards.detection``) or ``"reference"`` (the
        reference implementation's, ``t2i_r1.rewards.gdino_reference``; ``text_threshold`` is then unused).
        """
        for field_name, value in (("box_threshold", box_threshold), ("text_threshold", text_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{field_name} must lie in [0, 1], got {value}")
        if behavior not in BEHAVIORS:
            raise ValueError(f"behavior must be one of {BEHAVIORS}, got {behavior!r}")
        self.behavior = behavior
        self.device = resolve_device(device)
        if model is None or processor is None:
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

            if model_path is not None:
                check_checkpoint_dir(model_path)
            processor = load_pretrained(AutoProcessor.from_pretrained, model_path, CHECKPOINT)
            model = load_pretrained(
                AutoModelForZeroShotObjectDetection.from_pretrained,
                model_path,
                CHECKPOINT,
                dtype=resolve_dtype(dtype),
            )
        elif dtype is not None:
            model = model.to(resolve_dtype(dtype))
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.processor = processor
        self.batch_size = check_batch_size(batch_size)
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.parse_missing = parse_missing
        self.max_text_len = int(getattr(self.model.config, "max_text_len", 256))

    @torch.no_grad()
    def _outputs(self, images: Sequence[Image.Image], captions: Sequence[str]):
        """Per image, in order: (token logits (Q, T), boxes (Q, 4) cxcywh, token offsets (T, 2)), ``batch_size``
        images per forward pass."""
        for lo in range(0, len(images), self.batch_size):
            chunk_images = [image.convert("RGB") for image in images[lo : lo + self.batch_size]]
            text = self.processor.tokenizer(
                list(captions[lo : lo + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_text_len,
                return_offsets_mapping=True,
                return_token_type_ids=True,
                return_tensors="pt",
            )
            offsets = text.pop("offset_mapping")  # (B, T, 2)
            pixels = self.processor.image_processor(chunk_images, return_tensors="pt")
            inputs = {**text, "pixel_values": pixels["pixel_values"], "pixel_mask": pixels.get("pixel_mask")}
            inputs = {k: v.to(self.device) for k, v in inputs.items() if v is not None}
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            outputs = self.model(**inputs)
            n_tokens = text["input_ids"].shape[1]
            logits = outputs.logits[..., :n_tokens].float().cpu()  # (B, Q, T); later positions are padding
            boxes = outputs.pred_boxes.float().cpu()  # (B, Q, 4) normalised cxcywh
            yield from zip(logits, boxes, offsets)

    def detect(self, images: Sequence[Image.Image], phrases: Sequence[Sequence[str]]) -> list[list[Detection]]:
        """Detections of ``phrases[i]`` in ``images[i]``, ``batch_size`` images per forward pass."""
        if len(images) != len(phrases):
            raise ValueError(f"detect got {len(images)} images but {len(phrases)} phrase lists")
        captions, spans = zip(*(build_caption(p) for p in phrases)) if phrases else ((), ())
        out: list[list[Detection]] = []
        for i, (logits, boxes, offsets) in enumerate(self._outputs(images, captions)):
            mask = phrase_token_mask(offsets, spans[i])  # (P, T)
            labels = [" ".join(p.lower().split()) for p in phrases[i]]
            out.append(detections_from_logits(logits, boxes, mask, labels, self.box_threshold, self.text_threshold))
        return out

    def detect_reference(
        self, images: Sequence[Image.Image], nouns: Sequence[Sequence[str]]
    ) -> list[list[gdino_reference.ReferenceDetection]]:
        """The reference's detections of ``nouns[i]`` in ``images[i]``: its caption, spans, labels and threshold."""
        if len(images) != len(nouns):
            raise ValueError(f"detect_reference got {len(images)} images but {len(nouns)} noun lists")
        queries = [gdino_reference.detection_query(n) for n in nouns]
        out = []
        for (_, spans, labels), (logits, boxes, offsets) in zip(queries, self._outputs(images, [q[0] for q in queries])):
            mask = gdino_reference.span_token_mask(offsets, spans)  # (P, T)
            out.append(gdino_reference.detections_from_logits(logits, boxes, mask, labels, self.box_threshold))
        return out

    def __call__(
        self, prompts: Sequence[str], images: Sequence[Image.Image], metadata: Sequence[Metadata]
    ) -> list[float]:
        if not len(prompts) == len(images) == len(metadata):
            raise ValueError(f"got {len(prompts)} prompts, {len(images)} images, {len(metadata)} metadata")
        if self.behavior == "reference":
            return self._reference_scores(prompts, images, metadata)
        routes = [
            route({"prompt": prompt, **(meta or {})}, parse_missing=self.parse_missing)
            for prompt, meta in zip(prompts, metadata)
        ]
        todo = [i for i, r in enumerate(routes) if r is not None]
        found = self.detect([images[i] for i in todo], [routes[i][1] for i in todo])
        scores = [math.nan] * len(prompts)
        for i, detections in zip(todo, found):
            scorer, _, meta = routes[i]
            scores[i] = score_detections(scorer, meta, detections)
        return scores

    def _reference_scores(
        self, prompts: Sequence[str], images: Sequence[Image.Image], metadata: Sequence[Metadata]
    ) -> list[float]:
        """The reference's reward: the ``nouns`` list queried, 1 without nouns, never NaN."""
        metas = []
        for prompt, meta in zip(prompts, metadata):
            meta = {"prompt": prompt, **(meta or {})}
            if self.parse_missing and "task_type" not in meta and "nouns" not in meta:
                meta = {**parse_prompt(prompt), **meta}
            metas.append(meta)
        todo = [i for i, meta in enumerate(metas) if meta.get("nouns")]
        found = self.detect_reference([images[i] for i in todo], [list(metas[i]["nouns"]) for i in todo])
        detections: list[list[gdino_reference.ReferenceDetection]] = [[] for _ in metas]
        for i, dets in zip(todo, found):
            detections[i] = dets
        return [gdino_reference.score(meta, dets) for meta, dets in zip(metas, detections)]

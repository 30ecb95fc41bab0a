"""CLIP score: cosine between a ``transformers`` CLIP model's image and prompt embeddings.

Used for evaluation (T2I-CompBench's non-spatial score is this cosine with CLIP ViT-B/32) and as an
optional reward. Range [-1, 1]; the raw cosine, not the ``2.5 * max(cos, 0)`` or ``100 * cos``
rescalings some papers report as "CLIPScore".

Choices: the model and its processor come from one ``from_pretrained`` path or hub id (default
``openai/clip-vit-base-patch32``); preprocessing is the checkpoint's own CLIP image processor (the PIL
backend, so no torchvision); each distinct prompt is encoded once per call; images in chunks of
``batch_size``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from t2i_r1.rewards._common import check_lengths
from t2i_r1.rewards.base import Metadata
from t2i_r1.rewards.hps import clip_cosine_scores
from t2i_r1.utils.batches import check_batch_size, to_rgb
from t2i_r1.utils.checkpoints import CheckpointSpec, load_pretrained, resolve_device, resolve_dtype

CLIP_CHECKPOINT = CheckpointSpec(
    expected="a transformers CLIP directory (config.json, model weights, preprocessor and tokenizer files)",
    what="the CLIP model used for the CLIP score (T2I-CompBench uses ViT-B/32)",
    release="https://huggingface.co/openai/clip-vit-base-patch32",
)


class CLIPScoreReward:
    """Cosine(image, prompt) under a CLIP model: one float per image in [-1, 1]; ``metadata`` is not used."""

    name = "clip"

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = "openai/clip-vit-base-patch32",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 32,
    ) -> None:
        self.batch_size = check_batch_size(batch_size)
        self.processor = load_pretrained(CLIPProcessor.from_pretrained, checkpoint, CLIP_CHECKPOINT)
        model = load_pretrained(CLIPModel.from_pretrained, checkpoint, CLIP_CHECKPOINT, dtype=resolve_dtype(dtype))
        self.model = model.to(resolve_device(device)).eval()

    @torch.inference_mode()
    def __call__(
        self, prompts: Sequence[str], images: Sequence[Image.Image], metadata: Sequence[Metadata] | None = None
    ) -> list[float]:
        check_lengths(prompts, images, metadata)
        if not images:
            return []
        pixels = self.processor.image_processor(images=[to_rgb(im) for im in images], return_tensors="pt")
        return clip_cosine_scores(
            self.model, self.processor.tokenizer, list(prompts), pixels["pixel_values"], self.batch_size
        )

"""LAION aesthetic predictor v2: a small head on L2-normalised CLIP ViT-L/14 image embeddings.

The paper's "CLIP-based aesthetic predictor", released as ``sac+logos+ava1-l14-linearMSE.pth``
(christophschuhmann/improved-aesthetic-predictor). It regresses the AVA / SAC / LOGOS mean human
rating, so scores lie roughly in 1-10 (about 4-7 for most images); they are not clipped. The prompt is
not used.

Choices:
1. The head is five ``nn.Linear`` layers 768 -> 1024 -> 128 -> 64 -> 16 -> 1 with no activation in
   between: the release's ``nn.Sequential`` has its ReLUs commented out and three Dropouts, which are
   identity at inference, so the whole head is affine. ``convert_aesthetic_state_dict`` maps the
   release's keys ``layers.{0,2,4,6,7}`` (the Dropouts sit at 1, 3, 5) onto ours.
2. Image embeddings: ``transformers``' CLIP vision tower with its projection (``image_embeds``, 768-d
   for ViT-L/14, what ``clip.encode_image`` returns), normalised to unit length as the release does,
   through the checkpoint's own CLIP image processor (PIL backend). Default CLIP:
   ``openai/clip-vit-large-patch14``, the model the head was trained on.
3. Batched in chunks of ``batch_size``; the head runs in float32 whatever the CLIP dtype.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from PIL import Image
from torch import Tensor, nn
from transformers import AutoImageProcessor, CLIPConfig, CLIPVisionModelWithProjection
from transformers.utils import logging as hf_logging

from t2i_r1.rewards._common import check_lengths
from t2i_r1.rewards.base import Metadata
from t2i_r1.utils.batches import check_batch_size, chunks, to_rgb
from t2i_r1.utils.checkpoints import (
    CheckpointSpec,
    load_pretrained,
    load_state_dict_file,
    resolve_device,
    resolve_dtype,
)

AESTHETIC_CHECKPOINT = CheckpointSpec(
    expected="sac+logos+ava1-l14-linearMSE.pth",
    what="the LAION aesthetic predictor v2 head (an MLP state dict over CLIP ViT-L/14 embeddings)",
    release="https://github.com/christophschuhmann/improved-aesthetic-predictor "
    "(file sac+logos+ava1-l14-linearMSE.pth)",
)
AESTHETIC_CLIP = CheckpointSpec(
    expected="a transformers CLIP ViT-L/14 directory (config.json, weights, preprocessor_config.json)",
    what="the CLIP image encoder the aesthetic head was trained on",
    release="https://huggingface.co/openai/clip-vit-large-patch14",
)

# Release index of each Linear in its nn.Sequential (Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear).
RELEASE_LINEAR_INDICES = (0, 2, 4, 6, 7)
HIDDEN_SIZES = (1024, 128, 64, 16, 1)


class AestheticHead(nn.Module):
    """The aesthetic MLP at inference: five Linears, no activations (as released)."""

    def __init__(self, input_size: int = 768) -> None:
        super().__init__()
        sizes = (input_size, *HIDDEN_SIZES)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, embeddings: Tensor) -> Tensor:
        x = embeddings  # [N, D], unit length
        for layer in self.layers:
            x = layer(x)
        return x.squeeze(-1)  # [N]


def convert_aesthetic_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Release keys ``layers.{0,2,4,6,7}.{weight,bias}`` -> ``AestheticHead`` keys ``layers.{0..4}``."""
    expected = {f"layers.{i}.{p}" for i in RELEASE_LINEAR_INDICES for p in ("weight", "bias")}
    if set(state_dict) != expected:
        missing, extra = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        raise ValueError(f"not an aesthetic predictor v2 state dict: missing {missing}, unexpected {extra}")
    return {
        f"layers.{ours}.{p}": state_dict[f"layers.{theirs}.{p}"]
        for ours, theirs in enumerate(RELEASE_LINEAR_INDICES)
        for p in ("weight", "bias")
    }


class AestheticReward:
    """LAION aesthetic score of each image, roughly 1-10; prompts and metadata are not used."""

    name = "aesthetic"

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        clip_checkpoint: str | os.PathLike | None = "openai/clip-vit-large-patch14",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 32,
    ) -> None:
        self.batch_size = check_batch_size(batch_size)
        device = resolve_device(device)
        head_state = convert_aesthetic_state_dict(load_state_dict_file(checkpoint, AESTHETIC_CHECKPOINT))
        self.head = AestheticHead(head_state["layers.0.weight"].shape[1])
        self.head.load_state_dict(head_state)
        self.head = self.head.to(device).eval()
        self.image_processor = load_pretrained(AutoImageProcessor.from_pretrained, clip_checkpoint, AESTHETIC_CLIP)
        # Only the image tower and its projection are needed. Its config comes from the full CLIP config,
        # because a saved vision sub-config may carry the default projection_dim instead of the real one.
        clip_config = load_pretrained(CLIPConfig.from_pretrained, clip_checkpoint, AESTHETIC_CLIP)
        vision_config = clip_config.vision_config
        vision_config.projection_dim = clip_config.projection_dim
        # The text tower's weights are "unexpected" for a vision-only model by design: keep that load
        # report (a long table) out of the logs.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            clip = load_pretrained(
                CLIPVisionModelWithProjection.from_pretrained,
                clip_checkpoint,
                AESTHETIC_CLIP,
                config=vision_config,
                dtype=resolve_dtype(dtype),
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        if clip.config.projection_dim != head_state["layers.0.weight"].shape[1]:
            raise ValueError(
                f"CLIP embeddings are {clip.config.projection_dim}-d but the aesthetic head expects "
                f"{head_state['layers.0.weight'].shape[1]}-d (it was trained on CLIP ViT-L/14)"
            )
        self.clip = clip.to(device).eval()

    @torch.inference_mode()
    def image_embeddings(self, images: Sequence[Image.Image]) -> Tensor:
        """Unit-length CLIP image embeddings [N, D] in float32."""
        pixels = self.image_processor(images=[to_rgb(im) for im in images], return_tensors="pt")["pixel_values"]
        out = []
        for sl in chunks(len(images), self.batch_size):
            batch = pixels[sl].to(device=self.clip.device, dtype=self.clip.dtype)  # [n, 3, S, S]
            out.append(self.clip(pixel_values=batch).image_embeds.float())  # [n, D]
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)  # [N, D]

    @torch.inference_mode()
    def __call__(
        self, prompts: Sequence[str], images: Sequence[Image.Image], metadata: Sequence[Metadata] | None = None
    ) -> list[float]:
        check_lengths(prompts, images, metadata)
        if not images:
            return []
        embeddings = self.image_embeddings(images).to(next(self.head.parameters()).device)
        return self.head(embeddings).cpu().tolist()

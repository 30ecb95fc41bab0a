"""Benchmark-independent image metrics: LAION aesthetic score and within-prompt diversity.

- Aesthetic: the LAION aesthetic predictor v2 (``t2i_r1.rewards.aesthetic.AestheticReward``), one
  score per image (about 1-10), averaged over all images.
- Diversity of one prompt: the mean pairwise cosine distance ``1 - cos(e_i, e_j)`` over all pairs
  ``i < j`` of its images' CLIP image embeddings (ViT-B/32 by default); 0 when all images are identical,
  larger when they differ in content, layout or style. Prompts with a single image have none. The
  reported number is the mean over prompts. It needs several images per prompt (T2I-CompBench's 10,
  GenEval's 4); with a plan per image it measures how much the plans vary as well.

Dimensions: N images of one prompt, E embedding width.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from t2i_r1.eval.base import PromptGroup, mean_or_none
from t2i_r1.utils.batches import chunks, to_rgb


def mean_pairwise_cosine_distance(embeddings: torch.Tensor) -> float | None:
    """Mean of ``1 - cos`` over the ``N (N - 1) / 2`` unordered pairs of rows of [N, E]; None when N < 2."""
    n = embeddings.shape[0]
    if n < 2:
        return None
    unit = torch.nn.functional.normalize(embeddings.double(), dim=-1)  # [N, E]
    cosine = unit @ unit.T  # [N, N]
    upper = torch.triu_indices(n, n, offset=1)  # the pairs i < j
    return float((1 - cosine[upper[0], upper[1]]).mean())


class AestheticMetric:
    name = "aesthetic"

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        clip_checkpoint: str | os.PathLike = "openai/clip-vit-large-patch14",
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
    ) -> None:
        self.checkpoint, self.clip_checkpoint = str(checkpoint), str(clip_checkpoint)
        self.kwargs = {"device": device, "dtype": dtype, "batch_size": batch_size}
        self._reward = None

    def config(self) -> dict[str, Any]:
        return {"head": self.checkpoint, "clip": self.clip_checkpoint, "dtype": self.kwargs["dtype"]}

    def score(self, groups: Sequence[PromptGroup]) -> list[dict[str, Any]]:
        if self._reward is None:
            from t2i_r1.rewards.aesthetic import AestheticReward

            self._reward = AestheticReward(checkpoint=self.checkpoint, clip_checkpoint=self.clip_checkpoint, **self.kwargs)
        records = [r for g in groups for r in g.images]
        images = [r.load() for r in records]
        scores = iter(self._reward([""] * len(images), images, [{}] * len(images)))
        return [{"images": [{"aesthetic": next(scores)} for _ in g.images]} for g in groups]

    def summarize(self, groups: Sequence[PromptGroup], results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {"aesthetic": mean_or_none(im["aesthetic"] for r in results for im in r["images"])}


class DiversityMetric:
    name = "diversity"

    def __init__(
        self,
        clip_checkpoint: str | os.PathLike = "openai/clip-vit-base-patch32",
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
    ) -> None:
        self.clip_checkpoint = str(clip_checkpoint)
        self.kwargs = {"device": device, "dtype": dtype, "batch_size": batch_size}
        self._clip = None

    def config(self) -> dict[str, Any]:
        return {"clip": self.clip_checkpoint, "measure": "mean pairwise cosine distance", "dtype": self.kwargs["dtype"]}

    @torch.inference_mode()
    def embed(self, images) -> torch.Tensor:
        """CLIP image embeddings [N, E] (projected, not normalised)."""
        if self._clip is None:
            from t2i_r1.rewards.clip_score import CLIPScoreReward

            self._clip = CLIPScoreReward(checkpoint=self.clip_checkpoint, **self.kwargs)
        model, processor = self._clip.model, self._clip.processor
        pixels = processor.image_processor(images=[to_rgb(im) for im in images], return_tensors="pt")["pixel_values"]
        out = []
        for sl in chunks(len(images), self.kwargs["batch_size"]):
            batch = pixels[sl].to(model.device, model.dtype)  # [n, 3, S, S]
            out.append(model.get_image_features(pixel_values=batch).pooler_output.float().cpu())  # [n, E]
        return torch.cat(out)

    def score(self, groups: Sequence[PromptGroup]) -> list[dict[str, Any]]:
        images = [r.load() for g in groups for r in g.images]
        embeddings = self.embed(images) if images else torch.empty(0)
        results, start = [], 0
        for g in groups:
            n = len(g.images)
            results.append({"diversity": mean_pairwise_cosine_distance(embeddings[start : start + n]),
                            "images": [{} for _ in range(n)]})  # fmt: skip
            start += n
        return results

    def summarize(self, groups: Sequence[PromptGroup], results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        values = [r["diversity"] for r in results if r["diversity"] is not None]
        return {"diversity": mean_or_none(values), "diversity_prompts": len(values)}

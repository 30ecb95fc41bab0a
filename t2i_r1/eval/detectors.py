"""Object detectors for the benchmarks, behind one callable: images (+ names to look for) -> objects.

The original benchmarks use detectors that cannot be shipped with a ``transformers`` project:
T2I-CompBench's spatial score runs UniDet (a detectron2 model over a 722-class unified label space)
and GenEval runs an mmdetection Mask2Former (Swin-S, COCO). Two ``transformers`` detectors stand in:

- ``OWLv2Detector`` (open vocabulary, default ``google/owlv2-base-patch16-ensemble``): looks for the
  names it is given. The stand-in for UniDet, whose label space covers most T2I-CompBench nouns.
- ``GroundingDINODetector`` (open vocabulary, default ``IDEA-Research/grounding-dino-tiny``): the
  rewards' GroundingDINO (``t2i_r1.rewards.grounding_dino``) behind the same interface, the detector
  T2I-R1 trains with; an alternative stand-in for UniDet.
- ``Mask2FormerDetector`` (closed vocabulary, default ``facebook/mask2former-swin-small-coco-instance``):
  the same architecture and training set as GenEval's detector (the checkpoint is Meta's release, not
  mmdetection's retraining). Its post-processing follows mmdetection's Mask2Former instance head:
  class probabilities (softmax without the no-object column) of all query x class pairs, top
  ``max_per_image``; masks upsampled to the padded input, cropped to the image, resized to the original
  size, thresholded at logit 0; score = class probability x mean mask probability inside the mask;
  box = the mask's bounding box.

Their confidences are not calibrated like the originals' (OWLv2's sigmoid scores run lower than
UniDet's), so thresholds taken from the benchmarks change meaning; every result file says which
detector was used.

Boxes are ``(x0, y0, x1, y1)`` in pixels of the original image; objects come sorted by score,
most confident first. Dimensions: B images, Q queries or mask queries, K classes, H x W pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from t2i_r1.utils.batches import check_batch_size, chunks, to_rgb
from t2i_r1.utils.checkpoints import CheckpointSpec, load_pretrained, resolve_device, resolve_dtype

OWLV2_CHECKPOINT = CheckpointSpec(
    expected="a transformers OWLv2 directory (config.json, weights, preprocessor and tokenizer files)",
    what="the open-vocabulary detector standing in for UniDet",
    release="https://huggingface.co/google/owlv2-base-patch16-ensemble",
)
MASK2FORMER_CHECKPOINT = CheckpointSpec(
    expected="a transformers Mask2Former COCO instance-segmentation directory "
    "(config.json, weights, preprocessor_config.json)",
    what="the COCO instance segmenter standing in for GenEval's mmdetection Mask2Former",
    release="https://huggingface.co/facebook/mask2former-swin-small-coco-instance",
)


@dataclass(frozen=True)
class DetectedObject:
    label: str
    score: float
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels
    mask: np.ndarray | None = None  # bool [H, W] for segmenters

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.box
        if not (x1 >= x0 and y1 >= y0):
            raise ValueError(f"DetectedObject.box must have x0 <= x1 and y0 <= y1, got {self.box}")


@runtime_checkable
class Detector(Protocol):
    name: str
    open_vocabulary: bool

    def config(self) -> dict[str, Any]: ...

    def __call__(
        self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]] | None = None
    ) -> list[list[DetectedObject]]:
        """Objects per image, most confident first. Open-vocabulary detectors need ``queries`` (names per image)."""
        ...


class OWLv2Detector:
    name = "owlv2"
    open_vocabulary = True

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = "google/owlv2-base-patch16-ensemble",
        threshold: float = 0.1,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 8,
    ) -> None:
        from transformers import AutoProcessor, Owlv2ForObjectDetection

        self.checkpoint, self.threshold = str(checkpoint), float(threshold)
        self.batch_size = check_batch_size(batch_size)
        self.processor = load_pretrained(AutoProcessor.from_pretrained, checkpoint, OWLV2_CHECKPOINT)
        model = load_pretrained(
            Owlv2ForObjectDetection.from_pretrained, checkpoint, OWLV2_CHECKPOINT, dtype=resolve_dtype(dtype)
        )
        self.model = model.to(resolve_device(device)).eval()

    def config(self) -> dict[str, Any]:
        return {"detector": self.name, "checkpoint": self.checkpoint, "threshold": self.threshold}

    @torch.inference_mode()
    def __call__(
        self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]] | None = None
    ) -> list[list[DetectedObject]]:
        if queries is None or len(queries) != len(images):
            raise ValueError("OWLv2 is open-vocabulary: give one list of object names per image")
        out: list[list[DetectedObject]] = []
        for sl in chunks(len(images), self.batch_size):
            batch = [to_rgb(im) for im in images[sl]]
            names = [list(q) for q in queries[sl]]
            if max(len(q) for q in names) == 0:
                out.extend([] for _ in batch)
                continue
            # The processor pads every image's query list to the longest with " " queries; their
            # logits are sliced away below.
            inputs = self.processor(text=[q or [" "] for q in names], images=batch, truncation=True, return_tensors="pt")
            inputs = inputs.to(self.model.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            result = self.model(**inputs)
            logits = result.logits.float()  # [b, boxes, Q]
            boxes = result.pred_boxes.float()  # [b, boxes, 4] (cx, cy, w, h) relative to the padded square
            for i, (image, wanted) in enumerate(zip(batch, names)):
                if not wanted:
                    out.append([])
                    continue
                scores, labels = logits[i, :, : len(wanted)].sigmoid().max(dim=-1)  # [boxes]
                keep = (scores > self.threshold).nonzero().flatten()
                width, height = image.size
                side = max(width, height)  # OWLv2 pads to a square at the bottom right before resizing
                cx, cy, w, h = (boxes[i, keep] * side).unbind(-1)  # [k] each
                corners = torch.stack(
                    [(cx - w / 2).clamp(0, width), (cy - h / 2).clamp(0, height),
                     (cx + w / 2).clamp(0, width), (cy + h / 2).clamp(0, height)], dim=-1,
                )  # [k, 4]
                objects = [
                    DetectedObject(wanted[int(labels[j])], float(scores[j]), tuple(float(v) for v in corners[n]))
                    for n, j in enumerate(keep.tolist())
                ]
                out.append(sorted(objects, key=lambda o: -o.score))
        return out


class Mask2FormerDetector:
    name = "mask2former"
    open_vocabulary = False

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = "facebook/mask2former-swin-small-coco-instance",
        threshold: float = 0.0,
        max_per_image: int = 100,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 4,
    ) -> None:
        from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

        self.checkpoint, self.threshold, self.max_per_image = str(checkpoint), float(threshold), int(max_per_image)
        self.batch_size = check_batch_size(batch_size)
        self.processor = load_pretrained(AutoImageProcessor.from_pretrained, checkpoint, MASK2FORMER_CHECKPOINT)
        model = load_pretrained(
            Mask2FormerForUniversalSegmentation.from_pretrained, checkpoint, MASK2FORMER_CHECKPOINT, dtype=resolve_dtype(dtype)
        )
        self.model = model.to(resolve_device(device)).eval()
        id2label = self.model.config.id2label
        self.labels = [str(id2label[i]) for i in range(len(id2label))]

    def config(self) -> dict[str, Any]:
        return {"detector": self.name, "checkpoint": self.checkpoint, "threshold": self.threshold,
                "max_per_image": self.max_per_image}

    @torch.inference_mode()
    def __call__(
        self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]] | None = None
    ) -> list[list[DetectedObject]]:
        out: list[list[DetectedObject]] = []
        for sl in chunks(len(images), self.batch_size):
            batch = [to_rgb(im) for im in images[sl]]
            inputs = self.processor(images=batch, return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self.model.device, self.model.dtype)  # [b, 3, Hp, Wp]
            pixel_mask = inputs.get("pixel_mask")
            result = self.model(pixel_values=pixel_values)
            for i, image in enumerate(batch):
                valid = None if pixel_mask is None else pixel_mask[i]
                out.append(self._instances(result.class_queries_logits[i], result.masks_queries_logits[i],
                                           pixel_values.shape[-2:], valid, image.size))
        return out

    def _instances(self, class_logits, mask_logits, padded_size, pixel_mask, image_size) -> list[DetectedObject]:
        num_classes = class_logits.shape[-1] - 1
        probs = class_logits.float().softmax(dim=-1)[:, :-1]  # [Q, K], no-object column dropped
        k = min(self.max_per_image, probs.numel())
        top_scores, top = probs.flatten().topk(k)  # [k]
        query, label = top // num_classes, top % num_classes
        masks = mask_logits.float()[query]  # [k, h, w] at 1/4 of the padded input
        masks = torch.nn.functional.interpolate(masks[None], size=tuple(padded_size), mode="bilinear", align_corners=False)[0]
        if pixel_mask is not None:  # crop the padding away before resizing to the original image
            rows, cols = int(pixel_mask.any(dim=1).sum()), int(pixel_mask.any(dim=0).sum())
            masks = masks[:, :rows, :cols]
        width, height = image_size
        masks = torch.nn.functional.interpolate(masks[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        binary = masks > 0  # [k, H, W]
        area = binary.flatten(1).sum(dim=1)  # [k]
        mask_scores = (masks.sigmoid() * binary).flatten(1).sum(dim=1) / (area + 1e-6)  # [k]
        scores = top_scores * mask_scores  # [k]
        objects = []
        for j in scores.argsort(descending=True).tolist():
            if area[j] == 0 or scores[j] <= self.threshold:
                continue
            ys, xs = binary[j].any(dim=1).nonzero().flatten(), binary[j].any(dim=0).nonzero().flatten()
            box = (float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1))
            objects.append(DetectedObject(self.labels[int(label[j])], float(scores[j]), box, binary[j].cpu().numpy()))
        return objects


class GroundingDINODetector:
    """``t2i_r1.rewards.grounding_dino.GroundingDINOReward.detect`` with pixel boxes and the queried names as labels.

    ``threshold`` is both of GroundingDINO's thresholds (box and text), as the rewards use them.
    """

    name = "gdino"
    open_vocabulary = True

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = "IDEA-Research/grounding-dino-tiny",
        threshold: float = 0.3,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 8,
        reward: Any = None,
    ) -> None:
        self.checkpoint, self.threshold = str(checkpoint), float(threshold)
        if reward is None:
            from t2i_r1.rewards.grounding_dino import GroundingDINOReward

            reward = GroundingDINOReward(checkpoint, device=device, dtype=dtype, batch_size=batch_size,
                                         box_threshold=threshold, text_threshold=threshold)  # fmt: skip
        self.reward = reward

    def config(self) -> dict[str, Any]:
        return {"detector": self.name, "checkpoint": self.checkpoint, "threshold": self.threshold}

    def __call__(
        self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]] | None = None
    ) -> list[list[DetectedObject]]:
        if queries is None or len(queries) != len(images):
            raise ValueError("GroundingDINO is open-vocabulary: give one list of object names per image")
        out = []
        for image, names, found in zip(images, queries, self.reward.detect(list(images), [list(q) for q in queries])):
            width, height = image.size
            # The rewards normalise labels (lower case, single spaces); give back the names as asked.
            original = {" ".join(n.lower().split()): n for n in names}
            objects = [
                DetectedObject(original.get(d.label, d.label), float(d.score),
                               (d.box[0] * width, d.box[1] * height, d.box[2] * width, d.box[3] * height))
                for d in found
            ]  # fmt: skip
            out.append(sorted(objects, key=lambda o: -o.score))
        return out


DETECTORS = {"owlv2": OWLv2Detector, "mask2former": Mask2FormerDetector, "gdino": GroundingDINODetector}


def build_detector(kind: str, checkpoint: str | os.PathLike | None = None, **kwargs: Any) -> Detector:
    """``kind`` in ``DETECTORS``; ``checkpoint`` None -> the detector's default release."""
    try:
        cls = DETECTORS[kind]
    except KeyError:
        raise ValueError(f"unknown detector {kind!r}; expected one of {sorted(DETECTORS)}") from None
    return cls(**({"checkpoint": checkpoint} if checkpoint is not None else {}), **kwargs)

"""GenEval: 553 object-focused prompts x 4 images, the six task rules, and the benchmark.

Rules, as ``evaluation/evaluate_images.py`` and ``summary_scores.py`` define them (djghosh13/geneval
@ af4902f2):
1. Detections per class, most confident first, kept above 0.3 (0.9 for the ``counting`` task), at most
   16 per class; NMS with an IoU threshold of 1.0, i.e. none (boxes use GenEval's "+1 pixel" IoU).
2. Every ``include`` clause needs ``count`` objects of its class (the most confident ones are used);
   with ``color``, CLIP zero-shot colour classification of each object's crop (the object's mask pasted
   on #999 grey, cropped to its box; 10 colours; prompts "a photo of a {c} {class}", "a photo of a
   {c}-colored {class}", "a photo of a {c} object", embeddings averaged) must give that colour to at
   least ``count`` of them; with ``position`` [relation, group], every object must stand in that
   relation to every object of the matched group (a group that failed fails this clause).
3. Position: offset of the box centres, each axis shrunk by 0.1 x (sum of the two boxes' sizes along it)
   and clipped at 0, divided by the unshrunk offset's length; "left of" / "right of" / "above" /
   "below" when that axis' component is below -0.5 / above 0.5 (y points down); none when both
   shrunk components are under 1e-3.
4. ``exclude`` clauses fail when ``count`` or more objects of the class are detected.
5. Task score: share of correct images; overall: mean of the six task scores.

Differences from the original: the detector (``transformers`` Mask2Former Swin-S COCO by default,
Meta's checkpoint, instead of mmdetection's; or OWLv2 asked for the 80 class names) and the CLIP
implementation (``transformers`` ViT-L/14 for open_clip's ViT-L-14 "openai": the same weights).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from t2i_r1.eval.base import DATA_DIR, PromptGroup, PromptItem, Published, mean_or_none, read_lines
from t2i_r1.eval.detectors import DetectedObject, build_detector
from t2i_r1.utils.batches import check_batch_size, chunks
from t2i_r1.utils.checkpoints import CheckpointSpec, load_pretrained, resolve_device, resolve_dtype

BUNDLED_DIR = DATA_DIR / "geneval"
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
COLOR_TEMPLATES = ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")
THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16
NMS_THRESHOLD = 1.0
POSITION_THRESHOLD = 0.1
CROP_BACKGROUND = "#999"

# Janus-Pro report (Chen et al., arXiv 2501.17811, Fig. 1b: GenEval 80.0 for Janus-Pro-7B). The T2I-R1
# paper reports no GenEval numbers.
PUBLISHED = Published(
    source="Janus-Pro report, arXiv 2501.17811, Fig. 1b (GenEval overall, official mmdetection evaluator)",
    rows={"Janus-Pro-7B": {"overall": 0.80}},
)

COLOR_CLIP_CHECKPOINT = CheckpointSpec(
    expected="a transformers CLIP directory (config.json, weights, preprocessor and tokenizer files)",
    what="the CLIP ViT-L/14 GenEval classifies object colours with",
    release="https://huggingface.co/openai/clip-vit-large-patch14",
)


# --------------------------------------------------------------------------------------------------
# Rules (pure functions)
# --------------------------------------------------------------------------------------------------


def compute_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """GenEval's IoU: pixel-inclusive areas ``(x1 - x0 + 1) * (y1 - y0 + 1)``."""

    def area(box):
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0.0


def select_objects(
    detections: Sequence[DetectedObject],
    threshold: float,
    max_objects: int = MAX_OBJECTS,
    nms_threshold: float = NMS_THRESHOLD,
) -> dict[str, list[DetectedObject]]:
    """Class -> its detections above ``threshold`` (strictly), most confident first, at most ``max_objects``."""
    by_class: dict[str, list[DetectedObject]] = {}
    for det in sorted(detections, key=lambda d: -d.score):
        if det.score > threshold:
            by_class.setdefault(det.label, []).append(det)
    out = {}
    for name, dets in by_class.items():
        ordering, kept = dets[:max_objects], []
        while ordering:
            best = ordering.pop(0)
            kept.append(best)
            if nms_threshold < 1:
                ordering = [d for d in ordering if compute_iou(best.box, d.box) < nms_threshold]
        out[name] = kept
    return out


def relative_position(box_a: Sequence[float], box_b: Sequence[float], threshold: float = POSITION_THRESHOLD) -> set[str]:
    """Relations of box A to box B: a subset of {"left of", "right of", "above", "below"}."""
    a, b = np.asarray(box_a[:4], dtype=np.float64), np.asarray(box_b[:4], dtype=np.float64)
    centre_a, centre_b = (a[:2] + a[2:]) / 2, (b[:2] + b[2:]) / 2
    size_a, size_b = np.abs(a[2:] - a[:2]), np.abs(b[2:] - b[:2])  # (width, height)
    offset = centre_a - centre_b
    revised = np.maximum(np.abs(offset) - threshold * (size_a + size_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


ColourFn = Callable[[str, Sequence[DetectedObject]], list[str]]


def evaluate(
    objects: Mapping[str, Sequence[DetectedObject]],
    metadata: Mapping[str, Any],
    colors_of: ColourFn,
    position_threshold: float = POSITION_THRESHOLD,
) -> tuple[bool, str]:
    """GenEval's verdict for one image: (correct, reasons). ``colors_of(class, objects)`` names their colours."""
    correct, reasons = True, []
    matched_groups: list[Sequence[DetectedObject] | None] = []
    for req in metadata.get("include", []):
        name, count = req["class"], int(req["count"])
        matched = True
        found = list(objects.get(name, []))[:count]
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in req:
                colors = colors_of(name, found)
                if colors.count(req["color"]) < count:
                    correct = matched = False
                    reasons.append(f"expected {req['color']} {name}>={count}, found {colors.count(req['color'])} "
                                   + ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors))  # fmt: skip
            if "position" in req and matched:
                relation, target = req["position"]
                if matched_groups[target] is None:
                    correct = matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    for obj in found:
                        for other in matched_groups[target]:
                            true_relations = relative_position(obj.box, other.box, position_threshold)
                            if relation not in true_relations:
                                correct = matched = False
                                found_relations = " and ".join(sorted(true_relations)) or "no relation"
                                reasons.append(f"expected {name} {relation} target, found {found_relations}")
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        name = req["class"]
        if len(objects.get(name, [])) >= int(req["count"]):
            correct = False
            reasons.append(f"expected {name}<{req['count']}, found {len(objects[name])}")
    return correct, "\n".join(reasons)


def summarize_correct(tags: Sequence[str], correct: Sequence[bool]) -> dict[str, float]:
    """Per-tag share of correct images and their mean ("overall"), in ``TAGS`` order."""
    per_tag: dict[str, list[bool]] = {}
    for tag, ok in zip(tags, correct):
        per_tag.setdefault(tag, []).append(bool(ok))
    scores = {tag: sum(v) / len(v) for tag in TAGS if (v := per_tag.get(tag))}
    scores.update({tag: sum(v) / len(v) for tag, v in per_tag.items() if tag not in scores})
    out = {"overall": sum(scores.values()) / len(scores)} if scores else {}
    out.update(scores)
    return out


# --------------------------------------------------------------------------------------------------
# Colour classification
# --------------------------------------------------------------------------------------------------


class ColorClassifier:
    """CLIP zero-shot colour of object crops, GenEval's way (its templates, masks on grey, box crops)."""

    def __init__(
        self,
        checkpoint: str | os.PathLike = "openai/clip-vit-large-patch14",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 16,
        background: str = CROP_BACKGROUND,
    ) -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.batch_size = check_batch_size(batch_size)
        self.background = background
        self.processor = load_pretrained(CLIPProcessor.from_pretrained, checkpoint, COLOR_CLIP_CHECKPOINT)
        model = load_pretrained(CLIPModel.from_pretrained, checkpoint, COLOR_CLIP_CHECKPOINT, dtype=resolve_dtype(dtype))
        self.model = model.to(resolve_device(device)).eval()
        self._classifiers: dict[str, torch.Tensor] = {}

    @torch.inference_mode()
    def classifier(self, classname: str) -> torch.Tensor:
        """Unit text embeddings of the 10 colours for this class [10, E], templates averaged."""
        if classname not in self._classifiers:
            texts = [t.format(c=c, cls=classname) for c in COLORS for t in COLOR_TEMPLATES]
            tok = self.processor.tokenizer(texts, padding=True, return_tensors="pt").to(self.model.device)
            feats = self.model.get_text_features(**tok).pooler_output.float()  # [10 * T, E]
            feats = torch.nn.functional.normalize(feats, dim=-1).view(len(COLORS), len(COLOR_TEMPLATES), -1)
            self._classifiers[classname] = torch.nn.functional.normalize(feats.mean(dim=1), dim=-1)  # [10, E]
        return self._classifiers[classname]

    def crops(self, image: Image.Image, objects: Sequence[DetectedObject]) -> list[Image.Image]:
        image = image.convert("RGB")
        blank = Image.new("RGB", image.size, color=self.background)
        out = []
        for obj in objects:
            source = image
            if obj.mask is not None:
                source = Image.composite(image, blank, Image.fromarray(obj.mask.astype(np.uint8) * 255))
            out.append(source.crop(obj.box))
        return out

    @torch.inference_mode()
    def __call__(self, image: Image.Image, objects: Sequence[DetectedObject], classname: str) -> list[str]:
        if not objects:
            return []
        clf = self.classifier(classname)
        crops = self.crops(image, objects)
        names = []
        for sl in chunks(len(crops), self.batch_size):
            pixels = self.processor.image_processor(images=crops[sl], return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.model.device, self.model.dtype)
            feats = self.model.get_image_features(pixel_values=pixels).pooler_output.float()  # [n, E]
            feats = torch.nn.functional.normalize(feats, dim=-1)
            names += [COLORS[i] for i in (feats @ clf.T).argmax(dim=-1).tolist()]  # [n]
        return names


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------


class GenEval:
    """GenEval's 553 prompts x 4 images; score = mean over the six tasks of the share of correct images."""

    name = "geneval"
    images_per_prompt = 4
    published = PUBLISHED

    def __init__(
        self,
        prompts_dir: str | os.PathLike | None = None,
        categories: Sequence[str] | None = None,
        detector: str = "mask2former",
        detector_model: str | os.PathLike | None = None,
        detector_threshold: float | None = None,
        color_clip_model: str | os.PathLike = "openai/clip-vit-large-patch14",
        threshold: float = THRESHOLD,
        counting_threshold: float = COUNTING_THRESHOLD,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 16,
    ) -> None:
        self.prompts_dir = Path(prompts_dir) if prompts_dir is not None else BUNDLED_DIR
        self.categories = tuple(categories) if categories else None
        if self.categories and any(c not in TAGS for c in self.categories):
            raise ValueError(f"unknown GenEval tasks {[c for c in self.categories if c not in TAGS]}; expected some of {TAGS}")
        self.detector_kind = detector
        self.detector_model = None if detector_model is None else str(detector_model)
        # The detector's own floor: everything GenEval may keep (its thresholds are applied per task).
        self.detector_threshold = (
            min(threshold, counting_threshold) if detector_threshold is None else float(detector_threshold)
        )
        self.color_clip_model = str(color_clip_model)
        self.threshold, self.counting_threshold = float(threshold), float(counting_threshold)
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        self.classnames = read_lines(self.prompts_dir / "object_names.txt")
        self._detector = self._colors = None
        self._label_map: dict[str, str] | None = None

    def prompts(self) -> list[PromptItem]:
        path = self.prompts_dir / "evaluation_metadata.jsonl"
        items = []
        for i, line in enumerate(read_lines(path)):
            try:
                row = json.loads(line)
                tag, prompt = row["tag"], row["prompt"]
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(f"{path}:{i + 1}: not a GenEval metadata line ({err})") from None
            if self.categories is None or tag in self.categories:
                items.append(PromptItem(f"{i:05d}", prompt, tag, i, row))
        return items

    def config(self) -> dict[str, Any]:
        return {"detector": self.detector_kind, "detector_model": self.detector_model,
                "detector_threshold": self.detector_threshold, "color_clip_model": self.color_clip_model,
                "threshold": self.threshold, "counting_threshold": self.counting_threshold, "dtype": self.dtype}  # fmt: skip

    def notes(self) -> list[str]:
        return [
            f"Detector: {self.detector_kind} ({self.detector_model or 'default checkpoint'}) from transformers "
            "instead of GenEval's mmdetection Mask2Former Swin-S; thresholds "
            f"{self.threshold} / {self.counting_threshold} (counting) as in GenEval.",
            f"Colour: transformers CLIP {self.color_clip_model} in place of open_clip ViT-L-14 (openai weights).",
        ]

    @property
    def detector(self):
        if self._detector is None:
            kwargs = {"device": self.device, "dtype": self.dtype, "batch_size": self.batch_size}
            self._detector = build_detector(
                self.detector_kind, self.detector_model, threshold=self.detector_threshold, **kwargs
            )
        return self._detector

    @property
    def colors(self) -> ColorClassifier:
        if self._colors is None:
            self._colors = ColorClassifier(
                self.color_clip_model, device=self.device, dtype=self.dtype, batch_size=self.batch_size
            )
        return self._colors

    def label_map(self) -> dict[str, str]:
        """Detector label -> GenEval class name. A closed 80-class COCO detector maps by index (its names
        differ: "mouse" / "computer mouse"); otherwise names must agree."""
        if self._label_map is None:
            labels = getattr(self.detector, "labels", None)
            if labels is not None and len(labels) == len(self.classnames):
                self._label_map = dict(zip(labels, self.classnames))
            else:
                self._label_map = {name: name for name in self.classnames}
        return self._label_map

    def score(self, groups: Sequence[PromptGroup]) -> list[dict[str, Any]]:
        records = [(g, s, r) for g, group in enumerate(groups) for s, r in enumerate(group.images)]
        images = [r.load() for _, _, r in records]
        queries = [self.classnames] * len(images) if self.detector.open_vocabulary else None
        detections = self.detector(images, queries)
        labels = self.label_map()
        results: list[dict[str, Any]] = [{"images": [None] * len(g.images)} for g in groups]
        for (g, s, _), image, dets in zip(records, images, detections):
            meta = groups[g].item.metadata
            dets = [DetectedObject(labels[d.label], d.score, d.box, d.mask) for d in dets if d.label in labels]
            threshold = self.counting_threshold if meta.get("tag") == "counting" else self.threshold
            objects = select_objects(dets, threshold)
            correct, reason = evaluate(objects, meta, lambda name, objs: self.colors(image, objs, name))
            results[g]["images"][s] = {
                "correct": correct,
                "reason": reason,
                "detected": {name: [[round(v, 1) for v in o.box] + [round(o.score, 4)] for o in objs]
                             for name, objs in objects.items()},  # fmt: skip
            }
        return results

    def summarize(self, groups: Sequence[PromptGroup], results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        tags, correct, prompt_any = [], [], []
        for group, result in zip(groups, results):
            verdicts = [im["correct"] for im in result["images"]]
            tags += [group.item.category] * len(verdicts)
            correct += verdicts
            prompt_any.append(any(verdicts))
        out = summarize_correct(tags, correct)
        out["correct_images"] = mean_or_none(correct)
        out["correct_prompts"] = mean_or_none(prompt_any)
        return out

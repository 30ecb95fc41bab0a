"""VQA attribute rewards: ask a VQA model "<phrase>?" for each attribute-noun phrase of the prompt.

For every phrase in ``metadata["attr_nouns"]`` ("green pizza") the question ``"green pizza?"`` is put to
the model and scored P(yes) / (P(yes) + P(no)) from the logits of the **first answer token of one
forward pass** (no sampling, no generation loop). Per image the phrase scores are combined by
``aggregation``: ``"mean"`` (T2I-R1's training reward, default) or ``"product"`` (T2I-CompBench's
BLIP-VQA score). Range [0, 1].

Two models, one interface:
- ``GITVQAReward`` ("git_vqa"): ``GitForCausalLM``, e.g. ``microsoft/git-large-vqav2`` (the reference's
  model). Input ``[CLS] question`` after the image tokens; the answer starts at the next position.
- ``BLIPVQAReward`` ("blip_vqa"): ``BlipForQuestionAnswering``, e.g. ``Salesforce/blip-vqa-base``
  (T2I-CompBench's family). The question encoder cross-attends to the image; the answer decoder reads
  ``[DEC]`` and its first logits are the answer's first token.

Choices, and differences from the reference:
1. Not applicable -> NaN: a prompt without ``attr_nouns`` (spatial / numeracy / plain prompts) gets NaN.
   The reference returns 1 for a prompt without phrases and 0 for spatial and numeracy prompts.
2. Batched over images and phrases. Each distinct image (by object identity) goes through the vision
   encoder once per call however many questions it has: BLIP's image states are indexed per
   question; GIT repeats its image tokens over a phrase-major grid, with missing phrases filled by a
   dummy question whose score is dropped. The reference loops image by image and phrase by phrase.
3. Text is right-padded and each question read at its own last token, so a question's score does not
   depend on the rest of the batch. BLIP's answer decoder sees only the question's real tokens
   (transformers' own batched ``generate`` lets it attend to the padding; identical for one question).
4. ``yes_probability(images, questions)`` is the lower-level call (one question per image, pairs),
   reused by the T2I-CompBench harness with its own phrases.
5. ``behavior="reference"`` routes prompts as the reference's GIT reward does (``reward_git.py``
   L46-74 of CaraJ7/T2I-R1 @2d9d4d1), for the reference-exact recipe: ``task_type`` spatial or
   numeracy -> 0; a prompt with an ``attr_nouns`` list -> its phrases (an empty list -> NaN, the mean of
   nothing); without one -> a question per noun ("dog?"), or 1 when it has no nouns. The scoring of
   each question is the same as ours.

Dimensions: U distinct images, Q questions (pairs), P questions per image (max), T text tokens, V vocab.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from transformers import AutoProcessor, BlipForQuestionAnswering, GitForCausalLM

from t2i_r1.rewards._common import YesNoTokens, check_lengths, last_token_index
from t2i_r1.rewards.base import Metadata
from t2i_r1.utils.batches import check_batch_size, chunks, to_rgb
from t2i_r1.utils.checkpoints import CheckpointSpec, load_pretrained, resolve_device, resolve_dtype

AGGREGATIONS = ("mean", "product")
BEHAVIORS = ("ours", "reference")

GIT_CHECKPOINT = CheckpointSpec(
    expected="a transformers GIT VQA directory (config.json, weights, preprocessor and tokenizer files)",
    what="GIT fine-tuned for VQAv2, the attribute reward of T2I-R1",
    release="https://huggingface.co/microsoft/git-large-vqav2",
)
BLIP_CHECKPOINT = CheckpointSpec(
    expected="a transformers BLIP VQA directory (config.json, weights, preprocessor and tokenizer files)",
    what="BLIP fine-tuned for VQA, T2I-CompBench's attribute-binding scorer",
    release="https://huggingface.co/Salesforce/blip-vqa-base",
)


def aggregate_phrase_scores(scores: Sequence[float], aggregation: str) -> float:
    """Combine one image's phrase scores; NaN when there are none (the reward does not apply)."""
    if not scores:
        return math.nan
    if aggregation == "mean":
        return sum(scores) / len(scores)
    if aggregation == "product":
        return math.prod(scores)
    raise ValueError(f"aggregation {aggregation!r}: expected one of {AGGREGATIONS}")


class _VQAReward:
    """Shared driver: loading, pair bookkeeping, aggregation. Subclasses implement ``_score_group``."""

    name = "vqa"
    model_cls: Any = None
    spec: CheckpointSpec

    def __init__(
        self,
        checkpoint: str | os.PathLike | None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 16,
        aggregation: str = "mean",
        question_template: str = "{phrase}?",
        yes: Sequence[str] = ("yes",),
        no: Sequence[str] = ("no",),
        behavior: str = "ours",
    ) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {aggregation!r}: expected one of {AGGREGATIONS}")
        if behavior not in BEHAVIORS:
            raise ValueError(f"behavior must be one of {BEHAVIORS}, got {behavior!r}")
        self.behavior = behavior
        if "{phrase}" not in question_template:
            raise ValueError(f"question_template {question_template!r} must contain '{{phrase}}'")
        self.batch_size = check_batch_size(batch_size)
        self.aggregation = aggregation
        self.question_template = question_template
        self.processor = load_pretrained(AutoProcessor.from_pretrained, checkpoint, self.spec)
        model = load_pretrained(self.model_cls.from_pretrained, checkpoint, self.spec, dtype=resolve_dtype(dtype))
        self.model = model.to(resolve_device(device)).eval()
        self.answers = YesNoTokens.from_tokenizer(self.processor.tokenizer, yes=yes, no=no)

    # -- lower level -------------------------------------------------------------------------------

    @torch.inference_mode()
    def yes_probability(self, images: Sequence[Image.Image], questions: Sequence[str]) -> Tensor:
        """P(yes) / (P(yes) + P(no)) for each (image, question) pair -> float32 [Q] on the CPU.

        Pairs that share an image object share one pass of the vision encoder.
        """
        if len(images) != len(questions):
            raise ValueError(f"one question per image: got {len(images)} images, {len(questions)} questions")
        distinct: dict[int, int] = {}
        unique_images: list[Image.Image] = []
        owner: list[int] = []  # pair -> index into unique_images
        for image in images:
            if id(image) not in distinct:
                distinct[id(image)] = len(unique_images)
                unique_images.append(image)
            owner.append(distinct[id(image)])
        per_image: list[list[int]] = [[] for _ in unique_images]  # unique image -> its pair indices
        for pair, u in enumerate(owner):
            per_image[u].append(pair)

        out = torch.empty(len(questions), dtype=torch.float32)
        for sl in chunks(len(unique_images), self.batch_size):
            group = list(range(sl.start, sl.stop))
            pixels = self.processor.image_processor(
                images=[to_rgb(unique_images[u]) for u in group], return_tensors="pt"
            )["pixel_values"]
            pair_lists = [per_image[u] for u in group]
            probs = self._score_group(pixels, [[questions[p] for p in pairs] for pairs in pair_lists])
            for pairs, image_probs in zip(pair_lists, probs):
                out[pairs] = image_probs.cpu()
        return out

    def _score_group(self, pixel_values: Tensor, questions: list[list[str]]) -> list[Tensor]:
        """Pixels of u images [u, C, H, W] and each image's questions -> each image's yes-probabilities."""
        raise NotImplementedError

    # -- the reward --------------------------------------------------------------------------------

    def __call__(
        self, prompts: Sequence[str], images: Sequence[Image.Image], metadata: Sequence[Metadata]
    ) -> list[float]:
        check_lengths(prompts, images, metadata)
        phrases, fixed = zip(*(self._route(meta) for meta in metadata)) if metadata else ((), ())
        pair_images, questions, owners = [], [], []
        for i, image in enumerate(images):
            for phrase in phrases[i]:
                pair_images.append(image)
                questions.append(self.question_template.format(phrase=phrase))
                owners.append(i)
        probs = self.yes_probability(pair_images, questions).tolist() if questions else []
        per_image: list[list[float]] = [[] for _ in images]
        for i, p in zip(owners, probs):
            per_image[i].append(p)
        return [aggregate_phrase_scores(s, self.aggregation) if f is None else f for s, f in zip(per_image, fixed)]

    def _route(self, meta: Metadata) -> tuple[list[str], float | None]:
        """(phrases to ask about, fixed score or None) for one prompt, by ``behavior``."""
        if self.behavior == "ours":
            return list(meta.get("attr_nouns") or []), None
        if meta.get("task_type") in ("spatial", "numeracy"):
            return [], 0.0
        if meta.get("attr_nouns") is not None:
            return list(meta["attr_nouns"]), None  # [] -> NaN: the reference's np.mean of nothing
        nouns = list(meta.get("nouns") or [])
        return (nouns, None) if nouns else ([], 1.0)


class GITVQAReward(_VQAReward):
    """GIT VQA attribute reward (T2I-R1's): mean (or product) of P(yes | "<phrase>?"); NaN without phrases."""

    name = "git_vqa"
    model_cls = GitForCausalLM
    spec = GIT_CHECKPOINT

    def __init__(self, checkpoint: str | os.PathLike | None = "microsoft/git-large-vqav2", **kwargs: Any) -> None:
        super().__init__(checkpoint, **kwargs)

    def _score_group(self, pixel_values: Tensor, questions: list[list[str]]) -> list[Tensor]:
        model, tok = self.model, self.processor.tokenizer
        u = len(questions)
        p = max(len(q) for q in questions)
        # Phrase-major grid: row j * u + i is image i's j-th question. GitModel tiles the image tokens
        # (``repeat``) over the text batch, so image i's visual features land on rows i, u + i, 2u + i...
        # Images with fewer questions repeat their first one; those rows are dropped below.
        grid = [questions[i][j] if j < len(questions[i]) else questions[i][0] for j in range(p) for i in range(u)]
        ids = tok(grid, add_special_tokens=False)["input_ids"]
        ids = [[tok.cls_token_id, *row] for row in ids]  # GIT VQA: [CLS] question, answer follows
        width = max(len(row) for row in ids)
        input_ids = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)  # [u * p, T]
        mask = torch.zeros_like(input_ids)
        for r, row in enumerate(ids):
            input_ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        device = model.device
        hidden = model.git(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            pixel_values=pixel_values.to(device=device, dtype=model.dtype),
        ).last_hidden_state  # [u * p, n_image + T, D]
        n_image = hidden.shape[1] - width
        rows = torch.arange(len(ids), device=device)
        last = hidden[rows, n_image + last_token_index(mask).to(device)]  # [u * p, D]
        probs = self.answers.probability(model.output(last)).view(p, u)  # [p, u]
        return [probs[: len(questions[i]), i] for i in range(u)]


class BLIPVQAReward(_VQAReward):
    """BLIP VQA attribute score (T2I-CompBench's family); ``aggregation="product"`` gives its B-VQA number."""

    name = "blip_vqa"
    model_cls = BlipForQuestionAnswering
    spec = BLIP_CHECKPOINT

    def __init__(self, checkpoint: str | os.PathLike | None = "Salesforce/blip-vqa-base", **kwargs: Any) -> None:
        super().__init__(checkpoint, **kwargs)

    def _score_group(self, pixel_values: Tensor, questions: list[list[str]]) -> list[Tensor]:
        model = self.model
        device = model.device
        image_states = model.vision_model(
            pixel_values=pixel_values.to(device=device, dtype=model.dtype)
        ).last_hidden_state  # [u, L, D]
        owner = torch.tensor([i for i, qs in enumerate(questions) for _ in qs], device=device)  # [Q]
        flat = [q for qs in questions for q in qs]
        text = self.processor.tokenizer(flat, padding=True, padding_side="right", return_tensors="pt").to(device)
        pair_states = image_states[owner]  # [Q, L, D]
        question_states = model.text_encoder(
            input_ids=text["input_ids"],
            attention_mask=text["attention_mask"],
            encoder_hidden_states=pair_states,
            encoder_attention_mask=torch.ones(pair_states.shape[:2], dtype=torch.long, device=device),
        ).last_hidden_state  # [Q, T, D]
        # The answer decoder reads [DEC] and cross-attends to the question states. transformers 5.24
        # drops the cross-attention mask in BLIP's text model (BlipTextAttention does not pass it on), so
        # padded question positions would be attended to; questions are therefore decoded in groups of
        # equal length, each cut to its real tokens, which needs no mask at all.
        lengths = text["attention_mask"].sum(dim=-1)  # [Q]
        logits = torch.empty(len(flat), model.config.text_config.vocab_size, device=device)
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero().squeeze(-1)  # [q]
            start = torch.full((len(rows), 1), model.decoder_start_token_id, dtype=torch.long, device=device)
            logits[rows] = model.text_decoder(
                input_ids=start, encoder_hidden_states=question_states[rows, :length]
            ).logits[:, 0].float()  # [q, V]: the answer's first token
        probs = self.answers.probability(logits)  # [Q]
        return list(probs.split([len(qs) for qs in questions]))

"""Policy adapter around transformers' ``JanusForConditionalGeneration`` + ``JanusProcessor``.

The adapter knows the model and its formats, nothing about sampling or rewards:
- loading any Janus / Janus-Pro checkpoint from a local directory or hub id (no ``trust_remote_code``),
  with a clear error when the directory is not a Janus checkpoint;
- the two prompts of T2I-R1: the *plan prompt* (reasoning instruction around the user prompt, in the
  model's chat format) and the *image prompt* (``"{prompt}. {plan}"`` in the chat format, then the
  begin-of-image token), tokenised with left padding;
- the pieces of the network that sampling and log-prob code call directly: the backbone, the text
  head, the image head, the two input embeddings and the VQ decoder. Calling the heads separately is
  what lets us evaluate only the head a position needs (no vocab-size text logits over image tokens).

Dimension letters: N rows, P prompt tokens, L plan tokens, T image tokens, H hidden, V text vocab,
C image codebook.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, JanusForConditionalGeneration, PreTrainedTokenizerBase

from t2i_r1.rollout.settings import DEFAULT_IMAGE_PROMPT_FORMAT
from t2i_r1.utils.checkpoints import CheckpointSpec, check_checkpoint
from t2i_r1.utils.io import respect_umask

TEMPLATE_FILE = "reasoning.txt"
"""Saved beside a checkpoint's weights: the reasoning instruction it plans from (read back on load)."""


JANUS_CHECKPOINT = CheckpointSpec(
    expected="a Janus checkpoint directory (config.json with model_type 'janus', weights, processor files)",
    what="the policy (t2i-r1 make-tiny writes a tiny one; t2i-r1 train exports output_dir/final)",
    release="deepseek-community/Janus-Pro-1B and deepseek-community/Janus-Pro-7B on the Hugging Face hub",
)


class NotAJanusCheckpoint(ValueError):
    """Raised when a path or hub id does not hold a Janus checkpoint."""


def default_reasoning_template() -> str:
    """The packaged reasoning instruction (``{prompt}`` marks where the user prompt goes)."""
    return resources.files("t2i_r1").joinpath("templates/reasoning.txt").read_text(encoding="utf-8")


def checkpoint_template(path_or_id: str | Path, given: str | Path | None = None) -> str | None:
    """The instruction text for a checkpoint: from the file ``given``, else from its own ``reasoning.txt``
    (written by ``JanusPolicy.save_pretrained`` and the ShapeWorld planner), else None (the packaged one)."""
    own = Path(path_or_id) / TEMPLATE_FILE
    if given is None and own.is_file():
        given = own
    return None if given is None else load_template(given)


def load_template(path: str | Path | None) -> str:
    """Read a reasoning-instruction template; ``None`` gives the packaged one."""
    if path is None:
        return default_reasoning_template()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reasoning template file not found: {path} (a text file with a '{{prompt}}' slot)")
    text = path.read_text(encoding="utf-8")
    if "{prompt}" not in text:
        raise ValueError(f"reasoning template {path} has no '{{prompt}}' slot for the user prompt")
    return text


def _check_janus_checkpoint(path_or_id: str) -> None:
    """Fail early, naming the problem, when a local directory is not a Janus checkpoint."""
    path = Path(path_or_id)
    if not path.exists():
        return  # a hub id: from_pretrained reports its own errors
    config_file = path / "config.json"
    if not config_file.is_file():
        raise NotAJanusCheckpoint(f"{path} is not a model directory: {config_file} is missing")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except json.JSONDecodeError as err:
        raise NotAJanusCheckpoint(f"{config_file} is not valid JSON: {err}") from err
    if model_type != "janus":
        raise NotAJanusCheckpoint(
            f"{path} holds a {model_type!r} model, not a Janus checkpoint (config.json model_type must be 'janus'; "
            "convert original DeepSeek Janus-Pro weights with transformers' convert_janus_weights_to_hf.py "
            "or use deepseek-community/Janus-Pro-1B / -7B)"
        )


@dataclass(frozen=True)
class TokenizedPrompts:
    """Left-padded prompt ids with their attention mask, both (N, P)."""

    ids: torch.LongTensor
    mask: torch.LongTensor


class JanusPolicy:
    """A Janus model with the prompt formats and network pieces T2I-R1 needs.

    Args:
        model: a ``JanusForConditionalGeneration``.
        processor: its ``JanusProcessor`` (tokenizer + chat template).
        reasoning_template: the instruction that asks for a plan; must contain ``{prompt}``.
        image_prompt_format: how prompt and plan are joined for the image prompt.
    """

    def __init__(
        self,
        model: JanusForConditionalGeneration,
        processor,
        reasoning_template: str | None = None,
        image_prompt_format: str = DEFAULT_IMAGE_PROMPT_FORMAT,
    ):
        self.model = model
        self.processor = processor
        self.tokenizer: PreTrainedTokenizerBase = processor.tokenizer
        self.reasoning_template = reasoning_template or default_reasoning_template()
        if "{prompt}" not in self.reasoning_template:
            raise ValueError("reasoning_template must contain a '{prompt}' slot")
        if "{prompt}" not in image_prompt_format:
            raise ValueError("image_prompt_format must contain a '{prompt}' slot")
        self.image_prompt_format = image_prompt_format
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else model.config.text_config.pad_token_id
        self.eos_id = tok.eos_token_id
        self.bos_id = tok.bos_token_id
        self.boi_id = tok.convert_tokens_to_ids(processor.image_start_token)
        if self.pad_id is None or self.eos_id is None:
            raise ValueError("the tokenizer needs a pad and an eos token")

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        dtype: torch.dtype | str = "float32",
        device: str | torch.device = "cpu",
        attn_implementation: str | None = None,
        reasoning_template: str | Path | None = None,
        image_prompt_format: str = DEFAULT_IMAGE_PROMPT_FORMAT,
    ) -> JanusPolicy:
        """Load model and processor from a local directory or hub id. The reasoning instruction is
        ``reasoning_template`` if given, else the checkpoint's own ``reasoning.txt`` (written by
        ``save_pretrained``, so fine-tuned models keep the instruction they were trained with), else
        the packaged one."""
        path_or_id = check_checkpoint(path_or_id, JANUS_CHECKPOINT)
        _check_janus_checkpoint(path_or_id)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        kwargs = {"dtype": dtype}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        model = JanusForConditionalGeneration.from_pretrained(path_or_id, **kwargs).to(device)
        model.eval()
        processor = AutoProcessor.from_pretrained(path_or_id)
        return cls(model, processor, checkpoint_template(path_or_id, reasoning_template), image_prompt_format)

    def save_pretrained(self, directory: str | Path) -> None:
        """Model, processor and the reasoning instruction (``reasoning.txt``)."""
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        (Path(directory) / TEMPLATE_FILE).write_text(self.reasoning_template, encoding="utf-8")
        respect_umask(directory)

    # ------------------------------------------------------------------ shapes and modules
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def backbone(self) -> torch.nn.Module:
        """The causal language model without its head (a ``LlamaModel``)."""
        return self.model.model.language_model

    @property
    def num_image_tokens(self) -> int:
        side = self.model.model.vqmodel.quantize.quant_state_dims
        return side[0] * side[1]

    @property
    def codebook_size(self) -> int:
        return self.model.config.vq_config.num_embeddings

    @property
    def context_length(self) -> int:
        return self.model.config.text_config.max_position_embeddings

    def embed_text(self, ids: torch.LongTensor) -> torch.Tensor:
        return self.backbone.get_input_embeddings()(ids)  # (N, P, H)

    def embed_image(self, tokens: torch.LongTensor) -> torch.Tensor:
        return self.model.prepare_embeddings_for_image_generation(tokens)  # (N, T, H)

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden)  # (..., H) -> (..., V)

    def image_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.model.generation_head(hidden)  # (..., H) -> (..., C)

    # ------------------------------------------------------------------ prompts
    def _chat(self, user_text: str) -> str:
        conversation = [{"role": "user", "content": [{"type": "text", "text": user_text}]}]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        return f"<|User|>: {user_text.strip()}\n\n<|Assistant|>:"  # DeepSeek's sft format, as Janus-Pro

    def plan_prompt_text(self, prompt: str) -> str:
        return self._chat(self.reasoning_template.replace("{prompt}", prompt.strip()))

    def image_prompt_text(self, prompt: str, plan: str | None = None) -> str:
        """The image prompt: chat-formatted ``"{prompt}. {plan}"`` (or the prompt alone), then <begin_of_image>."""
        user = prompt.strip() if plan is None else self.image_prompt_format.format(prompt=prompt.strip(), plan=plan.strip())
        return self._chat(user) + self.processor.image_start_token

    def token_count(self, text: str) -> int:
        """Tokens of ``text`` as ``tokenize`` counts them (BOS added when the tokenizer does not add it)."""
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return len(ids) + int(self.bos_id is not None and (not ids or ids[0] != self.bos_id))

    def context_overflow(self, prompt: str, *, use_plan: bool, plan_tokens: int) -> str | None:
        """Why ``prompt`` is too long to be drawn within the model's context, or None if it fits.

        With a plan, the image prompt is "{prompt}. {plan}" and the plan may take up to ``plan_tokens``
        tokens, so that worst case is what must fit; the image tokens follow the image prompt."""
        context, image_tokens = self.context_length, self.num_image_tokens
        plan_tokens = plan_tokens if use_plan else 0
        stages = []
        if use_plan:
            stages.append(("the planning instruction", self.token_count(self.plan_prompt_text(prompt)), plan_tokens,
                           f"{plan_tokens} plan tokens"))
            image_prompt = self.image_prompt_text(prompt, "")
        else:
            image_prompt = self.image_prompt_text(prompt)
        stages.append(("the image prompt", self.token_count(image_prompt), plan_tokens + image_tokens,
                       f"{plan_tokens} plan + {image_tokens} image tokens" if use_plan else f"{image_tokens} image tokens"))
        for where, used, reserve, reserve_text in stages:
            if used + reserve > context:
                return (f"with {where} it takes {used} tokens, and {reserve_text} must follow, beyond the model's "
                        f"context of {context} tokens. Shorten it by at least {used + reserve - context} tokens")
        return None

    def tokenize(self, texts: list[str], *, what: str = "prompt", reserve: int = 0) -> TokenizedPrompts:
        """Tokenise with BOS and left padding; ``reserve`` tokens must still fit in the context after it."""
        rows = []
        for i, text in enumerate(texts):
            ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
            if self.bos_id is not None and (not ids or ids[0] != self.bos_id):
                ids = [self.bos_id] + ids
            if len(ids) + reserve > self.context_length:
                raise ValueError(
                    f"{what} {i} is too long: {len(ids)} tokens + {reserve} to generate exceed the model's "
                    f"context of {self.context_length} tokens"
                )
            rows.append(ids)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        return TokenizedPrompts(ids.to(self.device), mask.to(self.device))

    def unconditional_ids(self, ids: torch.LongTensor, mask: torch.LongTensor) -> torch.LongTensor:
        """CFG's unconditional image prompt: every real token but BOS and <begin_of_image> becomes PAD.

        The rows keep the conditional rows' length and attention mask, so both halves share position
        ids and one KV cache (as Janus does).
        """
        keep = (ids == self.boi_id) | (ids == self.bos_id) | (mask == 0)
        return torch.where(keep, ids, torch.full_like(ids, self.pad_id))  # (N, P)

    def decode_text(self, ids: torch.LongTensor, mask: torch.LongTensor) -> list[str]:
        return [
            self.tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True).strip()
            for row, m in zip(ids.cpu(), mask.cpu())
        ]

    # ------------------------------------------------------------------ images
    @torch.no_grad()
    def decode_image_tokens(self, tokens: torch.LongTensor) -> torch.Tensor:
        """VQ-decode (N, T) tokens to float pixels (N, 3, S, S) in [0, 1]."""
        pixels = self.model.model.vqmodel.decode(tokens)  # (N, 3, S, S), about [-1, 1]
        return ((pixels.float() + 1) / 2).clamp(0, 1)

    @property
    def image_size(self) -> int:
        """Side in pixels of the images the VQ model encodes and decodes."""
        config = self.model.config.vq_config
        return config.num_patches * 2 ** (len(config.channel_multiplier) - 1)

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.LongTensor:
        """VQ-encode PIL images (resized to ``image_size``) to (N, T) image tokens; pixels go in as [-1, 1]."""
        side = self.image_size
        arrays = [torch.from_numpy(np.array(im.convert("RGB").resize((side, side), Image.BICUBIC))) for im in images]
        pixels = torch.stack(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, 3, S, S)
        vq = self.model.model.vqmodel
        encoded = vq.encode(pixels.to(self.device, self.model.dtype))
        return encoded.image_tokens.view(len(images), -1)  # (N, T)

    @staticmethod
    def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
        """(N, 3, S, S) floats in [0, 1] -> PIL RGB images."""
        arrays = (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (N, S, S, 3)
        return [Image.fromarray(a) for a in arrays]

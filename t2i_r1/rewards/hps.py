"""HPS v2.1 human-preference reward: an open_clip ViT-H/14 checkpoint run as a ``transformers`` CLIPModel.

HPS v2.1 (``HPS_v2.1_compressed.pt``, hub repo ``xswu/HPSv2``) is OpenCLIP ViT-H-14 (laion2B-s32B-b79K)
fine-tuned on human preference pairs, saved as an open_clip state dict. Score (HPS's own definition):
the cosine between the normalised image and text embeddings, i.e. the diagonal of
``image_features @ text_features.T``. Range [-1, 1]; real images score about 0.2-0.35.

Choices, and how they differ from the HPS code the reference calls:
1. No open_clip and no torchvision: ``convert_open_clip_state_dict`` maps the open_clip keys onto
   ``transformers``' ``CLIPModel`` (shapes give every size but the head counts, which are arguments:
   ViT-H-14 has 16 vision heads of width 80 and 16 text heads of width 64). The test checks the
   converted model against a reference open_clip-style forward written in the test.
2. Activation: exact GELU (open_clip's ``nn.GELU``; only OpenAI's own checkpoints use QuickGELU).
3. Preprocessing: HPS's validation transform (open_clip ``ResizeMaxSize``): resize the longer side to
   224 (bicubic), pad the shorter one symmetrically with black, normalise with the OpenAI CLIP
   mean/std. For square images (Janus generates 384 x 384) this is a plain bicubic resize. HPS pads
   only when it resized; we always pad, so an already-224 non-square image still yields 224 x 224.
4. Tokenizer: ``transformers``' CLIPTokenizer, from a tokenizer directory / hub id, or built from
   open_clip's ``bpe_simple_vocab_16e6.txt.gz`` (``clip_tokenizer_from_bpe``). Truncation to 77 tokens
   keeps the end-of-text token last, as open_clip does. open_clip also runs ``ftfy`` and HTML
   unescaping on the text; the HF tokenizer does not (identical for plain prompts).
5. Batched: the text of each distinct prompt is encoded once per call, images in chunks of
   ``batch_size``; the reference scores one image at a time and re-encodes the prompt for each.

Dimensions: N images, P distinct prompts, E embedding width.
"""

from __future__ import annotations

import gzip
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from t2i_r1.rewards._common import check_lengths, normalize_images
from t2i_r1.rewards.base import Metadata
from t2i_r1.utils.batches import check_batch_size, chunks, to_rgb
from t2i_r1.utils.checkpoints import (
    CheckpointSpec,
    check_checkpoint,
    build_from_state_dict,
    load_pretrained,
    load_state_dict_file,
    resolve_device,
    resolve_dtype,
)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

HPS_CHECKPOINT = CheckpointSpec(
    expected="HPS_v2.1_compressed.pt",
    what="the HPS v2.1 human-preference model (an open_clip ViT-H-14 state dict)",
    release="https://huggingface.co/xswu/HPSv2/resolve/main/HPS_v2.1_compressed.pt",
)
CLIP_TOKENIZER = CheckpointSpec(
    expected="a CLIP tokenizer directory (tokenizer.json or vocab.json + merges.txt) or bpe_simple_vocab_16e6.txt.gz",
    what="the CLIP BPE tokenizer used by open_clip",
    release="https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K (tokenizer files), "
    "or open_clip's wheel (open_clip/bpe_simple_vocab_16e6.txt.gz)",
)

# open_clip ViT-H-14: width 1280 / head_width 80 in the image tower, width 1024 / 16 heads in the text tower.
VIT_H_14_HEAD_WIDTHS = {"vision_head_width": 80, "text_head_width": 64}
# open_clip's tokenizer: 48,894 merges (49152 - 256 - 2) from the gzip file, after its header line.
CLIP_NUM_MERGES = 49152 - 256 - 2

_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
# Per-block open_clip name -> transformers name (the fused attention input projection is split apart).
_BLOCK_KEYS = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
# Top-level open_clip name -> transformers name (projections are handled apart: they are transposed).
_TOP_KEYS = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
# Buffers some open_clip versions save (the causal mask is rebuilt by transformers).
_IGNORED_KEYS = {"attn_mask"}


def _num_blocks(state_dict: Mapping[str, Tensor], tower: str) -> int:
    prefix = "visual.transformer.resblocks." if tower == "visual" else "transformer.resblocks."
    indices = {int(k[len(prefix) :].split(".")[0]) for k in state_dict if k.startswith(prefix)}
    if not indices:
        raise ValueError(f"open_clip state dict has no {prefix}* keys")
    if indices != set(range(len(indices))):
        raise ValueError(f"open_clip state dict: {prefix}* indices are not 0..{len(indices) - 1}")
    return len(indices)


def _heads(width: int, head_width: int, tower: str) -> int:
    if width % head_width:
        raise ValueError(f"{tower} width {width} is not a multiple of head width {head_width}")
    return width // head_width


def convert_open_clip_state_dict(
    state_dict: Mapping[str, Tensor],
    *,
    vision_head_width: int = 64,
    text_head_width: int = 64,
    eos_token_id: int = 49407,
    bos_token_id: int = 49406,
    pad_token_id: int = 0,
    layer_norm_eps: float = 1e-5,
    hidden_act: str = "gelu",
) -> tuple[CLIPConfig, dict[str, Tensor]]:
    """An open_clip CLIP state dict (standard ``CLIP`` class, ViT image tower) -> (CLIPConfig, CLIPModel state dict).

    Sizes come from the tensors; head counts are ``width // head_width`` (open_clip presets: 64/64 for
    ViT-B and ViT-L, 80/64 for ViT-H-14, 104/64 for ViT-bigG-14). ``eos_token_id`` is where the text
    tower pools (open_clip pools at the argmax token id, which is end-of-text for its tokenizer).
    Unknown keys are an error, so a layout this function does not handle is never half converted.
    """
    if any(k.startswith("text.") for k in state_dict):
        raise ValueError(
            "this is an open_clip CustomTextCLIP state dict (keys 'text.*'); only the standard CLIP layout is supported"
        )
    if "visual.proj" not in state_dict:
        raise ValueError("open_clip state dict has no 'visual.proj': not a ViT image tower this converter knows")

    conv = state_dict["visual.conv1.weight"]  # [Wv, 3, p, p]
    vision_width, patch = conv.shape[0], conv.shape[-1]
    grid = math.isqrt(state_dict["visual.positional_embedding"].shape[0] - 1)
    if grid * grid + 1 != state_dict["visual.positional_embedding"].shape[0]:
        raise ValueError("visual.positional_embedding is not (grid**2 + 1) x width")
    vision_layers = _num_blocks(state_dict, "visual")
    vocab_size, text_width = state_dict["token_embedding.weight"].shape
    context_length = state_dict["positional_embedding"].shape[0]
    text_layers = _num_blocks(state_dict, "text")
    visual_proj = state_dict["visual.proj"]  # [Wv, E]: open_clip computes x @ proj
    if "text_projection" in state_dict:
        text_proj_weight = state_dict["text_projection"].t()  # [Wt, E] -> Linear weight [E, Wt]
    elif "text_projection.weight" in state_dict:  # newer open_clip may store it as an nn.Linear
        if "text_projection.bias" in state_dict:
            raise ValueError("text_projection has a bias; transformers' CLIPModel has none")
        text_proj_weight = state_dict["text_projection.weight"]
    else:
        raise ValueError("open_clip state dict has no text_projection")
    embed_dim = visual_proj.shape[1]
    if text_proj_weight.shape[0] != embed_dim:
        raise ValueError(f"image embedding width {embed_dim} != text embedding width {text_proj_weight.shape[0]}")

    config = CLIPConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": text_width,
            "intermediate_size": state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            "num_hidden_layers": text_layers,
            "num_attention_heads": _heads(text_width, text_head_width, "text"),
            "max_position_embeddings": context_length,
            "hidden_act": hidden_act,
            "layer_norm_eps": layer_norm_eps,
            "projection_dim": embed_dim,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "pad_token_id": pad_token_id,
        },
        vision_config={
            "hidden_size": vision_width,
            "intermediate_size": state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            "num_hidden_layers": vision_layers,
            "num_attention_heads": _heads(vision_width, vision_head_width, "vision"),
            "image_size": grid * patch,
            "patch_size": patch,
            "num_channels": conv.shape[1],
            "hidden_act": hidden_act,
            "layer_norm_eps": layer_norm_eps,
            "projection_dim": embed_dim,
        },
        projection_dim=embed_dim,
    )

    out: dict[str, Tensor] = {
        "visual_projection.weight": visual_proj.t().contiguous(),  # [E, Wv]
        "text_projection.weight": text_proj_weight.contiguous(),  # [E, Wt]
    }
    handled = {"visual.proj", "text_projection", "text_projection.weight"}
    for key, value in state_dict.items():
        if key in handled or key in _IGNORED_KEYS:
            continue
        if key in _TOP_KEYS:
            out[_TOP_KEYS[key]] = value
            continue
        match = _BLOCK.match(key)
        if match is None:
            raise ValueError(f"open_clip key {key!r} has no transformers counterpart in this converter")
        tower = "vision_model" if match.group(1) else "text_model"
        prefix = f"{tower}.encoder.layers.{match.group(2)}."
        name = match.group(3)
        if name in ("attn.in_proj_weight", "attn.in_proj_bias"):
            # nn.MultiheadAttention packs q, k, v along the output dimension, in that order.
            kind = "weight" if name.endswith("weight") else "bias"
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{prefix}self_attn.{proj}.{kind}"] = part.clone()  # own storage, not a view
        elif name in _BLOCK_KEYS:
            out[prefix + _BLOCK_KEYS[name]] = value
        else:
            raise ValueError(f"open_clip key {key!r} has no transformers counterpart in this converter")
    return config, out


# --------------------------------------------------------------------------------------------------
# Tokenizer and preprocessing
# --------------------------------------------------------------------------------------------------


def byte_to_unicode_table() -> dict[int, str]:
    """GPT-2 / CLIP byte-level alphabet: printable Latin-1 bytes map to themselves, the other bytes to
    code points from 256 upwards in byte order, so every byte is a visible, non-space character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clip_tokenizer_from_bpe(path: str | os.PathLike, num_merges: int = CLIP_NUM_MERGES) -> CLIPTokenizer:
    """A CLIPTokenizer from open_clip's ``bpe_simple_vocab_16e6.txt.gz`` (a header line, then one merge a line).

    The vocabulary is built as open_clip builds it: the 256 byte symbols, the same with ``</w>``, one
    entry per merge, then ``<|startoftext|>`` and ``<|endoftext|>`` (49,408 entries for the real file).
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + num_merges] if line.strip()]
    if any(len(m) != 2 for m in merges):
        raise ValueError(f"{path}: every merge line must hold two symbols")
    symbols = list(byte_to_unicode_table().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=merges)


def load_clip_tokenizer(path: str | os.PathLike | None) -> CLIPTokenizer:
    """A CLIP tokenizer from a directory / hub id, or from a ``*.txt.gz`` BPE merges file.

    Never a degraded one: ``from_pretrained`` on a folder without vocabulary files (or a hub id it could
    not fetch) builds a tokenizer of just its special tokens, which maps every text to the same ids; a
    tokenizer without the 256 byte symbols and its end-of-text token raises instead."""
    if path is not None and str(path).endswith((".txt.gz", ".txt")):
        if not os.path.isfile(path):
            raise CLIP_TOKENIZER.error(path)
        tokenizer = clip_tokenizer_from_bpe(path)
    else:
        tokenizer = load_pretrained(CLIPTokenizer.from_pretrained, path, CLIP_TOKENIZER)
    if len(tokenizer) < 2 * 256 or tokenizer.eos_token_id is None:
        raise CLIP_TOKENIZER.error(path, f"gave a tokenizer of {len(tokenizer)} tokens, not a CLIP vocabulary "
                                         "(are the vocabulary files missing?)")
    return tokenizer


def resize_max_side_and_pad(image: Image.Image, size: int) -> Image.Image:
    """HPS's validation resize: longer side -> ``size`` (bicubic), shorter side padded with black, centred."""
    image = to_rgb(image)
    width, height = image.size
    scale = size / max(width, height)
    new_w, new_h = round(width * scale), round(height * scale)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    if (new_w, new_h) == (size, size):
        return image
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(image, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas


def hps_pixel_values(images: Sequence[Image.Image], size: int) -> Tensor:
    """PIL images -> normalised pixels [N, 3, size, size] as HPS v2 preprocesses them."""
    return normalize_images([resize_max_side_and_pad(im, size) for im in images], OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


# --------------------------------------------------------------------------------------------------
# The reward
# --------------------------------------------------------------------------------------------------


def clip_cosine_scores(
    model: CLIPModel,
    tokenizer: Any,
    prompts: Sequence[str],
    pixel_values: Tensor,
    batch_size: int,
) -> list[float]:
    """Cosine(image_i, prompt_i) with each distinct prompt encoded once; ``pixel_values`` [N, 3, S, S] on CPU."""
    device, dtype = model.device, model.dtype
    distinct = list(dict.fromkeys(prompts))
    row_of = {p: i for i, p in enumerate(distinct)}
    max_len = model.config.text_config.max_position_embeddings
    text_feats = []
    for sl in chunks(len(distinct), batch_size):
        tok = tokenizer(
            distinct[sl], padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        ).to(device)
        feats = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        text_feats.append(feats.pooler_output.float())  # [p, E]
    text = torch.nn.functional.normalize(torch.cat(text_feats), dim=-1)  # [P, E]
    text = text[torch.tensor([row_of[p] for p in prompts], device=text.device)]  # [N, E]

    scores = []
    for sl in chunks(len(prompts), batch_size):
        pixels = pixel_values[sl].to(device=device, dtype=dtype)  # [n, 3, S, S]
        image = model.get_image_features(pixel_values=pixels).pooler_output.float()  # [n, E]
        image = torch.nn.functional.normalize(image, dim=-1)
        scores.append((image * text[sl]).sum(dim=-1))  # [n]
    return torch.cat(scores).cpu().tolist()


class HPSv21Reward:
    """HPS v2.1: cosine between the HPS image and prompt embeddings, one float per image in [-1, 1].

    ``checkpoint``: path to ``HPS_v2.1_compressed.pt`` (or a ``.safetensors`` with the same keys).
    ``tokenizer``: CLIP tokenizer directory / hub id, or open_clip's ``bpe_simple_vocab_16e6.txt.gz``
    (required: the ViT-H-14 tokenizer files of laion/CLIP-ViT-H-14-laion2B-s32B-b79K; nothing is fetched
    unless a hub id is written here).
    ``metadata`` is not used: every prompt gets a score.
    """

    name = "hps"

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        tokenizer: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 16,
        vision_head_width: int = VIT_H_14_HEAD_WIDTHS["vision_head_width"],
        text_head_width: int = VIT_H_14_HEAD_WIDTHS["text_head_width"],
    ) -> None:
        self.batch_size = check_batch_size(batch_size)
        check_checkpoint(checkpoint, HPS_CHECKPOINT)  # both paths are checked before either loads
        check_checkpoint(tokenizer, CLIP_TOKENIZER)
        self.tokenizer = load_clip_tokenizer(tokenizer)
        state_dict = load_state_dict_file(checkpoint, HPS_CHECKPOINT)
        config, converted = convert_open_clip_state_dict(
            state_dict,
            vision_head_width=vision_head_width,
            text_head_width=text_head_width,
            eos_token_id=self.tokenizer.eos_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        if self.tokenizer.eos_token_id >= config.text_config.vocab_size:
            raise ValueError(
                f"tokenizer end-of-text id {self.tokenizer.eos_token_id} is outside the checkpoint's "
                f"{config.text_config.vocab_size}-token vocabulary: wrong tokenizer for {checkpoint}"
            )
        model = build_from_state_dict(CLIPModel, config, converted)
        self.model = model.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
        self.image_size = config.vision_config.image_size

    @torch.inference_mode()
    def __call__(
        self, prompts: Sequence[str], images: Sequence[Image.Image], metadata: Sequence[Metadata] | None = None
    ) -> list[float]:
        check_lengths(prompts, images, metadata)
        if not images:
            return []
        pixels = hps_pixel_values(images, self.image_size)  # [N, 3, S, S]
        return clip_cosine_scores(self.model, self.tokenizer, list(prompts), pixels, self.batch_size)

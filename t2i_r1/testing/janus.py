"""Tiny Janus models built from configs, with a tokenizer trained in-process.

They run the real transformers classes on a CPU in milliseconds, with no download: the test suite,
the benchmarks, ``t2i-r1 make-tiny`` and the web page's placeholder use them. ``TinyJanusSpec`` mirrors
the presets of ``../shared/bench/reference_step.py`` so speed comparisons use the same shapes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import LlamaConfig, PreTrainedTokenizerFast
from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig

from t2i_r1.policy.build import BOI, BOS, EOI, EOS, IMAGE_TOKEN, PAD, ROLE_TOKENS, assemble_janus, janus_tokenizer
from t2i_r1.policy.janus import JanusPolicy

DEFAULT_CORPUS = (
    "a photo of a red cube left of a blue sphere . two green cats and a yellow dog on top of a wooden table . "
    "the image shows one small purple circle above a large orange square with striped texture . "
    "draw the plan : objects , colours , shapes , textures , counts and where each object is . "
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in milliseconds, with Janus's special tokens and BOS added on encode."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [PAD, BOS, EOS, IMAGE_TOKEN, BOI, EOI]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    tok.add_tokens(ROLE_TOKENS)
    return janus_tokenizer(tok)


@dataclass
class TinyJanusSpec:
    """Shapes of a tiny Janus. ``image_tokens`` must be a square; the decoded side is 8 * sqrt(image_tokens)."""

    hidden: int = 128
    layers: int = 2
    heads: int = 4
    image_tokens: int = 64
    codebook: int = 1024
    vocab: int = 512
    intermediate: int | None = None
    max_positions: int = 1024
    seed: int = 0


# Janus-Pro's published shapes (deepseek-community/Janus-Pro-1B and -7B config.json): a Llama language model
# with DeepSeek-LLM's 102,400-word vocabulary; SigLIP-L/16 understanding encoder at 384 px (576 patches);
# the VQ tokenizer with a 16,384-entry codebook whose decoder maps 24 x 24 = 576 tokens to 384 x 384 px.
# transformers' JanusVisionConfig / JanusVQVAEConfig defaults are these values (documented as Janus-Pro-1B's);
# the 7B model differs only in the language model and the projections to its width.
JANUS_PRO_TEXT = {
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
               num_key_value_heads=16),
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=30, num_attention_heads=32,
               num_key_value_heads=32),
}
JANUS_PRO_VOCAB = 102400


def janus_pro_configs(size: str) -> tuple[LlamaConfig, JanusVisionConfig, JanusVQVAEConfig]:
    """The text, vision and VQ configs of Janus-Pro-1B or -7B (``size`` "1b" / "7b"), to build a randomly
    initialised model of the real shapes (nothing is downloaded)."""
    if size not in JANUS_PRO_TEXT:
        raise ValueError(f"size must be one of {sorted(JANUS_PRO_TEXT)}, got {size!r}")
    text = JANUS_PRO_TEXT[size]
    H = text["hidden_size"]
    llama = LlamaConfig(vocab_size=JANUS_PRO_VOCAB, max_position_embeddings=16384, rms_norm_eps=1e-6,
                        rope_theta=10000.0, bos_token_id=100000, eos_token_id=100001, pad_token_id=100015, **text)
    vision = JanusVisionConfig(projection_dim=H)  # SigLIP-L/16, 384 px, 576 tokens: the class defaults
    vq = JanusVQVAEConfig(projection_dim=H, image_token_embed_dim=H)  # 16,384 codes, 384 px: the class defaults
    return llama, vision, vq


def build_janus_pro_shaped(size: str, *, seed: int = 0, device: str | torch.device = "cpu") -> JanusPolicy:
    """A randomly initialised model of Janus-Pro-1B's or -7B's shapes with the in-process tokenizer (its
    ids sit inside the real vocabulary; the special ids are the tokenizer's, not DeepSeek's)."""
    tokenizer = train_tokenizer([DEFAULT_CORPUS])
    text, vision, vq = janus_pro_configs(size)
    ids = tokenizer.convert_tokens_to_ids
    text.bos_token_id, text.eos_token_id, text.pad_token_id = ids(BOS), ids(EOS), ids(PAD)
    with torch.device(device):
        return assemble_janus(tokenizer, text, vision, vq, seed=seed)


PRESETS = {
    "tiny": TinyJanusSpec(hidden=128, layers=2, heads=4, image_tokens=64),
    "medium": TinyJanusSpec(hidden=256, layers=4, heads=4, image_tokens=256),
}


def build_tiny_janus(
    spec: TinyJanusSpec | None = None, tokenizer: PreTrainedTokenizerFast | None = None
) -> JanusPolicy:
    """A randomly initialised Janus (real transformers classes) and its processor, as a ``JanusPolicy``."""
    spec = spec or TinyJanusSpec()
    tokenizer = tokenizer or train_tokenizer([DEFAULT_CORPUS], vocab_size=min(384, spec.vocab - 16))
    if len(tokenizer) > spec.vocab:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model vocabulary is {spec.vocab}")
    side = math.isqrt(spec.image_tokens)
    if side * side != spec.image_tokens:
        raise ValueError(f"image_tokens must be a square number, got {spec.image_tokens}")
    H = spec.hidden
    ids = tokenizer.convert_tokens_to_ids
    text = LlamaConfig(
        vocab_size=spec.vocab, hidden_size=H, intermediate_size=spec.intermediate or H * 11008 // 4096,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        bos_token_id=ids(BOS), eos_token_id=ids(EOS), pad_token_id=ids(PAD),
    )
    vision = JanusVisionConfig(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=8 * side, patch_size=8,
        projection_dim=H, num_image_tokens=spec.image_tokens, depth=2,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8, num_embeddings=spec.codebook, latent_channels=32, base_channels=32,
        channel_multiplier=[1, 1, 2, 2], num_res_blocks=1, projection_dim=H, image_token_embed_dim=H,
        num_hidden_layers=2,
    )
    return assemble_janus(tokenizer, text, vision, vq, seed=spec.seed)


def save_tiny_janus(directory: str | Path, spec: TinyJanusSpec | None = None) -> Path:
    """Build a tiny Janus and write it as a loadable checkpoint directory."""
    directory = Path(directory)
    build_tiny_janus(spec).save_pretrained(directory)
    return directory


def save_tiny_planner(directory: str | Path, seed: int = 0) -> Path:
    """A tiny random ``LlamaForCausalLM`` and its tokenizer, written as a directory: an external planner."""
    from transformers import LlamaForCausalLM

    tokenizer = train_tokenizer([DEFAULT_CORPUS], vocab_size=300)
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    ))
    directory = Path(directory)
    lm.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory

"""Janus models assembled from configs instead of downloaded: our chat format, a tokenizer wrapper, a seeded model.

ShapeWorld's model (``t2i_r1.shapeworld.model``) and the tiny test models (``t2i_r1.testing``) are built
here, with the real transformers classes and the special tokens and processor Janus-Pro uses.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, processors
from transformers import (
    JanusConfig,
    JanusForConditionalGeneration,
    JanusProcessor,
    LlamaConfig,
    PreTrainedTokenizerFast,
)
from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig
from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

from t2i_r1.policy.janus import JanusPolicy

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
IMAGE_TOKEN, BOI, EOI = "<image_placeholder>", "<begin_of_image>", "<end_of_image>"
ROLE_TOKENS = ["<|User|>", "<|Assistant|>"]

# Our own Jinja rendering of DeepSeek's chat format ("<|User|>: ...\n\n<|Assistant|>:"), the format of
# the Janus-Pro processors on the hub. Newlines go through expressions because chat templates are
# compiled with trim_blocks, which eats a newline that follows a block tag.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|User|>: {% else %}<|Assistant|>: {% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image_placeholder>{{ '\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] | trim }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'user' %}{{ '\n\n' }}{% else %}<｜end▁of▁sentence｜>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)


def janus_tokenizer(tok: Tokenizer, **special_tokens) -> PreTrainedTokenizerFast:
    """Wrap a ``tokenizers`` Tokenizer holding Janus's special tokens: BOS added on encode, left padding,
    and the image tokens the ``JanusProcessor`` looks up. Extra keywords (e.g. ``unk_token``) pass through."""
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left",
        extra_special_tokens={"image_token": IMAGE_TOKEN, "boi_token": BOI, "eoi_token": EOI}, **special_tokens,
    )


def assemble_janus(
    tokenizer: PreTrainedTokenizerFast,
    text: LlamaConfig,
    vision: JanusVisionConfig,
    vq: JanusVQVAEConfig,
    *,
    seed: int,
    reasoning_template: str | None = None,
) -> JanusPolicy:
    """A randomly initialised (seeded) Janus from its three sub-configs, with a processor in our chat format
    for images of ``vision.image_size`` px in ``vision.num_image_tokens`` tokens."""
    config = JanusConfig(
        text_config=text, vision_config=vision, vq_config=vq,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    side = vision.image_size
    processor = JanusProcessor(
        image_processor=JanusImageProcessorPil(size={"height": side, "width": side}),
        tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, num_image_tokens=vision.num_image_tokens,
    )
    return JanusPolicy(model, processor, reasoning_template=reasoning_template)

"""Tiny random versions of every evaluation model, saved as loadable checkpoints (tests and smoke runs).

Each is the real ``transformers`` class built from a small config, with an in-memory tokenizer, so the
evaluation code runs its real loading and inference paths on a CPU in well under a second per call
and downloads nothing. Their scores are meaningless; only the plumbing is exercised.

``save_tiny_scorers(root)`` writes all of them and returns the paths:
``clip``, ``blip_vqa``, ``owlv2``, ``mask2former`` (80 COCO-sized labels), ``vlm`` (a LLaVA judge),
``aesthetic_head`` (a LAION-format head for the ``clip`` model's 16-d embeddings).
"""

from __future__ import annotations

from pathlib import Path

import torch

PROJECTION = 16


def tiny_clip_tokenizer(model_max_length: int = 77):
    """Byte-level symbols only (no merges): every character is a token."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[], model_max_length=model_max_length)


def save_tiny_clip(path: Path, seed: int = 0, projection: int = PROJECTION) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tok = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=projection,
    )  # fmt: skip
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    return path


BLIP_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", "?", "a", "an", "the", "green", "red",
              "blue", "bench", "bowl", "dog", "cat", "car", "wooden", "metallic", "round", "[DEC]"]  # fmt: skip


def save_tiny_blip_vqa(path: Path, seed: int = 1) -> Path:
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessorPil, BlipProcessor

    tok = BertTokenizer(vocab={w: i for i, w in enumerate(BLIP_WORDS)})
    config = BlipConfig(
        text_config=dict(vocab_size=len(BLIP_WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, encoder_hidden_size=32, max_position_embeddings=64, pad_token_id=0,
                         bos_token_id=BLIP_WORDS.index("[DEC]"), sep_token_id=3),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )  # fmt: skip
    torch.manual_seed(seed)
    BlipForQuestionAnswering(config).save_pretrained(path)
    BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(path)
    return path


def save_tiny_owlv2(path: Path, seed: int = 2) -> Path:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    tok = tiny_clip_tokenizer(model_max_length=16)  # OWL-ViT's text length
    config = Owlv2Config(
        text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id, pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,  # the class head compares vision-width box embeddings with projected queries
    )  # fmt: skip
    torch.manual_seed(seed)
    Owlv2ForObjectDetection(config).save_pretrained(path)
    image_processor = Owlv2ImageProcessorPil(size={"height": 32, "width": 32})
    Owlv2Processor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    return path


def save_tiny_mask2former(path: Path, num_labels: int = 80, seed: int = 3) -> Path:
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessorPil, SwinConfig

    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip
    config = Mask2FormerConfig(
        backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64,
        dim_feedforward=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2, num_queries=8,
        num_labels=num_labels, common_stride=4,
    )  # fmt: skip
    torch.manual_seed(seed)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(path)
    Mask2FormerImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64}, size_divisor=32).save_pretrained(path)
    return path


VLM_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image_placeholder>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def save_tiny_vlm(path: Path, seed: int = 4) -> Path:
    """A LLaVA (CLIP vision tower + Llama) with a chat template: a stand-in for a local judge."""
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)  # fmt: skip

    from t2i_r1.policy.build import IMAGE_TOKEN
    from t2i_r1.testing.janus import DEFAULT_CORPUS, train_tokenizer

    # The tiny tokenizer already carries Janus's "<image_placeholder>" as its image token; LLaVA uses it too.
    tok = train_tokenizer([DEFAULT_CORPUS + " consistency realism aesthetic quality existence clarity 0 1 2 3 4 5 :"],
                          vocab_size=300)  # fmt: skip
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_id, vision_feature_layer=-1)
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                   chat_template=VLM_TEMPLATE, num_additional_image_tokens=1, image_token=IMAGE_TOKEN).save_pretrained(path)  # fmt: skip
    return path


def save_tiny_aesthetic_head(path: Path, input_size: int = PROJECTION, seed: int = 5) -> Path:
    """A random head in the release's format (``layers.{0,2,4,6,7}``) for ``input_size``-d embeddings."""
    from t2i_r1.rewards.aesthetic import HIDDEN_SIZES, RELEASE_LINEAR_INDICES

    generator = torch.Generator().manual_seed(seed)
    sizes = (input_size, *HIDDEN_SIZES)
    state = {}
    for index, (a, b) in zip(RELEASE_LINEAR_INDICES, zip(sizes[:-1], sizes[1:])):
        state[f"layers.{index}.weight"] = torch.randn(b, a, generator=generator) / a**0.5
        state[f"layers.{index}.bias"] = torch.zeros(b)
    torch.save(state, path)
    return path


def save_tiny_scorers(root: str | Path) -> dict[str, Path]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return {
        "clip": save_tiny_clip(root / "clip"),
        "blip_vqa": save_tiny_blip_vqa(root / "blip_vqa"),
        "owlv2": save_tiny_owlv2(root / "owlv2"),
        "mask2former": save_tiny_mask2former(root / "mask2former"),
        "vlm": save_tiny_vlm(root / "vlm"),
        "aesthetic_head": save_tiny_aesthetic_head(root / "aesthetic_head.pth"),
    }

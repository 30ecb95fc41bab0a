"""HPS v2.1: the open_clip -> transformers converter against an open_clip-style forward written here, and
the reward end to end on a tiny checkpoint file and a tiny BPE tokenizer file."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPModel

from t2i_r1.rewards import build_reward
from t2i_r1.rewards.hps import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    HPSv21Reward,
    byte_to_unicode_table,
    clip_tokenizer_from_bpe,
    convert_open_clip_state_dict,
    hps_pixel_values,
    resize_max_side_and_pad,
)
from t2i_r1.utils.checkpoints import MissingCheckpointError

# Tiny towers with different head widths in the two towers, as ViT-H-14 has (80 vs 64).
VISION_WIDTH, VISION_HEAD_WIDTH, VISION_LAYERS, PATCH, GRID = 24, 8, 2, 4, 4  # 3 heads, 16 px images
TEXT_WIDTH, TEXT_HEAD_WIDTH, TEXT_LAYERS, CONTEXT = 16, 4, 2, 12  # 4 heads
EMBED = 8
MERGES = ["p h", "ph o", "pho t", "phot o</w>", "c a", "ca t</w>", "d o", "do g</w>"]


def _block(gen: torch.Generator, prefix: str, width: int) -> dict[str, torch.Tensor]:
    r = lambda *shape, s=0.2: torch.randn(*shape, generator=gen) * s  # noqa: E731
    return {
        f"{prefix}ln_1.weight": 1 + r(width),
        f"{prefix}ln_1.bias": r(width),
        f"{prefix}attn.in_proj_weight": r(3 * width, width),
        f"{prefix}attn.in_proj_bias": r(3 * width),
        f"{prefix}attn.out_proj.weight": r(width, width),
        f"{prefix}attn.out_proj.bias": r(width),
        f"{prefix}ln_2.weight": 1 + r(width),
        f"{prefix}ln_2.bias": r(width),
        f"{prefix}mlp.c_fc.weight": r(4 * width, width),
        f"{prefix}mlp.c_fc.bias": r(4 * width),
        f"{prefix}mlp.c_proj.weight": r(width, 4 * width),
        f"{prefix}mlp.c_proj.bias": r(width),
    }


def tiny_open_clip_state_dict(vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under open_clip's key names and shapes (projections stored as x @ proj)."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *shape, s=0.2: torch.randn(*shape, generator=gen) * s  # noqa: E731
    sd = {
        "visual.conv1.weight": r(VISION_WIDTH, 3, PATCH, PATCH),
        "visual.class_embedding": r(VISION_WIDTH),
        "visual.positional_embedding": r(GRID * GRID + 1, VISION_WIDTH),
        "visual.ln_pre.weight": 1 + r(VISION_WIDTH),
        "visual.ln_pre.bias": r(VISION_WIDTH),
        "visual.ln_post.weight": 1 + r(VISION_WIDTH),
        "visual.ln_post.bias": r(VISION_WIDTH),
        "visual.proj": r(VISION_WIDTH, EMBED),
        "token_embedding.weight": r(vocab_size, TEXT_WIDTH),
        "positional_embedding": r(CONTEXT, TEXT_WIDTH),
        "ln_final.weight": 1 + r(TEXT_WIDTH),
        "ln_final.bias": r(TEXT_WIDTH),
        "text_projection": r(TEXT_WIDTH, EMBED),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
    }
    for i in range(VISION_LAYERS):
        sd.update(_block(gen, f"visual.transformer.resblocks.{i}.", VISION_WIDTH))
    for i in range(TEXT_LAYERS):
        sd.update(_block(gen, f"transformer.resblocks.{i}.", TEXT_WIDTH))
    return sd


# ---- a reference forward following open_clip's CLIP (pre-LN residual blocks, nn.MultiheadAttention) ----


def _ln(sd, name, x):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)


def _resblock(sd, prefix, x, heads, attn_mask):
    width = x.shape[-1]
    mha = torch.nn.MultiheadAttention(width, heads, batch_first=True)
    mha.load_state_dict(
        {
            "in_proj_weight": sd[prefix + "attn.in_proj_weight"],
            "in_proj_bias": sd[prefix + "attn.in_proj_bias"],
            "out_proj.weight": sd[prefix + "attn.out_proj.weight"],
            "out_proj.bias": sd[prefix + "attn.out_proj.bias"],
        }
    )
    h = _ln(sd, prefix + "ln_1", x)
    x = x + mha(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
    h = _ln(sd, prefix + "ln_2", x)
    h = F.linear(h, sd[prefix + "mlp.c_fc.weight"], sd[prefix + "mlp.c_fc.bias"])
    h = F.gelu(h)  # open_clip ViT-H: exact GELU
    return x + F.linear(h, sd[prefix + "mlp.c_proj.weight"], sd[prefix + "mlp.c_proj.bias"])


def ref_image_features(sd, pixels):
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=PATCH)  # [N, W, g, g]
    x = x.flatten(2).transpose(1, 2)  # [N, g*g, W]
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)  # [N, 1, W]
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]  # [N, 1 + g*g, W]
    x = _ln(sd, "visual.ln_pre", x)
    for i in range(VISION_LAYERS):
        x = _resblock(sd, f"visual.transformer.resblocks.{i}.", x, VISION_WIDTH // VISION_HEAD_WIDTH, None)
    return _ln(sd, "visual.ln_post", x[:, 0]) @ sd["visual.proj"]  # [N, E]


def ref_text_features(sd, ids):
    t = ids.shape[1]
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][:t]  # [N, T, W]
    causal = torch.full((t, t), float("-inf")).triu(1)  # open_clip's build_attention_mask
    for i in range(TEXT_LAYERS):
        x = _resblock(sd, f"transformer.resblocks.{i}.", x, TEXT_WIDTH // TEXT_HEAD_WIDTH, causal)
    x = _ln(sd, "ln_final", x)
    # open_clip pools at the argmax token id: end-of-text has the largest id of its vocabulary.
    return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ sd["text_projection"]  # [N, E]


def _converted_model(sd, eos):
    config, converted = convert_open_clip_state_dict(
        sd, vision_head_width=VISION_HEAD_WIDTH, text_head_width=TEXT_HEAD_WIDTH, eos_token_id=eos
    )
    model = CLIPModel(config).eval()
    model.load_state_dict(converted, strict=True)
    return config, model


def test_converter_reads_sizes_from_shapes():
    sd = tiny_open_clip_state_dict(vocab_size=40)
    config, _ = convert_open_clip_state_dict(sd, vision_head_width=VISION_HEAD_WIDTH, text_head_width=TEXT_HEAD_WIDTH)
    v, t = config.vision_config, config.text_config
    # image size = grid * patch = 4 * 4; heads = width / head width: 24 / 8 = 3 and 16 / 4 = 4.
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.image_size, v.patch_size) == (24, 2, 3, 16, 4)
    assert (v.intermediate_size, t.intermediate_size) == (96, 64)
    assert (t.vocab_size, t.hidden_size, t.num_attention_heads, t.max_position_embeddings) == (40, 16, 4, 12)
    assert config.projection_dim == 8 and v.hidden_act == t.hidden_act == "gelu"


def test_converted_clip_matches_open_clip_reference():
    vocab = 40
    sd = tiny_open_clip_state_dict(vocab_size=vocab)
    _, model = _converted_model(sd, eos=vocab - 1)
    gen = torch.Generator().manual_seed(1)
    pixels = torch.randn(3, 3, GRID * PATCH, GRID * PATCH, generator=gen)
    # End-of-text (id 39, the largest) at different positions, zero padding after it as open_clip pads.
    ids = torch.zeros(3, CONTEXT, dtype=torch.long)
    for row, length in enumerate([3, 7, CONTEXT]):
        ids[row, 0] = vocab - 2  # start-of-text
        ids[row, 1 : length - 1] = torch.randint(1, vocab - 2, (length - 2,), generator=gen)
        ids[row, length - 1] = vocab - 1
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels).pooler_output
        text = model.get_text_features(input_ids=ids).pooler_output
        ref_image, ref_text = ref_image_features(sd, pixels), ref_text_features(sd, ids)
    torch.testing.assert_close(image, ref_image, atol=1e-5, rtol=0)
    torch.testing.assert_close(text, ref_text, atol=1e-5, rtol=0)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_converter_wrong_head_width_changes_the_output():
    # Guards the test above: the head split matters, so a converter ignoring head widths would fail it.
    vocab = 40
    sd = tiny_open_clip_state_dict(vocab_size=vocab)
    # One vision head of width 24 instead of three of width 8.
    config, converted = convert_open_clip_state_dict(
        sd, vision_head_width=VISION_WIDTH, text_head_width=TEXT_HEAD_WIDTH
    )
    model = CLIPModel(config).eval()
    model.load_state_dict(converted)
    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels).pooler_output
        diff = (image - ref_image_features(sd, pixels)).abs().max()
    assert diff > 1e-3


def test_converter_rejects_unknown_keys():
    sd = tiny_open_clip_state_dict(vocab_size=40)
    sd["visual.attn_pool.query"] = torch.zeros(1)
    with pytest.raises(ValueError, match="visual.attn_pool.query"):
        convert_open_clip_state_dict(sd, vision_head_width=VISION_HEAD_WIDTH, text_head_width=TEXT_HEAD_WIDTH)


def test_byte_table_is_the_gpt2_clip_alphabet():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    assert byte_to_unicode_table() == bytes_to_unicode()


def _write_bpe(path):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(MERGES) + "\n")


def test_tokenizer_from_bpe_file(tmp_path):
    path = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    _write_bpe(path)
    tok = clip_tokenizer_from_bpe(path)
    # 256 byte symbols + 256 with </w> + one entry per merge + 2 specials.
    assert len(tok) == 512 + len(MERGES) + 2
    assert tok.convert_ids_to_tokens(len(tok) - 1) == "<|endoftext|>" == tok.eos_token
    ids = tok("A photo, cat")["input_ids"]
    words = tok.convert_ids_to_tokens(ids)
    assert words == ["<|startoftext|>", "a</w>", "photo</w>", ",</w>", "cat</w>", "<|endoftext|>"]


def test_resize_max_side_and_pad():
    # 40 x 20 (w x h), all white -> longer side 16: 16 x 8, then 4 black rows above and below.
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    out = np.asarray(resize_max_side_and_pad(image, 16))
    assert out.shape == (16, 16, 3)
    assert (out[:4] == 0).all() and (out[12:] == 0).all() and (out[4:12] == 255).all()
    pixels = hps_pixel_values([image], 16)  # white -> (1 - mean) / std, black -> -mean / std
    torch.testing.assert_close(pixels[0, :, 8, 8], (1 - torch.tensor(OPENAI_CLIP_MEAN)) / torch.tensor(OPENAI_CLIP_STD))
    torch.testing.assert_close(pixels[0, :, 0, 0], -torch.tensor(OPENAI_CLIP_MEAN) / torch.tensor(OPENAI_CLIP_STD))


@pytest.fixture(scope="module")
def hps_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hps")
    bpe = tmp / "bpe_simple_vocab_16e6.txt.gz"
    _write_bpe(bpe)
    vocab = 512 + len(MERGES) + 2
    sd = tiny_open_clip_state_dict(vocab_size=vocab)
    # Saved the way HPS saves it: {"state_dict": ...}, here with a DDP "module." prefix too.
    ckpt = tmp / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, ckpt)
    return ckpt, bpe, sd


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(24, 24), (30, 18), (16, 16), (20, 28)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes * (n // 4 + 1)][:n]


def _reward(hps_files, **kwargs):
    ckpt, bpe, _ = hps_files
    return HPSv21Reward(
        checkpoint=ckpt, tokenizer=bpe, device="cpu", vision_head_width=VISION_HEAD_WIDTH,
        text_head_width=TEXT_HEAD_WIDTH, **kwargs,
    )


def test_hps_reward_end_to_end_matches_reference(hps_files):
    _, _, sd = hps_files
    reward = _reward(hps_files, batch_size=3)
    prompts = ["a photo of a cat", "a dog", "a photo of a cat", "cat"]
    images = _images(4)
    scores = reward(prompts, images, [{}] * 4)
    assert len(scores) == 4 and all(math.isfinite(s) and -1 <= s <= 1 for s in scores)
    # Expected: cosine of the reference open_clip forward on the same pixels and token ids.
    tok = reward.tokenizer(prompts, padding="max_length", max_length=CONTEXT, return_tensors="pt")
    ids = tok["input_ids"] * tok["attention_mask"]  # open_clip pads with 0, after end-of-text
    with torch.no_grad():
        img = F.normalize(ref_image_features(sd, hps_pixel_values(images, 16)), dim=-1)
        txt = F.normalize(ref_text_features(sd, ids), dim=-1)
    expected = (img * txt).sum(-1)  # the diagonal of img @ txt.T
    torch.testing.assert_close(torch.tensor(scores), expected, atol=1e-5, rtol=0)


def test_hps_batched_equals_one_by_one(hps_files):
    reward = _reward(hps_files, batch_size=8)
    prompts = ["a photo of a cat", "a dog", "a dog", "photo"] * 2
    images = _images(8, seed=3)
    batched = reward(prompts, images, [{}] * 8)
    single = [reward([p], [im], [{}])[0] for p, im in zip(prompts, images)]
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)


def test_hps_via_registry_and_missing_checkpoint(hps_files, tmp_path):
    ckpt, bpe, _ = hps_files
    reward = build_reward("hps", checkpoint=ckpt, tokenizer=bpe, device="cpu", vision_head_width=8, text_head_width=4)
    assert reward.name == "hps" and reward([], [], []) == []
    with pytest.raises(MissingCheckpointError, match=r"HPS_v2\.1_compressed\.pt.*huggingface\.co/xswu/HPSv2"):
        HPSv21Reward(checkpoint=tmp_path / "nowhere" / "HPS_v2.1_compressed.pt", tokenizer=bpe)
    with pytest.raises(ValueError, match="one prompt and one metadata"):
        reward(["a"], [], [])


# ---- real weights / GPU (skipped unless available) ----


def _weights(name: str):
    import os

    root = os.environ.get("T2I_R1_WEIGHTS")
    if not root or not os.path.exists(os.path.join(root, name)):
        pytest.skip(f"needs $T2I_R1_WEIGHTS/{name} (real checkpoint; see the reward's docstring for the release)")
    return os.path.join(root, name)


@pytest.mark.weights
def test_real_hps_v21_loads_as_vit_h14():
    ckpt = _weights("HPS_v2.1_compressed.pt")
    tokenizer = _weights("CLIP-ViT-H-14-laion2B-s32B-b79K")  # the tokenizer files of the laion hub repo
    reward = HPSv21Reward(checkpoint=ckpt, tokenizer=tokenizer, device="cpu")
    v, t = reward.model.config.vision_config, reward.model.config.text_config
    vision = (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.image_size, v.patch_size)
    assert vision == (1280, 32, 16, 224, 14)
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.vocab_size) == (1024, 24, 16, 49408)
    images = [Image.new("RGB", (384, 384), c) for c in ("red", "white")]
    scores = reward(["a red square", "a red square"], images, [{}, {}])
    assert all(-1 <= s <= 1 for s in scores)


@pytest.mark.gpu
def test_hps_on_gpu_matches_cpu(hps_files):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    prompts, images = ["a photo of a cat", "a dog", "cat"], _images(3, seed=5)
    cpu = _reward(hps_files)(prompts, images, [{}] * 3)
    ckpt, bpe, _ = hps_files
    gpu = HPSv21Reward(checkpoint=ckpt, tokenizer=bpe, device="cuda", vision_head_width=VISION_HEAD_WIDTH,
                       text_head_width=TEXT_HEAD_WIDTH)(prompts, images, [{}] * 3)
    np.testing.assert_allclose(gpu, cpu, atol=1e-5, rtol=0)

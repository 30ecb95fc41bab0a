"""CLIP score and LAION aesthetic rewards on tiny random CLIP checkpoints saved to disk and loaded back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from t2i_r1.rewards import build_reward
from t2i_r1.rewards.aesthetic import AestheticHead, AestheticReward, convert_aesthetic_state_dict
from t2i_r1.rewards.clip_score import CLIPScoreReward
from t2i_r1.testing.scorers import save_tiny_clip
from t2i_r1.utils.checkpoints import MissingCheckpointError

PROJ = 8


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"), projection=PROJ)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(40, 40), (50, 30), (32, 32), (20, 36)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in (sizes * n)[:n]]


def test_clip_score_is_the_cosine(clip_dir):
    reward = CLIPScoreReward(checkpoint=clip_dir, device="cpu", batch_size=3)
    prompts = ["a red cube", "a dog", "a red cube", "two cats"]
    images = _images(4)
    scores = reward(prompts, images, [{}] * 4)
    assert len(scores) == 4 and all(math.isfinite(s) and -1 <= s <= 1 for s in scores)
    # Expected: transformers' own CLIP forward; logits_per_image = logit_scale * cosine, all pairs.
    model = CLIPModel.from_pretrained(clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(clip_dir)
    inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**inputs).logits_per_image  # [N images, N prompts]
        expected = logits.diagonal() / model.logit_scale.exp()
    np.testing.assert_allclose(scores, expected.numpy(), atol=1e-5, rtol=0)


def test_clip_score_batched_equals_one_by_one(clip_dir):
    reward = CLIPScoreReward(checkpoint=clip_dir, device="cpu", batch_size=8)
    prompts = ["a red cube", "a dog", "a dog", "a very long prompt about a purple elephant"] * 2
    images = _images(8, seed=1)
    batched = reward(prompts, images, [{}] * 8)
    single = [reward([p], [im], [{}])[0] for p, im in zip(prompts, images)]
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)


def test_clip_registry_and_missing_checkpoint(clip_dir, tmp_path):
    assert build_reward("clip", checkpoint=clip_dir, device="cpu").name == "clip"
    with pytest.raises(MissingCheckpointError, match="openai/clip-vit-base-patch32"):
        CLIPScoreReward(checkpoint=tmp_path / "no_clip")


# ---- aesthetic ----


def release_layout_mlp(input_size: int, seed: int = 0) -> torch.nn.Sequential:
    """The released predictor's layout: Linear/Dropout pairs, ReLUs commented out, then two Linears."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(input_size, 1024), torch.nn.Dropout(0.2),
        torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
        torch.nn.Linear(64, 16),
        torch.nn.Linear(16, 1),
    ).eval()


@pytest.fixture(scope="module")
def aesthetic_file(tmp_path_factory):
    mlp = release_layout_mlp(PROJ)
    with torch.no_grad():
        mlp[7].bias.fill_(5.5)  # centre the tiny head's output on the 1-10 scale
    path = tmp_path_factory.mktemp("aesthetic") / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save({"layers." + k: v for k, v in mlp.state_dict().items()}, path)
    return path, mlp


def test_aesthetic_converter_maps_release_keys(aesthetic_file):
    _, mlp = aesthetic_file
    head = AestheticHead(PROJ)
    head.load_state_dict(convert_aesthetic_state_dict({"layers." + k: v for k, v in mlp.state_dict().items()}))
    x = F.normalize(torch.randn(5, PROJ), dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(head(x), mlp(x).squeeze(-1))
    with pytest.raises(ValueError, match="layers.1.weight"):
        convert_aesthetic_state_dict({"layers.1.weight": torch.zeros(1)})


def test_aesthetic_reward_end_to_end(clip_dir, aesthetic_file):
    path, mlp = aesthetic_file
    reward = AestheticReward(checkpoint=path, clip_checkpoint=clip_dir, device="cpu", batch_size=3)
    images = _images(5, seed=2)
    scores = reward(["ignored"] * 5, images, [{}] * 5)
    assert len(scores) == 5 and all(math.isfinite(s) for s in scores)
    # Expected: the release MLP on L2-normalised projected CLIP image embeddings.
    clip = CLIPModel.from_pretrained(clip_dir).eval()
    pixels = CLIPProcessor.from_pretrained(clip_dir)(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        emb = F.normalize(clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        expected = mlp(emb).squeeze(-1)
    np.testing.assert_allclose(scores, expected.numpy(), atol=1e-5, rtol=0)
    # A random head barely moves from its bias (5.5); the documented range of the real head is ~1-10.
    assert all(1 <= s <= 10 for s in scores)
    single = [reward(["x"], [im], [{}])[0] for im in images]
    np.testing.assert_allclose(scores, single, atol=1e-5, rtol=0)


def test_aesthetic_registry_and_missing_checkpoint(clip_dir, aesthetic_file, tmp_path):
    path, _ = aesthetic_file
    assert build_reward("aesthetic", checkpoint=path, clip_checkpoint=clip_dir, device="cpu").name == "aesthetic"
    expected = r"sac\+logos\+ava1-l14-linearMSE\.pth.*improved-aesthetic-predictor"
    with pytest.raises(MissingCheckpointError, match=expected):
        AestheticReward(checkpoint=tmp_path / "missing.pth", clip_checkpoint=clip_dir)
    with pytest.raises(MissingCheckpointError, match="clip-vit-large-patch14"):
        AestheticReward(checkpoint=path, clip_checkpoint=tmp_path / "no_clip")


# ---- real weights (skipped unless available) ----


def _weights(name: str):
    import os

    root = os.environ.get("T2I_R1_WEIGHTS")
    if not root or not os.path.exists(os.path.join(root, name)):
        pytest.skip(f"needs $T2I_R1_WEIGHTS/{name} (real checkpoint; see the reward's docstring for the release)")
    return os.path.join(root, name)


@pytest.mark.weights
def test_real_clip_prefers_the_right_colour():
    reward = CLIPScoreReward(checkpoint=_weights("clip-vit-base-patch32"), device="cpu")
    red = Image.new("RGB", (224, 224), (220, 20, 20))
    right, wrong = reward(["a red square", "a green square"], [red, red], [{}, {}])
    assert right > wrong


@pytest.mark.weights
def test_real_aesthetic_is_on_its_scale():
    reward = AestheticReward(
        checkpoint=_weights("sac+logos+ava1-l14-linearMSE.pth"), clip_checkpoint=_weights("clip-vit-large-patch14"),
        device="cpu",
    )
    scores = reward(["x", "x"], _images(2), [{}, {}])
    assert all(0 <= s <= 11 for s in scores)  # documented range about 1-10

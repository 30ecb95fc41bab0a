"""The ShapeWorld Janus: a word-level tokenizer, a small Janus built from configs, loading, VQ tokenising
and evaluation of a policy on ShapeWorld prompts.

Choices:
1. Tokenizer: ``tokenizers.WordLevel`` over ``vocabulary()`` plus the few words of the chat and
   reasoning formats, with Janus's special and role tokens; lower-cased, split on whitespace and
   punctuation. Prompts and plans never meet an unknown word, so no sub-word merges are needed and a
   plan is one token per word (short sequences on a CPU). Decoding joins tokens with spaces, which
   reproduces plan text exactly (plans put spaces around ";").
2. The model is the real ``JanusForConditionalGeneration``, sized for a CPU: a 4-layer, 128-wide
   language model, 64 image tokens (an 8 x 8 grid over a 64 px image), a 512-entry codebook.
3. The reasoning instruction is ShapeWorld's own short one (``REASONING_TEMPLATE``), stored as
   ``reasoning.txt`` in the checkpoint directory, which ``JanusPolicy`` writes and reads back itself.
4. VQ tokenising uses transformers' ``vqmodel.encode``. Its quantizer picks the nearest *raw*
   codebook vector while ``decode`` looks up *l2-normalised* ones; our pretraining stores a unit-norm
   codebook (see ``pretrain.py``), which makes the two agree (nearest unit vector = largest cosine).
5. ``evaluate_policy`` samples plans (or not) and images with the project's sampler and scores
   them with the exact evaluator; the demo, the CLI and the benchmark share it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import LlamaConfig, PreTrainedTokenizerFast
from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig

from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.policy.build import BOI, BOS, EOI, EOS, IMAGE_TOKEN, PAD, ROLE_TOKENS, assemble_janus, janus_tokenizer
from t2i_r1.shapeworld.evaluator import ShapeWorldEvaluator, summarize
from t2i_r1.shapeworld.grammar import Prompt, check_plan, vocabulary

UNK = "<unk>"
REASONING_TEMPLATE = "plan the image : {prompt}"
# Words of the chat format ("<|User|>: ...") and of the image prompt ("{prompt}. {plan}") and the
# reasoning template that the ShapeWorld grammar itself does not use.
FORMAT_WORDS = (":", ".", "plan", "the", "image")
DEFAULT_ASSET = Path(__file__).resolve().parent.parent / "assets" / "shapeworld"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the ShapeWorld vocabulary with Janus's special tokens (BOS added on encode)."""
    specials = [PAD, BOS, EOS, IMAGE_TOKEN, BOI, EOI, UNK, *ROLE_TOKENS]
    words = [w for w in dict.fromkeys([*vocabulary(), *FORMAT_WORDS]) if w not in specials]
    vocab = {tok: i for i, tok in enumerate([*specials, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])
    tok.add_special_tokens(specials)  # matched whole, before the pre-tokenizer splits "<|User|>" at "|"
    return janus_tokenizer(tok, unk_token=UNK)


@dataclass
class ShapeWorldModelSpec:
    """Shapes of the ShapeWorld Janus. The image is 8 * ``grid`` px wide; ``grid`` ** 2 image tokens."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 512
    grid: int = 8
    codebook: int = 512
    vq_channels: int = 32
    max_positions: int = 256
    seed: int = 0


def build_model(spec: ShapeWorldModelSpec | None = None) -> JanusPolicy:
    """A randomly initialised ShapeWorld Janus (real transformers classes) with its processor."""
    spec = spec or ShapeWorldModelSpec()
    tokenizer = build_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    H, side = spec.hidden, 8 * spec.grid
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=H, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions, bos_token_id=ids(BOS), eos_token_id=ids(EOS),
        pad_token_id=ids(PAD),
    )
    # The understanding tower is unused by text-to-image; it stays minimal so the checkpoint is small.
    vision = JanusVisionConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=side, patch_size=8,
        projection_dim=H, num_image_tokens=spec.grid**2, depth=1, intermediate_size=64,
    )
    C = spec.vq_channels
    vq = JanusVQVAEConfig(
        embed_dim=8, num_embeddings=spec.codebook, latent_channels=2 * C, base_channels=C,
        channel_multiplier=[1, 1, 2, 2], num_res_blocks=1, projection_dim=H, image_token_embed_dim=H,
        num_hidden_layers=2,
    )
    return assemble_janus(tokenizer, text, vision, vq, seed=spec.seed, reasoning_template=REASONING_TEMPLATE)


def load_policy(path: str | Path = DEFAULT_ASSET, **kwargs) -> JanusPolicy:
    """``JanusPolicy.from_pretrained``, which reads the checkpoint's own reasoning template. The VQ model
    runs channels-last: its convolutions are the decode's cost, and channels-last ones are faster on the CPU."""
    policy = JanusPolicy.from_pretrained(path, **kwargs)
    policy.model.model.vqmodel.to(memory_format=torch.channels_last)
    return policy


def extend_vocabulary(policy: JanusPolicy, words: Iterable[str]) -> list[str]:
    """Give each of ``words`` the tokenizer lacks its own id (after the existing ones), in place, and
    return the words added. Their input-embedding and output rows are copies of ``<unk>``'s, so the
    extended model reads and writes every text exactly as before (a new word reads as ``<unk>`` did)
    until training moves the rows apart: the words exist, their meaning is left to be learnt.

    This is how a checkpoint pretrained on a smaller vocabulary (the first ShapeWorld model) takes
    prompts of the richer phrasing families whose words it never saw."""
    tokenizer = policy.tokenizer
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    added = [w for w in dict.fromkeys(words) if w not in vocab]
    if not added:
        return []
    unk = vocab[UNK]
    old_size = policy.model.get_input_embeddings().weight.shape[0]
    if old_size != len(vocab):
        raise ValueError(f"the model has {old_size} text embeddings but its tokenizer {len(vocab)} words")
    for word in added:
        vocab[word] = len(vocab)
    extended = janus_tokenizer(Tokenizer.from_str(json.dumps(spec)), unk_token=UNK)
    policy.processor.tokenizer = policy.tokenizer = extended
    policy.model.resize_token_embeddings(len(vocab), mean_resizing=False)
    with torch.no_grad():
        for rows in (policy.model.get_input_embeddings().weight, policy.model.get_output_embeddings().weight):
            rows[old_size:] = rows[unk]  # (V_new - V_old, H) <- (H,)
    return added


# ---------------------------------------------------------------------------------------------
# Pixels <-> tokens


def to_pixels(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float (N, 3, S, S) in [-1, 1], the VQ model's input range."""
    arr = np.stack(images) if isinstance(images, list) else images
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def encode_images(policy: JanusPolicy, images: np.ndarray | list[np.ndarray], batch: int = 256) -> torch.LongTensor:
    """uint8 (N, S, S, 3) images -> (N, T) VQ tokens."""
    vq = policy.model.model.vqmodel
    pixels = to_pixels(images)
    out = []
    for start in range(0, len(pixels), batch):
        chunk = pixels[start : start + batch].to(policy.device, policy.model.dtype)
        out.append(vq.encode(chunk).image_tokens.view(len(chunk), -1))  # (n, T)
    return torch.cat(out).cpu()


def decode_to_uint8(policy: JanusPolicy, tokens: torch.LongTensor) -> np.ndarray:
    """(N, T) tokens -> uint8 (N, S, S, 3)."""
    pixels = policy.decode_image_tokens(tokens.to(policy.device))  # (N, 3, S, S) in [0, 1]
    return (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class EvalResult:
    prompts: list[Prompt]
    plans: list[str | None]
    """One per sample (samples of a prompt are contiguous)."""
    images: list[np.ndarray]
    scores: list[float]
    partials: list[float]
    plan_scores: list[float]
    """``check_plan`` score of each sample's plan (nan without plans)."""

    def table(self) -> dict[str, float]:
        cats = [p.category for p in self.prompts for _ in range(len(self.scores) // len(self.prompts))]
        return summarize(cats, self.scores)


@torch.no_grad()
def evaluate_policy(
    policy: JanusPolicy,
    prompts: list[Prompt],
    *,
    use_plan: bool = True,
    samples: int = 1,
    seed: int = 0,
    guidance_scale: float = 3.0,
    plan_temperature: float = 1.0,
    image_temperature: float = 1.0,
    batch_prompts: int = 64,
    evaluator: ShapeWorldEvaluator | None = None,
    planner=None,
) -> EvalResult:
    """Sample ``samples`` images per prompt and score them exactly. Plans: the model's own when
    ``use_plan``, or ``samples`` per prompt from ``planner`` (an ``ExternalPlanner``: the paper's
    "plan from a separate LLM" setting), or none."""
    from t2i_r1.rollout.rollout import generate_rollouts
    from t2i_r1.rollout.sampling import ImageSamplingConfig, PlanSamplingConfig

    evaluator = evaluator or ShapeWorldEvaluator()
    policy.model.eval()
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    plan_cfg = PlanSamplingConfig(max_new_tokens=64, temperature=plan_temperature)
    image_cfg = ImageSamplingConfig(guidance_scale=guidance_scale, temperature=image_temperature)
    external = planner.plan([p.text for p in prompts], num_samples=samples, seed=seed) if planner else None
    plans: list[str | None] = []
    images: list[np.ndarray] = []
    for start in range(0, len(prompts), batch_prompts):
        chunk = prompts[start : start + batch_prompts]
        rollout = generate_rollouts(
            policy, [p.text for p in chunk], plans_per_prompt=samples, use_plan=use_plan,
            plan_config=plan_cfg, image_config=image_cfg, generator=generator,
            external_plans=None if external is None else external[start * samples : (start + len(chunk)) * samples],
        )
        plans += rollout.sample_plans
        images += list(decode_to_uint8(policy, rollout.images.tokens))
    scores, partials, plan_scores = [], [], []
    for i, (plan, image) in enumerate(zip(plans, images)):
        prompt = prompts[i // samples]
        ev = evaluator.evaluate(prompt, image)
        scores.append(ev.score)
        partials.append(ev.partial)
        plan_scores.append(check_plan(prompt, plan).score if plan is not None else float("nan"))
    return EvalResult(list(prompts), plans, images, scores, partials, plan_scores)

"""Pretraining the ShapeWorld Janus from scratch on a CPU: first the VQ tokenizer, then the language model.

Choices:
1. VQ: transformers' ``JanusVQVAE`` (encoder, quantizer, decoder) trained on rendered scenes with
   reconstruction loss (MSE + L1 on pixels in [-1, 1]) plus the VQ codebook and commitment terms.
   The quantizer of transformers matches *raw* vectors at encode time but decodes *l2-normalised*
   codebook entries; we train the decode path as it runs (cosine nearest neighbour between the
   normalised latent and the normalised codebook) and store the codebook normalised, so that
   ``vqmodel.encode`` and ``decode`` agree afterwards. Codes unused for a while are restarted on
   random latents of the batch (a standard fix for codebook collapse with small data).
   The stopping rule is the evaluator's: reconstructions must keep the verdict of their scene. The
   learning rate warms up, then decays on a cosine over the budget, and the weights of the best check
   are kept: at a constant rate the agreement swung between checks (0.72, 0.65, 0.75 on the CPU run).
2. LM: teacher-forced cross-entropy on a mixture of three tasks, in exactly the formats that
   ``JanusPolicy`` samples with: reasoning instruction + prompt -> plan + EOS (text head),
   prompt + plan -> image tokens, prompt alone -> image tokens (image head; the token-only ablation
   and the baseline need it). Like Janus, a share of the image examples (``p_uncond``) has its prompt
   replaced by ``policy.unconditional_ids`` so that classifier-free guidance has an unconditional
   model. The language model, the generation embeddings, aligner and head and the text head train;
   the VQ model is frozen by then.
3. Budgets are steps, so a run computes the same thing on a quiet or a busy machine, on a CPU or a
   GPU (only the time differs; ``minutes`` is an optional safety cap, off by default). The VQ stops
   early once its reconstructions keep the evaluator's verdict (a deterministic rule too).
4. Sequences are right-padded: with position ids counted from each row's first token, that is the
   same computation as the left padding used when sampling. A padded batch of plan rows (~45 tokens)
   and image rows (~80-108) is a third padding, so ``lm_loss`` runs it in up to ``length_chunks``
   groups of similar length, with the means still over the whole batch (same loss and gradients):
   7.1 -> 5.8 ms per sequence forward and backward on 2 threads.
5. Plans are taught on the ``pretrain`` phrasing families only (``phrasing.FAMILIES``), which leaves the
   semantic level room on the others. By default pretraining sees no other family, so the RL families'
   words are new to the model; ``image_only_families`` adds families as prompt -> image rows, so their
   words get a meaning without plans being taught on them (RL at the demo's learning rate barely moves
   a new word's embedding: ``docs/shapeworld.md``, "What holds the plan level back").
6. Exposure (``ExposureConfig``, ``expose``) is the same idea as a short stage after the language model:
   a few hundred steps at a constant learning rate in which the RL families' prompts appear only as
   prompt -> image rows, beside the usual rows of the pretraining families. On a finished model it
   gives the RL families' words a meaning while keeping its images, which a quarter of image-only rows
   from the first step did not (the CPU runs in ``docs/shapeworld.md``). ``t2i-r1 shapeworld pretrain``
   ends with it by default (``--expose-steps 0`` skips it); ``pretrain()`` runs it when given one. It
   draws its examples in one process, so its result does not depend on ``workers``.

Dimension letters: N rows, S sequence, T image tokens, H hidden, V text vocab, C codebook.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.shapeworld.evaluator import ShapeWorldEvaluator
from t2i_r1.shapeworld.grammar import CATEGORIES, Example, LayoutError, sample_example, sample_prompt, split_of
from t2i_r1.shapeworld.phrasing import PRETRAIN_FAMILIES, RL_FAMILIES, family
from t2i_r1.shapeworld.model import ShapeWorldModelSpec, build_model, encode_images, to_pixels
from t2i_r1.shapeworld.world import render

Log = Callable[[str], None]


def _examples_worker(args: tuple[int, int, str | None, tuple[str, ...]]) -> list[Example]:
    n, seed, split, families = args
    return sample_examples(n, np.random.default_rng(seed), split, families=families)


def sample_examples(
    n: int,
    rng: np.random.Generator,
    split: str | None = "train",
    workers: int = 1,
    families: Sequence[str] = PRETRAIN_FAMILIES,
) -> list[Example]:
    """``n`` random examples, categories in turn (each worded by one of ``families``, in turn), prompts
    from ``split`` (None: any); ``workers`` > 1 draws chunks in processes, each with a seed from ``rng``."""
    families = tuple(families)
    if workers > 1 and n >= 1000:
        import multiprocessing

        sizes = [n // workers + (i < n % workers) for i in range(workers)]
        seeds = rng.integers(2**31, size=workers).tolist()
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            chunks = pool.map(_examples_worker, [(k, s, split, families) for k, s in zip(sizes, seeds)])
        return [ex for chunk in chunks for ex in chunk]
    out: list[Example] = []
    draws = 0
    while len(out) < n:
        category = CATEGORIES[len(out) % len(CATEGORIES)]
        covering = [f for f in families if family(f).covers(category)]
        draws += 1
        prompt = sample_prompt(category, rng, phrasing=covering[draws % len(covering)])
        if split is not None and split_of(prompt) != split:
            continue
        try:
            out.append(sample_example(prompt, rng))
        except LayoutError:
            continue
    return out


# ---------------------------------------------------------------------------------------------
# VQ


@dataclass
class VQTrainConfig:
    max_steps: int = 2000
    """Step budget (the cosine schedule runs over it); the stage may stop earlier at ``target_agreement``."""
    minutes: float | None = None
    """Optional wall-clock cap (None: none; a capped run depends on the machine's speed and load)."""
    batch: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    """The learning rate decays (cosine, over the budget) to this share of ``lr``."""
    warmup_steps: int = 100
    beta: float = 0.25
    """Commitment weight."""
    pool: int = 6000
    """Rendered scenes drawn once and cycled through."""
    restart_every: int = 50
    """Steps between restarts of unused codes."""
    check_every: int = 200
    check_images: int = 300
    target_agreement: float = 0.97
    """Stop early once this share of held-back reconstructions keeps the evaluator's verdict."""
    seed: int = 0
    workers: int = 1
    """Processes drawing the scenes."""


def _quantize(vq, z: torch.Tensor):
    """Cosine nearest neighbour on the unit sphere, as ``decode`` looks codes up.
    z (N, D, h, w) -> quantised (N, D, h, w) with straight-through gradient, VQ loss parts, indices (N*h*w,)."""
    N, D, h, w = z.shape
    flat = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, D), dim=-1)  # (M, D)
    book = F.normalize(vq.quantize.embedding.weight, dim=-1)  # (C, D)
    idx = (flat @ book.T).argmax(-1)  # (M,)
    q = book[idx]  # (M, D)
    codebook_loss = (q - flat.detach()).pow(2).sum(-1).mean()
    commit_loss = (flat - q.detach()).pow(2).sum(-1).mean()
    q = flat + (q - flat).detach()
    return q.view(N, h, w, D).permute(0, 3, 1, 2), codebook_loss, commit_loss, idx, flat


def vq_agreement(policy: JanusPolicy, examples: list[Example], evaluator: ShapeWorldEvaluator | None = None) -> float:
    """Share of examples whose VQ reconstruction keeps the evaluator's verdict on the original."""
    from t2i_r1.shapeworld.model import decode_to_uint8

    evaluator = evaluator or ShapeWorldEvaluator()
    originals = [render(ex.scene) for ex in examples]
    recon = decode_to_uint8(policy, encode_images(policy, originals))
    same = [
        evaluator.score(ex.prompt, r) == evaluator.score(ex.prompt, o)
        for ex, o, r in zip(examples, originals, recon)
    ]
    return float(np.mean(same))


def train_vq(policy: JanusPolicy, config: VQTrainConfig = VQTrainConfig(), log: Log = print) -> dict:
    """Train ``policy``'s VQ model in place; returns a summary (steps, seconds, agreement)."""
    vq = policy.model.model.vqmodel
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    examples = sample_examples(config.pool, rng, split=None, workers=config.workers)
    pool = to_pixels([render(ex.scene) for ex in examples])  # (P, 3, S, S), stays on the CPU
    held = sample_examples(config.check_images, np.random.default_rng(config.seed + 1), split=None)
    vq.train().requires_grad_(True)
    vq.to(memory_format=torch.channels_last)  # measured 2.3x faster convolutions on this CPU
    opt = torch.optim.AdamW(vq.parameters(), lr=config.lr, weight_decay=0.0)
    C = vq.quantize.embedding.weight.shape[0]
    device = policy.device
    last_used = torch.zeros(C, dtype=torch.long, device=device)
    start, step, agreement = time.time(), 0, float("nan")
    best_agreement, best_state = -1.0, None
    with torch.no_grad():  # codebook from the (random) encoder's latents, so every code starts in use
        z = vq.quant_conv(vq.encoder(pool[:64].to(device).contiguous(memory_format=torch.channels_last)))
        flat = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), dim=-1)
        vq.quantize.embedding.weight.copy_(flat[torch.randperm(len(flat))[:C]])
    while step < config.max_steps and not _over(elapsed := time.time() - start, config.minutes):
        progress = _budget_progress(elapsed, config.minutes, step, config.max_steps)
        lr = config.lr * _warmup_cosine(step, config.warmup_steps, progress, config.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = pool[torch.randint(len(pool), (config.batch,))].to(device).contiguous(memory_format=torch.channels_last)
        z = vq.quant_conv(vq.encoder(batch))  # (N, D, h, w)
        q, codebook_loss, commit_loss, idx, flat = _quantize(vq, z)
        recon = vq.decoder(vq.post_quant_conv(q))  # (N, 3, S, S)
        rec = F.mse_loss(recon, batch) + F.l1_loss(recon, batch)
        loss = rec + codebook_loss + config.beta * commit_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        last_used[idx.unique()] = step
        if step % config.restart_every == 0:
            dead = (step - last_used >= config.restart_every).nonzero().squeeze(1)
            if len(dead):
                with torch.no_grad():
                    pick = flat.detach()[torch.randint(len(flat), (len(dead),), device=device)]
                    vq.quantize.embedding.weight[dead] = pick + 0.01 * torch.randn_like(pick)
                last_used[dead] = step
        if step % config.check_every == 0 or step == 1:
            vq.eval()
            _store_normalised_codebook(vq)
            agreement = vq_agreement(policy, held)
            if agreement > best_agreement:
                best_agreement, best_state = agreement, {k: v.detach().clone() for k, v in vq.state_dict().items()}
            vq.train()
            log(f"vq step {step} loss {loss.item():.4f} rec {rec.item():.4f} used {int((step - last_used < config.restart_every).sum())}/{C} "
                f"agreement {agreement:.3f} lr {lr:.1e} ({time.time() - start:.0f}s)")
            if agreement >= config.target_agreement:
                break
    vq.eval().requires_grad_(False)
    vq.to(memory_format=torch.contiguous_format)
    _store_normalised_codebook(vq)
    agreement = vq_agreement(policy, held)
    if best_state is not None and best_agreement > agreement:  # agreement swings between checks: keep the best
        vq.load_state_dict(best_state)
        agreement = best_agreement
    log(f"vq done: {step} steps, {time.time() - start:.0f}s, agreement {agreement:.3f}")
    return {"steps": step, "seconds": time.time() - start, "agreement": agreement}


def _over(elapsed_seconds: float, minutes: float | None) -> bool:
    return minutes is not None and elapsed_seconds >= minutes * 60


def _budget_progress(elapsed_seconds: float, minutes: float | None, step: int, max_steps: int) -> float:
    """Share of a stage's budget spent: of its steps, or of its minutes cap when that runs out first."""
    return max(0.0 if minutes is None else elapsed_seconds / (minutes * 60), step / max_steps)


def _warmup_cosine(step: int, warmup_steps: int, progress: float, min_ratio: float) -> float:
    """Learning-rate factor: linear warmup over ``warmup_steps``, then cosine from 1 to ``min_ratio`` as
    ``progress`` (share of the budget spent) goes from 0 to 1."""
    warm = min(1.0, (step + 1) / warmup_steps)
    return warm * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


@torch.no_grad()
def _store_normalised_codebook(vq) -> None:
    w = vq.quantize.embedding.weight
    w.copy_(F.normalize(w, dim=-1))


# ---------------------------------------------------------------------------------------------
# Language model


@dataclass
class LMTrainConfig:
    max_steps: int = 3900
    """Step budget (the cosine schedule runs over it)."""
    minutes: float | None = None
    """Optional wall-clock cap (None: none; a capped run depends on the machine's speed and load)."""
    batch: int = 128
    length_chunks: int = 3
    """Groups of similar length each batch runs in (``lm_loss``); 1 pads every row to the longest."""
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    examples: int = 36_000
    """Training examples (train-split prompts, each with a scene, its plan and its VQ tokens)."""
    families: tuple[str, ...] = PRETRAIN_FAMILIES
    """Phrasing families of the prompts that teach plans and images (by default the RL and held-out
    families stay unseen)."""
    image_only_families: tuple[str, ...] = ()
    """Phrasing families whose prompts appear only in prompt -> image rows, never with a plan: their
    words get a meaning (what they draw) while plans are still taught on ``families`` alone."""
    image_only_share: float = 0.25
    """Share of the examples worded by ``image_only_families`` (when there are any)."""
    p_plan: float = 0.2
    """Share of rows that teach planning; the rest teach image tokens."""
    p_image_without_plan: float = 0.25
    """Share of image rows conditioned on the prompt alone (token-only ablation, baseline)."""
    p_uncond: float = 0.1
    """Share of image rows whose prompt is blanked (CFG's unconditional model)."""
    eval_every: int = 1000
    """Steps between held-out evaluations (0: none)."""
    eval_prompts_per_category: int = 4
    seed: int = 0
    workers: int = 1
    """Processes drawing the examples."""

    def __post_init__(self) -> None:
        for name in (*self.families, *self.image_only_families):
            family(name)  # an unknown name fails here, listing the known ones
        if both := set(self.families) & set(self.image_only_families):
            raise ValueError(f"LMTrainConfig: families {sorted(both)} are in both families and image_only_families")
        if not 0.0 <= self.image_only_share < 1.0:
            raise ValueError(f"LMTrainConfig.image_only_share must be in [0, 1), got {self.image_only_share}")


TRAINED_PREFIXES = (
    "model.language_model.", "lm_head.", "model.generation_embeddings.", "model.generation_aligner.",
    "model.generation_head.",
)


@dataclass
class _Encoded:
    plan_prompt: list[list[int]]
    plan: list[list[int]]  # plan words + EOS
    image_prompt_plan: list[list[int]]
    image_prompt: list[list[int]]
    image_tokens: torch.LongTensor  # (E, T)
    image_only: list[bool]  # the example only teaches prompt -> image tokens


def encode_examples(policy: JanusPolicy, examples: list[Example], image_only_families: Sequence[str] = ()) -> _Encoded:
    """Token ids of every example in the policy's own formats, and its image's VQ tokens; examples
    worded by ``image_only_families`` are marked to teach only prompt -> image (``make_batch``)."""
    tok = policy.tokenizer
    ids = lambda texts: [row.tolist()[row.ne(policy.pad_id).nonzero()[0].item():] for row in policy.tokenize(texts).ids.cpu()]
    enc = _Encoded(
        plan_prompt=ids([policy.plan_prompt_text(ex.prompt.text) for ex in examples]),
        plan=[tok(ex.plan.text(), add_special_tokens=False)["input_ids"] + [policy.eos_id] for ex in examples],
        image_prompt_plan=ids([policy.image_prompt_text(ex.prompt.text, ex.plan.text()) for ex in examples]),
        image_prompt=ids([policy.image_prompt_text(ex.prompt.text) for ex in examples]),
        image_tokens=encode_images(policy, [render(ex.scene) for ex in examples]),
        image_only=[ex.prompt.phrasing in image_only_families for ex in examples],
    )
    return enc


def make_batch(policy: JanusPolicy, enc: _Encoded, rows: list[int], config: LMTrainConfig, rng: np.random.Generator) -> dict:
    """A right-padded mixed batch: text ids, image ids, which positions are image inputs, and targets.
    An image-only example is always a prompt -> image row; without image-only examples the batch is
    drawn as it always was."""
    seqs = []  # (tokens, is_image, text_target, image_target) per row
    for e in rows:
        u = rng.random()
        if u < config.p_plan and not enc.image_only[e]:
            prompt, plan = enc.plan_prompt[e], enc.plan[e]
            full = prompt + plan
            n = len(full) - 1
            text_t = [-100] * (len(prompt) - 1) + plan
            seqs.append((full[:n], [False] * n, text_t, [-100] * n))
            continue
        without_plan = rng.random() < config.p_image_without_plan or enc.image_only[e]
        prompt = enc.image_prompt[e] if without_plan else enc.image_prompt_plan[e]
        if rng.random() < config.p_uncond:  # keep BOS and <begin_of_image>, blank the rest (unconditional_ids)
            prompt = [t if t in (policy.bos_id, policy.boi_id) else policy.pad_id for t in prompt]
        image = enc.image_tokens[e].tolist()
        n = len(prompt) + len(image) - 1
        seqs.append((
            prompt + image[:-1], [False] * len(prompt) + [True] * (len(image) - 1),
            [-100] * n, [-100] * (len(prompt) - 1) + image,
        ))
    S = max(len(s[0]) for s in seqs)
    N = len(seqs)
    tokens = torch.full((N, S), policy.pad_id, dtype=torch.long)
    is_image = torch.zeros((N, S), dtype=torch.bool)
    mask = torch.zeros((N, S), dtype=torch.long)
    text_t = torch.full((N, S), -100, dtype=torch.long)
    image_t = torch.full((N, S), -100, dtype=torch.long)
    for i, (t, im, tt, it) in enumerate(seqs):
        n = len(t)
        tokens[i, :n], is_image[i, :n], mask[i, :n] = torch.tensor(t), torch.tensor(im), 1
        text_t[i, :n], image_t[i, :n] = torch.tensor(tt), torch.tensor(it)
    return {"tokens": tokens, "is_image": is_image, "mask": mask, "text_targets": text_t, "image_targets": image_t}


def length_chunks(lengths: list[int], chunks: int) -> list[list[int]]:
    """Rows grouped into at most ``chunks`` runs of similar length, with the fewest padded positions.

    Rows sorted by length are cut into contiguous runs; a run costs (rows x its longest row), and the
    cuts come from an exact dynamic programme (N is a batch, so N^2 k is nothing)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sorted_len = [lengths[i] for i in order]
    n, inf = len(order), float("inf")
    # cost[j][c]: fewest positions for the first j sorted rows in c runs; cut[j][c]: where the last run starts.
    cost = [[inf] * (chunks + 1) for _ in range(n + 1)]
    cut = [[0] * (chunks + 1) for _ in range(n + 1)]
    cost[0][0] = 0
    for j in range(1, n + 1):
        for c in range(1, chunks + 1):
            for i in range(j):
                candidate = cost[i][c - 1] + (j - i) * sorted_len[j - 1]
                if candidate < cost[j][c]:
                    cost[j][c], cut[j][c] = candidate, i
    c = min(range(1, chunks + 1), key=lambda c: (cost[n][c], c)) if n else 0
    runs, j = [], n
    while j > 0:
        i = cut[j][c]
        runs.append(order[i:j])
        j, c = i, c - 1
    return runs[::-1]


def lm_loss(policy: JanusPolicy, batch: dict, chunks: int = 1) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean text cross-entropy + mean image cross-entropy of a ``make_batch`` batch.

    With ``chunks`` > 1 the rows run through the model in up to that many groups of similar length,
    each cut to its longest row: plan rows are a third as long as image rows, so one padded batch is
    about a third padding. The means are still over the whole batch, so the loss and its gradients are
    those of ``chunks=1``."""
    lengths = batch["mask"].sum(-1).tolist()
    text_count = int((batch["text_targets"] != -100).sum())
    image_count = int((batch["image_targets"] != -100).sum())
    sums = {"text": 0.0, "image": 0.0}
    for rows in length_chunks(lengths, chunks):
        S = max(lengths[i] for i in rows)
        part = {k: v[rows, :S] for k, v in batch.items()}
        for name, total in _chunk_ce_sums(policy, part).items():
            sums[name] = sums[name] + total
    stats, loss = {}, batch["tokens"].new_zeros((), dtype=torch.float)
    for name, count in (("text", text_count), ("image", image_count)):
        if count:
            mean = sums[name] / count
            loss = loss + mean
            stats[name] = mean.item()
    return loss, stats


def _chunk_ce_sums(policy: JanusPolicy, batch: dict) -> dict[str, torch.Tensor]:
    """Summed text and image cross-entropy of some rows of a ``make_batch`` batch."""
    tokens, is_image, mask = batch["tokens"], batch["is_image"], batch["mask"]
    text_ids = torch.where(is_image, torch.full_like(tokens, policy.pad_id), tokens)  # (N, S)
    image_ids = torch.where(is_image, tokens, torch.zeros_like(tokens))  # (N, S)
    embeds = torch.where(is_image[..., None], policy.embed_image(image_ids), policy.embed_text(text_ids))  # (N, S, H)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (N, S)
    hidden = policy.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
    sums = {}
    text_sel, image_sel = batch["text_targets"] != -100, batch["image_targets"] != -100
    if bool(text_sel.any()):
        logits = policy.text_logits(hidden[text_sel]).float()  # (n_text, V)
        sums["text"] = F.cross_entropy(logits, batch["text_targets"][text_sel], reduction="sum")
    if bool(image_sel.any()):
        logits = policy.image_logits(hidden[image_sel]).float()  # (n_image, C)
        sums["image"] = F.cross_entropy(logits, batch["image_targets"][image_sel], reduction="sum")
    return sums


def train_lm(
    policy: JanusPolicy,
    config: LMTrainConfig = LMTrainConfig(),
    log: Log = print,
    on_eval: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train the language model and generation head in place (VQ frozen); returns a summary."""
    from t2i_r1.shapeworld.grammar import prompt_set
    from t2i_r1.shapeworld.model import evaluate_policy

    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    t0 = time.time()
    n_image_only = round(config.image_only_share * config.examples) if config.image_only_families else 0
    examples = sample_examples(config.examples - n_image_only, rng, split="train", workers=config.workers, families=config.families)
    if n_image_only:
        examples += sample_examples(n_image_only, rng, split="train", workers=config.workers, families=config.image_only_families)
    enc = encode_examples(policy, examples, config.image_only_families)
    log(f"lm data: {len(examples)} examples encoded in {time.time() - t0:.0f}s")
    model = policy.model
    model.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if n.startswith(TRAINED_PREFIXES)]
    for p in params:
        p.requires_grad_(True)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.95),
    )
    held = prompt_set("heldout", config.eval_prompts_per_category, seed=config.seed + 7, families=config.families)
    start, step, history = time.time(), 0, []
    while step < config.max_steps and not _over(elapsed := time.time() - start, config.minutes):
        progress = _budget_progress(elapsed, config.minutes, step, config.max_steps)
        lr = config.lr * _warmup_cosine(step, config.warmup_steps, progress, config.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        batch = make_batch(policy, enc, rng.integers(len(examples), size=config.batch).tolist(), config, rng)
        batch = {k: v.to(policy.device) for k, v in batch.items()}
        loss, stats = lm_loss(policy, batch, config.length_chunks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 100 == 0:
            log(f"lm step {step} loss {loss.item():.3f} " + " ".join(f"{k} {v:.3f}" for k, v in stats.items())
                + f" lr {lr:.2e} ({elapsed:.0f}s)")
        if config.eval_every and step % config.eval_every == 0:
            model.eval()
            table = evaluate_policy(policy, held, use_plan=True, seed=0).table()
            history.append({"step": step, "seconds": round(elapsed), **table})
            log(f"lm eval step {step}: " + " ".join(f"{k} {v:.2f}" for k, v in table.items()))
            if on_eval is not None:
                on_eval(step, table)
    model.eval()
    model.requires_grad_(False)
    return {"steps": step, "seconds": time.time() - start, "history": history}


@dataclass(frozen=True)
class ExposureConfig:
    """Continued pretraining in which ``image_only_families`` appear only as prompt -> image rows
    (frozen: one value serves as ``expose``'s default and as shared test settings)."""

    steps: int = 600
    batch: int = 64
    lr: float = 3e-4
    """Constant after a 20-step warm-up: the stage continues a finished model."""
    examples: int = 12_000
    share: float = 2 / 3
    """Share of the examples worded by ``image_only_families``."""
    image_only_families: tuple[str, ...] = RL_FAMILIES
    seed: int = 0

    def lm_config(self) -> LMTrainConfig:
        return LMTrainConfig(max_steps=self.steps, batch=self.batch, lr=self.lr, warmup_steps=20, min_lr_ratio=1.0,
                             examples=self.examples, families=PRETRAIN_FAMILIES, image_only_families=self.image_only_families,
                             image_only_share=self.share, eval_every=0, seed=self.seed, workers=1)


def expose(policy: JanusPolicy, config: ExposureConfig = ExposureConfig(), log: Log = print) -> dict:
    """Run the exposure stage on ``policy`` in place; returns ``train_lm``'s summary."""
    return train_lm(policy, config.lm_config(), log)


def pretrain(
    out: str | Path,
    *,
    spec: ShapeWorldModelSpec = ShapeWorldModelSpec(),
    vq: VQTrainConfig = VQTrainConfig(),
    lm: LMTrainConfig = LMTrainConfig(),
    log: Log = print,
    device: str = "cpu",
    on_stage: Callable[[JanusPolicy, str, int], None] | None = None,
    exposure: ExposureConfig | None = None,
) -> JanusPolicy:
    """Build, train the VQ, train the LM, run the ``exposure`` stage when given, and save to ``out`` (with
    ``pretrain.json``: configs and timings). ``on_stage(policy, "vq" | "lm", step)`` runs after the VQ stage
    and at each LM evaluation (snapshots)."""
    policy = build_model(spec)
    policy.model.to(device)
    t0 = time.time()
    vq_summary = train_vq(policy, vq, log)
    if on_stage is not None:
        on_stage(policy, "vq", vq_summary["steps"])
    lm_summary = train_lm(policy, lm, log, on_eval=(lambda step, table: on_stage(policy, "lm", step)) if on_stage else None)
    if on_stage is not None:
        on_stage(policy, "lm", lm_summary["steps"])
    exposure_summary = expose(policy, exposure, log) if exposure is not None and exposure.steps else None
    policy.model.to("cpu")
    out = Path(out)
    policy.save_pretrained(out)  # weights, processor and reasoning.txt
    summary = {"spec": asdict(spec), "vq": asdict(vq), "lm": asdict(lm), "device": device, "vq_result": vq_summary,
               "lm_result": lm_summary, "seconds": time.time() - t0}
    if exposure_summary is not None:  # the same entry as `t2i-r1 shapeworld expose` writes
        summary["exposure"] = {"config": asdict(exposure), "result": exposure_summary}
    (out / "pretrain.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"saved {out} after {time.time() - t0:.0f}s")
    return policy

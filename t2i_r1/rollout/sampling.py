"""Sampling of the two chains of thought: the semantic plan (text) and the image tokens (CFG).

No optimizer and no reward here; everything runs under ``torch.no_grad``.

Choices, and how they differ from the reference implementation:
1. One KV-cached loop per level, written by us, because RL needs the log-prob of every sampled token
   (transformers' ``generate(generation_mode="image")`` keeps only the last step's scores).
2. Every distinct prompt is prefilled once and its cache is copied to its G samples (the reference
   prefills G identical rows).
3. The attention mask and, for Llama backbones, the KV cache are allocated once for prompt + new
   tokens, and each token runs a lean cached step of our own (``fast_decode.py``: no per-token
   concatenation, mask or rotary rebuild); the reference grows mask and cache with a concatenation
   per token. Other backbones fall back to transformers' ``DynamicCache`` forward.
4. CFG: conditional and unconditional rows go through the backbone as one batch with one cache;
   the unconditional row is the conditional prompt with every token but BOS and <begin_of_image>
   replaced by PAD, so both halves share position ids. ``guidance_scale == 1`` drops the
   unconditional half altogether.
5. Rows are processed in chunks sized from a memory budget for the KV cache (the reference: 32 rows).
6. Recorded log-probs are those of the *tempered* distribution (logits / temperature) before top-p /
   top-k truncation, the convention of TRL; the teacher-forced functions in ``logprobs.py`` compute the
   same quantity, so the importance ratio at the first optimisation pass is exactly 1.
   ``image_logprob_mode`` says whether image log-probs are taken under the guided distribution
   (the one sampled) or the conditional one (what the reference trains); see ``logprobs.py``.

Dimension letters: B distinct prompts, G samples per prompt, N = B*G rows, P prompt tokens,
L plan tokens, T image tokens, H hidden, V text vocabulary, C image codebook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.rollout.fast_decode import decode_threads, make_decoder
from t2i_r1.rollout.settings import ImageLogprobMode, ImageSamplingConfig, PlanSamplingConfig  # noqa: F401 (re-exported)

@dataclass
class PlanSample:
    """G plans for each of B prompts, rows grouped by prompt (row i belongs to prompt i // G)."""

    prompt_ids: torch.LongTensor  # (N, P) left-padded plan prompts
    prompt_mask: torch.LongTensor  # (N, P)
    plan_ids: torch.LongTensor  # (N, L) PAD after EOS
    plan_mask: torch.LongTensor  # (N, L) 1 up to and including EOS
    logprobs: torch.Tensor  # (N, L) sampling-time log-probs, 0 outside the mask
    texts: list[str]


@dataclass
class ImageSample:
    prompt_ids: torch.LongTensor  # (N, P) left-padded image prompts ending with <begin_of_image>
    prompt_mask: torch.LongTensor  # (N, P)
    tokens: torch.LongTensor  # (N, T)
    logprobs: torch.Tensor  # (N, T) sampling-time log-probs under ``logprob_mode``


def position_ids_from_mask(mask: torch.LongTensor) -> torch.LongTensor:
    """Positions that skip left padding: (N, S) mask -> (N, S) ids, 0 on padding."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _unique_rows(ids: torch.LongTensor) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Distinct rows of (N, P) ids and, for each row, the index of its distinct row."""
    unique, inverse = torch.unique(ids, dim=0, return_inverse=True)
    return unique, inverse


def _prefill(policy: JanusPolicy, ids, mask, full_mask):
    """Run the prompt of each *distinct* row once and spread its cache to every row.

    ``ids``, ``mask``: (N, P); ``full_mask``: (N, P + new) preallocated. Returns (hidden (N, H), decoder),
    where ``decoder.step(embeds (N, 1, H), positions (N,))`` gives the next hidden states.
    """
    unique, inverse = _unique_rows(torch.cat([ids, mask], dim=1))
    P = ids.shape[1]
    u_ids, u_mask = unique[:, :P], unique[:, P:]
    decoder = make_decoder(policy.backbone, *full_mask.shape)
    hidden = decoder.prefill(policy.embed_text(u_ids), u_mask, position_ids_from_mask(u_mask), inverse, full_mask)
    return hidden, decoder  # (N, H)


def _sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.LongTensor:
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (N, V) -> (N,)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    sorted_probs = sorted_logits.softmax(-1)
    drop_sorted = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # keep the token that crosses top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def _probs(log_p: torch.Tensor, logits: torch.Tensor, filtered: torch.Tensor) -> torch.Tensor:
    """Sampling probabilities; reuse the log-softmax already computed when no filter changed the logits."""
    return log_p.exp() if filtered is logits else filtered.softmax(-1)


def _top_k_filter(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    kth = logits.topk(top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


@torch.no_grad()
def sample_plans(
    policy: JanusPolicy,
    prompts: list[str],
    num_samples: int,
    config: PlanSamplingConfig,
    generator: torch.Generator | None = None,
    on_step: Callable[[torch.LongTensor, torch.BoolTensor], None] | None = None,
) -> PlanSample:
    """Sample ``num_samples`` plans per prompt from the reasoning instruction.

    ``on_step(tokens (N, t+1), done (N,))`` is called after every step, for streaming the plan as it is written.
    """
    _check_prompts(prompts)
    texts = [policy.plan_prompt_text(p) for p in prompts]
    tok = policy.tokenize(texts, what="prompt", reserve=config.max_new_tokens)
    ids = tok.ids.repeat_interleave(num_samples, 0)  # (N, P)
    mask = tok.mask.repeat_interleave(num_samples, 0)
    N, P = ids.shape
    L = config.max_new_tokens
    full_mask = torch.cat([mask, mask.new_ones(N, L)], dim=1)  # (N, P + L), sliced per step
    next_position = mask.sum(1)  # (N,)

    hidden, decoder = _prefill(policy, ids, mask, full_mask)
    plan = ids.new_full((N, L), policy.pad_id)
    logprobs = torch.zeros(N, L, device=ids.device)
    done = torch.zeros(N, dtype=torch.bool, device=ids.device)
    with decode_threads():
        for t in range(L):
            logits = policy.text_logits(hidden).float() / config.temperature  # (N, V)
            log_p = logits.log_softmax(-1)
            filtered = _top_p_filter(_top_k_filter(logits, config.top_k), config.top_p)  # transformers' order
            token = _sample(_probs(log_p, logits, filtered), generator)  # (N,)
            token = torch.where(done, torch.full_like(token, policy.pad_id), token)
            plan[:, t] = token
            logprobs[:, t] = torch.where(done, 0.0, log_p.gather(1, token[:, None]).squeeze(1))
            done |= token == policy.eos_id
            if on_step is not None:
                on_step(plan[:, : t + 1], done)
            if bool(done.all()) or t == L - 1:
                break
            hidden = decoder.step(policy.embed_text(token[:, None]), next_position + t)  # (N, H)

    plan_mask = _mask_through_eos(plan, policy.eos_id)
    used = int(plan_mask.sum(1).max())  # trim the columns no row uses
    plan, plan_mask, logprobs = plan[:, :used], plan_mask[:, :used], logprobs[:, :used] * plan_mask[:, :used]
    return PlanSample(ids, mask, plan, plan_mask, logprobs, policy.decode_text(plan, plan_mask))


def _mask_through_eos(tokens: torch.LongTensor, eos_id: int) -> torch.LongTensor:
    """1 up to and including the first EOS of each row (the whole row when it has none)."""
    is_eos = (tokens == eos_id).long()
    before_or_at = (is_eos.cumsum(1) - is_eos) == 0  # no EOS strictly before this position
    return before_or_at.long()


def _check_prompts(prompts: list[str]) -> None:
    if not prompts:
        raise ValueError("no prompts given")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"prompt {i} is empty")


def rows_per_chunk(policy: JanusPolicy, sequence_length: int, config: ImageSamplingConfig) -> int:
    """How many samples fit the KV-cache budget (each sample has 2 rows under CFG)."""
    text = policy.model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    element = torch.finfo(policy.model.dtype).bits // 8
    per_row = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * sequence_length * element
    per_sample = per_row * (2 if config.uses_cfg else 1)
    rows = max(1, int(config.memory_budget_gb * 2**30 // per_sample))
    return min(rows, config.max_rows_per_chunk) if config.max_rows_per_chunk else rows


@torch.no_grad()
def sample_image_tokens(
    policy: JanusPolicy,
    prompt_ids: torch.LongTensor,
    prompt_mask: torch.LongTensor,
    config: ImageSamplingConfig,
    generator: torch.Generator | None = None,
) -> ImageSample:
    """Sample T image tokens for each left-padded image prompt (N, P) that ends with <begin_of_image>."""
    if not bool((prompt_ids[:, -1] == policy.boi_id).all()):
        raise ValueError("every image prompt must end with the <begin_of_image> token")
    N, P = prompt_ids.shape
    T = policy.num_image_tokens
    if P + T > policy.context_length:
        raise ValueError(f"image prompt of {P} tokens + {T} image tokens exceeds the context of {policy.context_length}")
    chunk = rows_per_chunk(policy, P + T, config)
    tokens, logprobs = [], []
    for start in range(0, N, chunk):
        sl = slice(start, start + chunk)
        t, lp = _sample_image_chunk(policy, prompt_ids[sl], prompt_mask[sl], config, generator)
        tokens.append(t)
        logprobs.append(lp)
    return ImageSample(prompt_ids, prompt_mask, torch.cat(tokens), torch.cat(logprobs))


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor | None, scale: float) -> torch.Tensor:
    """CFG mix: uncond + scale * (cond - uncond); ``uncond=None`` means no guidance."""
    return cond if uncond is None else uncond + scale * (cond - uncond)


def _sample_image_chunk(policy, ids, mask, config: ImageSamplingConfig, generator):
    n, P = ids.shape
    T = policy.num_image_tokens
    if config.uses_cfg:
        ids = torch.cat([ids, policy.unconditional_ids(ids, mask)])  # (2n, P): cond rows, then uncond
        mask = torch.cat([mask, mask])
    rows = ids.shape[0]
    full_mask = torch.cat([mask, mask.new_ones(rows, T)], dim=1)  # (rows, P + T)
    next_position = mask.sum(1)  # (rows,)
    hidden, decoder = _prefill(policy, ids, mask, full_mask)

    tokens = ids.new_zeros(n, T)
    logprobs = torch.zeros(n, T, device=ids.device)
    with decode_threads():
        for t in range(T):
            logits = policy.image_logits(hidden).float()  # (rows, C)
            cond, uncond = (logits[:n], logits[n:]) if config.uses_cfg else (logits, None)
            mixed = guided_logits(cond, uncond, config.guidance_scale) / config.temperature  # (n, C)
            log_mixed = mixed.log_softmax(-1)  # (n, C)
            token = _sample(_probs(log_mixed, mixed, _top_k_filter(mixed, config.top_k)), generator)  # (n,)
            scored = log_mixed if config.logprob_mode == "guided" else (cond / config.temperature).log_softmax(-1)
            logprobs[:, t] = scored.gather(1, token[:, None]).squeeze(1)
            tokens[:, t] = token
            if t == T - 1:
                break  # the last token needs no forward pass
            embeds = policy.embed_image(token[:, None])  # (n, 1, H): cond and uncond rows share the token
            embeds = torch.cat([embeds, embeds]) if config.uses_cfg else embeds  # (rows, 1, H)
            hidden = decoder.step(embeds, next_position + t)  # (rows, H)
    return tokens, logprobs

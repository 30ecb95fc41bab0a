"""Lean KV-cached decoding for Llama backbones: a preallocated cache and a per-token step written by us.

Sampling 256-576 image tokens one at a time through transformers' ``LlamaModel.forward`` pays, per
token, a ``torch.cat`` of every layer's keys and values onto the ``DynamicCache`` (quadratic copying:
on the medium CPU preset it took as long as all the matrix products) plus the rebuild of the
attention mask, the rotary tables and the output containers. Here:

1. The prompt is prefilled by transformers itself (one call; every distinct prompt once), and its keys
   and values are copied into buffers allocated once for prompt + new tokens.
2. Each new token runs a step of ~20 operations per layer on (R, 1, H): RMSNorm as one fused call,
   q|k|v and gate|up as one matrix product each (stacked copies of the weights, made per sampling
   call while small; LoRA or other non-plain layers run their own modules instead), RoPE from a
   cos/sin table computed once by the backbone's rotary embedding, k and v written in place at
   column ``P + t`` (left padding puts every row's new token in the same column), SDPA over the
   filled prefix ``[:P + t + 1]`` under the rows' padding mask.
3. Only what the step reproduces is taken: a ``LlamaModel`` with ``sdpa`` or ``eager`` attention and
   RoPE without dynamic rescaling. Anything else (another architecture, flash attention, dynamic
   RoPE) gets :class:`DynamicCacheDecoder`, transformers' cached forward behind the same two calls.

The step matches transformers' forward to float rounding, and sampling draws the same tokens from
the same generator (tests/test_fast_decode.py); ``disabled()`` (or ``T2I_R1_FAST_DECODE=0``)
forces the transformers path, for those tests and as an escape hatch. What is left is matrix
products and attention reading the cache, the same arithmetic the reference does: on a CPU the
loop is then bound by memory bandwidth (weights + cache per token), not by Python.

Dimension letters: R rows (CFG halves included), U distinct prompt rows, P prompt tokens, S = P + new
tokens (cache length), H hidden, h heads, k key/value heads, d head dim.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaModel, LlamaRMSNorm

_ENABLED = os.environ.get("T2I_R1_FAST_DECODE", "1") not in ("0", "false", "False")
_SUPPORTED_ATTENTION = ("sdpa", "eager")
_DYNAMIC_ROPE = ("dynamic", "longrope")  # rope types whose tables change with the sequence length
FUSE_MAX_BYTES = 256 * 2**20
"""On a CPU, stacked q|k|v and gate|up copies are made per sampling call only while they take at most this."""


@contextmanager
def disabled():
    """Use transformers' cached forward for every decoding step inside the block."""
    global _ENABLED
    previous, _ENABLED = _ENABLED, False
    try:
        yield
    finally:
        _ENABLED = previous


DECODE_THREADS_ENV = "T2I_R1_DECODE_THREADS"


@contextmanager
def decode_threads():
    """Run a per-token loop on ``T2I_R1_DECODE_THREADS`` CPU threads (unset or 0: torch's setting).

    A decoding step of a small model is ~200 small operations. With several OpenMP threads, every
    parallel one is a fork/join, and on a machine shared with other jobs a descheduled partner
    thread stalls each of them: on the shared 2-core box, 2 threads made the medium image loop
    several times slower than 1, while on an idle machine 2 threads are faster. Hence a knob, not a
    rule; the benchmarks report both.
    """
    threads = int(os.environ.get(DECODE_THREADS_ENV) or 0)
    previous = torch.get_num_threads()
    if threads <= 0 or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def unsupported_reason(backbone: torch.nn.Module) -> str | None:
    """Why the fast step cannot stand in for ``backbone`` (None when it can)."""
    if not isinstance(backbone, LlamaModel):
        return f"backbone is a {type(backbone).__name__}, not a LlamaModel"
    config = backbone.config
    if config._attn_implementation not in _SUPPORTED_ATTENTION:
        return f"attention implementation {config._attn_implementation!r} (fast path: {_SUPPORTED_ATTENTION})"
    if getattr(backbone.rotary_emb, "rope_type", "default") in _DYNAMIC_ROPE:
        return f"rope type {backbone.rotary_emb.rope_type!r} rescales with the sequence length"
    if backbone.training and config.attention_dropout > 0:
        return "attention dropout in training mode"
    if not all(isinstance(layer, LlamaDecoderLayer) for layer in backbone.layers):
        return "a decoder layer is not a LlamaDecoderLayer"
    return None


def make_decoder(backbone: torch.nn.Module, rows: int, length: int) -> StaticCacheDecoder | DynamicCacheDecoder:
    """A decoder for ``rows`` sequences of up to ``length`` tokens: the fast one where it is exact."""
    if not _ENABLED or unsupported_reason(backbone) is not None:
        return DynamicCacheDecoder(backbone, rows, length)
    return StaticCacheDecoder(backbone, rows, length)


class DynamicCacheDecoder:
    """transformers' own cached forward behind the same two calls (the fallback and the oracle)."""

    def __init__(self, backbone: torch.nn.Module, rows: int, length: int):
        self.backbone, self.rows, self.length, self.filled = backbone, rows, length, 0

    def prefill(self, embeds, mask, positions, inverse, full_mask) -> torch.Tensor:
        out = self.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                            cache=DynamicCache(config=self.backbone.config), use_cache=True)
        self.cache = out.cache
        if not torch.equal(inverse, torch.arange(len(inverse), device=inverse.device)):
            self.cache.reorder_cache(inverse)  # (U, ...) -> (R, ...)
        self.full_mask, self.filled = full_mask, embeds.shape[1]
        return out.last_hidden_state[inverse, -1]  # (R, H)

    def step(self, embeds, positions) -> torch.Tensor:
        self.filled += 1
        out = self.backbone(inputs_embeds=embeds, attention_mask=self.full_mask[:, : self.filled],
                            position_ids=positions[:, None], cache=self.cache, use_cache=True)
        return out.last_hidden_state[:, -1]  # (R, H)


class StaticCacheDecoder:
    """Prefill through transformers, then one lean cached step per token into preallocated buffers."""

    def __init__(self, backbone: torch.nn.Module, rows: int, length: int):
        self.backbone = backbone
        config = backbone.config
        self.layers = list(backbone.layers)[: config.num_hidden_layers]
        attn = self.layers[0].self_attn
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.eager = config._attn_implementation == "eager"
        weight = self.layers[0].input_layernorm.weight
        self.dtype, self.device = weight.dtype, weight.device
        self.rows, self.length, self.filled = rows, length, 0
        shape = (rows, self.kv_heads, length, self.head_dim)
        self.keys = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]  # (R, k, S, d)
        self.values = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        # rotate_half as a signed permutation: x @ rotate == cat(-x[d/2:], x[:d/2]) exactly (one +-1 per column)
        half = self.head_dim // 2
        rotate = torch.zeros(self.head_dim, self.head_dim, dtype=self.dtype, device=self.device)
        rotate[torch.arange(half, self.head_dim), torch.arange(half)] = -1
        rotate[torch.arange(half), torch.arange(half, self.head_dim)] = 1
        self.rotate = rotate  # (d, d)
        self.fused = [_fuse(layer) for layer in self.layers] if _fusion_fits(self.layers) else [None] * len(self.layers)
        self.mask: torch.Tensor | None = None  # (R, 1, 1, S) bool, True = attend; None = no padding
        self.additive: torch.Tensor | None = None  # (R, 1, 1, S) 0 / dtype min, eager attention only

    def prefill(self, embeds: torch.Tensor, mask: torch.LongTensor, positions: torch.LongTensor,
                inverse: torch.LongTensor, full_mask: torch.LongTensor) -> torch.Tensor:
        """Run the U distinct prompts (U, P, H) through transformers and spread them to the R rows.

        ``inverse`` (R,) names each row's distinct prompt; ``full_mask`` (R, S) is the padding mask of
        prompt + every new token. Returns the last hidden state of each row (R, H).
        """
        P = embeds.shape[1]
        if full_mask.shape != (self.rows, self.length):
            raise ValueError(f"full_mask must be {(self.rows, self.length)}, got {tuple(full_mask.shape)}")
        cache = DynamicCache(config=self.backbone.config)
        out = self.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache,
                            use_cache=True)
        for layer, keys, values in zip(out.cache.layers, self.keys, self.values):
            keys[:, :, :P] = layer.keys[inverse]  # (U, k, P, d) -> (R, k, P, d)
            values[:, :, :P] = layer.values[inverse]
        self.filled = P
        # (R, 1, 1, S); None without padding, which lets SDPA skip the masking
        self.mask = None if bool(full_mask.all()) else full_mask.bool()[:, None, None, :]
        if self.eager and self.mask is not None:
            self.additive = torch.zeros(self.mask.shape, dtype=self.dtype, device=self.device).masked_fill(
                ~self.mask, torch.finfo(self.dtype).min)
        rotary = self.backbone.rotary_emb
        table = torch.arange(self.length, device=self.device)[None]  # (1, S) every position a row can reach
        self.cos, self.sin = rotary(embeds, table)  # (1, S, d) each, in the model dtype as transformers casts
        return out.last_hidden_state[inverse, -1]  # (R, H)

    def step(self, embeds: torch.Tensor, positions: torch.LongTensor) -> torch.Tensor:
        """One token per row: embeds (R, 1, H) at RoPE ``positions`` (R,) -> last hidden state (R, H)."""
        if self.filled >= self.length:
            raise RuntimeError(f"the cache holds {self.length} tokens; cannot decode another")
        R, column = embeds.shape[0], self.filled
        S = column + 1
        h, k_heads, d = self.heads, self.kv_heads, self.head_dim
        cos, sin = self.cos[0, positions][:, None, None], self.sin[0, positions][:, None, None]  # (R, 1, 1, d)
        mask = None if self.mask is None else self.mask[..., :S]  # (R, 1, 1, S)
        x = embeds  # (R, 1, H)
        for layer, fused, keys, values in zip(self.layers, self.fused, self.keys, self.values):
            attn = layer.self_attn
            normed = _norm(layer.input_layernorm, x)
            if fused is None:
                qkv = torch.cat([attn.q_proj(normed), attn.k_proj(normed), attn.v_proj(normed)], dim=-1)
            else:
                qkv = F.linear(normed, fused.qkv_weight, fused.qkv_bias)  # (R, 1, (h + 2k) d)
            n = h + 2 * k_heads
            rotated = (qkv.view(R * n, d) @ self.rotate).view(R, n, 1, d)  # rotate_half of q, k (and v, unused)
            qkv = qkv.view(R, n, 1, d)  # one token: (R, 1, n, d) and (R, n, 1, d) share memory
            qk = torch.addcmul(qkv[:, : h + k_heads] * cos, rotated[:, : h + k_heads], sin)  # RoPE, (R, h + k, 1, d)
            keys[:, :, column] = qk[:, h:, 0]  # (R, k, d) into column P + t
            values[:, :, column] = qkv[:, h + k_heads :, 0]
            out = self._attend(qk[:, :h], keys[:, :, :S], values[:, :, :S], mask, S)  # (R, h, 1, d)
            x = x + attn.o_proj(out.reshape(R, 1, h * d))
            normed = _norm(layer.post_attention_layernorm, x)
            if fused is None:
                x = x + layer.mlp(normed)
            else:
                gate, up = F.linear(normed, fused.gate_up_weight, fused.gate_up_bias).chunk(2, dim=-1)  # (R, 1, I)
                x = x + layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)
        self.filled = S
        return _norm(self.backbone.norm, x)[:, -1]  # (R, H)

    def _attend(self, q, k, v, mask, S):
        groups = self.heads // self.kv_heads
        if self.eager:
            if groups > 1:
                k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)  # (R, h, S, d)
            scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling  # (R, h, 1, S)
            if self.additive is not None:
                scores = scores + self.additive[..., :S]
            return torch.matmul(scores.softmax(-1, dtype=torch.float32).to(q.dtype), v)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling, enable_gqa=groups > 1)


@dataclass
class _FusedLayer:
    """q|k|v and gate|up weights stacked, so each is one matrix product per token."""

    qkv_weight: torch.Tensor  # (h*d + 2*k*d, H)
    qkv_bias: torch.Tensor | None
    gate_up_weight: torch.Tensor  # (2*I, H)
    gate_up_bias: torch.Tensor | None


def _plain(*modules) -> bool:
    # exactly nn.Linear: a LoRA (peft) or quantised layer must run its own forward
    return all(type(m) is torch.nn.Linear for m in modules)


def _fusion_fits(layers) -> bool:
    """Fuse only plain Linear layers, and only while the stacked copies stay small next to memory:
    ``FUSE_MAX_BYTES`` on a CPU, a tenth of the free memory on a GPU (each copy lives for one call)."""
    projections = [m for l in layers for m in (l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj,
                                                l.mlp.gate_proj, l.mlp.up_proj)]
    if not _plain(*projections):
        return False
    extra = sum(m.weight.nbytes for m in projections)
    device = projections[0].weight.device
    if device.type == "cuda":
        return extra <= torch.cuda.mem_get_info(device)[0] // 10
    return extra <= FUSE_MAX_BYTES


def _fuse(layer) -> _FusedLayer:
    attn, mlp = layer.self_attn, layer.mlp
    cat_bias = lambda *ms: None if ms[0].bias is None else torch.cat([m.bias for m in ms])
    projections = (attn.q_proj, attn.k_proj, attn.v_proj)
    return _FusedLayer(
        torch.cat([m.weight for m in projections]), cat_bias(*projections),
        torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), cat_bias(mlp.gate_proj, mlp.up_proj),
    )


def _norm(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Llama RMSNorm as one fused call in float32 (the module's own arithmetic); anything else, or a
    norm with hooks (the benchmarks count passes with one), runs its module."""
    if type(module) is LlamaRMSNorm and x.dtype == torch.float32 and not (module._forward_hooks or
                                                                          module._forward_pre_hooks):
        return F.rms_norm(x, module.weight.shape, module.weight, module.variance_epsilon)
    return module(x)

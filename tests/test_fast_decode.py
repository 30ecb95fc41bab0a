"""The fast decoding step (preallocated cache, our own per-token step) equals transformers' forward.

Oracle: one uncached transformers forward over prompt + new tokens with the padding mask and
position ids; the hidden state at each new position must match the fast step's (fp32, 1e-5).
Sampling through the fast path and through transformers' cached path must draw the same tokens from
the same generator and record the same log-probs.
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from t2i_r1.rollout import fast_decode
from t2i_r1.rollout.fast_decode import (
    DynamicCacheDecoder,
    StaticCacheDecoder,
    decode_threads,
    make_decoder,
    unsupported_reason,
)
from t2i_r1.rollout.sampling import (
    ImageSamplingConfig,
    PlanSamplingConfig,
    position_ids_from_mask,
    sample_image_tokens,
    sample_plans,
)
from t2i_r1.testing import TinyJanusSpec, build_tiny_janus

TOL = 1e-5
PROMPTS = ["a red cube", "two green cats and a yellow dog on top of a wooden table left of a blue sphere"]


@pytest.fixture(scope="module")
def policy():
    return build_tiny_janus(TinyJanusSpec(seed=3))


def llama(kv_heads: int, attn: str = "sdpa") -> LlamaModel:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128,
                         attn_implementation=attn)
    return LlamaModel(config).eval()


def left_padded(rows: int, P: int, H: int):
    """Random prompt embeddings (rows, P, H) whose row r has r padding columns on the left."""
    g = torch.Generator().manual_seed(1)
    embeds = torch.randn(rows, P, H, generator=g)
    mask = torch.ones(rows, P, dtype=torch.long)
    for r in range(rows):
        mask[r, :r] = 0
    return embeds, mask


def decode(decoder, embeds, mask, inverse, new):
    """Prefill the distinct prompts, then feed ``new`` (R, n, H) one token at a time: hidden (R, n+1, H)."""
    R, n = new.shape[:2]
    full_mask = torch.cat([mask[inverse], mask.new_ones(R, n)], dim=1)  # (R, P + n): the cache's columns
    hidden = [decoder.prefill(embeds, mask, position_ids_from_mask(mask), inverse, full_mask)]
    next_position = mask[inverse].sum(1)
    for t in range(n):
        hidden.append(decoder.step(new[:, t : t + 1], next_position + t))
    return torch.stack(hidden, 1)


def uncached(backbone, embeds, mask, inverse, new):
    """The oracle: one forward over [prompt, new] per row; hidden at the last prompt and every new position."""
    R, n = new.shape[:2]
    P = embeds.shape[1]
    x = torch.cat([embeds[inverse], new], 1)  # (R, P + n, H)
    m = torch.cat([mask[inverse], mask.new_ones(R, n)], 1)
    out = backbone(inputs_embeds=x, attention_mask=m, position_ids=position_ids_from_mask(m)).last_hidden_state
    return out[:, P - 1 :]  # (R, n + 1, H)


@pytest.mark.parametrize("kv_heads,attn", [(4, "sdpa"), (2, "sdpa"), (4, "eager"), (2, "eager")])
@torch.no_grad()
def test_fast_step_matches_uncached_forward(kv_heads, attn):
    backbone = llama(kv_heads, attn)
    assert unsupported_reason(backbone) is None
    embeds, mask = left_padded(3, 7, 64)  # row r has r left-padding columns
    inverse = torch.tensor([0, 0, 1, 2, 2])  # distinct prompts spread to 5 rows, as G samples share one
    new = torch.randn(5, 6, 64, generator=torch.Generator().manual_seed(2))
    decoder = StaticCacheDecoder(backbone, 5, 7 + 6)
    assert all(f is not None for f in decoder.fused)  # small plain-Linear model: stacked projections
    fast = decode(decoder, embeds, mask, inverse, new)
    oracle = uncached(backbone, embeds, mask, inverse, new)
    slow = decode(DynamicCacheDecoder(backbone, 5, 7 + 6), embeds, mask, inverse, new)
    assert (fast - oracle).abs().max().item() <= TOL
    assert (fast - slow).abs().max().item() <= TOL


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@torch.no_grad()
def test_fast_step_without_padding(attn):
    """Equal-length prompts: the decoder drops the mask altogether; the result must not change."""
    backbone = llama(2, attn)
    embeds, mask = left_padded(2, 5, 64)
    mask[:] = 1
    new = torch.randn(2, 4, 64, generator=torch.Generator().manual_seed(3))
    decoder = StaticCacheDecoder(backbone, 2, 5 + 4)
    fast = decode(decoder, embeds, mask, torch.arange(2), new)
    assert decoder.mask is None
    assert (fast - uncached(backbone, embeds, mask, torch.arange(2), new)).abs().max().item() <= TOL


@torch.no_grad()
def test_unfused_projections_match(monkeypatch):
    """Without stacked q|k|v and gate|up copies (large models, LoRA) the module calls give the same."""
    backbone = llama(2)
    monkeypatch.setattr(fast_decode, "FUSE_MAX_BYTES", 0)
    decoder = StaticCacheDecoder(backbone, 3, 11)
    assert decoder.fused == [None, None]
    embeds, mask = left_padded(3, 6, 64)
    new = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(4))
    inverse = torch.arange(3)
    fast = decode(decoder, embeds, mask, inverse, new)
    assert (fast - uncached(backbone, embeds, mask, inverse, new)).abs().max().item() <= TOL


@torch.no_grad()
def test_lora_adapters_are_used():
    """peft replaces the projections with LoRA layers: the fast step must run them, not the base weights."""
    from peft import LoraConfig, get_peft_model

    backbone = llama(4)
    peft_model = get_peft_model(backbone, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                                                     init_lora_weights=False))  # random B: adapters change outputs
    model = peft_model.base_model.model
    decoder = StaticCacheDecoder(model, 3, 11)
    assert decoder.fused == [None, None]  # LoRA layers are not plain Linear
    embeds, mask = left_padded(3, 6, 64)
    new = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(5))
    inverse = torch.arange(3)
    fast = decode(decoder, embeds, mask, inverse, new)
    oracle = uncached(model, embeds, mask, inverse, new)
    assert (fast - oracle).abs().max().item() <= TOL
    with peft_model.disable_adapter():
        base = uncached(model, embeds, mask, inverse, new)
    assert (fast - base).abs().max().item() > 1e-3  # the adapters did change the result


def test_unsupported_backbones_fall_back(policy):
    assert "not a LlamaModel" in unsupported_reason(torch.nn.Linear(2, 2))
    assert isinstance(make_decoder(policy.backbone, 2, 8), StaticCacheDecoder)
    with fast_decode.disabled():
        assert isinstance(make_decoder(policy.backbone, 2, 8), DynamicCacheDecoder)
    assert isinstance(make_decoder(policy.backbone, 2, 8), StaticCacheDecoder)


def test_cache_overflow_is_an_error():
    backbone = llama(4)
    decoder = StaticCacheDecoder(backbone, 1, 3)
    embeds, mask = left_padded(1, 2, 64)
    with torch.no_grad():
        decode(decoder, embeds, mask, torch.arange(1), torch.randn(1, 1, 64))  # 2 prompt + 1 new = 3: full
        with pytest.raises(RuntimeError, match="cannot decode another"):
            decoder.step(torch.randn(1, 1, 64), torch.tensor([3]))


@pytest.mark.parametrize("guidance,mode", [(5.0, "guided"), (5.0, "conditional"), (1.0, "guided")])
def test_image_sampling_same_tokens_and_logprobs(policy, guidance, mode):
    texts = [policy.image_prompt_text(PROMPTS[0], "one small red cube"), policy.image_prompt_text(PROMPTS[1])]
    tok = policy.tokenize(texts)
    assert tok.mask[0, 0] == 0, "the first prompt must be left-padded for this test to mean anything"
    config = ImageSamplingConfig(guidance_scale=guidance, logprob_mode=mode, temperature=0.9)
    fast = sample_image_tokens(policy, tok.ids, tok.mask, config, torch.Generator().manual_seed(7))
    with fast_decode.disabled():
        slow = sample_image_tokens(policy, tok.ids, tok.mask, config, torch.Generator().manual_seed(7))
    assert torch.equal(fast.tokens, slow.tokens)
    assert (fast.logprobs - slow.logprobs).abs().max().item() <= TOL


def test_plan_sampling_same_tokens_and_logprobs(policy):
    config = PlanSamplingConfig(max_new_tokens=20, temperature=0.8)
    fast = sample_plans(policy, PROMPTS, 3, config, torch.Generator().manual_seed(8))
    assert fast.prompt_mask[0, 0] == 0
    with fast_decode.disabled():
        slow = sample_plans(policy, PROMPTS, 3, config, torch.Generator().manual_seed(8))
    assert torch.equal(fast.plan_ids, slow.plan_ids) and fast.texts == slow.texts
    assert (fast.logprobs - slow.logprobs).abs().max().item() <= TOL


def test_decode_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("T2I_R1_DECODE_THREADS", raising=False)
    with decode_threads():
        assert torch.get_num_threads() == before  # unset: torch's own setting
    monkeypatch.setenv("T2I_R1_DECODE_THREADS", "1")
    with decode_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before  # restored on exit


def test_training_step_loss_is_unchanged(tmp_path):
    """A whole GRPO step with a fixed seed: same rollouts, same loss, same updated weights either way."""
    from t2i_r1.data import PromptRecord
    from t2i_r1.rewards.pixel import PixelStatReward
    from t2i_r1.train import BiCoTGRPOTrainer, GRPOConfig, ModelConfig, OptimConfig, RewardSpec, RolloutConfig, TrainConfig

    def step(run: str):
        config = TrainConfig(
            model=ModelConfig(path="in-memory"), data="in-memory", output_dir=str(tmp_path / run),
            rollout=RolloutConfig(plans_per_prompt=4, plan=PlanSamplingConfig(max_new_tokens=8),
                                  image=ImageSamplingConfig(guidance_scale=3.0)),
            rewards={"pixel_red": RewardSpec(), "pixel_std": RewardSpec()}, grpo=GRPOConfig(beta=0.01),
            optim=OptimConfig(lr=1e-3), steps=1, prompts_per_step=2, micro_batch_size=8, save_every=0,
            image_log_every=0, log_every=0, seed=0,
        )
        policy = build_tiny_janus(TinyJanusSpec(hidden=64, layers=2, heads=2, image_tokens=16, codebook=64))
        trainer = BiCoTGRPOTrainer(config, policy=policy, prompts=[PromptRecord(p) for p in PROMPTS],
                                   rewards={"pixel_red": PixelStatReward("red"), "pixel_std": PixelStatReward("std")})
        result = trainer.train_step([PromptRecord(p) for p in PROMPTS])
        return result, policy.backbone.layers[0].self_attn.q_proj.weight.detach().clone()

    fast, fast_weight = step("fast")
    with fast_decode.disabled():
        slow, slow_weight = step("slow")
    assert torch.equal(fast.rollout.images.tokens, slow.rollout.images.tokens)
    assert torch.equal(fast.rollout.plans.plan_ids, slow.rollout.plans.plan_ids)
    assert fast.stats["loss"] == pytest.approx(slow.stats["loss"], abs=1e-6)
    assert (fast_weight - slow_weight).abs().max().item() <= 1e-6


def test_compare_step_summary_maps_phases():
    """benchmarks/compare_step.py: phases mapped across the two scripts, medians, ratio = reference / ours."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_step.py"
    spec = importlib.util.spec_from_file_location("compare_step", path)
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)

    def ref(scale):
        phases = dict(cot_gen=1.0, img_gen=6.0, cot_logp=0.5, img_logp=1.5, decode=0.2, reward=0.1, update=1.0)
        return {"sec_per_step_median": 10.3 * scale, "phases": {k: v * scale for k, v in phases.items()},
                "peak_rss_mb": 700.0 * scale, "process_cpu_s": 40.0 * scale}

    def ours(scale):
        phases = dict(plan_sampling=0.5, image_sampling=2.0, reference_logprob=0.5, logprob=0.5, decode=0.2,
                      reward=0.1, advantage=0.1, update=0.9)
        return {"sec_per_step_median": 4.8 * scale, "phases": {k: v * scale for k, v in phases.items()},
                "peak_rss_mb": 600.0, "process_cpu_s": 20.0 * scale}

    # three runs per side at scales 1, 3, 2: every median is the scale-2 run, so ratios are scale-free
    s = compare.summarise([ref(1), ref(3), ref(2)], [ours(1), ours(3), ours(2)])["phases"]
    assert s["image sampling"]["ratio"] == 3.0  # 6 / 2
    assert s["log-probs (policy + reference)"]["ratio"] == 2.0  # (0.5 + 1.5) / (0.5 + 0.5)
    assert s["update"]["ratio"] == 1.0  # 1.0 / (0.9 + advantage 0.1)
    assert s["plan sampling"]["ratio"] == 2.0  # 1.0 / 0.5
    assert s["whole step"]["ratio"] == round(10.3 / 4.8, 2)  # 2.15
    assert s["whole step"]["reference_s"] == 20.6  # median of 10.3, 30.9, 20.6
    assert s["process CPU s (whole run)"]["ratio"] == 2.0  # 80 / 40
    assert "ceiling" not in s["whole step"]  # unprofiled runs: no floor columns
    assert "floor" not in compare.markdown(compare.summarise([ref(1)], [ours(1)]))

    # profiled runs: the floor of a row sums our mapped phases; ceiling = reference / floor
    profiled = []
    for scale in (1, 3, 2):
        run = ours(scale)
        run["kernel_seconds"] = {"image_sampling": 1.5 * scale, "logprob": 0.2 * scale, "reference_logprob": 0.3 * scale}
        run["kernel_seconds_total"] = 2.4 * scale
        profiled.append(run)
    s = compare.summarise([ref(1), ref(3), ref(2)], profiled)["phases"]
    assert s["image sampling"]["kernel_floor_s"] == 3.0 and s["image sampling"]["ceiling"] == 4.0  # 12 / 3
    assert s["log-probs (policy + reference)"]["ceiling"] == 4.0  # 4 / (0.4 + 0.6)
    assert s["whole step"]["ceiling"] == round(20.6 / 4.8, 2)
    assert s["decode"]["ceiling"] is None  # no kernel time recorded for it: no bound
    table = compare.markdown(compare.summarise([ref(1)], profiled[:1]))
    assert "ceiling" in table and "| 1.500 | 4.00x |" in table


def test_kernel_floor_attributes_kernel_time_to_phases():
    """benchmarks/step.py --kernel-floor: profiler kernel time is summed per timer phase, and only kernels count."""
    from benchmarks.step import CountingTimer, is_kernel, kernel_seconds

    assert is_kernel("aten::mm") and is_kernel("aten::_scaled_dot_product_flash_attention_for_cpu")
    assert not is_kernel("aten::add") and not is_kernel("aten::matmul")  # glue, or a wrapper of mm
    timer = CountingTimer()
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with timer("first"):
            for _ in range(3):
                a @ b
        with timer("second"):
            (a + b).sum()
    floor = kernel_seconds(prof.events())
    assert set(floor) == {"first"}  # "second" ran no kernel
    mm_events = [e for e in prof.events() if e.name == "aten::mm"]
    assert len(mm_events) == 3
    assert floor["first"] == pytest.approx(sum(e.self_cpu_time_total for e in mm_events) / 1e6)

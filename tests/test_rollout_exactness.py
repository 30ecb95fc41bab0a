"""The log-prob recorded for every sampled token equals the teacher-forced one (max abs diff <= 1e-4).

Prompts of different lengths in one batch exercise left padding and position ids; images are checked
with and without guidance and under both log-prob modes, and with chunking.
"""

import pytest
import torch
from transformers import GenerationConfig

from t2i_r1.rollout import (
    ImageSamplingConfig,
    LogProbSettings,
    PlanSamplingConfig,
    image_log_probs,
    log_probs,
    plan_log_probs,
    sample_image_tokens,
    sample_plans,
)
from t2i_r1.rollout.rollout import generate_rollouts

PROMPTS = ["a red cube", "two green cats and a yellow dog on top of a wooden table left of a blue sphere"]
TOL = 1e-4


def test_plan_logprobs_match_teacher_forcing(tiny_policy):
    g = torch.Generator().manual_seed(0)
    plans = sample_plans(tiny_policy, PROMPTS, 3, PlanSamplingConfig(max_new_tokens=24, temperature=0.8), g)
    assert plans.prompt_mask[0, 0] == 0, "the short prompt must be left-padded for this test to mean anything"
    forced = plan_log_probs(
        tiny_policy, plans.prompt_ids, plans.prompt_mask, plans.plan_ids, plans.plan_mask, temperature=0.8
    )
    assert forced.requires_grad
    assert (forced - plans.logprobs).abs().max().item() <= TOL
    assert (plans.logprobs[plans.plan_mask == 0] == 0).all()


@pytest.mark.parametrize("mode", ["guided", "conditional"])
@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_image_logprobs_match_teacher_forcing(tiny_policy, mode, guidance):
    texts = [tiny_policy.image_prompt_text(PROMPTS[0], "one small red cube"), tiny_policy.image_prompt_text(PROMPTS[1])]
    tok = tiny_policy.tokenize(texts)
    assert tok.mask[0, 0] == 0
    config = ImageSamplingConfig(guidance_scale=guidance, logprob_mode=mode, temperature=0.9, top_k=200)
    sample = sample_image_tokens(tiny_policy, tok.ids, tok.mask, config, torch.Generator().manual_seed(1))
    assert sample.tokens.shape == (2, tiny_policy.num_image_tokens)
    forced = image_log_probs(
        tiny_policy, tok.ids, tok.mask, sample.tokens, mode=mode, guidance_scale=guidance, temperature=0.9
    )
    assert (forced - sample.logprobs).abs().max().item() <= TOL


def test_chunked_image_sampling_is_exact(tiny_policy):
    tok = tiny_policy.tokenize([tiny_policy.image_prompt_text(p) for p in PROMPTS * 2])
    config = ImageSamplingConfig(max_rows_per_chunk=1)
    sample = sample_image_tokens(tiny_policy, tok.ids, tok.mask, config, torch.Generator().manual_seed(2))
    forced = image_log_probs(tiny_policy, tok.ids, tok.mask, sample.tokens)
    assert (forced - sample.logprobs).abs().max().item() <= TOL


def test_rollout_with_plans_matches_teacher_forcing(tiny_policy):
    plan_config, image_config = PlanSamplingConfig(max_new_tokens=12, temperature=0.9), ImageSamplingConfig()
    rollout = generate_rollouts(
        tiny_policy, PROMPTS, plans_per_prompt=2, images_per_plan=2,
        plan_config=plan_config, image_config=image_config, generator=torch.Generator().manual_seed(3),
    )
    assert rollout.plans.plan_ids.shape[0] == 4 and rollout.images.tokens.shape[0] == 8
    assert rollout.sample_prompts == [PROMPTS[0]] * 4 + [PROMPTS[1]] * 4
    assert rollout.sample_plans[0] == rollout.sample_plans[1] == rollout.plans.texts[0]
    settings = LogProbSettings.of_sampling(plan_config, image_config)
    plan_lp, image_lp = log_probs(tiny_policy, rollout.plans, rollout.images, settings)
    assert (plan_lp - rollout.plans.logprobs).abs().max().item() <= TOL
    assert (image_lp - rollout.images.logprobs).abs().max().item() <= TOL


def test_greedy_cfg_loop_matches_transformers_generate(tiny_policy):
    """top_k=1 makes our loop greedy; transformers' own CFG image generation is then an oracle."""
    tok = tiny_policy.tokenize([tiny_policy.image_prompt_text("a red cube")])
    ours = sample_image_tokens(tiny_policy, tok.ids, tok.mask, ImageSamplingConfig(guidance_scale=3.0, top_k=1))
    config = GenerationConfig(
        do_sample=False, guidance_scale=3.0, bos_token_id=tiny_policy.bos_id, pad_token_id=tiny_policy.pad_id,
        generation_kwargs={"boi_token_id": tiny_policy.boi_id},
    )
    theirs = tiny_policy.model.generate(
        tok.ids, attention_mask=tok.mask, generation_mode="image", generation_config=config
    )
    assert torch.equal(ours.tokens, theirs)

"""Exact teacher-forced log-probabilities of sampled plans and image tokens, with gradients.

One backbone pass per level, and only the head each position needs: the text head on plan positions,
the image head on image positions (the reference computes vocabulary-size text logits at every
position, the 576 image positions included, then applies the image head on top).

Image log-probs, ``mode``:
- ``"guided"``: log-softmax of ``(uncond + s * (cond - uncond)) / temperature``, the distribution the
  tokens were sampled from. The importance ratio and the KL are then those of the policy that acted,
  so the GRPO update is on-policy. Costs a second (unconditional) half of the batch in this pass, and
  the gradient also flows through the unconditional branch: training changes what the model draws
  without a prompt too.
- ``"conditional"``: log-softmax of ``cond / temperature`` only (what the reference implementation
  trains). Half the compute and no gradient through the unconditional rows, but the tokens were drawn
  from the guided distribution, so the "policy gradient" is taken on a distribution that did not act:
  with guidance 5 the two differ a lot, and clipped ratios (several passes per batch) compare
  numbers that do not describe the sampler.

``log_probs`` takes both levels at once from rows that carry their prompt and sampled tokens (a rollout's
``PlanSample`` / ``ImageSample``, or a training batch's ``PlanRows`` / ``SampleRows``); it is the one
function behind the trainer's forward and any use outside training.

Dimension letters: N rows, P prompt tokens, L plan tokens, T image tokens, H hidden, V text vocab,
C image codebook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.rollout.sampling import (
    ImageLogprobMode,
    ImageSamplingConfig,
    PlanSamplingConfig,
    guided_logits,
    position_ids_from_mask,
)


class PlanRowsLike(Protocol):
    prompt_ids: torch.LongTensor  # (N, P) left-padded plan prompts
    prompt_mask: torch.LongTensor  # (N, P)
    plan_ids: torch.LongTensor  # (N, L)
    plan_mask: torch.LongTensor  # (N, L)


class ImageRowsLike(Protocol):
    prompt_ids: torch.LongTensor  # (N, P) left-padded image prompts ending with <begin_of_image>
    prompt_mask: torch.LongTensor  # (N, P)
    tokens: torch.LongTensor  # (N, T)


@dataclass(frozen=True)
class LogProbSettings:
    """Which distributions the log-probs are taken under (those the sampler drew from, for RL)."""

    plan_temperature: float = 1.0
    image_mode: ImageLogprobMode = "guided"
    guidance_scale: float = 5.0
    image_temperature: float = 1.0

    @classmethod
    def of_sampling(cls, plan: PlanSamplingConfig, image: ImageSamplingConfig) -> LogProbSettings:
        """The distributions the plans and images were sampled from."""
        return cls(plan.temperature, image.logprob_mode, image.guidance_scale, image.temperature)


def log_probs(
    policy: JanusPolicy,
    plans: PlanRowsLike | None,
    images: ImageRowsLike | None,
    settings: LogProbSettings,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Teacher-forced log-probs under the current weights, with gradients: plan (N_plans, L) and image
    (N_images, T); None for a level not asked for (``plans`` or ``images`` None)."""
    plan_lp = image_lp = None
    if plans is not None:
        plan_lp = plan_log_probs(
            policy, plans.prompt_ids, plans.prompt_mask, plans.plan_ids, plans.plan_mask, settings.plan_temperature
        )  # (N_plans, L)
    if images is not None:
        image_lp = image_log_probs(
            policy, images.prompt_ids, images.prompt_mask, images.tokens, mode=settings.image_mode,
            guidance_scale=settings.guidance_scale, temperature=settings.image_temperature,
        )  # (N_images, T)
    return plan_lp, image_lp


def _gather_log_softmax(logits: torch.Tensor, targets: torch.LongTensor) -> torch.Tensor:
    """log softmax(logits)[targets] without keeping a second (N, S, V) tensor: logit - logsumexp."""
    picked = logits.gather(-1, targets[..., None]).squeeze(-1)  # (N, S)
    return picked - logits.logsumexp(-1)


def plan_log_probs(
    policy: JanusPolicy,
    prompt_ids: torch.LongTensor,  # (N, P) left-padded
    prompt_mask: torch.LongTensor,  # (N, P)
    plan_ids: torch.LongTensor,  # (N, L)
    plan_mask: torch.LongTensor,  # (N, L)
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token log-probs (N, L) of the plan under the current weights; 0 outside ``plan_mask``."""
    P, L = prompt_ids.shape[1], plan_ids.shape[1]
    ids = torch.cat([prompt_ids, plan_ids], dim=1)  # (N, P + L)
    mask = torch.cat([prompt_mask, plan_mask], dim=1)
    hidden = policy.backbone(
        inputs_embeds=policy.embed_text(ids), attention_mask=mask, position_ids=position_ids_from_mask(mask)
    ).last_hidden_state  # (N, P + L, H)
    logits = policy.text_logits(hidden[:, P - 1 : P + L - 1]).float() / temperature  # (N, L, V)
    return _gather_log_softmax(logits, plan_ids) * plan_mask


def image_log_probs(
    policy: JanusPolicy,
    prompt_ids: torch.LongTensor,  # (N, P) left-padded, ending with <begin_of_image>
    prompt_mask: torch.LongTensor,  # (N, P)
    tokens: torch.LongTensor,  # (N, T)
    *,
    mode: ImageLogprobMode = "guided",
    guidance_scale: float = 5.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token log-probs (N, T) of the image tokens; see the module docstring for ``mode``."""
    n, P = prompt_ids.shape
    T = tokens.shape[1]
    guided = mode == "guided" and guidance_scale != 1.0
    image_embeds = policy.embed_image(tokens[:, :-1])  # (N, T-1, H): the same for cond and uncond rows
    if guided:
        prompt_ids = torch.cat([prompt_ids, policy.unconditional_ids(prompt_ids, prompt_mask)])  # (2N, P)
        prompt_mask = torch.cat([prompt_mask, prompt_mask])
        image_embeds = torch.cat([image_embeds, image_embeds])  # (2N, T-1, H)
    embeds = torch.cat([policy.embed_text(prompt_ids), image_embeds], dim=1)  # (R, P+T-1, H)
    mask = torch.cat([prompt_mask, prompt_mask.new_ones(len(prompt_mask), T - 1)], dim=1)
    hidden = policy.backbone(
        inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask)
    ).last_hidden_state[:, P - 1 :]  # (R, T, H)
    logits = policy.image_logits(hidden).float()  # (R, T, C)
    cond, uncond = (logits[:n], logits[n:]) if guided else (logits, None)
    mixed = guided_logits(cond, uncond, guidance_scale) / temperature  # (N, T, C)
    return _gather_log_softmax(mixed, tokens)

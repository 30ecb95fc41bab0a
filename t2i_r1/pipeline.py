"""The user-facing generation API: ``plan``, ``sample_images``, ``generate``; and ``PipelineConfig``, the one
set of generation settings (checkpoint, plan writer, plan and image sampling) that the ``generate``,
``eval`` and ``serve`` commands build from their shared flags (``t2i_r1.cli.options``).

    pipe = T2IR1Pipeline.from_pretrained("deepseek-community/Janus-Pro-7B", dtype="bfloat16", device="cuda")
    results = pipe.generate(["a red cube left of a blue sphere"], num_images=4, seed=0)
    results[0].image.save("cube.png"); print(results[0].plan)

Seeds: each prompt of a call gets its own generator, seeded from ``seed`` and the prompt's index, so the
same call on the same device gives the same plans and images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from t2i_r1.policy.janus import DEFAULT_IMAGE_PROMPT_FORMAT, JanusPolicy
from t2i_r1.rollout.rollout import Rollout, generate_rollouts
from t2i_r1.rollout.sampling import ImageSamplingConfig, PlanSample, PlanSamplingConfig, sample_plans


@dataclass
class PipelineConfig:
    """How a pipeline is built and how it draws."""

    model: str
    """Janus checkpoint directory or hub id."""
    dtype: str = "float32"
    device: str | None = None
    """None: the caller's default (the accelerate process's device in ``t2i-r1 eval``, else cpu)."""
    template: str | None = None
    """Reasoning-instruction file with a {prompt} slot; None: the checkpoint's own, else the packaged one."""
    image_prompt_format: str = DEFAULT_IMAGE_PROMPT_FORMAT
    planner: str | None = None
    """A causal LM (directory or hub id) that writes the plans instead of the Janus model."""
    use_plan: bool = True
    """False: draw from the prompt alone (no semantic-level CoT)."""
    seed: int = 0
    """Prompt i of a run is drawn with seed + i."""
    plan: PlanSamplingConfig = field(default_factory=PlanSamplingConfig)
    image: ImageSamplingConfig = field(default_factory=ImageSamplingConfig)


@dataclass
class Generation:
    prompt: str
    plan: str | None
    image: Image.Image
    seed: int
    settings: dict = field(default_factory=dict)

    def record(self) -> dict:
        """A JSON-serialisable description (everything but the image)."""
        return {"prompt": self.prompt, "plan": self.plan, "seed": self.seed, **self.settings}


class T2IR1Pipeline:
    def __init__(
        self,
        policy: JanusPolicy,
        plan_config: PlanSamplingConfig | None = None,
        image_config: ImageSamplingConfig | None = None,
        planner=None,
    ):
        """``planner``: an ``ExternalPlanner`` that writes the plans instead of the Janus model (the paper's
        "plan from a separate LLM" setting); None plans with the model itself."""
        self.policy = policy
        self.plan_config = plan_config or PlanSamplingConfig()
        self.image_config = image_config or ImageSamplingConfig()
        self.planner = planner

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        reasoning_template: str | Path | None = None,
        image_prompt_format: str = DEFAULT_IMAGE_PROMPT_FORMAT,
        **configs,
    ) -> T2IR1Pipeline:
        policy = JanusPolicy.from_pretrained(
            path_or_id, dtype=dtype, device=device, reasoning_template=reasoning_template,
            image_prompt_format=image_prompt_format,
        )
        return cls(policy, **configs)

    @classmethod
    def from_config(cls, config: PipelineConfig, device: str | None = None) -> T2IR1Pipeline:
        """The pipeline ``config`` describes, on ``device`` (default: ``config.device``, else cpu), with the
        external planner loaded when it names one."""
        device = device or config.device or "cpu"
        planner = None
        if config.planner and config.use_plan:
            from t2i_r1.planner import ExternalPlanner

            planner = ExternalPlanner.from_pretrained(
                config.planner, dtype=config.dtype, device=device, reasoning_template=config.template,
                max_new_tokens=config.plan.max_new_tokens, temperature=config.plan.temperature,
            )
        return cls.from_pretrained(
            config.model, dtype=config.dtype, device=device, reasoning_template=config.template,
            image_prompt_format=config.image_prompt_format, plan_config=config.plan, image_config=config.image,
            planner=planner,
        )

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.policy.device).manual_seed(seed)

    def plan(self, prompts: list[str], num_samples: int = 1, seed: int = 0, on_step=None) -> PlanSample:
        """Sample ``num_samples`` semantic-level plans per prompt.

        ``on_step(tokens, done)`` streams the plans as they are written (see ``sample_plans``); decode the
        partial text with ``self.policy.decode_text(tokens, mask)``.
        """
        return sample_plans(self.policy, prompts, num_samples, self.plan_config, self._generator(seed), on_step)

    def sample_images(
        self, prompts: list[str], plans: list[str] | None = None, num_images: int = 1, seed: int = 0
    ) -> Rollout:
        """``num_images`` image-token rows per prompt, from the prompt alone or from ``plans`` (one per prompt)."""
        if plans is not None and len(plans) != len(prompts):
            raise ValueError(f"plans must hold one plan per prompt: {len(prompts)} prompts, {len(plans)} plans")
        return generate_rollouts(
            self.policy, prompts, plans_per_prompt=1 if plans is not None else num_images,
            images_per_plan=num_images if plans is not None else 1, use_plan=False,
            image_config=self.image_config, generator=self._generator(seed), external_plans=plans,
        )

    def generate(
        self, prompts: list[str], num_images: int = 1, *, use_plan: bool = True, seed: int = 0
    ) -> list[Generation]:
        """Plan (unless ``use_plan`` is False) and draw ``num_images`` images per prompt.

        Each image gets its own plan: the paper samples one plan per image.
        """
        results = []
        for index, prompt in enumerate(prompts):
            prompt_seed = seed + index
            external = self.planner.plan([prompt], num_images, seed=prompt_seed) if use_plan and self.planner else None
            rollout = generate_rollouts(
                self.policy, [prompt], plans_per_prompt=num_images, use_plan=use_plan,
                plan_config=self.plan_config, image_config=self.image_config, generator=self._generator(prompt_seed),
                external_plans=external,
            )
            results.extend(self.to_generations(rollout, prompt_seed))
        return results

    def to_generations(self, rollout: Rollout, seed: int) -> list[Generation]:
        images = self.policy.to_pil(self.policy.decode_image_tokens(rollout.images.tokens))
        settings = {"plan_sampling": asdict(self.plan_config) if rollout.plans else None,
                    "planner": getattr(self.planner, "name_or_path", None) if rollout.sample_plans[0] is not None else None,
                    "image_sampling": asdict(self.image_config)}
        return [
            Generation(prompt, plan, image, seed, settings)
            for prompt, plan, image in zip(rollout.sample_prompts, rollout.sample_plans, images)
        ]

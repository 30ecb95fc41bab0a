"""Training configuration: one dataclass per concern, loaded from YAML with ``key.sub=value`` overrides.

    t2i-r1 train configs/janus_pro_7b.yaml grpo.beta=0.02 rollout.mode=token
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from t2i_r1.config_io import check_finite
from t2i_r1.rollout.sampling import ImageSamplingConfig, PlanSamplingConfig

Mode = Literal["bicot", "semantic", "token"]

# The paper trains the language model; the vision encoder, aligners, generation embeddings and head and
# the VQ model stay frozen (reference L211-214).
DEFAULT_TRAINABLE = ["model.language_model.", "lm_head."]


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names inside the language model that get adapters."""


@dataclass
class ModelConfig:
    path: str = ""
    """Janus checkpoint directory or hub id (e.g. deepseek-community/Janus-Pro-7B)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: str | None = None
    reasoning_template: str | None = None
    """Reasoning-instruction file with a {prompt} slot; None = the packaged one."""
    image_prompt_format: str = "{prompt}. {plan}"
    trainable: list[str] = field(default_factory=lambda: list(DEFAULT_TRAINABLE))
    """Parameter-name prefixes that train (full fine-tuning); ignored with LoRA."""
    lora: LoraSettings | None = None
    """LoRA through peft on the language model; the reference policy is then the model with adapters off."""
    gradient_checkpointing: bool = False

    def __post_init__(self):
        if not self.path:
            raise ValueError("model.path is required (a Janus checkpoint directory or hub id)")
        if not self.trainable and self.lora is None:
            raise ValueError("model.trainable is empty and no LoRA is set: nothing would train")


@dataclass
class RolloutConfig:
    mode: Mode = "bicot"
    """bicot: plan and image tokens train; semantic: plans train, image tokens get no gradient;
    token: no plan (images from the prompt), image tokens train."""
    plans_per_prompt: int = 8
    """G: plans sampled per prompt (with mode=token: images per prompt)."""
    images_per_plan: int = 1
    """K: images sampled per plan; the GRPO group is the G*K images of one prompt."""
    plan: PlanSamplingConfig = field(default_factory=PlanSamplingConfig)
    image: ImageSamplingConfig = field(default_factory=ImageSamplingConfig)

    def __post_init__(self):
        if self.plans_per_prompt < 1 or self.images_per_plan < 1:
            raise ValueError("rollout.plans_per_prompt and rollout.images_per_plan must be >= 1")
        if self.plans_per_prompt * self.images_per_plan < 2:
            raise ValueError("a GRPO group needs at least 2 samples (plans_per_prompt * images_per_plan >= 2)")

    @property
    def group_size(self) -> int:
        return self.plans_per_prompt * self.images_per_plan


@dataclass
class RewardSpec:
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Arguments of the reward class (checkpoint path, device, batch size...)."""


@dataclass
class GRPOConfig:
    beta: float = 0.01
    """Weight of the k3 KL to the reference policy (paper: 0.01); 0 skips the reference passes."""
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    num_iterations: int = 1
    """Optimisation passes per rollout batch; >1 uses the clipped importance ratio."""
    reward_aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = "sum_then_normalize"
    loss_aggregation: Literal["token_mean", "sequence_mean", "segment_weighted"] = "token_mean"
    plan_weight: float = 1.0
    """With segment_weighted: weight of the plan tokens' mean loss."""
    image_weight: float = 1.0
    """With segment_weighted: weight of the image tokens' mean loss."""
    drop_zero_variance_groups: bool = False
    advantage_eps: float = 1e-4
    scale_rewards: Literal["group", "none"] = "group"
    """``group``: divide each group's centred rewards by the group's std (the paper, TRL's default);
    ``none``: keep ``r - mean`` (Dr. GRPO; TRL's ``scale_rewards="none"``)."""

    def __post_init__(self):
        check_finite(self, "grpo.")
        if self.beta < 0:
            raise ValueError(f"grpo.beta must be >= 0, got {self.beta}")
        if self.num_iterations < 1:
            raise ValueError(f"grpo.num_iterations must be >= 1, got {self.num_iterations}")
        if self.epsilon_low < 0 or self.epsilon_high < 0:
            raise ValueError("grpo.epsilon_low and grpo.epsilon_high must be >= 0")
        if self.scale_rewards not in ("group", "none"):
            raise ValueError(f"grpo.scale_rewards must be 'group' or 'none', got {self.scale_rewards!r}")


@dataclass
class OptimConfig:
    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    max_grad_norm: float = 1.0
    scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0

    def __post_init__(self):
        check_finite(self, "optim.")
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.max_grad_norm <= 0:
            raise ValueError(f"optim.max_grad_norm must be > 0, got {self.max_grad_norm}")


RUN_FIELDS_SAFE_TO_CHANGE = ("steps", "save_every", "keep_last", "resume", "log_every", "log_with", "image_log_every",
                             "overwrite", "allow_config_changes", "max_skipped_steps")
"""Fields a resumed run may change without ``allow_config_changes``: how long it runs and what it writes."""


def check_run_fields(config) -> None:
    """Validation of the run fields ``TrainConfig`` and ``SFTConfig`` share (the ``TrainingLoop``'s)."""
    for name in ("save_every", "keep_last", "log_every", "image_log_every"):
        if getattr(config, name, 0) < 0:
            raise ValueError(f"{name} must be >= 0 (0 = never), got {getattr(config, name)}")
    if config.max_skipped_steps < 1:
        raise ValueError(f"max_skipped_steps must be >= 1, got {config.max_skipped_steps}")


@dataclass
class TrainConfig:
    model: ModelConfig
    data: str = ""
    """Prompt file: reference-schema JSON lines or one prompt per line."""
    output_dir: str = "runs/t2i-r1"
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rewards: dict[str, RewardSpec] = field(default_factory=dict)
    """Reward name (see t2i_r1.rewards registry) -> weight and arguments."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 1600
    prompts_per_step: int = 1
    """Prompts per process per step; each yields a group of G*K samples."""
    micro_batch_size: int = 8
    """Samples per forward/backward; the step's gradient is accumulated over the micro-batches."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0
    save_every: int = 100
    keep_last: int = 2
    resume: bool = True
    """Continue from the newest complete checkpoint in output_dir when there is one."""
    log_every: int = 1
    image_log_every: int = 50
    """Save a grid of the step's images with their plans every N steps (0 = never)."""
    log_with: list[str] = field(default_factory=list)
    """Extra trackers through accelerate: tensorboard, wandb (when installed)."""
    overwrite: bool = False
    """With resume=false, start afresh in an output_dir that holds a run (its checkpoints, final/, log and
    samples are deleted first). Without it such a directory is refused."""
    allow_config_changes: bool = False
    """On resume, apply settings that differ from the stored run's (other than steps and the logging and
    checkpoint options, which always may change) instead of refusing."""
    max_skipped_steps: int = 3
    """Stop the run when this many steps in a row were skipped for a non-finite loss or gradient."""

    def __post_init__(self):
        check_run_fields(self)
        if not self.data:
            raise ValueError("data is required (a prompt file)")
        if not self.rewards:
            raise ValueError("rewards is empty: name at least one reward")
        if self.steps < 1 or self.prompts_per_step < 1 or self.micro_batch_size < 1:
            raise ValueError("steps, prompts_per_step and micro_batch_size must be >= 1")
        if self.micro_batch_size % self.rollout.images_per_plan:
            raise ValueError("micro_batch_size must be a multiple of rollout.images_per_plan (whole plans per micro-batch)")

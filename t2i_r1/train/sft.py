"""Supervised fine-tuning on (prompt, plan, image) triples: the paper's SFT baseline and the first half of
its "SFT then RL" hybrid.

The model learns both levels by teacher forcing:
- to write the plan from the reasoning instruction (cross-entropy on the plan tokens, EOS included);
- to draw the image from ``"{prompt}. {plan}"`` (cross-entropy on the VQ tokens of the image, under the
  conditional distribution; with probability ``uncond_prob`` the image prompt is replaced by the
  unconditional one, as Janus is trained, so classifier-free guidance keeps working).
Same modules train as in RL (``model.trainable`` or LoRA), through the same ``TrainingLoop`` (set-up,
resume, data schedule, logging, checkpoints) as the GRPO trainer; the result is exported to
``output_dir/final`` for ``t2i-r1 train``. The log-probs are the same function as in RL, taken under the
conditional distribution at temperature 1: SFT is maximum likelihood of the data, no CFG mix.

Data: JSON lines ``{"image": path, "prompt": ..., "plan": ...}``; relative image paths are resolved
against the data file's folder. Images are VQ-encoded once, at start.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from PIL import Image

from t2i_r1.data import PromptFileError, parse_json_line, read_lines
from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.rollout.logprobs import LogProbSettings
from t2i_r1.train.batch import PlanRows, SampleRows, TrainingBatch
from t2i_r1.train.config import ModelConfig, OptimConfig, check_run_fields
from t2i_r1.train.loop import LoopAttributes, StepResult, TrainingLoop

# Maximum likelihood of the data: conditional image log-probs, no guidance, temperature 1.
SFT_LOG_PROBS = LogProbSettings(plan_temperature=1.0, image_mode="conditional", guidance_scale=1.0,
                                image_temperature=1.0)


@dataclass
class SFTConfig:
    model: ModelConfig
    data: str = ""
    """JSON lines of {"image": path, "prompt": text, "plan": text}."""
    output_dir: str = "runs/sft"
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))
    steps: int = 1000
    batch_size: int = 8
    plan_weight: float = 1.0
    image_weight: float = 1.0
    uncond_prob: float = 0.1
    """Chance that an image is trained from the unconditional prompt (keeps CFG working)."""
    mixed_precision: str = "no"
    seed: int = 0
    save_every: int = 200
    keep_last: int = 2
    resume: bool = True
    log_every: int = 10
    log_with: list[str] = field(default_factory=list)
    """Extra trackers through accelerate: tensorboard, wandb (when installed)."""
    overwrite: bool = False
    """As ``TrainConfig.overwrite``."""
    allow_config_changes: bool = False
    """As ``TrainConfig.allow_config_changes``."""
    max_skipped_steps: int = 3
    """As ``TrainConfig.max_skipped_steps``."""

    def __post_init__(self):
        check_run_fields(self)
        if not self.data:
            raise ValueError("data is required (JSON lines of image, prompt, plan)")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not 0 <= self.uncond_prob < 1:
            raise ValueError(f"uncond_prob must be in [0, 1), got {self.uncond_prob}")


@dataclass
class Triple:
    prompt: str
    plan: str
    image: Path


def load_triples(path: str | Path) -> list[Triple]:
    path = Path(path)
    triples = []
    for number, line in read_lines(path, "SFT data file"):
        obj = parse_json_line(path, number, line)
        for key in ("image", "prompt", "plan"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                raise PromptFileError(path, number, f"field '{key}' is missing or empty")
        image = Path(obj["image"]) if Path(obj["image"]).is_absolute() else path.parent / obj["image"]
        if not image.is_file():
            raise PromptFileError(path, number, f"image file not found: {image}")
        triples.append(Triple(obj["prompt"].strip(), obj["plan"].strip(), image))
    if not triples:
        raise PromptFileError(path, 0, "the file holds no triples")
    return triples


class SFTTrainer(LoopAttributes):
    def __init__(self, config: SFTConfig, *, policy: JanusPolicy | None = None, accelerator: Accelerator | None = None):
        self.config = cfg = config
        self.triples = load_triples(cfg.data)  # the whole data file is checked before the model loads
        self.loop = TrainingLoop(cfg, name="SFT", policy=policy, accelerator=accelerator)
        self.image_tokens = torch.cat([
            self.policy.encode_images([Image.open(t.image) for t in self.triples[i : i + 32]]).cpu()
            for i in range(0, len(self.triples), 32)
        ])  # (D, T)
        self.loop.prepare(SFT_LOG_PROBS)

    def batch_for_step(self, step: int) -> list[int]:
        """This process's triples for ``step`` (the loop's schedule: a permutation per epoch, a slice per process)."""
        return self.loop.schedule(len(self.triples), self.config.batch_size, step)

    def _batch(self, indices: list[int], rng: random.Random) -> TrainingBatch:
        """One sample per triple (K = 1): the plan under the reasoning instruction, the image under its prompt,
        which is the unconditional prompt with probability ``uncond_prob``."""
        policy = self.policy
        triples = [self.triples[i] for i in indices]
        plan_prompts = policy.tokenize([policy.plan_prompt_text(t.prompt) for t in triples], what="prompt")
        eos = policy.tokenizer.eos_token
        plans = policy.tokenizer([t.plan + eos for t in triples], add_special_tokens=False, padding=True,
                                 padding_side="right", return_tensors="pt")
        image = policy.tokenize([policy.image_prompt_text(t.prompt, t.plan) for t in triples], what="image prompt",
                                reserve=policy.num_image_tokens)
        ids = image.ids.clone()
        for row in range(len(triples)):
            if rng.random() < self.config.uncond_prob:
                ids[row] = policy.unconditional_ids(image.ids[row : row + 1], image.mask[row : row + 1])[0]
        device = self.accelerator.device
        return TrainingBatch(
            SampleRows(ids, image.mask, self.image_tokens[indices].to(device)),
            PlanRows(plan_prompts.ids, plan_prompts.mask, plans["input_ids"].to(device),
                     plans["attention_mask"].to(device)),
        )

    def train_step(self) -> dict[str, float]:
        """One step on this process's batch; returns the loss and the plan and image NLLs."""
        cfg = self.config
        rng = random.Random(cfg.seed * 1_000_003 + self.step)
        batch = self._batch(self.batch_for_step(self.step), rng)
        self.module.train()
        plan_lp, image_lp = self.module(batch.plans, batch.samples)  # (B, L), (B, T)
        plan_nll = -(plan_lp.sum() / batch.plans.plan_mask.sum())
        image_nll = -image_lp.mean()
        loss = cfg.plan_weight * plan_nll + cfg.image_weight * image_nll
        self.accelerator.backward(loss)
        self.loop.optimizer_step(loss.item())
        self.loop.end_step()
        return {"loss": loss.item(), "plan_nll": plan_nll.item(), "image_nll": image_nll.item()}

    def train(self, max_steps: int | None = None) -> Path | None:
        """Train until ``config.steps`` (or ``max_steps`` more steps); returns ``output_dir/final`` once complete."""

        def next_step() -> StepResult:
            stats = self.train_step()
            return StepResult(self.step, stats)

        return self.loop.run(next_step, max_steps)

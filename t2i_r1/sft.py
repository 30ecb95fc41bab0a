"""Supervised fine-tuning on (prompt, plan, image) triples: the paper's SFT baseline and the first half of
its "SFT then RL" hybrid.

The model learns both levels by teacher forcing:
- to write the plan from the reasoning instruction (cross-entropy on the plan tokens, EOS included);
- to draw the image from ``"{prompt}. {plan}"`` (cross-entropy on the VQ tokens of the image, under the
  conditional distribution; with probability ``uncond_prob`` the image prompt is replaced by the
  unconditional one, as Janus is trained, so classifier-free guidance keeps working).
Same modules train as in RL (``model.trainable`` or LoRA), same accelerate set-up, checkpoints and
resume as the GRPO trainer; the result is exported to ``output_dir/final`` for ``t2i-r1 train``.

Data: JSON lines ``{"image": path, "prompt": ..., "plan": ...}``; relative image paths are resolved
against the data file's folder. Images are VQ-encoded once, at start.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from PIL import Image
from tqdm.auto import tqdm

from t2i_r1.config_io import to_dict
from t2i_r1.data import PromptFileError
from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from t2i_r1.train.config import ModelConfig, OptimConfig
from t2i_r1.train.trainer import LogProbModule, export_model, setup_trainable


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

    def __post_init__(self):
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
    if not path.is_file():
        raise FileNotFoundError(f"SFT data file not found: {path}")
    triples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise PromptFileError(path, number, f"not valid JSON ({err.msg})") from None
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


class SFTTrainer:
    def __init__(self, config: SFTConfig, *, policy: JanusPolicy | None = None, accelerator: Accelerator | None = None):
        self.config = cfg = config
        self.accelerator = acc = accelerator or Accelerator(mixed_precision=cfg.mixed_precision)
        set_seed(cfg.seed, device_specific=True)
        self.output_dir = Path(cfg.output_dir)
        self.policy = policy or JanusPolicy.from_pretrained(
            cfg.model.path, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
            reasoning_template=cfg.model.reasoning_template, image_prompt_format=cfg.model.image_prompt_format,
        )
        self.policy.model.to(acc.device)
        self.triples = load_triples(cfg.data)
        self.image_tokens = torch.cat([
            self.policy.encode_images([Image.open(t.image) for t in self.triples[i : i + 32]]).cpu()
            for i in range(0, len(self.triples), 32)
        ])  # (D, T)
        self.trained_model, trained = setup_trainable(self.policy.model, cfg.model)
        if cfg.model.gradient_checkpointing:
            self.policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        optimizer = torch.optim.AdamW(trained, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                      betas=tuple(cfg.optim.betas))
        from transformers import get_scheduler

        scheduler = get_scheduler(cfg.optim.scheduler, optimizer, cfg.optim.warmup_steps, cfg.steps)
        # conditional log-probs, guidance 1: SFT is maximum likelihood of the data, no CFG mix
        module = LogProbModule(self.trained_model, self.policy, "conditional", 1.0, 1.0, 1.0)
        self.module, self.optimizer, self.scheduler = acc.prepare(module, optimizer, scheduler)
        self.step = 0
        if cfg.resume and (last := latest_checkpoint(self.output_dir)) is not None:
            self.step = load_checkpoint(acc, last)["step"]

    def batch_for_step(self, step: int) -> list[int]:
        acc, size = self.accelerator, self.config.batch_size
        start = (step * acc.num_processes + acc.process_index) * size
        indices = []
        for k in range(start, start + size):
            epoch, index = divmod(k, len(self.triples))
            order = torch.randperm(len(self.triples), generator=torch.Generator().manual_seed(self.config.seed + epoch))
            indices.append(int(order[index]))
        return indices

    def _batch(self, indices: list[int], rng: random.Random) -> dict:
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
        return {
            "plan_prompt_ids": plan_prompts.ids, "plan_prompt_mask": plan_prompts.mask,
            "plan_ids": plans["input_ids"].to(device), "plan_mask": plans["attention_mask"].to(device),
            "image_prompt_ids": ids, "image_prompt_mask": image.mask,
            "image_tokens": self.image_tokens[indices].to(device),
        }

    def train_step(self) -> dict[str, float]:
        cfg = self.config
        rng = random.Random(cfg.seed * 1_000_003 + self.step)
        batch = self._batch(self.batch_for_step(self.step), rng)
        self.module.train()
        plan_lp, image_lp = self.module(batch, True, True)  # (B, L), (B, T)
        plan_nll = -(plan_lp.sum() / batch["plan_mask"].sum())
        image_nll = -image_lp.mean()
        loss = cfg.plan_weight * plan_nll + cfg.image_weight * image_nll
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.module.parameters(), cfg.optim.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"loss": loss.item(), "plan_nll": plan_nll.item(), "image_nll": image_nll.item()}

    def train(self, max_steps: int | None = None) -> Path | None:
        cfg, acc = self.config, self.accelerator
        end = cfg.steps if max_steps is None else min(cfg.steps, self.step + max_steps)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="SFT", disable=not acc.is_main_process)
        log = self.output_dir / "log.jsonl"
        while self.step < end:
            stats = self.train_step()
            if acc.is_main_process and cfg.log_every and self.step % cfg.log_every == 0:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                with log.open("a") as f:
                    f.write(json.dumps({"step": self.step, **stats}) + "\n")
            if cfg.save_every and (self.step % cfg.save_every == 0 or self.step == cfg.steps):
                save_checkpoint(acc, self.output_dir, self.step, {"step": self.step, "config": to_dict(cfg)},
                                cfg.keep_last)
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}")
        bar.close()
        if self.step >= cfg.steps:
            return export_model(acc, self.module, self.policy, self.output_dir / "final",
                                cfg.model.lora is not None)
        return None

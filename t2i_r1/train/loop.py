"""The training loop both trainers share (BiCoT-GRPO and SFT); a trainer only says what one step does.

``TrainingLoop`` owns, in the order a run meets them:
1. Set-up: the accelerator and the seed, the policy on its device; then (``prepare``) the trained
   parameters (``model.trainable`` prefixes, or LoRA adapters through peft), gradient checkpointing,
   AdamW and the learning-rate schedule, ``accelerate.prepare`` of the ``LogProbModule``, and resume
   from the newest complete checkpoint in ``output_dir``.
2. The data schedule: a fresh permutation of the data per epoch, a disjoint slice per process.
3. Inside a step, the trainer calls ``optimizer_step`` (clip, step, clear) after each optimisation pass
   and ``end_step`` (schedule, count) once.
4. ``run``: steps until ``config.steps``, each followed by its log (``log.jsonl``, trackers, the progress
   bar), a checkpoint every ``save_every`` steps, and at the end the export of a plain Janus checkpoint
   to ``output_dir/final``.
The module that is trained is one ``LogProbModule`` whose forward returns every log-prob a loss needs,
so DDP, FSDP and DeepSpeed wrappers see an ordinary forward-backward. What differs between those engines
(full weights for sampling and export, agreement between processes, the stats' all-reduce) is in
``sharding.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from t2i_r1.config_io import to_dict
from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.rollout.logprobs import ImageRowsLike, LogProbSettings, PlanRowsLike, log_probs
from t2i_r1.rollout.rollout import Rollout
from t2i_r1.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from t2i_r1.train.config import ModelConfig, OptimConfig
from t2i_r1.train.sharding import (
    engine,
    full_state_dict,
    local_construction,
    prepare_deepspeed_batch_size,
    reduce_stats,
)


class LoopConfig(Protocol):
    """The fields of ``TrainConfig`` and ``SFTConfig`` the loop reads (see ``TrainConfig`` for their help)."""

    model: ModelConfig
    output_dir: str
    optim: OptimConfig
    steps: int
    mixed_precision: str
    seed: int
    save_every: int
    keep_last: int
    resume: bool
    log_every: int
    log_with: list[str]


@dataclass
class StepResult:
    step: int  # steps done, this one included
    stats: dict[str, float]
    rollout: Rollout | None = None  # GRPO: the plans and image tokens sampled
    images: list = field(default_factory=list)  # GRPO: the decoded images (N,)


class LogProbModule(torch.nn.Module):
    """The trained model as one module: ``forward(plans, images)`` returns their teacher-forced log-probs
    (``t2i_r1.rollout.logprobs.log_probs``), plan (rows, L) and image (rows, T), None for a level not passed."""

    def __init__(self, model: torch.nn.Module, policy: JanusPolicy, settings: LogProbSettings):
        super().__init__()
        self.model = model  # the Janus model (a peft model with LoRA); policy.model shares its modules
        self._policy = [policy]  # a list so the policy is not registered as a submodule
        self.settings = settings

    def forward(self, plans: PlanRowsLike | None, images: ImageRowsLike | None):
        return log_probs(self._policy[0], plans, images, self.settings)


def setup_trainable(model: torch.nn.Module, config: ModelConfig, mode: str = "bicot"):
    """Freeze all but ``config.trainable`` (or add LoRA adapters); returns (module to train, its parameters).

    With LoRA the returned module is a peft model whose adapters are injected into ``model`` in place, so a
    ``JanusPolicy`` around ``model`` samples with them. ``mode="token"`` (no plans) leaves the text head frozen.
    """
    model.requires_grad_(False)
    if config.lora is not None:
        from peft import LoraConfig, get_peft_model

        lora = config.lora
        targets = "|".join(lora.target_modules)
        peft_config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=rf".*language_model.*\.({targets})",
        )
        trained_model = get_peft_model(model, peft_config)
    else:
        trained_model = model
        prefixes = tuple(config.trainable)
        if mode == "token":  # the text head gets no gradient without plans
            prefixes = tuple(p for p in prefixes if not p.startswith("lm_head"))
        for name, param in model.named_parameters():
            if name.startswith(prefixes):
                param.requires_grad_(True)
    trained = [p for p in trained_model.parameters() if p.requires_grad]
    if not trained:
        raise ValueError(f"no parameter matches model.trainable={config.trainable}")
    return trained_model, trained


class TrainingLoop:
    """Set-up, data schedule and loop of a training run; see the module docstring."""

    def __init__(
        self,
        config: LoopConfig,
        *,
        name: str,
        policy: JanusPolicy | None = None,
        accelerator: Accelerator | None = None,
        progress_keys: Sequence[str] = ("loss",),
    ):
        self.config = cfg = config
        self.name, self.progress_keys = name, tuple(progress_keys)
        self.accelerator = accelerator or Accelerator(
            mixed_precision=cfg.mixed_precision, log_with=cfg.log_with or None, project_dir=cfg.output_dir
        )
        set_seed(cfg.seed, device_specific=True)  # each process samples differently
        self.output_dir = Path(cfg.output_dir)
        self.log_path = self.output_dir / "log.jsonl"
        if policy is None:
            with local_construction():  # whole on every process; prepare shards it (our configs: zero3_init_flag false)
                policy = JanusPolicy.from_pretrained(
                    cfg.model.path, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
                    reasoning_template=cfg.model.reasoning_template, image_prompt_format=cfg.model.image_prompt_format,
                )
        self.policy = policy
        self.policy.model.to(self.accelerator.device)
        self.step = 0

    # ------------------------------------------------------------------ set-up
    def prepare(self, settings: LogProbSettings, mode: str = "bicot") -> None:
        """Trained parameters, optimiser, schedule, ``accelerate.prepare``, trackers, then resume."""
        cfg, acc = self.config, self.accelerator
        engine(acc)  # refuses an engine the sampler cannot run under, before any work
        self.trained_model, trained = setup_trainable(self.policy.model, cfg.model, mode)
        if cfg.model.gradient_checkpointing:
            self.policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        optimizer = torch.optim.AdamW(
            trained, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=tuple(cfg.optim.betas)
        )
        from transformers import get_scheduler

        scheduler = get_scheduler(cfg.optim.scheduler, optimizer, cfg.optim.warmup_steps, cfg.steps)
        module = LogProbModule(self.trained_model, self.policy, settings)
        prepare_deepspeed_batch_size(acc)
        self.module, self.optimizer, self.scheduler = acc.prepare(module, optimizer, scheduler)
        if cfg.log_with:
            acc.init_trackers("t2i-r1", config={"output_dir": cfg.output_dir})
        if cfg.resume and (last := latest_checkpoint(self.output_dir)) is not None:
            self.step = load_checkpoint(acc, last)["step"]
            acc.print(f"resumed from {last} at step {self.step}")

    # ------------------------------------------------------------------ data
    def schedule(self, size: int, per_process: int, step: int) -> list[int]:
        """This process's ``per_process`` indices into ``size`` items at ``step``: item k of the run is
        position k mod size of the permutation of epoch k // size (seeded by ``seed + epoch``), and the
        processes take consecutive, disjoint runs of ``per_process``."""
        acc = self.accelerator
        first = (step * acc.num_processes + acc.process_index) * per_process
        orders: dict[int, torch.Tensor] = {}
        picked = []
        for k in range(first, first + per_process):
            epoch, index = divmod(k, size)
            if epoch not in orders:
                orders[epoch] = torch.randperm(size, generator=torch.Generator().manual_seed(self.config.seed + epoch))
            picked.append(int(orders[epoch][index]))
        return picked

    # ------------------------------------------------------------------ inside a step
    def optimizer_step(self) -> float:
        """Clip the accumulated gradient, step the optimiser and clear the gradient; returns the norm."""
        grad_norm = self.accelerator.clip_grad_norm_(self.module.parameters(), self.config.optim.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm) if grad_norm is not None else math.nan

    def end_step(self) -> None:
        """Advance the learning-rate schedule and the step count."""
        self.scheduler.step()
        self.step += 1

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        next_step: Callable[[], StepResult],
        max_steps: int | None = None,
        on_step: Callable[[StepResult], None] | None = None,
    ) -> Path | None:
        """Call ``next_step`` until ``config.steps`` (or ``max_steps`` more steps), logging and checkpointing
        after each; export and return ``output_dir/final`` once the run is complete (None before)."""
        cfg, acc = self.config, self.accelerator
        end = cfg.steps if max_steps is None else min(cfg.steps, self.step + max_steps)
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.name, disable=not acc.is_main_process)
        while self.step < end:
            result = next_step()
            self.log(result)
            if cfg.save_every and (self.step % cfg.save_every == 0 or self.step == cfg.steps):
                state = {"step": self.step, "config": to_dict(cfg)}
                save_checkpoint(acc, self.output_dir, self.step, state, cfg.keep_last)
            bar.update(1)
            bar.set_postfix({k: f"{result.stats[k]:.4f}" for k in self.progress_keys if k in result.stats})
            if on_step is not None:
                on_step(result)
        bar.close()
        final = self.export() if self.step >= cfg.steps else None
        acc.end_training()
        return final

    def log(self, result: StepResult) -> None:
        """The step's stats, averaged over processes, to ``log.jsonl`` (finite values) and the trackers
        every ``log_every`` steps. Every process must call it (the average is a collective)."""
        acc, cfg = self.accelerator, self.config
        stats = reduce_stats(acc, result.stats)  # one key set on every process (sharding.py)
        if not acc.is_main_process or not cfg.log_every or result.step % cfg.log_every:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as f:
            f.write(json.dumps({"step": result.step, **{k: v for k, v in stats.items() if math.isfinite(v)}}) + "\n")
        if cfg.log_with:
            acc.log(stats, step=result.step)

    def export(self) -> Path:
        """Write a plain Janus checkpoint to ``output_dir/final`` (LoRA merged, with the policy's processor and
        reasoning instruction) that ``from_pretrained`` and ``t2i-r1 generate`` load. Every process must call
        it: under a sharded engine the full state dict is gathered to the main process."""
        acc, directory = self.accelerator, self.output_dir / "final"
        acc.wait_for_everyone()
        state = full_state_dict(acc, self.module)  # keys of the LogProbModule: "model." + the trained model's
        if acc.is_main_process:
            trained = {k.removeprefix("model."): v for k, v in state.items()}
            model = plain_model(acc.unwrap_model(self.module).model, trained, getattr(torch, self.config.model.dtype))
            p = self.policy
            JanusPolicy(model, p.processor, p.reasoning_template, p.image_prompt_format).save_pretrained(directory)
        acc.wait_for_everyone()
        return directory


def plain_model(trained_model: torch.nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.nn.Module:
    """A new ``JanusForConditionalGeneration`` holding ``state`` (the full state dict of ``trained_model``, a
    Janus model or a peft model around one), LoRA merged, floats in ``dtype``. Built on the meta device and
    filled by assignment, so no second initialisation and no copy beyond ``state`` (whose tensors it takes)."""
    from transformers.initialization import no_init_weights

    lora = hasattr(trained_model, "peft_config")
    base = trained_model.get_base_model() if lora else trained_model
    with torch.device("meta"), no_init_weights(), local_construction():  # nothing initialised, nothing gathered
        model = type(base)(base.config)
        if lora:
            from peft import get_peft_model

            model = get_peft_model(model, trained_model.peft_config["default"])
    model.load_state_dict(state, strict=True, assign=True)
    if lora:
        model = model.merge_and_unload()
    return model.to(dtype).eval()


class LoopAttributes:
    """For a trainer that owns a ``TrainingLoop`` as ``self.loop``: its state under the names trainers have
    always exposed (``trainer.policy``, ``trainer.step``, ``trainer.optimizer``...), read-only."""

    loop: TrainingLoop
    accelerator = property(lambda self: self.loop.accelerator)
    policy = property(lambda self: self.loop.policy)
    module = property(lambda self: self.loop.module)
    optimizer = property(lambda self: self.loop.optimizer)
    scheduler = property(lambda self: self.loop.scheduler)
    trained_model = property(lambda self: self.loop.trained_model)
    output_dir = property(lambda self: self.loop.output_dir)
    step = property(lambda self: self.loop.step)

"""The training loop both trainers share (BiCoT-GRPO and SFT); a trainer only says what one step does.

``TrainingLoop`` owns, in the order a run meets them:
1. Set-up, before the model loads: ``output_dir`` is checked writable and for the run it holds
   (``RunDirectory``): resume compares the stored config with this one (steps and the logging and
   checkpoint options may change and are reported; anything else is refused, listing the fields, unless
   ``allow_config_changes``); ``resume=false`` in a directory holding a run is refused unless
   ``overwrite``. Then the accelerator and the seed, the policy on its device; then (``prepare``) the
   trained parameters (``model.trainable`` prefixes, or LoRA adapters through peft), gradient
   checkpointing, AdamW and the learning-rate schedule, ``accelerate.prepare`` of the
   ``LogProbModule``, and resume from the newest complete checkpoint.
2. The data schedule: a fresh permutation of the data per epoch, a disjoint slice per process.
3. Inside a step, the trainer calls ``optimizer_step(loss)`` (clip, then step and clear, or skip) after
   each optimisation pass and ``end_step`` (schedule, count) once. Finite or nothing: a pass whose loss
   or gradient norm is not finite leaves weights and optimizer state untouched (``skip_update``, agreed by
   all processes); the step is logged with ``skipped`` = 1, and ``max_skipped_steps`` such steps in a
   row stop the run (``TrainingStopped``). No checkpoint and no export is written from weights that are
   not finite.
4. ``run``: steps until ``config.steps``, each followed by its log (``log.jsonl``: the same keys every
   step, non-finite values as null; trackers; the progress bar), a checkpoint every ``save_every`` steps
   (keep-last-N prunes only this run's), and at the end the export of a plain Janus checkpoint to
   ``output_dir/final``, written under a temporary name and renamed like the checkpoints. A resumed run
   first drops log lines past the step it resumed from.
The module that is trained is one ``LogProbModule`` whose forward returns every log-prob a loss needs,
so DDP, FSDP and DeepSpeed wrappers see an ordinary forward-backward. What differs between those engines
(full weights for sampling and export, agreement between processes, the stats' all-reduce) is in
``sharding.py``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from t2i_r1.config_io import to_dict
from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.rollout.logprobs import ImageRowsLike, LogProbSettings, PlanRowsLike, log_probs
from t2i_r1.rollout.rollout import Rollout
from t2i_r1.train.checkpoint import (
    STATE_FILE,
    checkpoints,
    latest_checkpoint,
    load_checkpoint,
    replace_directory,
    save_checkpoint,
)
from t2i_r1.train.config import RUN_FIELDS_SAFE_TO_CHANGE, ModelConfig, OptimConfig
from t2i_r1.train.sharding import (
    any_process,
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
    overwrite: bool
    allow_config_changes: bool
    max_skipped_steps: int


class TrainingStopped(RuntimeError):
    """The run cannot go on (``max_skipped_steps`` non-finite steps in a row); the last checkpoint is intact."""


def skip_update(accelerator: Accelerator, bad: bool) -> bool:
    """Whether this optimisation pass is skipped: True if ``bad`` (a non-finite loss or gradient norm) on
    *any* process.

    The processes must agree on control flow: a process that stepped while another skipped would leave
    the replicas' weights apart, and one that reached a collective the others skipped would hang. So
    the local flag is all-reduced with max over the processes (every process calls this, every pass).
    """
    return any_process(accelerator, bad)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> one mapping of dotted keys to leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(stored: dict[str, Any], current: dict[str, Any]) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(safe, unsafe) differences between a stored run config and this one: dotted field -> (old, new).
    Safe: the fields in ``RUN_FIELDS_SAFE_TO_CHANGE`` (how long the run goes and what it writes) and
    ``output_dir`` (a run directory may be moved)."""
    old, new = flatten(stored), flatten(current)
    changed = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
    safe_fields = (*RUN_FIELDS_SAFE_TO_CHANGE, "output_dir")
    safe = {k: v for k, v in changed.items() if k.split(".")[0] in safe_fields}
    return safe, {k: v for k, v in changed.items() if k not in safe}


class RunDirectory:
    """What ``output_dir`` holds, checked before the model loads: writable, and which run (if any) to
    resume, refuse or clear. Only the main process changes files; every process reads."""

    RUN_FILES = ("log.jsonl", "final", "samples")

    def __init__(self, config: LoopConfig, is_main: bool):
        self.path = Path(config.output_dir)
        self.resume_from: Path | None = None
        self.run_id = uuid.uuid4().hex
        self.notes: list[str] = []
        self.changed: dict[str, tuple] = {}  # settings that differ from the resumed run's (allowed ones)
        self._check_writable(is_main)
        last = latest_checkpoint(self.path)
        held = [p.name for p in [*checkpoints(self.path), *(self.path / n for n in self.RUN_FILES)] if p.exists()]
        if config.resume and last is not None:
            state = json.loads((last / STATE_FILE).read_text())
            self._compare(state.get("config", {}), to_dict(config), config.allow_config_changes, last)
            self.resume_from, self.run_id = last, state.get("run_id")
        elif held and not config.overwrite:
            why = "resume=false" if config.resume is False else "it has no checkpoint to resume from"
            raise ValueError(
                f"{self.path} holds a run ({', '.join(sorted(held)[:4])}) and {why}: pass overwrite=true to delete it "
                "and start afresh, or choose another output_dir"
            )
        elif held and is_main:
            for name in held:
                target = self.path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            self.notes.append(f"overwrite=true: deleted the earlier run in {self.path} ({', '.join(sorted(held)[:4])})")

    def _check_writable(self, is_main: bool) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if is_main:
                probe = self.path / f".write-test-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
        except OSError as err:
            raise ValueError(f"output_dir {self.path} is not writable ({err.strerror or err})") from None

    def _compare(self, stored: dict, current: dict, allow: bool, checkpoint: Path) -> None:
        safe, unsafe = config_changes(stored, current)
        describe = lambda changes: "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
        if unsafe and not allow:
            raise ValueError(
                f"{checkpoint} was trained with other settings ({describe(unsafe)}); resuming would mix two "
                "configurations. Restore them, pass allow_config_changes=true to apply them from here on, or "
                "start a new run (another output_dir, or overwrite=true)"
            )
        if safe or unsafe:
            self.notes.append(f"resuming {checkpoint} with changed settings: {describe({**safe, **unsafe})}")
        self.changed = unsafe


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
        self.run_dir = RunDirectory(cfg, self.accelerator.is_main_process)  # before anything loads
        self.accelerator.wait_for_everyone()
        for note in self.run_dir.notes:
            self.accelerator.print(note)
        set_seed(cfg.seed, device_specific=True)  # each process samples differently
        self.output_dir = Path(cfg.output_dir)
        self.log_path = self.output_dir / "log.jsonl"
        self.log_keys: list[str] = []  # the keys every log line carries, fixed by the first line
        self.skipped_in_a_row = self.skipped_total = 0
        self.step_skipped = False  # an optimisation pass of the current step was skipped
        self.last_step_skipped = False  # the step end_step closed last
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
        if (last := self.run_dir.resume_from) is not None:
            try:
                self.step = load_checkpoint(acc, last)["step"]
            except (RuntimeError, ValueError, KeyError) as err:
                raise ValueError(
                    f"{last} does not fit this run's model and optimizer ({type(err).__name__}: {str(err)[:200]}); a "
                    "changed rollout.mode, model.trainable or LoRA setting trains other parameters: start a new run"
                ) from err
            if self.run_dir.changed:
                self._apply_optim_settings()
            self._truncate_log()
            acc.print(f"resumed from {last} at step {self.step}")

    def _apply_optim_settings(self) -> None:
        """After loading a checkpoint, make ``config.optim``'s values (lr, weight decay, betas) the ones in use
        (the checkpoint restored the old ones); the schedule keeps its position."""
        o = self.config.optim
        schedule = getattr(self.scheduler, "scheduler", self.scheduler)  # accelerate's wrapper holds the torch one
        for i, group in enumerate(self.optimizer.param_groups):
            factor = schedule.lr_lambdas[i](schedule.last_epoch) if hasattr(schedule, "lr_lambdas") else 1.0
            group.update(initial_lr=o.lr, lr=o.lr * factor, weight_decay=o.weight_decay, betas=tuple(o.betas))
        schedule.base_lrs = [o.lr] * len(self.optimizer.param_groups)
        schedule._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def _truncate_log(self) -> None:
        """Drop log lines past the step resumed from (the steps a killed run did after its checkpoint), so
        every step is logged once; the kept lines fix the keys of the lines to come."""
        if not self.accelerator.is_main_process or not self.log_path.is_file():
            return
        kept = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line a kill cut short
            if row.get("step", 0) <= self.step:
                kept.append(line)
                self.log_keys = [k for k in row if k != "step"]
        from t2i_r1.utils.io import atomic_path

        with atomic_path(self.log_path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

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
    def optimizer_step(self, loss: float) -> float:
        """Clip the accumulated gradient, then step the optimiser, or skip the step if ``loss`` or the
        gradient norm is not finite on any process (``skip_update``); clear the gradient; returns the norm."""
        grad_norm = self.accelerator.clip_grad_norm_(self.module.parameters(), self.config.optim.max_grad_norm)
        norm = float(grad_norm) if grad_norm is not None else math.nan  # None: DeepSpeed clips inside its step
        if skip_update(self.accelerator, not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(norm))):
            self.step_skipped = True
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def end_step(self) -> None:
        """Advance the learning-rate schedule and the step count; count skipped steps."""
        self.scheduler.step()
        self.step += 1
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if self.step_skipped else 0
        self.skipped_total += int(self.step_skipped)
        self.last_step_skipped, self.step_skipped = self.step_skipped, False

    def check_skips(self) -> None:
        """Raise ``TrainingStopped`` once ``max_skipped_steps`` steps in a row were skipped."""
        if self.skipped_in_a_row >= self.config.max_skipped_steps:
            raise TrainingStopped(
                f"{self.skipped_in_a_row} steps in a row (to step {self.step}) had a non-finite loss or gradient and "
                f"were skipped; stopping. Weights are untouched since the last good step; see {self.log_path} "
                "(null values) and lower optim.lr or check the rewards"
            )

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
            result.stats["skipped"] = float(self.last_step_skipped)
            self.log(result)
            self.check_skips()
            if cfg.save_every and (self.step % cfg.save_every == 0 or self.step == cfg.steps):
                self.check_finite_weights("checkpoint")
                state = {"step": self.step, "config": to_dict(cfg), "run_id": self.run_dir.run_id}
                save_checkpoint(acc, self.output_dir, self.step, state, cfg.keep_last)
            bar.update(1)
            bar.set_postfix({k: f"{result.stats[k]:.4f}" for k in self.progress_keys if k in result.stats})
            if on_step is not None:
                on_step(result)
        bar.close()
        final = self.export() if self.step >= cfg.steps else None
        acc.end_training()
        return final

    def check_finite_weights(self, what: str) -> None:
        """Refuse to write ``what`` from parameters that are not finite (each process checks its shard)."""
        bad = next((n for n, p in self.policy.model.named_parameters() if not bool(torch.isfinite(p).all())), None)
        if skip_update(self.accelerator, bad is not None):
            raise TrainingStopped(f"parameter {bad or '(on another process)'} is not finite at step {self.step}: no "
                                  f"{what} written; the last checkpoint in {self.output_dir} is intact")

    def log(self, result: StepResult) -> None:
        """The step's stats, averaged over processes, to ``log.jsonl`` and the trackers every ``log_every``
        steps. Every line has the keys of the run's first line (plus any new one), a value that is missing
        or not finite written as null. Every process must call it (the average is a collective)."""
        acc, cfg = self.accelerator, self.config
        stats = reduce_stats(acc, result.stats)  # one key set on every process (sharding.py)
        if not acc.is_main_process or not cfg.log_every or result.step % cfg.log_every:
            return
        self.log_keys += [k for k in sorted(stats) if k not in self.log_keys]
        row = {k: (stats[k] if k in stats and math.isfinite(stats[k]) else None) for k in self.log_keys}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": result.step, **row}) + "\n")
        if cfg.log_with:
            acc.log(stats, step=result.step)

    def export(self) -> Path:
        """Write a plain Janus checkpoint to ``output_dir/final`` (LoRA merged, with the policy's processor and
        reasoning instruction) that ``from_pretrained`` and ``t2i-r1 generate`` load. Every process must call
        it: under a sharded engine the full state dict is gathered to the main process."""
        acc, directory = self.accelerator, self.output_dir / "final"
        self.check_finite_weights("export")
        acc.wait_for_everyone()
        state = full_state_dict(acc, self.module)  # keys of the LogProbModule: "model." + the trained model's
        if acc.is_main_process:
            trained = {k.removeprefix("model."): v for k, v in state.items()}
            model = plain_model(acc.unwrap_model(self.module).model, trained, getattr(torch, self.config.model.dtype))
            p = self.policy
            tmp = self.output_dir / ".tmp-final"
            if tmp.exists():
                shutil.rmtree(tmp)
            JanusPolicy(model, p.processor, p.reasoning_template, p.image_prompt_format).save_pretrained(tmp)
            replace_directory(tmp, directory)  # final/ exists only once complete, like a checkpoint
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

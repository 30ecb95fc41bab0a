"""BiCoT-GRPO trainer: one step optimises the plan tokens and the image tokens together.

The trainer only wires the layers and times each phase (verl style):
    plan_sampling, image_sampling   G plans per prompt, K images per plan   (t2i_r1.rollout)
    decode     VQ decode to images
    reward     every reward on the whole batch                  (t2i_r1.rewards)
    advantage  group-normalised advantages                      (t2i_r1.grpo.core)
    reference_logprob  reference-policy log-probs (beta > 0); LoRA: adapters disabled, else a frozen copy
    old_logprob        sampling-policy log-probs (num_iterations > 1)
    logprob    teacher-forced log-probs of the policy (the forward of the update)
    update     GRPO loss, backward, clip, optimizer step

Choices, and how they differ from the paper / reference implementation:
1. Distribution: accelerate (one CPU process, DDP, FSDP, DeepSpeed ZeRO); each process draws whole
   prompts, so GRPO groups never straddle processes and advantages need no gather.
2. Everything the loss needs is computed by one forward call of the prepared module (plan and image
   log-probs together), so DDP sees one forward per backward.
3. A step's samples are split into micro-batches of whole plans; the loss of each micro-batch is scaled
   by its share of the step's tokens (or sequences, or of each segment's tokens), so the accumulated
   gradient equals the gradient of the step's loss computed in one piece.
4. With K > 1 images per plan, every (plan, image) pair is one sample: the plan's tokens appear in K
   samples, each with that image's advantage (the paper uses K = 1).
5. Ablations (``rollout.mode``): ``bicot`` trains plan and image tokens; ``semantic`` samples images but
   gives their tokens no gradient (their log-probs are not even computed in the update); ``token``
   draws images from the prompt alone and trains the image tokens (the text head then gets no
   gradient and is frozen so DDP sees no unused parameter).
6. ``num_iterations == 1`` uses old = current.detach() (the paper's loss exactly); more passes compute
   the old log-probs once with a teacher-forced pass, not from the sampler, so the first ratio is 1
   also in bf16.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from t2i_r1.config_io import to_dict
from t2i_r1.data import PromptRecord, load_prompt_file
from t2i_r1.grpo.core import Segment, aggregate_rewards, grpo_loss
from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.rewards.base import RewardFunction
from t2i_r1.rewards.ensemble import RewardEnsemble
from t2i_r1.rollout.logprobs import image_log_probs, plan_log_probs
from t2i_r1.rollout.rollout import Rollout, generate_rollouts
from t2i_r1.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from t2i_r1.train.config import ModelConfig, TrainConfig
from t2i_r1.utils.grid import captioned_grid

# Dimension letters: B prompts, G plans per prompt, K images per plan, N = B*G*K samples,
# L plan tokens, T image tokens, P prompt tokens, R rewards.


def setup_trainable(model: torch.nn.Module, config: ModelConfig, mode: str = "bicot"):
    """Freeze all but ``config.trainable`` (or add LoRA adapters); returns (module to train, its parameters).

    With LoRA the returned module is a peft model whose adapters are injected into ``model`` in place, so a
    ``JanusPolicy`` around ``model`` samples with them.
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


def export_model(accelerator: Accelerator, module: torch.nn.Module, policy: JanusPolicy, directory: Path, lora: bool) -> Path:
    """Write a plain Janus checkpoint (LoRA merged, with ``policy``'s processor and reasoning instruction)
    that ``from_pretrained`` and ``t2i-r1 generate`` load."""
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(module).model
    if lora:
        model = copy.deepcopy(model).merge_and_unload()
    if accelerator.is_main_process:
        JanusPolicy(model, policy.processor, policy.reasoning_template, policy.image_prompt_format).save_pretrained(directory)
    accelerator.wait_for_everyone()
    return directory


class PhaseTimer:
    """Wall time per phase; on CUDA each phase ends with a synchronize so queued kernels count where they ran."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        self.seconds[name] += time.perf_counter() - start


class LogProbModule(torch.nn.Module):
    """What the optimizer trains, as one module whose forward gives every log-prob the loss needs.

    Wrapping the two teacher-forced passes in one ``forward`` lets accelerate's DDP / FSDP / DeepSpeed
    wrappers see an ordinary forward-backward.
    """

    def __init__(self, model: torch.nn.Module, policy: JanusPolicy, image_logprob_mode: str, guidance: float,
                 plan_temperature: float, image_temperature: float):
        super().__init__()
        self.model = model  # the Janus model (a peft model with LoRA); policy.model shares its modules
        self._policy = [policy]  # a list so the policy is not registered as a submodule
        self.image_logprob_mode, self.guidance = image_logprob_mode, guidance
        self.plan_temperature, self.image_temperature = plan_temperature, image_temperature

    def forward(self, batch: dict, need_plan: bool, need_image: bool):
        policy = self._policy[0]
        plan_lp = image_lp = None
        if need_plan:
            plan_lp = plan_log_probs(
                policy, batch["plan_prompt_ids"], batch["plan_prompt_mask"], batch["plan_ids"], batch["plan_mask"],
                self.plan_temperature,
            )  # (B*G slice, L)
        if need_image:
            image_lp = image_log_probs(
                policy, batch["image_prompt_ids"], batch["image_prompt_mask"], batch["image_tokens"],
                mode=self.image_logprob_mode, guidance_scale=self.guidance, temperature=self.image_temperature,
            )  # (N slice, T)
        return plan_lp, image_lp


@dataclass
class StepResult:
    step: int
    stats: dict[str, float]
    rollout: Rollout
    images: list


class BiCoTGRPOTrainer:
    def __init__(
        self,
        config: TrainConfig,
        *,
        policy: JanusPolicy | None = None,
        rewards: Mapping[str, RewardFunction] | None = None,
        prompts: Sequence[PromptRecord] | None = None,
        accelerator: Accelerator | None = None,
    ):
        self.config = cfg = config
        self.accelerator = accelerator or Accelerator(
            mixed_precision=cfg.mixed_precision, log_with=cfg.log_with or None, project_dir=cfg.output_dir
        )
        acc = self.accelerator
        set_seed(cfg.seed, device_specific=True)  # each process samples different rollouts
        self.output_dir = Path(cfg.output_dir)
        self.policy = policy or JanusPolicy.from_pretrained(
            cfg.model.path, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
            reasoning_template=cfg.model.reasoning_template, image_prompt_format=cfg.model.image_prompt_format,
        )
        self.policy.model.to(acc.device)
        self.prompts = list(prompts) if prompts is not None else load_prompt_file(cfg.data)
        weight = lambda name: cfg.rewards[name].weight if name in cfg.rewards else 1.0
        self.rewards = RewardEnsemble(
            {name: (reward, weight(name)) for name, reward in rewards.items()} if rewards is not None
            else {name: {"weight": spec.weight, **spec.kwargs} for name, spec in cfg.rewards.items()},
            device=acc.device,
        )
        self.reward_weights = torch.tensor(list(self.rewards.weights.values()))  # (R,)

        trained = self._setup_trainable()
        self.reference = self._setup_reference()
        if cfg.model.gradient_checkpointing:
            self.policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        optimizer = torch.optim.AdamW(
            trained, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=tuple(cfg.optim.betas)
        )
        from transformers import get_scheduler

        scheduler = get_scheduler(cfg.optim.scheduler, optimizer, cfg.optim.warmup_steps, cfg.steps)
        module = LogProbModule(
            self.trained_model, self.policy, cfg.rollout.image.logprob_mode, cfg.rollout.image.guidance_scale,
            cfg.rollout.plan.temperature, cfg.rollout.image.temperature,
        )
        self.module, self.optimizer, self.scheduler = acc.prepare(module, optimizer, scheduler)
        self.step = 0
        self.timer_factory: Callable[[], PhaseTimer] = PhaseTimer  # benchmarks swap in a counting timer
        self.log_path = self.output_dir / "log.jsonl"
        if cfg.log_with:
            acc.init_trackers("t2i-r1", config={"output_dir": cfg.output_dir})
        if cfg.resume and (last := latest_checkpoint(self.output_dir)) is not None:
            self.step = load_checkpoint(acc, last)["step"]
            acc.print(f"resumed from {last} at step {self.step}")

    # ------------------------------------------------------------------ set-up
    def _setup_trainable(self) -> list[torch.nn.Parameter]:
        self.trained_model, trained = setup_trainable(self.policy.model, self.config.model, self.config.rollout.mode)
        return trained

    def _setup_reference(self):
        """None (beta = 0), "adapters" (LoRA: the same model with adapters disabled) or a frozen copy."""
        if self.config.grpo.beta == 0:
            return None
        if self.config.model.lora is not None:
            return "adapters"
        reference = copy.deepcopy(self.policy.model).eval().requires_grad_(False)
        return JanusPolicy(reference, self.policy.processor, self.policy.reasoning_template,
                           self.policy.image_prompt_format)

    # ------------------------------------------------------------------ data
    def prompts_for_step(self, step: int) -> list[PromptRecord]:
        """This process's prompts for ``step``: a fresh permutation per epoch, a disjoint slice per process."""
        acc, per_process = self.accelerator, self.config.prompts_per_step
        global_batch = per_process * acc.num_processes
        picked = []
        for k in range(step * global_batch + acc.process_index * per_process,
                       step * global_batch + (acc.process_index + 1) * per_process):
            epoch, index = divmod(k, len(self.prompts))
            order = torch.randperm(len(self.prompts), generator=torch.Generator().manual_seed(self.config.seed + epoch))
            picked.append(self.prompts[int(order[index])])
        return picked

    # ------------------------------------------------------------------ one step
    def train_step(self, records: Sequence[PromptRecord]) -> StepResult:
        cfg, acc, timer = self.config, self.accelerator, self.timer_factory()
        started = time.perf_counter()
        mode, K = cfg.rollout.mode, cfg.rollout.images_per_plan
        need_plan, need_image = mode in ("bicot", "semantic"), mode in ("bicot", "token")
        prompts = [r.prompt for r in records]

        self.module.eval()
        with acc.autocast():
            rollout = generate_rollouts(
                self.policy, prompts, plans_per_prompt=cfg.rollout.plans_per_prompt, images_per_plan=K,
                use_plan=mode != "token", plan_config=cfg.rollout.plan, image_config=cfg.rollout.image, timer=timer,
            )
        with timer("decode"):
            images = self.policy.to_pil(self.policy.decode_image_tokens(rollout.images.tokens))
        with timer("reward"):
            metadata = self._reward_metadata(records, rollout)
            scores = self.rewards(rollout.sample_prompts, images, metadata)
            per_reward = torch.stack(list(scores.per_reward.values()), dim=1)  # (N, R)
        with timer("advantage"):
            advantages, adv_stats = aggregate_rewards(
                per_reward, self.reward_weights, rollout.group_size, cfg.grpo.reward_aggregation,
                eps=cfg.grpo.advantage_eps, drop_zero_variance=cfg.grpo.drop_zero_variance_groups,
            )
        batch = self._tensors(rollout, advantages)
        keep = adv_stats.keep.to(advantages.device)  # (N,) whole groups
        stats = {}
        if bool(keep.any()):
            batch = self._select(batch, keep, K)
            if self.reference is not None:
                with timer("reference_logprob"):
                    batch.update(self._reference_log_probs(batch, need_plan, need_image))
            if cfg.grpo.num_iterations > 1:
                with timer("old_logprob"):
                    batch.update(self._no_grad_log_probs(self.module, batch, need_plan, need_image, "old"))
            self.module.train()
            for _ in range(cfg.grpo.num_iterations):
                stats = self._optimise(batch, need_plan, need_image, timer)
        self.scheduler.step()
        self.step += 1
        stats.update(self._rollout_stats(rollout, per_reward, adv_stats))
        stats.update({f"time/reward_{name}": v for name, v in scores.seconds.items()})
        stats.update({f"time/{k}": v for k, v in timer.seconds.items()})
        stats["time/step"] = time.perf_counter() - started
        stats["lr"] = self.scheduler.get_last_lr()[0]
        return StepResult(self.step, stats, rollout, images)

    @staticmethod
    def _reward_metadata(records: Sequence[PromptRecord], rollout: Rollout) -> list[dict]:
        """Each sample's prompt metadata plus its plan and image tokens, for programmatic rewards (as TRL
        passes completions and their ids to reward functions)."""
        tokens = rollout.images.tokens.tolist()
        return [
            {**records[n // rollout.group_size].reward_metadata(), "plan": plan, "image_tokens": tokens[n]}
            for n, plan in enumerate(rollout.sample_plans)
        ]

    def _tensors(self, rollout: Rollout, advantages: torch.Tensor) -> dict:
        device = self.accelerator.device
        batch = {
            "image_prompt_ids": rollout.images.prompt_ids, "image_prompt_mask": rollout.images.prompt_mask,
            "image_tokens": rollout.images.tokens, "advantages": advantages.to(device),
        }
        if rollout.plans is not None:
            p = rollout.plans
            batch.update(plan_prompt_ids=p.prompt_ids, plan_prompt_mask=p.prompt_mask, plan_ids=p.plan_ids,
                         plan_mask=p.plan_mask)
        return batch

    @staticmethod
    def _select(batch: dict, keep: torch.Tensor, K: int) -> dict:
        """Keep the samples (and their plans) of groups that carry signal."""
        if bool(keep.all()):
            return batch
        plan_keep = keep.view(-1, K)[:, 0]  # (B*G,)
        return {k: v[plan_keep] if k.startswith("plan") else v[keep] for k, v in batch.items()}

    @staticmethod
    def _slice(batch: dict, start: int, end: int, K: int) -> dict:
        """Samples [start, end) and their plans [start/K, end/K)."""
        return {k: v[start // K : end // K] if k.startswith("plan") else v[start:end] for k, v in batch.items()}

    def _micro_batches(self, batch: dict):
        n, size, K = len(batch["image_tokens"]), self.config.micro_batch_size, self.config.rollout.images_per_plan
        for start in range(0, n, size):
            yield start, min(start + size, n), self._slice(batch, start, min(start + size, n), K)

    @torch.no_grad()
    def _no_grad_log_probs(self, module, batch, need_plan, need_image, prefix) -> dict:
        plan_parts, image_parts = [], []
        for _, _, micro in self._micro_batches(batch):
            plan_lp, image_lp = module(micro, need_plan, need_image)
            plan_parts.append(plan_lp)
            image_parts.append(image_lp)
        out = {}
        if need_plan:
            out[f"{prefix}_plan_lp"] = torch.cat(plan_parts)  # (B*G, L)
        if need_image:
            out[f"{prefix}_image_lp"] = torch.cat(image_parts)  # (N, T)
        return out

    def _reference_log_probs(self, batch, need_plan, need_image) -> dict:
        if self.reference == "adapters":
            model = self.accelerator.unwrap_model(self.module).model
            with model.disable_adapter():
                return self._no_grad_log_probs(self.module, batch, need_plan, need_image, "ref")
        cfg = self.config
        reference = LogProbModule(self.reference.model, self.reference, cfg.rollout.image.logprob_mode,
                                  cfg.rollout.image.guidance_scale, cfg.rollout.plan.temperature,
                                  cfg.rollout.image.temperature)
        with self.accelerator.autocast():
            return self._no_grad_log_probs(reference, batch, need_plan, need_image, "ref")

    def _segments(self, micro: dict, plan_lp, image_lp) -> dict[str, Segment]:
        K = self.config.rollout.images_per_plan
        segments = {}
        if plan_lp is not None:
            expand = lambda t: None if t is None else t.repeat_interleave(K, 0)  # (B*G, L) -> (N, L)
            segments["plan"] = Segment(
                expand(plan_lp), expand(micro["plan_mask"]).bool(), expand(micro.get("old_plan_lp")),
                expand(micro.get("ref_plan_lp")),
            )
        if image_lp is not None:
            segments["image"] = Segment(
                image_lp, torch.ones_like(micro["image_tokens"], dtype=torch.bool), micro.get("old_image_lp"),
                micro.get("ref_image_lp"),
            )
        return segments

    def _totals(self, batch: dict, need_plan: bool, need_image: bool) -> dict[str, float]:
        """Token and sequence counts of the whole step, to scale each micro-batch's loss."""
        K = self.config.rollout.images_per_plan
        plan_tokens = float(batch["plan_mask"].sum()) * K if need_plan else 0.0
        image_tokens = float(batch["image_tokens"].numel()) if need_image else 0.0
        return {"plan": plan_tokens, "image": image_tokens, "all": plan_tokens + image_tokens,
                "sequences": float(len(batch["image_tokens"]))}

    def _micro_loss(self, segments: dict[str, Segment], advantages, totals):
        g = self.config.grpo
        common = dict(beta=g.beta, eps_low=g.epsilon_low, eps_high=g.epsilon_high)
        if g.loss_aggregation == "segment_weighted":
            weights = {"plan": g.plan_weight, "image": g.image_weight}
            loss, stats = 0.0, {}
            for name, seg in segments.items():
                part, part_stats = grpo_loss({name: seg}, advantages, aggregation="token_mean", **common)
                share = float(seg.mask.sum()) / max(totals[name], 1.0)
                loss = loss + weights[name] * part * share
                stats.update({f"{name}/{k}": v for k, v in part_stats.items()})
            return loss, stats
        loss, stats = grpo_loss(segments, advantages, aggregation=g.loss_aggregation, **common)
        if g.loss_aggregation == "token_mean":
            share = sum(float(s.mask.sum()) for s in segments.values()) / max(totals["all"], 1.0)
        else:  # sequence_mean: every sample has image or plan tokens
            share = len(advantages) / totals["sequences"]
        return loss * share, stats

    def _optimise(self, batch: dict, need_plan: bool, need_image: bool, timer: PhaseTimer) -> dict[str, float]:
        """One optimisation pass over the step's samples; times "logprob" (forward) and "update" (the rest)."""
        acc, totals = self.accelerator, self._totals(batch, need_plan, need_image)
        micro_batches = list(self._micro_batches(batch))
        summed: dict[str, float] = defaultdict(float)
        total_loss = 0.0
        for i, (start, end, micro) in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with (nullcontext() if last else acc.no_sync(self.module)):
                with timer("logprob"):
                    plan_lp, image_lp = self.module(micro, need_plan, need_image)
                with timer("update"):
                    segments = self._segments(micro, plan_lp, image_lp)
                    loss, stats = self._micro_loss(segments, micro["advantages"], totals)
                    acc.backward(loss)
            total_loss += loss.item()
            weight = (end - start) / len(batch["image_tokens"])
            for k, v in stats.items():
                summed[k] += v * weight
        with timer("update"):
            grad_norm = acc.clip_grad_norm_(self.module.parameters(), self.config.optim.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        out = dict(summed)
        out["loss"] = total_loss
        out["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
        return out

    def _rollout_stats(self, rollout, per_reward, adv_stats) -> dict[str, float]:
        stats = {}
        for j, name in enumerate(self.rewards.weights):
            column = per_reward[:, j]
            stats[f"reward/{name}"] = float(column.nanmean()) if bool((~column.isnan()).any()) else float("nan")
        advantage_log = adv_stats.as_log()  # the weighted total and its within-group std, computed once there
        stats["reward/total"] = advantage_log["reward_mean"]
        stats["reward/group_std"] = advantage_log["reward_std_within_group"]
        stats.update({f"advantage/{k}": v for k, v in advantage_log.items()})
        if rollout.plans is not None:
            stats["plan/length"] = float(rollout.plans.plan_mask.sum(1).float().mean())
        return stats

    # ------------------------------------------------------------------ loop
    def train(self, max_steps: int | None = None, on_step: Callable[[StepResult], None] | None = None) -> None:
        """Train until ``config.steps`` (or ``max_steps`` more steps), checkpointing and logging."""
        cfg, acc = self.config, self.accelerator
        end = cfg.steps if max_steps is None else min(cfg.steps, self.step + max_steps)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="BiCoT-GRPO", disable=not acc.is_main_process)
        while self.step < end:
            result = self.train_step(self.prompts_for_step(self.step))
            self._log(result)
            if cfg.save_every and (self.step % cfg.save_every == 0 or self.step == cfg.steps):
                save_checkpoint(acc, self.output_dir, self.step, {"step": self.step, "config": to_dict(cfg)},
                                cfg.keep_last)
            bar.update(1)
            bar.set_postfix(reward=f"{result.stats['reward/total']:.3f}", loss=f"{result.stats.get('loss', 0):.4f}")
            if on_step is not None:
                on_step(result)
        bar.close()
        if self.step >= cfg.steps:
            self.save_final()
        acc.end_training()

    def _log(self, result: StepResult) -> None:
        acc, cfg = self.accelerator, self.config
        keys = sorted(result.stats)
        values = torch.tensor([result.stats[k] for k in keys], dtype=torch.float64, device=acc.device)
        values = acc.reduce(values, reduction="mean") if acc.num_processes > 1 else values
        stats = {k: float(v) for k, v in zip(keys, values.tolist())}
        if not acc.is_main_process:
            return
        if cfg.log_every and result.step % cfg.log_every == 0:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a") as f:
                f.write(json.dumps({"step": result.step, **{k: v for k, v in stats.items() if math.isfinite(v)}}) + "\n")
            if cfg.log_with:
                acc.log(stats, step=result.step)
        if cfg.image_log_every and result.step % cfg.image_log_every == 0:
            n = result.rollout.group_size
            grid = captioned_grid(result.images[:n], result.rollout.sample_plans[:n] if result.rollout.plan_texts
                                  else result.rollout.sample_prompts[:n], columns=min(n, 8))
            (self.output_dir / "samples").mkdir(parents=True, exist_ok=True)
            grid.save(self.output_dir / "samples" / f"step-{result.step:07d}.png")

    def save_final(self) -> Path:
        """A plain Janus checkpoint (LoRA merged) that ``t2i-r1 generate --model`` loads."""
        return export_model(self.accelerator, self.module, self.policy, self.output_dir / "final",
                            self.config.model.lora is not None)

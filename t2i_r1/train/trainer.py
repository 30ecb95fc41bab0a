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
   log-probs together), so DDP sees one forward per backward. Set-up, resume, the prompt schedule,
   logging, checkpoints and the export are the ``TrainingLoop`` SFT shares (``loop.py``).
3. A step's samples (a ``TrainingBatch``: plan rows and sample rows, ``batch.py``) are split into
   micro-batches of whole plans; ``grpo_loss`` divides each micro-batch's sums by the counts of the whole
   step (a ``LossNormalizer``), so the accumulated gradient equals the gradient of the step's loss
   computed in one piece, for every loss aggregation.
4. With K > 1 images per plan, every (plan, image) pair is one sample: the plan's tokens appear in K
   samples, each with that image's advantage (the paper uses K = 1).
5. Ablations (``rollout.mode``): ``bicot`` trains plan and image tokens; ``semantic`` samples images but
   gives their tokens no gradient (their log-probs are not even computed in the update); ``token``
   draws images from the prompt alone and trains the image tokens (the text head then gets no
   gradient and is frozen so DDP sees no unused parameter).
6. ``num_iterations == 1`` uses old = current.detach() (the paper's loss exactly); more passes compute
   the old log-probs once with a teacher-forced pass, not from the sampler, so the first ratio is 1
   also in bf16.
7. Finite or nothing. Rewards: NaN means "not applicable" (TRL's convention) and +-inf, which is no
   score, is treated the same way and counted (``reward/<name>/nonfinite``); a reward that raises stops
   the run with its name and the step. A pass whose loss or gradient is still not finite is skipped by
   the loop (weights and optimizer untouched, see ``loop.py``). Every step logs the same keys: a step
   with no update (skipped, or no group with a signal) logs NaN (null) for the update's statistics.
8. Before any sampling, the whole prompt file is read and every prompt checked to fit the model's
   context with the longest plan and the image tokens (``data.check_prompt_lengths``), so a bad line
   is reported with its file and line instead of blocking the run when it is drawn.
9. Sharded engines (FSDP2, ZeRO-3; ``sharding.py``): the rollout and the VQ decode run inside
   ``full_weights`` (gathered once, released before the update). Whether the update runs, and on how many
   samples, is agreed across processes: with ``drop_zero_variance_groups`` a process keeps its varied
   groups and pads up to the busiest process's count with untrained samples, so every process runs the
   same forwards and backwards (a skipped one would leave the others waiting in a collective).
"""

from __future__ import annotations

import copy
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator

from t2i_r1.data import PromptRecord, check_prompt_lengths, load_prompt_file
from t2i_r1.grpo.core import LossNormalizer, Segment, aggregate_rewards, grpo_loss
from t2i_r1.policy.janus import JanusPolicy
from t2i_r1.rewards.base import RewardFunction
from t2i_r1.rewards.ensemble import RewardEnsemble, RewardError
from t2i_r1.rollout.logprobs import LogProbSettings
from t2i_r1.rollout.rollout import Rollout, generate_rollouts
from t2i_r1.train.batch import TrainingBatch
from t2i_r1.train.config import TrainConfig
from t2i_r1.train.loop import LogProbModule, LoopAttributes, StepResult, TrainingLoop
from t2i_r1.train.sharding import accumulating, agreed_max, full_weights
from t2i_r1.utils.grid import captioned_grid

# Dimension letters: B prompts, G plans per prompt, K images per plan, N = B*G*K samples,
# L plan tokens, T image tokens, R rewards.


PHASES = ("plan_sampling", "image_sampling", "decode", "reward", "advantage", "reference_logprob", "old_logprob",
          "logprob", "update")
"""The timed phases of a step, each logged as ``time/<phase>`` every step (0 when it did not run)."""


class PhaseTimer:
    """Wall time per phase; on CUDA each phase ends with a synchronize so queued kernels count where they ran."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float, dict.fromkeys(PHASES, 0.0))

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        self.seconds[name] += time.perf_counter() - start


class BiCoTGRPOTrainer(LoopAttributes):
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
        # validation before compute: the whole prompt file, the output directory, then the model, then the
        # prompts against the model's context, then the reward models
        self.prompts = list(prompts) if prompts is not None else load_prompt_file(cfg.data)
        self.loop = TrainingLoop(cfg, name="BiCoT-GRPO", policy=policy, accelerator=accelerator,
                                 progress_keys=("reward/total", "loss"))
        check_prompt_lengths(self.policy, self.prompts, use_plan=cfg.rollout.mode != "token",
                             plan_tokens=cfg.rollout.plan.max_new_tokens)
        weight = lambda name: cfg.rewards[name].weight if name in cfg.rewards else 1.0
        self.rewards = RewardEnsemble(
            {name: (reward, weight(name)) for name, reward in rewards.items()} if rewards is not None
            else {name: {"weight": spec.weight, **spec.kwargs} for name, spec in cfg.rewards.items()},
            device=self.accelerator.device,
        )
        self.reward_weights = torch.tensor(list(self.rewards.weights.values()))  # (R,)
        self.log_prob_settings = LogProbSettings.of_sampling(cfg.rollout.plan, cfg.rollout.image)
        self.reference = self._setup_reference()  # before prepare: a sharded model cannot be copied
        self.loop.prepare(self.log_prob_settings, cfg.rollout.mode)
        self.timer_factory: Callable[[], PhaseTimer] = PhaseTimer  # benchmarks swap in a counting timer

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
        return [self.prompts[i] for i in self.loop.schedule(len(self.prompts), self.config.prompts_per_step, step)]

    # ------------------------------------------------------------------ one step
    def train_step(self, records: Sequence[PromptRecord]) -> StepResult:
        cfg, acc, timer = self.config, self.accelerator, self.timer_factory()
        started = time.perf_counter()
        mode, K = cfg.rollout.mode, cfg.rollout.images_per_plan
        prompts = [r.prompt for r in records]

        self.module.eval()
        with full_weights(acc, self.module):  # the sampler and the VQ decoder read the weights directly
            with acc.autocast():
                rollout = generate_rollouts(
                    self.policy, prompts, plans_per_prompt=cfg.rollout.plans_per_prompt, images_per_plan=K,
                    use_plan=mode != "token", plan_config=cfg.rollout.plan, image_config=cfg.rollout.image,
                    timer=timer,
                )
            with timer("decode"):
                images = self.policy.to_pil(self.policy.decode_image_tokens(rollout.images.tokens))
        with timer("reward"):
            metadata = self._reward_metadata(records, rollout)
            try:
                scores = self.rewards(rollout.sample_prompts, images, metadata)
            except RewardError as err:
                raise RewardError(f"step {self.step + 1}: {err}") from err.__cause__
            per_reward = torch.stack(list(scores.per_reward.values()), dim=1)  # (N, R)
        with timer("advantage"):
            advantages, adv_stats = aggregate_rewards(
                per_reward, self.reward_weights, rollout.group_size, cfg.grpo.reward_aggregation,
                eps=cfg.grpo.advantage_eps, drop_zero_variance=cfg.grpo.drop_zero_variance_groups,
                scale=cfg.grpo.scale_rewards == "group",
            )
        batch = TrainingBatch.from_rollout(rollout, advantages.to(acc.device))
        keep = adv_stats.keep.to(acc.device)  # (N,) whole groups
        size = agreed_max(acc, int(keep.sum()))  # samples every process trains on (choice 9)
        stats = dict.fromkeys(self.update_stat_keys(), math.nan)  # no update: the same keys, null in the log
        if size > 0:
            batch = batch.select(keep, size)
            if self.reference is not None:
                with timer("reference_logprob"):
                    batch = batch.with_log_probs("ref", *self._reference_log_probs(batch))
            if cfg.grpo.num_iterations > 1:
                with timer("old_logprob"):
                    batch = batch.with_log_probs("old", *self._no_grad_log_probs(self.module, batch))
            self.module.train()
            for _ in range(cfg.grpo.num_iterations):
                stats.update(self._optimise(batch, timer))
        self.loop.end_step()
        stats.update(self._rollout_stats(rollout, per_reward, adv_stats))
        stats.update({f"reward/{name}/nonfinite": float(n) for name, n in scores.nonfinite.items()})
        stats.update({f"time/reward_{name}": v for name, v in scores.seconds.items()})
        stats.update({f"time/{k}": v for k, v in timer.seconds.items()})
        stats["time/step"] = time.perf_counter() - started
        stats["lr"] = self.loop.lr
        return StepResult(self.step, stats, rollout, images)

    def update_stat_keys(self) -> list[str]:
        """The keys of ``_optimise``'s statistics under this config: ``grpo_loss`` run once on a dummy sample
        (pure arithmetic on 1 x 1 tensors), plus the gradient norm."""
        if not hasattr(self, "_update_keys"):
            g, one = self.config.grpo, torch.zeros(1, 1)
            dummy = Segment(one, torch.ones(1, 1, dtype=torch.bool), one, one if g.beta > 0 else None)
            names = [n for n, trained in zip(("plan", "image"), self._levels) if trained]
            _, stats = grpo_loss({n: dummy for n in names}, torch.zeros(1), beta=g.beta, aggregation=g.loss_aggregation,
                                 segment_weights={"plan": g.plan_weight, "image": g.image_weight})
            self._update_keys = [*stats, "grad_norm"]
        return self._update_keys

    @property
    def _levels(self) -> tuple[bool, bool]:
        """Whether the plan tokens and the image tokens train (``rollout.mode``)."""
        mode = self.config.rollout.mode
        return mode in ("bicot", "semantic"), mode in ("bicot", "token")

    def _inputs(self, batch: TrainingBatch):
        """The module's arguments: the plan rows and the sample rows, each only if its level trains."""
        need_plan, need_image = self._levels
        return (batch.plans if need_plan else None), (batch.samples if need_image else None)

    @staticmethod
    def _reward_metadata(records: Sequence[PromptRecord], rollout: Rollout) -> list[dict]:
        """Each sample's prompt metadata plus its plan and image tokens, for programmatic rewards (as TRL
        passes completions and their ids to reward functions)."""
        tokens = rollout.images.tokens.tolist()
        return [
            {**records[n // rollout.group_size].reward_metadata(), "plan": plan, "image_tokens": tokens[n]}
            for n, plan in enumerate(rollout.sample_plans)
        ]

    @torch.no_grad()
    def _no_grad_log_probs(self, module, batch: TrainingBatch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Log-probs of the whole batch, micro-batch by micro-batch: plan (B*G, L) and image (N, T), or None."""
        plan_parts, image_parts = [], []
        for micro in batch.micro_batches(self.config.micro_batch_size):
            plan_lp, image_lp = module(*self._inputs(micro))
            plan_parts.append(plan_lp)
            image_parts.append(image_lp)
        need_plan, need_image = self._levels
        return (torch.cat(plan_parts) if need_plan else None), (torch.cat(image_parts) if need_image else None)

    def _reference_log_probs(self, batch: TrainingBatch):
        if self.reference == "adapters":
            model = self.accelerator.unwrap_model(self.module).model
            with model.disable_adapter():
                return self._no_grad_log_probs(self.module, batch)
        reference = LogProbModule(self.reference.model, self.reference, self.log_prob_settings)
        with self.accelerator.autocast():
            return self._no_grad_log_probs(reference, batch)

    @staticmethod
    def _segments(micro: TrainingBatch, plan_lp, image_lp) -> dict[str, Segment]:
        """The trained parts of each sample, all (N_micro, T_s): a plan's log-probs repeated for its K samples."""
        segments = {}
        masks = micro.segment_masks(plan_lp is not None, image_lp is not None)
        if plan_lp is not None:
            p = micro.plans
            segments["plan"] = Segment(micro.per_sample(plan_lp), masks["plan"], micro.per_sample(p.old_logp),
                                       micro.per_sample(p.ref_logp))  # (N_micro, L)
        if image_lp is not None:
            im = micro.samples
            segments["image"] = Segment(image_lp, masks["image"], im.old_logp, im.ref_logp)  # (N_micro, T)
        return segments

    def _optimise(self, batch: TrainingBatch, timer: PhaseTimer) -> dict[str, float]:
        """One optimisation pass over the step's samples; times "logprob" (forward) and "update" (the rest).

        Every micro-batch's loss and statistics are normalised by the whole step's counts, so they add up."""
        acc, g = self.accelerator, self.config.grpo
        normalizer = LossNormalizer.from_masks(batch.segment_masks(*self._levels))
        micro_batches = list(batch.micro_batches(self.config.micro_batch_size))
        summed: dict[str, float] = defaultdict(float)
        for i, micro in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with accumulating(acc, self.module, last):
                with timer("logprob"):
                    plan_lp, image_lp = self.module(*self._inputs(micro))
                with timer("update"):
                    loss, stats = grpo_loss(
                        self._segments(micro, plan_lp, image_lp), micro.samples.advantages, beta=g.beta,
                        eps_low=g.epsilon_low, eps_high=g.epsilon_high, aggregation=g.loss_aggregation,
                        segment_weights={"plan": g.plan_weight, "image": g.image_weight}, normalizer=normalizer,
                    )
                    acc.backward(loss)
            for k, v in stats.items():
                summed[k] += v
        with timer("update"):
            grad_norm = self.loop.optimizer_step(summed["loss"])
        return {**summed, "grad_norm": grad_norm}

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
    def train(self, max_steps: int | None = None, on_step: Callable[[StepResult], None] | None = None) -> Path | None:
        """Train until ``config.steps`` (or ``max_steps`` more steps), logging and checkpointing; returns the
        exported ``output_dir/final`` once the run is complete."""

        def next_step() -> StepResult:
            result = self.train_step(self.prompts_for_step(self.step))
            self._save_samples(result)
            return result

        return self.loop.run(next_step, max_steps, on_step)

    def _save_samples(self, result: StepResult) -> None:
        """Every ``image_log_every`` steps, a grid of the first group's images with their plans."""
        every = self.config.image_log_every
        if not self.accelerator.is_main_process or not every or result.step % every:
            return
        n = result.rollout.group_size
        captions = result.rollout.sample_plans[:n] if result.rollout.plan_texts else result.rollout.sample_prompts[:n]
        grid = captioned_grid(result.images[:n], captions, columns=min(n, 8))
        (self.output_dir / "samples").mkdir(parents=True, exist_ok=True)
        grid.save(self.output_dir / "samples" / f"step-{result.step:07d}.png")

    def save_final(self) -> Path:
        """A plain Janus checkpoint (LoRA merged) that ``t2i-r1 generate --model`` loads."""
        return self.loop.export()

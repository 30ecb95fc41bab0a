"""``t2i-r1 demo`` (``make demo``): BiCoT-GRPO improving the packaged ShapeWorld Janus on a CPU.

Steps: load the committed checkpoint (``t2i_r1/assets/shapeworld``); score it on held-out prompts
(own plans, exact evaluator); run BiCoT-GRPO on training prompts with the evaluator's partial credit
as the only reward; score again with the same prompts and seeds; print a per-category before/after
table and save image grids (plan under each image), the numbers and the trained checkpoint to ``--out``.

Choices, and how they differ from the paper:
1. The reward is ShapeWorld's exact evaluator (``partial_reward``: share of checks passed, denser than
   the all-or-nothing score for groups of 8) instead of the paper's ensemble of vision experts.
   ``--reward exact`` trains on the all-or-nothing score itself; with ``--train-prompts 300`` it gave
   35.7 and 33.6 for training seeds 0 and 1 (defaults: 43.6, 31.4), so partial credit stays the default.
2. Held-out prompts never appear in training (the split hashes the prompt text), so the gain measured
   is generalisation, not memorisation.
3. The budget is wall-clock (``--minutes``) as well as steps, so the demo fits 15 minutes on 2 cores
   whatever the machine's load; the number of steps actually run is printed.
4. The learning rate (3e-5) is above the paper's 1e-6: a 2.4M-parameter model trained for a few
   hundred steps.
5. The loss weights the plan part 4x (``--plan-weight 4``: 4 x mean over plan tokens + mean over image
   tokens) instead of the paper's single token mean, in which the ~16 plan tokens weigh a fifth of the
   64 image tokens. The defaults are the best setting measured (README, "ShapeWorld"): +5.6 points over 5
   training seeds, short of the issue's +15. Lower learning rates stayed within the noise; lr 1e-4,
   LoRA at 3e-4, 4 passes per batch or the reference's conditional-only image log-probs lost 10-33 points.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the packaged ShapeWorld model)")
    parser.add_argument("--out", default="runs/demo", help="directory for grids, log and results.json")
    parser.add_argument("--mode", default="bicot", choices=["bicot", "semantic", "token"], help="training mode (ablation)")
    parser.add_argument("--steps", type=int, default=600, help="most BiCoT-GRPO steps")
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget of the training phase")
    parser.add_argument("--per-category", type=int, default=10, help="held-out prompts per category")
    parser.add_argument("--samples", type=int, default=2, help="images per held-out prompt")
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("--group", type=int, default=8, help="plans (images) per prompt: the GRPO group")
    parser.add_argument("--train-prompts", type=int, default=60, help="distinct training prompts per category")
    parser.add_argument("--reward", default="partial", choices=sorted(REWARDS),
                        help="partial: share of the evaluator's checks passed; exact: 1 if all pass (the score reported)")
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--beta", type=float, default=0.0, help="KL weight (paper: 0.01; 0 skips the reference passes, a third of a step here)")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--logprob-mode", default="guided", choices=["conditional", "guided"],
                        help="image log-probs trained: the conditional branch, or the CFG mix that was sampled")
    parser.add_argument("--plan-weight", type=float, default=4.0,
                        help="!= 1: segment-weighted loss, plan part x this, image part x 1 (1: the paper's token mean)")
    parser.add_argument("--train-generation", action="store_true",
                        help="also train the generation embeddings, aligner and head (the paper freezes them)")
    parser.add_argument("--lora-r", type=int, default=0, help="> 0: train LoRA adapters of this rank (alpha 2r) instead of all weights")
    parser.add_argument("--iterations", type=int, default=1,
                        help="optimisation passes per batch of rollouts (GRPO's mu; > 1 uses the clipped ratio)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-seed", type=int, default=None,
                        help="held-out sample and its sampling seed (default: --seed); fix it to compare training seeds")
    parser.add_argument("--threads", type=int, default=2)


REWARDS = {"partial": "partial_reward", "exact": "reward"}
"""``--reward`` choices -> function of ``t2i_r1.shapeworld.evaluator``."""

GENERATION_MODULES = ["model.generation_embeddings.", "model.generation_aligner.", "model.generation_head."]
"""Janus' image-generation modules outside the language model (``--train-generation``)."""

KL_STATS = ("kl_mean", "plan/kl_mean", "image/kl_mean")
"""The trainer's KL statistics: one for the token mean, one per part for the segment-weighted loss."""


def run_grpo(policy, model_dir: str, args: argparse.Namespace, log=print) -> dict:
    """BiCoT-GRPO on ShapeWorld training prompts with the evaluator as reward; trains ``policy`` in place."""
    from t2i_r1.data import PromptRecord
    from t2i_r1.rewards.programmatic import ProgrammaticReward
    from t2i_r1.rollout.sampling import ImageSamplingConfig, PlanSamplingConfig
    from t2i_r1.shapeworld import evaluator
    from t2i_r1.shapeworld.grammar import prompt_set
    from t2i_r1.train.config import (
        DEFAULT_TRAINABLE, GRPOConfig, LoraSettings, ModelConfig, OptimConfig, RewardSpec, RolloutConfig, TrainConfig,
    )
    from t2i_r1.train.trainer import BiCoTGRPOTrainer

    train_prompts = prompt_set("train", args.train_prompts, seed=args.seed + 100)
    records = [PromptRecord(p.text, p.metadata()) for p in train_prompts]
    config = TrainConfig(
        model=ModelConfig(path=model_dir, lora=LoraSettings(r=args.lora_r, alpha=2 * args.lora_r) if args.lora_r else None,
                          trainable=DEFAULT_TRAINABLE + (GENERATION_MODULES if args.train_generation else [])),
        data="shapeworld:train (in memory)",
        output_dir=str(Path(args.out) / "train"),
        rollout=RolloutConfig(
            mode=args.mode, plans_per_prompt=args.group, images_per_plan=1,
            plan=PlanSamplingConfig(max_new_tokens=64), image=ImageSamplingConfig(guidance_scale=args.guidance, logprob_mode=args.logprob_mode),
        ),
        rewards={"shapeworld": RewardSpec()},
        grpo=GRPOConfig(beta=args.beta, num_iterations=args.iterations, loss_aggregation="segment_weighted" if args.plan_weight != 1.0 else "token_mean",
                        plan_weight=args.plan_weight, image_weight=1.0),
        optim=OptimConfig(lr=args.lr),
        steps=args.steps, prompts_per_step=args.prompts_per_step, micro_batch_size=args.prompts_per_step * args.group,
        seed=args.seed, save_every=0, resume=False, image_log_every=0,
    )
    reward = ProgrammaticReward(getattr(evaluator, REWARDS[args.reward]), name="shapeworld")
    trainer = BiCoTGRPOTrainer(config, policy=policy, rewards={"shapeworld": reward}, prompts=records)
    start, history = time.time(), []
    while trainer.step < args.steps and time.time() - start < args.minutes * 60:
        result = trainer.train_step(trainer.prompts_for_step(trainer.step))
        s = result.stats
        history.append({"step": result.step, "reward": s["reward/total"], "seconds": round(time.time() - start, 1)})
        if result.step % 5 == 0 or result.step == 1:
            kl = "".join(f"  {key.replace('kl_mean', 'kl')} {s[key]:.4f}" for key in KL_STATS if key in s) if args.beta else ""
            log(f"step {result.step:4d}  reward {s['reward/total']:.3f}{kl}  "
                f"plan length {s.get('plan/length', float('nan')):.1f}  ({time.time() - start:.0f}s)")
    policy.model.eval()
    return {"steps": trainer.step, "seconds": time.time() - start, "history": history}


def save_grid(result, path: Path, per_category: int = 2) -> None:
    """First ``per_category`` prompts of each category, first image each, with prompt and plan under it."""
    from PIL import Image

    from t2i_r1.utils.grid import captioned_grid

    samples = len(result.scores) // len(result.prompts)
    picked, seen = [], {}
    for i, p in enumerate(result.prompts):
        if seen.get(p.category, 0) < per_category:
            seen[p.category] = seen.get(p.category, 0) + 1
            picked.append(i * samples)
    images = [Image.fromarray(result.images[j]) for j in picked]
    captions = [
        f"[{'OK' if result.scores[j] == 1 else 'x'}] {result.prompts[j // samples].text} || plan: {result.plans[j] or '-'}"
        for j in picked
    ]
    captioned_grid(images, captions, columns=per_category * 2, cell=192, caption_lines=9).save(path)


def run(args: argparse.Namespace) -> None:
    import torch

    from t2i_r1.shapeworld.cli import print_table
    from t2i_r1.shapeworld.grammar import prompt_set
    from t2i_r1.shapeworld.model import DEFAULT_ASSET, evaluate_policy, load_policy

    torch.set_num_threads(args.threads)
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = str(args.model or DEFAULT_ASSET)
    policy = load_policy(model_dir)
    eval_seed = args.seed if args.eval_seed is None else args.eval_seed
    held = prompt_set("heldout", args.per_category, seed=eval_seed)
    evaluate = lambda: evaluate_policy(policy, held, use_plan=args.mode != "token", samples=args.samples,
                                       seed=eval_seed + 1, guidance_scale=args.guidance)
    before = evaluate()
    print(f"before: overall {100 * before.table()['overall']:.1f}% on {len(held)} held-out prompts x {args.samples} "
          f"({time.time() - t0:.0f}s)", flush=True)
    save_grid(before, out / "before.png")
    training = run_grpo(policy, model_dir, args, log=lambda s: print(s, flush=True))
    after = evaluate()
    save_grid(after, out / "after.png")
    policy.save_pretrained(out / "model")  # the trained checkpoint: t2i-r1 shapeworld eval --model it
    tables = {"before": before.table(), "after": after.table()}
    tables["change"] = {k: tables["after"][k] - tables["before"][k] for k in tables["before"]}
    print(f"\nBiCoT-GRPO ({args.mode}), {training['steps']} steps in {training['seconds']:.0f}s; held-out success rate:")
    print_table(tables)
    wall = time.time() - t0
    print(f"\ntotal wall time {wall:.0f}s; grids: {out / 'before.png'}, {out / 'after.png'}; trained model: {out / 'model'}")
    (out / "results.json").write_text(json.dumps(
        {"tables": tables, "training": training, "wall_seconds": wall, "args": vars(args)}, indent=2, default=str
    ) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="t2i-r1 demo")
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

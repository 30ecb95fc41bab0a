"""The paper's baselines as ShapeWorld recipes: SFT triples and a small separate planner.

``write_prompts`` writes training prompts with their ground truth for ``t2i-r1 train``;
``write_triples`` renders training scenes and writes ``triples.jsonl`` (``t2i_r1.train.sft.load_triples``'s
format) for the SFT baseline; ``train_planner`` trains a small ``LlamaForCausalLM`` to write plans, for
the "plans from a separate language model" comparison (``t2i_r1.planner.ExternalPlanner``).
``benchmarks/shapeworld_recipes.py`` runs the table.

Choices:
1. Triples come from the world renderer, not VQ reconstructions: the image is exactly the scene its
   plan describes (``sample_example``, as pretraining builds its examples). SFT then VQ-encodes them.
2. The planner is its own model (``LlamaForCausalLM``, 128 wide, 2 layers, 0.54M parameters) over the
   ShapeWorld tokenizer, trained by teacher forcing on exactly the text the Janus model plans from:
   BOS + the packaged reasoning instruction ("plan the image : {prompt}") -> plan + EOS, on
   ``pretrain.sample_examples`` (train-split prompts). No chat template, so ``ExternalPlanner`` feeds
   it the bare instruction; ``reasoning.txt`` is saved next to it, where ``ExternalPlanner.from_pretrained``
   finds it. Images from its plans: ``model.evaluate_policy(..., planner=load_planner(dir))``.
3. Determinism: the pool of examples, the batches and the initialisation derive from the seed, and the
   schedule is in steps (linear warm-up then cosine). A ``minutes`` budget is turned into a step count
   after timing the first steps, which run in the warm-up and so do not depend on the total; the run
   is then the same as one with ``steps`` set to that count (logged, and kept in ``planner.json``).

Dimension letters: N rows, S sequence.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from t2i_r1.shapeworld.evaluator import summarize
from t2i_r1.shapeworld.grammar import LayoutError, Prompt, check_plan, prompt_set, sample_example
from t2i_r1.shapeworld.phrasing import TRAIN_FAMILIES
from t2i_r1.shapeworld.world import render

Log = Callable[[str], None]
TRIPLES_FILE = "triples.jsonl"
PLANNER_FILE = "planner.json"


# ---------------------------------------------------------------------------------------------
# Prompt files and SFT triples


def write_prompts(
    path: str | Path, per_cell: int, seed: int = 0, split: str = "train", families: Sequence[str] = TRAIN_FAMILIES
) -> Path:
    """JSON lines of ``prompt_set(split, per_cell, seed, families=families)`` with their metadata, the
    prompt-file format ``t2i-r1 train`` reads; the ShapeWorld reward finds its ground truth under "shapeworld"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(p.metadata()) for p in prompt_set(split, per_cell, seed=seed, families=families)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path



def write_triples(
    out_dir: str | Path, per_cell: int, seed: int = 0, split: str = "train", families: Sequence[str] = TRAIN_FAMILIES
) -> Path:
    """Render one scene per prompt of ``prompt_set(split, per_cell, seed, families=families)``; write
    ``images/*.png`` and ``triples.jsonl`` (image path relative to the file, prompt, the scene's exact
    plan). Returns the file."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 1])  # scenes: a stream of its own, apart from the prompt draw
    lines = []
    for i, prompt in enumerate(prompt_set(split, per_cell, seed=seed, families=families)):
        example = None
        for _ in range(10):  # prompt_set keeps feasible prompts, but one draw of a layout can still fail
            try:
                example = sample_example(prompt, rng)
                break
            except LayoutError:
                continue
        if example is None:
            raise LayoutError(f"no scene fits training prompt {prompt.text!r} after 10 draws")
        name = f"images/{i:05d}.png"
        Image.fromarray(render(example.scene)).save(out / name)
        lines.append(json.dumps({"image": name, "prompt": prompt.text, "plan": example.plan.text(),
                                 "category": prompt.category}))
    path = out / TRIPLES_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# A small separate planner


@dataclass
class PlannerConfig:
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 512
    steps: int | None = 1500
    """Training steps; when None, ``minutes`` decides the count (which then depends on the machine's speed)."""
    minutes: float = 3.0
    """Wall-clock budget of the training steps (example drawing not included), used when ``steps`` is None."""
    batch: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 0.01
    examples: int = 10_000
    """Training examples drawn once (train-split prompts) and cycled through."""
    timing_steps: int = 25
    """Steps timed to turn ``minutes`` into a step count (all but the first 5, which run slower); must lie
    within the warm-up."""
    seed: int = 0

    def __post_init__(self):
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"PlannerConfig.steps must be >= 1 or None, got {self.steps}")
        if self.steps is None and not self.minutes > 0:
            raise ValueError(f"PlannerConfig.minutes must be > 0 when steps is None, got {self.minutes}")
        if not 1 <= self.timing_steps <= self.warmup_steps:
            raise ValueError(f"PlannerConfig.timing_steps must be in 1..warmup_steps ({self.warmup_steps}), got {self.timing_steps}")
        if self.batch < 1 or self.examples < 1:
            raise ValueError("PlannerConfig.batch and PlannerConfig.examples must be >= 1")


def build_planner(config: PlannerConfig):
    """A randomly initialised planner (``LlamaForCausalLM``) and the ShapeWorld tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from t2i_r1.shapeworld.model import build_tokenizer

    tokenizer = build_tokenizer()
    lm_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden, intermediate_size=config.intermediate,
        num_hidden_layers=config.layers, num_attention_heads=config.heads, num_key_value_heads=config.heads,
        max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(config.seed)
    return LlamaForCausalLM(lm_config), tokenizer


def _lr(config: PlannerConfig, step: int, total: int) -> float:
    """Linear warm-up, then cosine to ``min_lr_ratio``; the warm-up does not depend on ``total``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _planner_batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (prompt ids, plan ids + EOS) rows; loss only on the plan and its EOS."""
    S = max(len(p) + len(q) for p, q in rows)
    ids = torch.full((len(rows), S), pad_id, dtype=torch.long)  # (N, S)
    mask = torch.zeros((len(rows), S), dtype=torch.long)  # (N, S)
    labels = torch.full((len(rows), S), -100, dtype=torch.long)  # (N, S); the model shifts them itself
    for i, (p, q) in enumerate(rows):
        ids[i, : len(p) + len(q)] = torch.tensor(p + q)
        mask[i, : len(p) + len(q)] = 1
        labels[i, len(p) : len(p) + len(q)] = torch.tensor(q)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train_planner(
    out_dir: str | Path,
    config: PlannerConfig = PlannerConfig(),
    *,
    eval_prompts: Sequence[Prompt] | None = None,
    log: Log = print,
) -> dict:
    """Train a planner, save it (model, tokenizer, ``reasoning.txt``) to ``out_dir`` for
    ``load_planner`` / ``ExternalPlanner.from_pretrained``; score it on ``eval_prompts`` (``check_plan``,
    one sampled plan each, temperature 1). Returns the summary also written to ``planner.json``."""
    from t2i_r1.policy.janus import TEMPLATE_FILE
    from t2i_r1.shapeworld.model import REASONING_TEMPLATE
    from t2i_r1.shapeworld.pretrain import sample_examples

    t0 = time.time()
    model, tokenizer = build_planner(config)
    rng = np.random.default_rng(config.seed)
    examples = sample_examples(config.examples, rng, split="train", families=TRAIN_FAMILIES)
    prompt_ids = tokenizer([REASONING_TEMPLATE.replace("{prompt}", ex.prompt.text) for ex in examples])["input_ids"]
    plan_ids = tokenizer([ex.plan.text() for ex in examples], add_special_tokens=False)["input_ids"]
    rows = [(p, q + [tokenizer.eos_token_id]) for p, q in zip(prompt_ids, plan_ids)]
    data_seconds = time.time() - t0
    log(f"planner: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {len(rows)} examples "
        f"drawn in {data_seconds:.0f}s")

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))
    model.train()
    total = config.steps
    start, step = time.time(), 0
    timed_from, timed_step = start, 0
    while total is None or step < total:
        lr = _lr(config, step, total or config.warmup_steps + 1)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = _planner_batch([rows[i] for i in rng.integers(len(rows), size=config.batch)], tokenizer.pad_token_id)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step == min(5, config.timing_steps - 1):
            timed_from, timed_step = time.time(), step
        if total is None and step == config.timing_steps:
            per_step = (time.time() - timed_from) / (step - timed_step)
            total = max(step, step + int((config.minutes * 60 - (time.time() - start)) / per_step))
            log(f"planner: {per_step * 1000:.0f} ms/step -> {total} steps for {config.minutes:g} min "
                f"(the same run as --steps {total})")
        if step % 200 == 0 or step == total:
            log(f"planner step {step}/{total} loss {loss.item():.4f} lr {lr:.2e} ({time.time() - start:.0f}s)")
    train_seconds = time.time() - start
    model.eval()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / TEMPLATE_FILE).write_text(REASONING_TEMPLATE, encoding="utf-8")
    summary = {"config": asdict(config), "steps": step, "train_seconds": round(train_seconds, 1),
               "data_seconds": round(data_seconds, 1), "final_loss": loss.item()}
    if eval_prompts:
        t1 = time.time()
        summary["plan_accuracy"] = plan_accuracy(load_planner(out), eval_prompts, seed=config.seed)
        summary["eval_prompts"] = len(eval_prompts)
        log(f"planner: plan accuracy on {len(eval_prompts)} held-out prompts "
            f"{100 * summary['plan_accuracy']['overall']:.1f}% ({time.time() - t1:.0f}s)")
    (out / PLANNER_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def load_planner(path: str | Path, **kwargs):
    """``ExternalPlanner.from_pretrained`` (which reads the directory's ``reasoning.txt``) with plans of
    at most 64 tokens, the Janus model's plan budget in ``evaluate_policy``."""
    from t2i_r1.planner import ExternalPlanner

    kwargs.setdefault("max_new_tokens", 64)
    return ExternalPlanner.from_pretrained(path, **kwargs)


def plan_accuracy(planner, prompts: Sequence[Prompt], samples: int = 1, seed: int = 0) -> dict[str, float]:
    """Share of sampled plans that satisfy their prompt (``check_plan``), per category and overall."""
    plans = planner.plan([p.text for p in prompts], num_samples=samples, seed=seed)
    scores = [check_plan(prompts[i // samples], plan).score for i, plan in enumerate(plans)]
    return summarize([p.category for p in prompts for _ in range(samples)], scores)

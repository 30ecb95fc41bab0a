"""How fast the plan level can learn in the demo's budget, and what holds it back.

One run of the demo's training (``t2i_r1.shapeworld.demo.run_grpo``, every demo flag accepted) from the
checkpoint, scored before and after with the ShapeWorld protocol, with two switches the paper does not have:

- ``--plan-share S``: the reward is ``S`` x the plan's own check against the prompt (``grammar.check_plan``,
  partial credit) + (1 - S) x the image's partial score. ``S = 1`` with ``--mode semantic`` is a ceiling:
  the plan level trained on a noiseless plan signal, which no image reward can beat at the same steps.
- ``--expose-steps N``: before RL, continue the checkpoint's pretraining for ``N`` steps with the RL
  families' prompts as prompt -> image rows only (``pretrain.expose``, as ``t2i-r1 shapeworld expose``):
  their words get a meaning while plans are still taught on the pretraining families alone.

It also reports how far RL moved the input embeddings of words the pretraining families use and of
words only the RL families use (L2 distance, mean over words, against their norm): a word pretraining
never saw keeps its initial embedding until RL moves it.

    python -m benchmarks.shapeworld_plan_learning --mode semantic --plan-share 1 --per-cell 10 --out runs/plan_ceiling
    python -m benchmarks.shapeworld_plan_learning --expose-steps 600 --per-cell 10 --out runs/exposed
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def plan_check_reward(share: float):
    """A ShapeWorld reward: ``share`` x the plan's partial check + (1 - share) x the image's partial score."""
    from t2i_r1.rewards.programmatic import ProgrammaticReward
    from t2i_r1.shapeworld.evaluator import partial_reward
    from t2i_r1.shapeworld.grammar import check_plan

    def score(prompt: str, image, metadata) -> float | None:
        if "shapeworld" not in metadata:
            return None
        plan = check_plan(metadata, metadata["plan"]).partial
        return share * plan + (1 - share) * (partial_reward(prompt, image, metadata) if share < 1 else 0.0)

    return ProgrammaticReward(score, name="shapeworld")


def word_groups(policy, added: list[str] | None = None) -> dict[str, list[int]]:
    """Token ids of the words in training prompts worded by the pretraining families, of the words only
    the RL families use (50 prompts per category and family of each, enough to meet every word) and, when
    given, of the words ``t2i-r1 shapeworld extend-vocab`` added (each started as a copy of ``<unk>``)."""
    from t2i_r1.shapeworld.grammar import prompt_set
    from t2i_r1.shapeworld.phrasing import PRETRAIN_FAMILIES, RL_FAMILIES

    def words(families) -> set[str]:
        return {w for p in prompt_set("train", 50, seed=3, families=families) for w in p.text.replace(",", " ,").split()}

    pretrain = words(PRETRAIN_FAMILIES)
    rl_only = words(RL_FAMILIES) - pretrain
    tok = policy.tokenizer
    ids = lambda ws: [i for i in tok.convert_tokens_to_ids(sorted(ws)) if i != tok.unk_token_id]
    groups = {"pretraining words": ids(pretrain), "RL-only words": ids(rl_only)}
    if added:
        groups["words added by extend-vocab"] = ids(added)
    return groups


def added_words(model_dir: str | Path) -> list[str]:
    """The words ``extend-vocab`` added to a checkpoint (its ``pretrain.json``), or none."""
    record = Path(model_dir) / "pretrain.json"
    if not record.is_file():
        return []
    return json.loads(record.read_text()).get("vocabulary_extension", {}).get("added", [])


def embedding_movement(before: torch.Tensor, after: torch.Tensor, groups: dict[str, list[int]]) -> dict[str, dict]:
    """(V, H) embeddings before and after -> per word group: mean norm before, mean L2 move, their ratio,
    and the mean distance between two of the group's words after (how well the model can tell them apart)."""
    out = {}
    for name, ids in groups.items():
        norm = before[ids].norm(dim=1).mean().item()
        moved = (after[ids] - before[ids]).norm(dim=1).mean().item()
        n = len(ids)
        apart = (torch.cdist(after[ids], after[ids]).sum() / (n * (n - 1))).item() if n > 1 else float("nan")
        out[name] = {"words": n, "norm": norm, "moved": moved, "relative": moved / norm, "apart_after": apart}
    return out


def plans_right_by_family(result) -> dict[str, float]:
    """Share of right plans per phrasing family (pooled over categories) of a protocol ``EvalResult``."""
    k = len(result.plan_scores) // len(result.prompts)
    by: dict[str, list[float]] = {}
    for i, prompt in enumerate(result.prompts):
        by.setdefault(prompt.phrasing, []).extend(result.plan_scores[i * k : (i + 1) * k])
    return {name: sum(v) / len(v) for name, v in by.items()}


def scores(policy, args: argparse.Namespace) -> dict:
    from benchmarks.shapeworld_ablation import protocol_of
    from t2i_r1.shapeworld.demo import tables_of

    protocol = protocol_of(args)
    planned = protocol.evaluate(policy)
    tables = tables_of(planned)
    tables["plans right"]["by family"] = plans_right_by_family(planned)
    return {"plan": tables, "no plan": tables_of(protocol.evaluate(policy, use_plan=False))}


def summary_line(name: str, t: dict) -> str:
    pct = lambda d: " / ".join(f"{100 * v:.1f}" for v in d.values())
    plan, no_plan = t["plan"], t["no plan"]
    return (f"{name:<7} success {100 * plan['success']['by category']['overall']:.1f} (by phrasing {pct(plan['success']['by phrasing'])}), "
            f"without plan {100 * no_plan['success']['by category']['overall']:.1f}; plans right "
            f"{100 * plan['plans right']['by category']['overall']:.1f} ({pct(plan['plans right']['by phrasing'])}); "
            f"success from a right / wrong plan {pct(plan['success']['by plan'])}")


def main(argv: list[str] | None = None) -> None:
    from t2i_r1.cli.demo import add_arguments as demo_arguments
    from t2i_r1.cli.shapeworld import add_exposure_arguments, exposure_config
    from t2i_r1.shapeworld.demo import run_grpo
    from t2i_r1.shapeworld.model import DEFAULT_ASSET, load_policy
    from t2i_r1.shapeworld.pretrain import expose

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo_arguments(parser)
    parser.set_defaults(out="runs/shapeworld_plan_learning")
    parser.add_argument("--plan-share", type=float, default=0.0, help="share of the reward that checks the plan itself")
    add_exposure_arguments(parser, prefix="expose-", steps=0)
    args = parser.parse_args(argv)
    if not 0.0 <= args.plan_share <= 1.0:
        parser.error("--plan-share must be in [0, 1]")
    if args.plan_share and args.mode == "token":
        parser.error("--plan-share needs plans: --mode semantic or bicot")
    torch.set_num_threads(args.threads)
    model_dir = str(args.model or DEFAULT_ASSET)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy = load_policy(model_dir)
    result: dict = {"args": vars(args)}
    t0 = time.time()
    if args.expose_steps:
        result["expose"] = expose(policy, exposure_config(args, "expose_"))
        print(f"exposed: {result['expose']['steps']} steps in {result['expose']['seconds']:.0f}s", flush=True)
        model_dir = str(out / "exposed")
        policy.save_pretrained(model_dir)
        # RL starts from the saved checkpoint, as after `t2i-r1 shapeworld expose`: from the exposed model
        # still in memory the same seed took another float path (equal at step 1, apart from step 2).
        policy = load_policy(model_dir)
    result["before"] = scores(policy, args)
    print(summary_line("before", result["before"]), flush=True)
    embeddings = policy.model.get_input_embeddings().weight.detach().clone()  # (V, H)
    reward = plan_check_reward(args.plan_share) if args.plan_share else None
    result["training"] = run_grpo(policy, model_dir, args, progress=False, reward=reward)
    print(f"trained {result['training']['steps']} steps in {result['training']['seconds']:.0f}s", flush=True)
    result["after"] = scores(policy, args)
    groups = word_groups(policy, added_words(args.model or DEFAULT_ASSET))
    result["embeddings"] = embedding_movement(embeddings, policy.model.get_input_embeddings().weight.detach(), groups)
    result["seconds"] = time.time() - t0
    lines = [summary_line("before", result["before"]), summary_line("after", result["after"])]
    families = result["before"]["plan"]["plans right"]["by family"]
    lines.append("plans right by family: " + ", ".join(
        f"{name} {100 * families[name]:.1f} -> {100 * result['after']['plan']['plans right']['by family'][name]:.1f}" for name in families))
    lines += [f"embeddings of {k} ({v['words']}): norm {v['norm']:.3f}, moved {v['moved']:.4f} ({100 * v['relative']:.1f}% of it), "
              f"{v['apart_after']:.4f} apart after" for k, v in result["embeddings"].items()]
    text = "\n".join(lines)
    print(text)
    command = "python -m benchmarks.shapeworld_plan_learning " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "report.txt").write_text(f"{text}\n\n{command}\n")
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

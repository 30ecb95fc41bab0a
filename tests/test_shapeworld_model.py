"""The ShapeWorld Janus: tokenizer, the committed checkpoint (VQ fidelity, loading, generation), the
pretraining formats against the sampler's log-probs, and a short BiCoT-GRPO run on the committed model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2i_r1.shapeworld import (
    ALL_FAMILIES,
    CATEGORIES,
    FAMILIES,
    TRAIN_FAMILIES,
    parse_plan,
    prompt_set,
    render,
    sample_example,
    score,
    words,
)
from t2i_r1.shapeworld.model import (
    DEFAULT_ASSET,
    REASONING_TEMPLATE,
    UNK,
    build_tokenizer,
    decode_to_uint8,
    encode_images,
    evaluate_policy,
    load_policy,
)
from t2i_r1.shapeworld.pretrain import (
    LMTrainConfig,
    VQTrainConfig,
    encode_examples,
    length_chunks,
    lm_loss,
    make_batch,
    sample_examples,
    train_lm,
    train_vq,
)

needs_asset = pytest.mark.skipif(
    not (DEFAULT_ASSET / "model.safetensors").is_file(),
    reason=f"needs the committed ShapeWorld checkpoint in {DEFAULT_ASSET} (t2i-r1 shapeworld pretrain --out it)",
)


@pytest.fixture(scope="module")
def policy():
    return load_policy(DEFAULT_ASSET)


def test_tokenizer_round_trip_and_no_unknown_words():
    tok = build_tokenizer()
    unk = tok.convert_tokens_to_ids(UNK)
    rng = np.random.default_rng(0)
    examples = sample_examples(3 * len(CATEGORIES) * len(ALL_FAMILIES), rng, split=None, families=ALL_FAMILIES)
    for ex in examples:
        plan, prompt = ex.plan.text(), ex.prompt.text
        plan_ids = tok(plan, add_special_tokens=False)["input_ids"]
        # Plans are one token per word (";" is a word): decoding joins them with single spaces, which is
        # exactly how Plan.text() writes them.
        assert len(plan_ids) == len(plan.split())
        assert tok.decode(plan_ids) == plan
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        assert unk not in prompt_ids and unk not in plan_ids
        # Prompts lose only the spacing before "," (the grammar's own word split is the same).
        assert words(tok.decode(prompt_ids)) == words(prompt)
    # BOS is added; the role and image tokens are single tokens.
    ids = tok("<|User|>: a red circle <|Assistant|>:<begin_of_image>")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.convert_ids_to_tokens(ids) == [
        tok.bos_token, "<|User|>", ":", "a", "red", "circle", "<|Assistant|>", ":", "<begin_of_image>"
    ]


@needs_asset
def test_committed_vq_keeps_the_evaluators_verdict(policy):
    rng = np.random.default_rng(123)
    examples = sample_examples(140, rng, split=None)  # 20 per category
    originals = [render(ex.scene) for ex in examples]
    recon = decode_to_uint8(policy, encode_images(policy, originals))  # (N, 64, 64, 3)
    assert recon.shape == (140, 64, 64, 3)
    kept = [score(ex.prompt, r) == score(ex.prompt, o) for ex, o, r in zip(examples, originals, recon)]
    assert all(score(ex.prompt, o) == 1.0 for ex, o in zip(examples[:20], originals))  # scenes satisfy prompts
    assert np.mean(kept) >= 0.95, f"VQ reconstructions keep the verdict on only {np.mean(kept):.3f} of images"


@needs_asset
def test_committed_model_loads_and_generates_parsable_plans(policy):
    assert policy.reasoning_template == REASONING_TEMPLATE  # read from reasoning.txt in the checkpoint
    assert policy.num_image_tokens == 64 and policy.codebook_size == 512
    prompts = prompt_set("heldout", 1, seed=3)  # one per category
    result = evaluate_policy(policy, prompts, use_plan=True, samples=2, seed=0)
    assert len(result.images) == 2 * len(prompts) and result.images[0].shape == (64, 64, 3)
    parsed = 0
    for plan in result.plans:
        try:
            parse_plan(plan)
            parsed += 1
        except ValueError:
            pass
    # The pretrained planner writes grammatical plans (it failed none in 140 held-out samples when measured).
    assert parsed >= len(result.plans) - 2
    assert all(0.0 <= s <= 1.0 for s in result.scores)


@needs_asset
def test_training_formats_match_the_samplers_log_probs(policy):
    """lm_loss (pretraining) and the rollout's plan/image log-probs (sampling, GRPO) score the same
    sequence identically: the pretraining formats are the sampling formats."""
    from t2i_r1.rollout.logprobs import image_log_probs, plan_log_probs

    ex = sample_examples(1, np.random.default_rng(5))[0]
    enc = encode_examples(policy, [ex])
    # p_plan=1 -> a plan row; p_plan=0, p_image_without_plan=0, p_uncond=0 -> an image-with-plan row.
    plan_cfg = LMTrainConfig(p_plan=1.0)
    image_cfg = LMTrainConfig(p_plan=0.0, p_image_without_plan=0.0, p_uncond=0.0)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        _, plan_stats = lm_loss(policy, make_batch(policy, enc, [0], plan_cfg, rng))
        _, image_stats = lm_loss(policy, make_batch(policy, enc, [0], image_cfg, rng))
        tok = policy.tokenize([policy.plan_prompt_text(ex.prompt.text)])
        plan_ids = torch.tensor([enc.plan[0]])
        lp = plan_log_probs(policy, tok.ids, tok.mask, plan_ids, torch.ones_like(plan_ids))
        tok = policy.tokenize([policy.image_prompt_text(ex.prompt.text, ex.plan.text())])
        ilp = image_log_probs(policy, tok.ids, tok.mask, enc.image_tokens[:1], mode="conditional")
    # lm_loss's cross-entropy is the mean negative log-prob of the same tokens.
    assert plan_stats["text"] == pytest.approx(-lp.mean().item(), abs=1e-4)
    assert image_stats["image"] == pytest.approx(-ilp.mean().item(), abs=1e-4)


@needs_asset
def test_image_only_examples_teach_no_plan(policy):
    """Examples worded by an image-only family become prompt -> image rows only (no plan row, no plan in
    the image prompt), whatever the draws; the other examples' rows are drawn as without the option."""
    rng = np.random.default_rng(3)
    examples = sample_examples(4, rng, split=None, families=("plain",)) + sample_examples(4, rng, split=None, families=("synonyms",))
    marked = encode_examples(policy, examples, image_only_families=("synonyms",))
    assert marked.image_only == [False] * 4 + [True] * 4
    always_plan = LMTrainConfig(p_plan=1.0, p_uncond=0.0, image_only_families=("synonyms",))
    batch = make_batch(policy, marked, list(range(8)), always_plan, np.random.default_rng(0))
    has_image = batch["image_targets"].ne(-100).any(1)  # (N,)
    assert has_image.tolist() == [False] * 4 + [True] * 4
    for row in range(4, 8):  # the image prompt is the prompt alone
        n = int(batch["mask"][row].sum()) - int(batch["is_image"][row].sum())
        assert batch["tokens"][row, :n].tolist() == marked.image_prompt[row]
    unmarked = encode_examples(policy, examples[:4])
    for config in (LMTrainConfig(), always_plan):
        a = make_batch(policy, marked, list(range(4)), config, np.random.default_rng(1))
        b = make_batch(policy, unmarked, list(range(4)), config, np.random.default_rng(1))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_image_only_families_are_checked():
    with pytest.raises(ValueError, match="both families and image_only_families"):
        LMTrainConfig(families=("plain", "terse"), image_only_families=("terse",))
    with pytest.raises(ValueError, match="unknown phrasing family 'emoji'"):
        LMTrainConfig(image_only_families=("emoji",))
    with pytest.raises(ValueError, match="image_only_share"):
        LMTrainConfig(image_only_families=("synonyms",), image_only_share=1.0)


def test_length_chunks_is_an_optimal_partition():
    """Every row lands in exactly one run, runs are contiguous in length, and the padded size is the
    smallest over every way of cutting the sorted rows into at most k runs (brute force)."""
    from itertools import combinations

    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = rng.integers(30, 110, size=int(rng.integers(1, 9))).tolist()
        for k in (1, 2, 3):
            runs = length_chunks(lengths, k)
            assert sorted(i for run in runs for i in run) == list(range(len(lengths)))
            assert 1 <= len(runs) <= k
            cost = sum(len(run) * max(lengths[i] for i in run) for run in runs)
            ordered = sorted(lengths)
            best = min(
                sum((b - a) * ordered[b - 1] for a, b in zip((0, *cuts), (*cuts, len(ordered))))
                for c in range(min(k, len(ordered)))
                for cuts in combinations(range(1, len(ordered)), c)
            )
            assert cost == best
    assert length_chunks([50, 100, 50, 100], 2) == [[0, 2], [1, 3]]


def test_chunked_lm_loss_equals_one_padded_batch():
    """Running the rows in groups of similar length changes the padding, not the loss or its gradients."""
    from t2i_r1.shapeworld.model import ShapeWorldModelSpec, build_model

    policy = build_model(ShapeWorldModelSpec(layers=1, codebook=64))
    enc = encode_examples(policy, sample_examples(6, np.random.default_rng(1)))
    batch = make_batch(policy, enc, list(range(6)) * 2, LMTrainConfig(p_plan=0.4), np.random.default_rng(2))
    lengths = batch["mask"].sum(-1)
    assert lengths.min() < lengths.max()  # plan and image rows: a padded batch
    results = []
    for chunks in (1, 3):
        policy.model.zero_grad(set_to_none=True)
        policy.model.requires_grad_(True)
        loss, stats = lm_loss(policy, batch, chunks)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in policy.model.named_parameters() if p.grad is not None}
        results.append((loss.item(), stats, grads))
    (loss1, stats1, grads1), (loss3, stats3, grads3) = results
    assert loss3 == pytest.approx(loss1, rel=1e-5)
    assert stats3 == pytest.approx(stats1, rel=1e-5)
    assert grads1.keys() == grads3.keys() and grads1
    for name in grads1:
        torch.testing.assert_close(grads3[name], grads1[name], rtol=1e-4, atol=1e-6, msg=name)


def test_warmup_cosine_schedule():
    from t2i_r1.shapeworld.pretrain import _warmup_cosine

    assert _warmup_cosine(0, 100, 0.0, 0.1) == pytest.approx(0.01)  # first warmup step
    assert _warmup_cosine(99, 100, 0.0, 0.1) == pytest.approx(1.0)
    assert _warmup_cosine(500, 100, 0.5, 0.1) == pytest.approx(0.55)  # half way down the cosine
    assert _warmup_cosine(500, 100, 1.0, 0.1) == pytest.approx(0.1)
    assert _warmup_cosine(500, 100, 3.0, 0.1) == pytest.approx(0.1)  # over budget: stays at the floor


def test_vq_training_keeps_its_best_checked_weights(monkeypatch):
    """The agreement swings between checks; train_vq ends with the weights of its best check."""
    from t2i_r1.shapeworld import pretrain
    from t2i_r1.shapeworld.model import ShapeWorldModelSpec, build_model

    policy = build_model(ShapeWorldModelSpec(layers=1, codebook=64))
    vq_model = policy.model.model.vqmodel
    checked = []

    def agreement(policy, examples, evaluator=None):  # checks at steps 1 and 2, then the final check
        checked.append({k: v.clone() for k, v in vq_model.state_dict().items()})
        return [0.4, 0.9, 0.6][len(checked) - 1]

    monkeypatch.setattr(pretrain, "vq_agreement", agreement)
    result = train_vq(policy, VQTrainConfig(max_steps=3, batch=2, pool=8, check_images=4, check_every=2), log=lambda s: None)
    assert len(checked) == 3 and result["agreement"] == 0.9
    best, last = checked[1], checked[2]
    assert not all(torch.equal(best[k], last[k]) for k in best)  # step 3 moved the weights
    assert all(torch.equal(v, best[k]) for k, v in vq_model.state_dict().items())


def test_pretraining_runs_end_to_end_on_a_small_budget(tmp_path):
    """A few steps of each stage on a freshly built model: losses are finite and the VQ stores a unit-norm
    codebook (which makes transformers' encode and decode agree)."""
    from t2i_r1.shapeworld.model import ShapeWorldModelSpec, build_model

    policy = build_model(ShapeWorldModelSpec(layers=1, codebook=64))
    vq = train_vq(policy, VQTrainConfig(max_steps=2, batch=2, pool=8, check_images=4, check_every=1000), log=lambda s: None)
    assert vq["steps"] == 2
    norms = policy.model.model.vqmodel.quantize.embedding.weight.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    before = {n: p.clone() for n, p in policy.model.named_parameters() if n.startswith("model.language_model.")}
    lm = train_lm(policy, LMTrainConfig(max_steps=3, batch=4, examples=8, eval_every=0), log=lambda s: None)
    assert lm["steps"] == 3
    changed = [n for n, p in policy.model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert changed, "the language model did not train"
    assert all(not p.requires_grad for p in policy.model.parameters())


@needs_asset
def test_bicot_grpo_runs_on_the_committed_model(tmp_path):
    import argparse

    from t2i_r1.cli.demo import add_arguments
    from t2i_r1.shapeworld.demo import run_grpo

    policy = load_policy(DEFAULT_ASSET)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--steps", "2", "--prompts-per-step", "1", "--group", "4", "--out", str(tmp_path)])
    before = policy.model.lm_head.weight.clone()
    frozen = policy.model.model.generation_head.vision_head.weight.clone()
    training = run_grpo(policy, str(DEFAULT_ASSET), args, log=lambda s: None)
    assert training["steps"] == 2
    rewards = [h["reward"] for h in training["history"]]
    assert all(0.0 <= r <= 1.0 for r in rewards)  # partial credit is a share of checks
    assert not torch.equal(policy.model.lm_head.weight, before)  # the plan head trains in bicot mode
    # The generation head stays frozen (paper: only the language model and its text head train).
    assert torch.equal(policy.model.model.generation_head.vision_head.weight, frozen)
    # ... unless --train-generation asks for it.
    args = parser.parse_args(["--steps", "2", "--prompts-per-step", "1", "--group", "4", "--out", str(tmp_path),
                              "--train-generation"])
    run_grpo(policy, str(DEFAULT_ASSET), args, log=lambda s: None)
    assert not torch.equal(policy.model.model.generation_head.vision_head.weight, frozen)


@needs_asset
def test_same_seed_trains_the_same_model(tmp_path):
    """The demo is bounded by steps and seeded: the same seed gives the same rewards and the same weights,
    bit for bit (what makes its numbers independent of the machine's load); another seed does not."""
    import argparse

    from t2i_r1.cli.demo import add_arguments
    from t2i_r1.shapeworld.demo import run_grpo

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def train(seed: int):
        policy = load_policy(DEFAULT_ASSET)
        args = parser.parse_args(["--steps", "3", "--prompts-per-step", "1", "--group", "4", "--seed", str(seed),
                                  "--out", str(tmp_path / f"seed{seed}")])
        rewards = [h["reward"] for h in run_grpo(policy, str(DEFAULT_ASSET), args, log=lambda s: None, progress=False)["history"]]
        return rewards, policy.model.lm_head.weight.detach().clone()

    rewards, weights = train(0)
    again_rewards, again_weights = train(0)
    assert again_rewards == rewards
    assert torch.equal(again_weights, weights)
    other_rewards, other_weights = train(1)
    assert other_rewards != rewards or not torch.equal(other_weights, weights)


@needs_asset
def test_plan_weight_reaches_only_runs_that_plan(tmp_path):
    """Token-only training has no plan tokens, so its weights are the same bit for bit at any plan weight
    (why the ablation's token-only row stands for every plan weight); BiCoT's are not."""
    import argparse

    from t2i_r1.cli.demo import add_arguments
    from t2i_r1.shapeworld.demo import run_grpo

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def weights(policy) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in policy.model.state_dict().items()}

    def train(mode: str, plan_weight: float) -> dict[str, torch.Tensor]:
        policy = load_policy(DEFAULT_ASSET)
        args = parser.parse_args(["--steps", "2", "--prompts-per-step", "1", "--group", "4", "--mode", mode,
                                  "--plan-weight", str(plan_weight), "--out", str(tmp_path / f"{mode}{plan_weight}")])
        run_grpo(policy, str(DEFAULT_ASSET), args, log=lambda s: None, progress=False)
        return weights(policy)

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    base = weights(load_policy(DEFAULT_ASSET))
    token = train("token", 4.0)
    assert not same(token, base)  # it trained
    assert same(train("token", 16.0), token)
    assert not same(train("bicot", 16.0), train("bicot", 4.0))


@needs_asset
def test_demo_reward_and_train_prompts_flags_reach_the_trainer(tmp_path, monkeypatch):
    import argparse

    from t2i_r1.shapeworld import evaluator
    from t2i_r1.cli.demo import add_arguments
    from t2i_r1.shapeworld.demo import run_grpo

    scored = []

    def exact(prompt, image, metadata):
        scored.append(prompt)
        return 1.0

    monkeypatch.setattr(evaluator, "reward", exact)  # --reward exact looks the function up at run time
    policy = load_policy(DEFAULT_ASSET)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--steps", "3", "--prompts-per-step", "3", "--group", "2", "--out", str(tmp_path),
                              "--reward", "exact", "--train-prompts", "1"])
    training = run_grpo(policy, str(DEFAULT_ASSET), args, log=lambda s: None)
    assert [h["reward"] for h in training["history"]] == [1.0, 1.0, 1.0]
    assert len(scored) == 3 * 3 * 2
    # One prompt per category and training family (42 for seed 0): 9 draws without replacement.
    allowed = {p.text for p in prompt_set("train", 1, seed=100, families=TRAIN_FAMILIES)}
    assert len(allowed) == len(CATEGORIES) * len(TRAIN_FAMILIES)
    assert set(scored) <= allowed and len(set(scored)) == 9


@needs_asset
def test_demo_lora_and_iterations_flags_reach_the_trainer(tmp_path):
    import argparse

    from t2i_r1.cli.demo import add_arguments
    from t2i_r1.shapeworld.demo import run_grpo

    policy = load_policy(DEFAULT_ASSET)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--steps", "1", "--prompts-per-step", "1", "--group", "4", "--out", str(tmp_path),
                              "--lora-r", "4", "--iterations", "2"])
    base = {n: p.clone() for n, p in policy.model.named_parameters()}
    training = run_grpo(policy, str(DEFAULT_ASSET), args, log=lambda s: None)
    assert training["steps"] == 1
    names = [n for n, _ in policy.model.named_parameters()]
    lora = [n for n in names if "lora_" in n]
    assert lora, "LoRA adapters were not added"
    # With LoRA only the adapters train: every pre-existing weight is unchanged (peft renames base
    # layers to "<name>.base_layer.weight").
    compared = 0
    for n, p in policy.model.named_parameters():
        original = n.replace("base_model.model.", "").replace(".base_layer", "")
        if "lora_" not in n and original in base:
            assert torch.equal(p, base[original]), n
            compared += 1
    assert compared == len(base)
    # lora_B starts at zero; two optimisation passes over the batch move it.
    assert any(p.abs().sum() > 0 for n, p in policy.model.named_parameters() if "lora_B" in n)


@needs_asset
def test_demo_end_to_end_writes_tables_and_grids(tmp_path):
    """``t2i-r1 demo`` on a tiny budget: before/after tables, grids, results.json and the trained checkpoint;
    the "before" table is the base model scored on the ``--eval-seed`` held-out sample, independently of the
    training seed."""
    import json

    from t2i_r1.cli import main
    from t2i_r1.shapeworld.protocol import Protocol, by_plan, report

    assert main(["demo", "--steps", "1", "--per-cell", "1", "--samples", "1", "--prompts-per-step", "1", "--group", "2",
                 "--seed", "5", "--eval-seed", "3", "--threads", "1", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["training"]["steps"] == 1
    tables = results["tables"]
    assert set(tables) == {f"{m} {v}" for m in ("success", "plans right") for v in ("by category", "by phrasing")} | {
        "success by plan"}
    for table in tables.values():
        assert set(table) == {"before", "after", "change"}
        assert table["change"] == pytest.approx({k: table["after"][k] - v for k, v in table["before"].items()}, nan_ok=True)
    assert set(tables["success by phrasing"]["before"]) == {"seen in pretraining", "seen in RL only", "unseen"}
    assert (tmp_path / "before.png").is_file() and (tmp_path / "after.png").is_file()
    # The "before" column is the base scored with the protocol of --eval-seed, whatever the training seed.
    protocol = Protocol(per_cell=1, samples=1, seed=3)
    assert results["protocol"] == json.loads(json.dumps(protocol.to_dict()))
    held = protocol.prompts()
    assert len(held) == sum(FAMILIES[f].covers(c) for f in ALL_FAMILIES for c in CATEGORIES)
    base_policy = load_policy(DEFAULT_ASSET)
    base = protocol.evaluate(base_policy)
    assert tables["success by category"]["before"] == pytest.approx(base.table())
    assert tables["plans right by phrasing"]["before"] == pytest.approx(report(held, base.plan_scores)["by phrasing"])
    assert tables["success by plan"]["before"] == pytest.approx(by_plan(base.scores, base.plan_scores), nan_ok=True)
    trained = load_policy(tmp_path / "model")  # the saved checkpoint is the model the "after" table scored
    assert trained.reasoning_template == base_policy.reasoning_template
    after = protocol.evaluate(trained)
    assert tables["success by category"]["after"] == pytest.approx(after.table())


@needs_asset
def test_demo_log_shows_the_kl_of_each_part_when_beta_is_set(tmp_path):
    import argparse

    from t2i_r1.cli.demo import add_arguments
    from t2i_r1.shapeworld.demo import run_grpo

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    lines = []
    args = parser.parse_args(["--steps", "1", "--prompts-per-step", "1", "--group", "2", "--beta", "0.01",
                              "--out", str(tmp_path)])
    run_grpo(load_policy(DEFAULT_ASSET), str(DEFAULT_ASSET), args, log=lines.append, progress=False)
    assert "plan/kl 0.0000" in lines[0] and "image/kl 0.0000" in lines[0]  # segment-weighted: one per part


def test_vq_speed_benchmark_times_both_precisions(capsys):
    from benchmarks.vq_speed import main

    main(["--batch", "2", "--steps", "1", "--threads", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [r[:2] for r in rows] == [["2", "fp32"], ["2", "bf16"]]
    # s/step has 3 decimals and ms/image 1, so they agree to rounding only.
    assert all(float(r[2]) > 0 and float(r[3]) == pytest.approx(1000 * float(r[2]) / 2, abs=0.5) for r in rows)


def test_pretrain_command_passes_its_flags_to_the_stage_configs(tmp_path, monkeypatch):
    """``t2i-r1 shapeworld pretrain`` flags reach the VQ and LM configs, and its defaults are the configs' own."""
    import t2i_r1.shapeworld.pretrain as pretrain_module
    from t2i_r1.cli import main

    seen = []
    monkeypatch.setattr(pretrain_module, "pretrain", lambda out, **kw: seen.append((out, kw)))
    main(["shapeworld", "pretrain", "--out", str(tmp_path), "--steps", "70", "--vq-steps", "30", "--minutes", "7", "--vq-minutes", "3",
          "--batch", "8", "--lr", "1e-3", "--image-only-families", "synonyms", "digits", "--image-only-share", "0.5",
          "--threads", str(torch.get_num_threads())])
    (out, kw), = seen
    assert out == str(tmp_path)
    assert (kw["lm"].max_steps, kw["lm"].minutes, kw["lm"].batch, kw["lm"].lr) == (70, 7.0, 8, 1e-3)
    assert (kw["lm"].image_only_families, kw["lm"].image_only_share) == (("synonyms", "digits"), 0.5)
    assert (kw["vq"].max_steps, kw["vq"].minutes) == (30, 3.0)
    main(["shapeworld", "pretrain", "--out", str(tmp_path), "--threads", str(torch.get_num_threads())])
    lm, vq, lm_defaults, vq_defaults = seen[1][1]["lm"], seen[1][1]["vq"], LMTrainConfig(), VQTrainConfig()
    fields = ("max_steps", "minutes", "lr", "batch", "examples", "eval_every", "families", "image_only_families", "image_only_share")
    assert [getattr(lm, f) for f in fields] == [getattr(lm_defaults, f) for f in fields]
    assert (vq.max_steps, vq.minutes, vq.batch) == (vq_defaults.max_steps, vq_defaults.minutes, vq_defaults.batch)


@needs_asset
def test_lm_stage_benchmark_reports_heldout_losses(capsys):
    import json

    from benchmarks.shapeworld_lm_stage import FORMATS, main

    main(["--steps", "2", "--batch", "4", "--examples", "8", "--heldout-examples", "4", "--threads", "1"])
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{\n"):])
    assert result["steps"] == 2 and result["sequences_per_second"] > 0
    assert set(result["heldout_loss"]) == set(FORMATS)
    # Two steps from a random start: near the uniform loss, log(512) for images.
    assert all(0 < v < 10 for v in result["heldout_loss"].values())


def test_demo_reward_choices_are_the_reward_functions():
    from t2i_r1.cli.demo import REWARD_CHOICES
    from t2i_r1.shapeworld import evaluator
    from t2i_r1.shapeworld.demo import REWARDS

    assert REWARD_CHOICES == tuple(sorted(REWARDS))
    assert all(callable(getattr(evaluator, name)) for name in REWARDS.values())

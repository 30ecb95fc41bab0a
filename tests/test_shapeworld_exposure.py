"""The exposure stage: continued pretraining in which the RL families' prompts are prompt -> image rows only,
as a library call, as ``t2i-r1 shapeworld expose`` and as the last stage of ``pretrain``."""

from __future__ import annotations

import json

import numpy as np
import torch

from t2i_r1.cli import main as cli_main
from t2i_r1.shapeworld.model import ShapeWorldModelSpec, build_model, load_policy
from t2i_r1.shapeworld.phrasing import PRETRAIN_FAMILIES, RL_FAMILIES
from t2i_r1.shapeworld.pretrain import (
    ExposureConfig,
    LMTrainConfig,
    VQTrainConfig,
    encode_examples,
    expose,
    make_batch,
    pretrain,
    sample_examples,
)

TINY = ShapeWorldModelSpec(hidden=32, layers=1, heads=2, intermediate=64, grid=2, codebook=16, vq_channels=32, seed=3)
SMALL = ExposureConfig(steps=2, batch=4, examples=12, seed=1)
QUIET = lambda s: None  # noqa: E731


def _weights(policy) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.model.state_dict().items()}


def test_exposure_plans_only_on_the_pretraining_families():
    """Every plan row of an exposure batch comes from a pretraining family; the RL families appear, as images."""
    config = ExposureConfig(share=0.5).lm_config()
    assert (config.families, config.image_only_families) == (PRETRAIN_FAMILIES, RL_FAMILIES)
    assert config.min_lr_ratio == 1.0 and config.eval_every == 0 and config.workers == 1
    policy = build_model(TINY)
    rng = np.random.default_rng(0)
    examples = sample_examples(14, rng, families=PRETRAIN_FAMILIES) + sample_examples(14, rng, families=RL_FAMILIES)
    enc = encode_examples(policy, examples, config.image_only_families)
    rows = list(range(28)) * 4
    batch = make_batch(policy, enc, rows, config, rng)
    plan_rows = [rows[i] for i in range(len(rows)) if not batch["is_image"][i].any()]
    assert plan_rows and all(examples[e].prompt.phrasing in PRETRAIN_FAMILIES for e in plan_rows)
    image_rows = [rows[i] for i in range(len(rows)) if batch["is_image"][i].any()]
    assert any(examples[e].prompt.phrasing in RL_FAMILIES for e in image_rows)


def test_exposure_trains_the_language_model_and_repeats_itself():
    policy, again = build_model(TINY), build_model(TINY)
    start = _weights(policy)
    summary = expose(policy, SMALL, log=QUIET)
    assert summary["steps"] == 2
    after = _weights(policy)
    moved = [k for k in start if not torch.equal(start[k], after[k])]
    assert moved and all(k.startswith(("model.language_model.", "lm_head.", "model.generation_")) for k in moved)
    assert not any(k.startswith("model.vqmodel.") for k in moved)  # the VQ stays as pretrained
    expose(again, SMALL, log=QUIET)
    assert all(torch.equal(v, after[k]) for k, v in _weights(again).items())


def test_expose_command_writes_the_library_result_and_records_it(tmp_path):
    source = tmp_path / "base"
    build_model(TINY).save_pretrained(source)
    (source / "pretrain.json").write_text(json.dumps({"lm": {"max_steps": 1}}))
    cli_main(["shapeworld", "expose", "--model", str(source), "--out", str(tmp_path / "out"), "--steps", "2",
              "--batch", "4", "--examples", "12", "--seed", "1", "--threads", str(torch.get_num_threads())])
    record = json.loads((tmp_path / "out" / "pretrain.json").read_text())
    assert record["lm"] == {"max_steps": 1}  # the source's record is kept
    assert record["exposure"]["config"]["steps"] == 2 and record["exposure"]["config"]["lr"] == ExposureConfig.lr
    assert record["exposure"]["result"]["steps"] == 2
    direct = load_policy(source)
    expose(direct, SMALL, log=QUIET)
    saved = load_policy(tmp_path / "out")
    assert all(torch.equal(v, saved.model.state_dict()[k]) for k, v in direct.model.state_dict().items())


def test_pretrain_command_passes_the_exposure_flags(tmp_path, monkeypatch):
    import t2i_r1.shapeworld.pretrain as pretrain_module

    seen = []
    monkeypatch.setattr(pretrain_module, "pretrain", lambda out, **kw: seen.append(kw["exposure"]))
    threads = ["--threads", str(torch.get_num_threads())]
    cli_main(["shapeworld", "pretrain", "--out", str(tmp_path), "--expose-steps", "300", "--expose-lr", "1e-4", "--seed", "4", *threads])
    cli_main(["shapeworld", "pretrain", "--out", str(tmp_path), *threads])
    given, default = seen
    assert (given.steps, given.lr, given.batch, given.seed) == (300, 1e-4, ExposureConfig.batch, 4)
    assert default == ExposureConfig(seed=0)  # the recipe's last stage, at the config's defaults
    cli_main(["shapeworld", "pretrain", "--out", str(tmp_path), "--expose-steps", "0", *threads])
    assert seen[-1].steps == 0  # and pretrain() skips a stage of 0 steps


def test_pretrain_runs_the_exposure_stage_last_and_records_it(tmp_path):
    vq = VQTrainConfig(max_steps=1, batch=2, pool=8, check_images=4, check_every=1000)
    lm = LMTrainConfig(max_steps=2, batch=4, examples=8, eval_every=0)
    spec = ShapeWorldModelSpec(layers=1, codebook=64)  # the VQ stage needs the real image grid
    pretrain(tmp_path / "with", spec=spec, vq=vq, lm=lm, log=QUIET, exposure=SMALL)
    record = json.loads((tmp_path / "with" / "pretrain.json").read_text())
    assert record["exposure"]["config"]["steps"] == 2 and record["exposure"]["result"]["steps"] == 2
    pretrain(tmp_path / "without", spec=spec, vq=vq, lm=lm, log=QUIET)
    assert "exposure" not in json.loads((tmp_path / "without" / "pretrain.json").read_text())
    # With the stage the result is the plain pretraining's model, exposed.
    plain = load_policy(tmp_path / "without")
    expose(plain, SMALL, log=QUIET)
    exposed = load_policy(tmp_path / "with").model.state_dict()
    assert all(torch.equal(v, exposed[k]) for k, v in plain.model.state_dict().items())

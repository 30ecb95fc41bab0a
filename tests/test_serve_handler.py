"""The web page's request handler, its rendering helpers and its command, without a browser.

Everything runs a tiny random Janus (real transformers classes) on the CPU; gradio is not needed
except by the one test that builds the page, which skips without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import threading
import time
import zipfile
from dataclasses import asdict

import numpy as np
import pytest
from PIL import Image

from t2i_r1 import serve
from t2i_r1.cli import serve as serve_cli
from t2i_r1.pipeline import Generation, T2IR1Pipeline
from t2i_r1.serve.app import make_request_fn, render_grid, render_status
from t2i_r1.serve.handler import (
    PLAN_OFF_TEXT,
    WORKER_NAME,
    GenerationHandler,
    RequestError,
    ServedModel,
    Update,
    check_fits_context,
    format_plans,
    validate_request,
)
from t2i_r1.testing import TinyJanusSpec, build_tiny_janus

PROMPT = "a red cube left of a blue sphere"


@pytest.fixture(scope="module")
def pipe():
    """A tiny pipeline shared by the module: read-only (tests that break it build their own)."""
    return T2IR1Pipeline(build_tiny_janus())


@pytest.fixture
def handler(pipe, tmp_path):
    return GenerationHandler([ServedModel("tiny", pipe, source="in memory")], max_images=4, downloads_dir=tmp_path)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def final(updates: list[Update]) -> Update:
    assert updates, "the handler yielded nothing"
    assert updates[-1].done and all(not u.done for u in updates[:-1]), "exactly the last update is marked done"
    return updates[-1]


# ---------------------------------------------------------------------------------------- validation
VALID = dict(prompt=PROMPT, num_images=2, guidance_scale=5.0, temperature=1.0, seed=0, use_plan=True)


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("prompt", "", "enter a prompt"),
        ("prompt", "   \n", "enter a prompt"),
        ("prompt", None, "enter a prompt"),
        ("num_images", 0, "Number of images"),
        ("num_images", 5, "Number of images"),  # max_images is 4
        ("num_images", 2.5, "Number of images"),
        ("num_images", None, "Number of images"),
        ("guidance_scale", -0.5, "Guidance scale"),
        ("guidance_scale", float("nan"), "Guidance scale"),
        ("temperature", 0.0, "Temperature"),
        ("temperature", "hot", "Temperature"),
        ("seed", -1, "Seed"),
        ("seed", 1.5, "Seed"),
        ("seed", None, "Seed"),
        ("seed", True, "Seed"),
    ],
)
def test_validate_request_refuses_bad_input_naming_the_control(field, value, words):
    values = {**VALID, field: value}
    with pytest.raises(RequestError, match=words):
        validate_request(*values.values(), max_images=4, max_prompt_chars=100)


def test_validate_request_normalises_good_input():
    prompt, settings = validate_request(
        "  a cube  ", 3.0, 2, 0.5, 7.0, 1, max_images=4, max_prompt_chars=100
    )
    assert prompt == "a cube"
    assert asdict(settings) == dict(num_images=3, guidance_scale=2.0, temperature=0.5, seed=7, use_plan=True)
    assert isinstance(settings.num_images, int) and isinstance(settings.seed, int)


def test_prompt_over_the_character_cap_is_refused_before_tokenising():
    with pytest.raises(RequestError, match="101 characters; the page accepts at most 100"):
        validate_request("x" * 101, 1, 5.0, 1.0, 0, True, max_images=4, max_prompt_chars=100)


# ---------------------------------------------------------------------------------------- context
def _fits_engine(policy, text: str, reserve: int) -> bool:
    """What the engine itself decides: JanusPolicy.tokenize raises when text + reserve exceed the context."""
    try:
        policy.tokenize([text], reserve=reserve)
    except ValueError:
        return False
    return True


def _longest_fitting(fits) -> int:
    """Largest word count k with fits(k) true, by bisection (fits is monotone: longer never fits better)."""
    low, high = 1, 4000
    assert fits(low) and not fits(high)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def words(k: int) -> str:
    return " ".join(["red cube", "blue sphere", "green cat"][i % 3] for i in range(k))


@pytest.mark.parametrize("use_plan", [True, False])
def test_context_check_agrees_with_the_engine_at_the_boundary(pipe, use_plan):
    policy = pipe.policy
    model = ServedModel("tiny", pipe)
    plan_tokens = pipe.plan_config.max_new_tokens  # 128
    if use_plan:
        # the plan prompt (~250 tokens of instruction + prompt) must leave room for 128 plan tokens; with a
        # 1024 context this binds before the image prompt (prompt + ~10 tokens + 128 plan + 64 image tokens)
        def fits(k):
            return _fits_engine(policy, policy.plan_prompt_text(words(k)), plan_tokens)
    else:
        def fits(k):
            return _fits_engine(policy, policy.image_prompt_text(words(k)), policy.num_image_tokens)
    k = _longest_fitting(fits)
    check_fits_context(model, words(k), use_plan)  # fits: no error
    with pytest.raises(RequestError, match="too long for tiny"):
        check_fits_context(model, words(k + 1), use_plan)


def test_too_long_prompt_is_refused_at_once_with_the_numbers(handler, pipe):
    policy = pipe.policy
    prompt = words(900)
    with pytest.raises(ValueError) as engine_error:  # the engine's own count, from its error message
        policy.tokenize([policy.plan_prompt_text(prompt)])
    used = int(re.search(r"too long: (\d+) tokens", str(engine_error.value)).group(1))
    excess = used + 128 - 1024  # 128 plan tokens must follow; the tiny context is 1024
    updates = list(handler.stream(prompt, 2, 5.0, 1.0, 0, True))
    assert len(updates) == 1
    update = final(updates)
    assert update.error and update.download is None and update.results == [None]
    assert f"it takes {used} tokens" in update.status
    assert f"beyond the model's context of 1024 tokens. Shorten it by at least {excess} tokens" in update.status
    assert not list(handler.downloads_dir.iterdir()), "nothing sampled, nothing written"


# ---------------------------------------------------------------------------------------- requests
def test_stream_writes_plans_token_by_token_then_draws_matching_generate(handler, pipe):
    updates = list(handler.stream(PROMPT, 3, 5.0, 1.0, 11, True))
    update = final(updates)
    assert not update.error, update.status
    generations = update.results[0]
    assert len(generations) == 3

    # streaming: the plan box changes while no image exists yet, more than once (128-token plans)
    streamed = {u.plans[0] for u in updates if u.results[0] is None and u.plans[0]}
    assert len(streamed) >= 2, "the plans were not streamed"
    assert all(u.results[0] is None for u in updates if "writing the plans" in u.status)
    assert update.plans[0] == format_plans([g.plan for g in generations])

    # same seed, same plans and images as the pipeline's own generate (and so `t2i-r1 generate`)
    reference = pipe.generate([PROMPT], 3, use_plan=True, seed=11)
    assert [g.plan for g in generations] == [r.plan for r in reference]
    for g, r in zip(generations, reference):
        assert np.array_equal(pixels(g.image), pixels(r.image))


def test_plan_off_draws_from_the_prompt_alone(handler, pipe):
    update = final(list(handler.stream(PROMPT, 2, 5.0, 1.0, 3, False)))
    assert not update.error, update.status
    assert update.plans == [PLAN_OFF_TEXT]
    generations = update.results[0]
    assert [g.plan for g in generations] == [None, None]
    reference = pipe.generate([PROMPT], 2, use_plan=False, seed=3)
    for g, r in zip(generations, reference):
        assert np.array_equal(pixels(g.image), pixels(r.image))


def test_request_settings_do_not_touch_the_shared_pipeline(handler, pipe):
    before = asdict(pipe.image_config)
    update = final(list(handler.stream(PROMPT, 1, 2.5, 0.7, 0, True)))
    assert asdict(pipe.image_config) == before
    sampling = update.results[0][0].settings["image_sampling"]
    assert (sampling["guidance_scale"], sampling["temperature"]) == (2.5, 0.7)


def test_download_holds_every_image_and_the_json_of_prompt_plans_settings(handler, pipe):
    update = final(list(handler.stream("  " + PROMPT + " ", 2, 3.0, 0.8, 5, True)))
    generations = update.results[0]
    assert update.download is not None and update.download.parent == handler.downloads_dir
    with zipfile.ZipFile(update.download) as archive:
        assert sorted(archive.namelist()) == ["generations.json", "model1/00.png", "model1/01.png"]
        record = json.loads(archive.read("generations.json"))
        for k, g in enumerate(generations):
            with archive.open(f"model1/{k:02d}.png") as f:
                assert np.array_equal(pixels(Image.open(f)), pixels(g.image))
    assert record["prompt"] == PROMPT  # stripped
    assert record["settings"] == dict(num_images=2, guidance_scale=3.0, temperature=0.8, seed=5, use_plan=True)
    (model,) = record["models"]
    assert (model["name"], model["source"], model["note"]) == ("tiny", "in memory", None)
    assert model["plan_sampling"] == asdict(pipe.plan_config)
    assert model["image_sampling"] == {**asdict(pipe.image_config), "guidance_scale": 3.0, "temperature": 0.8}
    assert model["images"] == [
        {"file": f"model1/{k:02d}.png", "prompt": PROMPT, "plan": g.plan, "seed": 5} for k, g in enumerate(generations)
    ]
    assert all(g.plan for g in generations)


def test_old_downloads_are_pruned(pipe, tmp_path):
    handler = GenerationHandler([ServedModel("tiny", pipe)], downloads_dir=tmp_path, keep_downloads=2)
    paths = []
    for seed in range(3):
        paths.append(final(list(handler.stream(PROMPT, 1, 5.0, 1.0, seed, False))).download)
        time.sleep(0.02)  # distinct modification times, whatever the filesystem's resolution
    # keep 2: writing the third zip deletes the first
    assert sorted(tmp_path.glob("*.zip")) == sorted(paths[1:])


def test_compare_serves_two_models_with_the_same_seed(pipe, tmp_path):
    other = T2IR1Pipeline(build_tiny_janus(TinyJanusSpec(seed=1)))
    handler = GenerationHandler([ServedModel("base", pipe), ServedModel("trained", other)], downloads_dir=tmp_path)
    update = final(list(handler.stream(PROMPT, 2, 5.0, 1.0, 4, True)))
    assert not update.error, update.status
    assert [len(r) for r in update.results] == [2, 2]
    for result, p in zip(update.results, [pipe, other]):
        reference = p.generate([PROMPT], 2, use_plan=True, seed=4)
        assert [g.plan for g in result] == [r.plan for r in reference]
    assert update.plans[0] != update.plans[1], "two different random models write different plans"
    with zipfile.ZipFile(update.download) as archive:
        names = set(archive.namelist())
        record = json.loads(archive.read("generations.json"))
    assert {"model1/00.png", "model1/01.png", "model2/00.png", "model2/01.png"} <= names
    assert [m["name"] for m in record["models"]] == ["base", "trained"]
    assert [i["plan"] for i in record["models"][1]["images"]] == [g.plan for g in update.results[1]]


# ---------------------------------------------------------------------------------------- errors
def test_an_engine_failure_becomes_a_message_and_the_next_request_works(tmp_path, monkeypatch):
    pipe = T2IR1Pipeline(build_tiny_janus())
    handler = GenerationHandler([ServedModel("tiny", pipe)], downloads_dir=tmp_path)

    def broken(tokens):
        raise RuntimeError("VQ decoder exploded")

    monkeypatch.setattr(pipe.policy, "decode_image_tokens", broken)
    update = final(list(handler.stream(PROMPT, 2, 5.0, 1.0, 0, True)))
    assert update.error and update.download is None
    assert update.status.startswith("Internal error (RuntimeError: VQ decoder exploded). The server is still running")
    assert update.plans[0].startswith("[1] "), "the plans written before the failure stay on the page"

    monkeypatch.undo()
    update = final(list(handler.stream(PROMPT, 2, 5.0, 1.0, 0, True)))
    assert not update.error and len(update.results[0]) == 2


def test_an_engine_value_error_is_shown_as_it_is(tmp_path, monkeypatch):
    pipe = T2IR1Pipeline(build_tiny_janus())
    handler = GenerationHandler([ServedModel("tiny", pipe)], downloads_dir=tmp_path)
    monkeypatch.setattr(pipe.policy, "to_pil", lambda pixels: (_ for _ in ()).throw(ValueError("bad pixels")))
    update = final(list(handler.stream(PROMPT, 1, 5.0, 1.0, 0, True)))
    assert update.error and update.status == "bad pixels"


def test_closing_the_stream_cancels_sampling(pipe, tmp_path):
    handler = GenerationHandler([ServedModel("tiny", pipe)], downloads_dir=tmp_path)
    stream = handler.stream(PROMPT, 4, 5.0, 1.0, 0, True)
    first = next(stream)  # the worker is running from here on
    assert first.status == "tiny: starting"
    stream.close()  # what Gradio does when the page goes away
    deadline = time.monotonic() + 30
    while any(t.name == WORKER_NAME for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == WORKER_NAME for t in threading.enumerate()), "the worker did not stop"
    # without the cancel flag the worker would have drawn the images and written the zip
    assert not list(tmp_path.iterdir())


def test_handler_refuses_ambiguous_models(pipe):
    with pytest.raises(ValueError, match="model names must differ"):
        GenerationHandler([ServedModel("a", pipe), ServedModel("a", pipe)])
    with pytest.raises(ValueError, match="at least one model"):
        GenerationHandler([])


# ---------------------------------------------------------------------------------------- rendering
def _generation(plan, prompt="p"):
    return Generation(prompt, plan, Image.new("RGB", (8, 8), "red"), 0)


def test_grid_puts_each_plan_under_its_image_escaped():
    html = render_grid([_generation("a <script>alert(1)</script> plan"), _generation("second & last")])
    assert html.count("<img ") == 2 and html.count("<figcaption>") == 2
    assert "<script>" not in html and "a &lt;script&gt;alert(1)&lt;/script&gt; plan" in html
    assert "second &amp; last" in html
    assert html.index("Plan 1") < html.index("Plan 2")
    assert render_grid([_generation(None, prompt="only <the> prompt")]).count("only &lt;the&gt; prompt") == 1
    assert render_grid(None) == ""


def test_status_marks_errors():
    error = render_status(Update("too <long>", [""], [None], error=True, done=True))
    assert 'class="t2i-status error"' in error and "Error: too &lt;long&gt;" in error
    assert 'class="t2i-status"' in render_status(Update("Done", [""], [None]))
    assert render_status(Update("", [""], [None])) == ""


def test_page_function_sends_only_what_changed_and_renders_images_once(handler, monkeypatch):
    import t2i_r1.serve.app as app

    renders = []
    real = app.render_grid
    monkeypatch.setattr(app, "render_grid", lambda g: renders.append(g) or real(g))
    skip = object()
    outputs = list(make_request_fn(handler, lambda: skip)(PROMPT, 2, 5.0, 1.0, 0, True))
    # outputs: status, download, plan box, grid
    assert len(outputs) >= 3 and all(len(o) == 4 for o in outputs)
    assert outputs[0][3] == "" and outputs[0][1] is None  # the first yield clears the last request's page
    grids = [o[3] for o in outputs[1:] if o[3] is not skip]
    assert len(grids) == 1 and grids[0].count("<img ") == 2, "the grid is sent once, when the images arrive"
    assert sum(g is not None for g in renders) == 1
    assert outputs[-1][1].endswith(".zip")
    plan_sends = [o[2] for o in outputs[1:] if o[2] is not skip]
    assert len(plan_sends) == len(set(plan_sends)), "an unchanged plan box is never re-sent"


@pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason="needs gradio (pip install '.[demo]')")
def test_build_app_wires_the_queue_and_the_controls(pipe, tmp_path):
    from t2i_r1.serve.app import build_app

    handler = GenerationHandler([ServedModel("tiny", pipe, note="untrained <weights>")], max_images=4,
                                downloads_dir=tmp_path)
    demo = build_app(handler, queue_size=3, concurrency_limit=2)
    assert demo._queue.max_size == 3
    assert demo._queue.default_concurrency_limit == 2
    config = demo.get_config_file()
    ids = {c["props"].get("elem_id") for c in config["components"]}
    assert {"prompt", "generate", "num-images", "guidance", "temperature", "seed", "use-plan", "status", "plans-0",
            "images-0", "download"} <= ids
    slider = next(c for c in config["components"] if c["props"].get("elem_id") == "num-images")
    assert slider["props"]["maximum"] == handler.max_images == 4
    notes = [c["props"]["value"] for c in config["components"] if "model-note" in (c["props"].get("elem_classes") or [])]
    assert notes == ['<div class="t2i-note">tiny: untrained &lt;weights&gt;</div>']


# ---------------------------------------------------------------------------------------- command
def _args(*argv):
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_command_defaults_are_local_only():
    args = _args()
    assert (args.host, args.port, args.model, args.compare) == ("127.0.0.1", 7860, None, None)
    assert serve_cli.is_loopback(args.host) and serve_cli.is_loopback("::1") and serve_cli.is_loopback("localhost")
    assert not serve_cli.is_loopback("0.0.0.0")


@pytest.mark.parametrize("argv, words", [(["--port", "0"], "--port"), (["--queue-size", "0"], "--queue-size"),
                                         (["--concurrency-limit", "0"], "--concurrency-limit"),
                                         (["--max-images", "0"], "--max-images")])
def test_command_refuses_bad_limits(argv, words):
    with pytest.raises(ValueError, match=words):
        serve_cli.run(_args(*argv))


def test_default_model_is_the_bundled_checkpoint_or_a_labelled_placeholder(tmp_path, monkeypatch, tiny_checkpoint):
    args = _args("--device", "cpu")
    monkeypatch.setattr(serve, "DEFAULT_MODEL", tmp_path / "no-such-dir")
    placeholder = serve_cli.load_model(None, args)
    assert placeholder.name == "random placeholder"  # the page shows "{name}: {note}"
    assert placeholder.note.startswith("untrained weights")
    assert placeholder.pipeline.policy.num_image_tokens == 64

    monkeypatch.setattr(serve, "DEFAULT_MODEL", tiny_checkpoint)
    bundled = serve_cli.load_model(None, args)
    assert (bundled.name, bundled.source, bundled.note) == ("bundled model", str(tiny_checkpoint), None)


def test_compare_of_the_same_checkpoint_gets_distinct_names(tiny_checkpoint):
    args = _args("--model", str(tiny_checkpoint), "--compare", str(tiny_checkpoint), "--device", "cpu")
    handler = serve_cli.build_handler(args)
    name = tiny_checkpoint.name
    assert [m.name for m in handler.models] == [name, f"{name} (2)"]


def test_command_without_gradio_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` raise ImportError
    with pytest.raises(ValueError, match=r"pip install 't2i-r1\[demo\]'"):
        serve_cli.run(_args())


# ---------------------------------------------------------------------------------------- the server's log
def test_the_server_log_has_no_tracebacks_for_refused_inputs_and_no_share_hint(handler, capfd):
    """A real Gradio server in this process: image counts the page's slider refuses (-1, 0, 100) come back
    as errors to the caller, and the server log has neither their tracebacks nor Gradio's share=True hint."""
    pytest.importorskip("gradio")
    from gradio_client import Client

    from t2i_r1.serve.app import build_app, launch_options

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_app(handler, queue_size=4, concurrency_limit=1)
    demo.launch(prevent_thread_lock=True, **launch_options("127.0.0.1", port))
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for count in (-1, 0, 100):
            with pytest.raises(Exception, match="(less|greater) than (minimum|maximum)"):
                client.predict(PROMPT, count, 5.0, 1.0, 0, True, api_name="/generate")
    finally:
        demo.close()
    log = capfd.readouterr()
    assert "Traceback" not in log.out + log.err
    assert "share=True" not in log.out + log.err

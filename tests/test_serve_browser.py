"""End to end: ``t2i-r1 serve`` on a free loopback port, driven in headless Chromium.

Two tiny random checkpoints are served side by side (``--compare``); the test types a prompt, sets
the number of images, clicks Generate, waits for the images, and checks the plans, the images with a
plan under each, the download (a zip with the JSON) and the refusal of a prompt beyond the context.
Screenshots are written to the test's tmp dir and copied to ``test-artifacts/`` at the project root
(or ``$T2I_R1_TEST_ARTIFACTS``).

Needs Debian's ``chromium`` (or ``$T2I_R1_CHROMIUM``), the ``playwright`` Python package pointed at that
browser (no browser download), and gradio; skips with a message naming what is missing.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from t2i_r1.testing import TinyJanusSpec, save_tiny_janus

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
NUM_IMAGES = 3
SERVER_START_S = 180  # importing gradio and torch on a busy 2-core machine
REQUEST_S = 180


def chromium_path() -> str | None:
    candidate = os.environ.get("T2I_R1_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return candidate if Path(candidate).is_file() else None


def artifacts_dir() -> Path:
    path = Path(os.environ.get("T2I_R1_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def words(k: int) -> str:
    return " ".join(["red cube", "blue sphere", "green cat"][i % 3] for i in range(k))


@pytest.fixture(scope="module")
def browser_path():
    missing = []
    if importlib.util.find_spec("gradio") is None:
        missing.append("gradio (pip install '.[demo]')")
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (pip install playwright; never `playwright install`: the system browser is used)")
    path = chromium_path()
    if path is None:
        missing.append("Debian's chromium (apt-get install -y chromium) or $T2I_R1_CHROMIUM")
    if missing:
        pytest.skip("browser test needs " + ", ".join(missing))
    return path


@pytest.fixture(scope="module")
def server(browser_path, tiny_checkpoint, tmp_path_factory):
    """``python -m t2i_r1.cli serve`` with two tiny checkpoints; yields its URL, stops it afterwards."""
    work = tmp_path_factory.mktemp("serve")
    other = save_tiny_janus(work / "trained-tiny", TinyJanusSpec(seed=1))
    port = free_port()
    log_path = work / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "t2i_r1.cli", "serve", "--model", str(tiny_checkpoint), "--compare", str(other),
        "--port", str(port), "--device", "cpu", "--max-images", "4", "--queue-size", "4",
    ]  # no --host: the default must be loopback, which the URL below relies on
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer within {SERVER_START_S} s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield {"url": url, "process": process, "log": log_path, "models": [tiny_checkpoint.name, other.name]}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def page(server, browser_path, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # a persistent context is how Playwright takes a fresh --user-data-dir
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=browser_path, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            outside = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("data:", server["url"])) else None)
            page.goto(server["url"], wait_until="domcontentloaded")
            page.wait_for_selector("#prompt textarea", timeout=60_000)
            yield page
            assert not outside, f"the page fetched resources from elsewhere: {outside[:5]}"
        finally:
            context.close()


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    shutil.copy(path, artifacts_dir() / name)
    return path


def test_page_streams_plans_and_shows_images_side_by_side(page, server, tmp_path):
    assert page.title() == "T2I-R1"
    for m, name in enumerate(server["models"]):
        assert name in page.inner_text(f"#model-{m}")

    count = page.locator("#num-images input[type=number]")
    count.fill(str(NUM_IMAGES))
    count.press("Enter")
    count.blur()
    page.fill("#prompt textarea", "a red square to the left of a blue circle")
    page.click("#generate")

    # N images with a plan under each, in both columns, and the download
    page.wait_for_function(
        f"""() => [0, 1].every(m => document.querySelectorAll(`#images-${{m}} figure img`).length === {NUM_IMAGES})
               && document.querySelector('#download a') !== null""",
        timeout=REQUEST_S * 1000,
    )
    for m in (0, 1):
        cards = page.locator(f"#images-{m} figure")
        assert cards.count() == NUM_IMAGES
        for k in range(NUM_IMAGES):
            caption = cards.nth(k).locator("figcaption").inner_text()
            assert caption.startswith(f"Plan {k + 1}") and len(caption) > len(f"Plan {k + 1}") + 5
        loaded = page.evaluate(
            f"() => Array.from(document.querySelectorAll('#images-{m} img')).map(i => i.complete && i.naturalWidth)"
        )
        assert loaded == [64] * NUM_IMAGES  # tiny model: 8 * sqrt(64 image tokens) = 64 px, decoded in the browser
        plans = page.input_value(f"#plans-{m} textarea")
        assert plans.startswith("[1] ") and f"[{NUM_IMAGES}] " in plans and f"[{NUM_IMAGES + 1}] " not in plans
    assert "Done in" in page.inner_text("#status")

    # the download: a zip with every image and the JSON of prompt, plans and settings
    href = page.get_attribute("#download a", "href")
    response = page.request.get(href if href.startswith("http") else server["url"].rstrip("/") + href)
    assert response.ok
    with zipfile.ZipFile(io.BytesIO(response.body())) as archive:
        names = set(archive.namelist())
        record = json.loads(archive.read("generations.json"))
    assert {f"model{m}/{k:02d}.png" for m in (1, 2) for k in range(NUM_IMAGES)} | {"generations.json"} == names
    assert record["prompt"] == "a red square to the left of a blue circle"
    assert record["settings"]["num_images"] == NUM_IMAGES and record["settings"]["use_plan"] is True
    assert [m["name"] for m in record["models"]] == server["models"]
    first_plan = page.locator("#images-0 figure figcaption").first.inner_text().removeprefix("Plan 1").strip()
    assert " ".join(record["models"][0]["images"][0]["plan"].split()) == " ".join(first_plan.split())

    shot = screenshot(page, tmp_path, "serve-page.png")
    assert shot.stat().st_size > 10_000

    # a prompt beyond the context is refused with a visible message, and the server lives on
    page.fill("#prompt textarea", words(1200))
    page.click("#generate")
    page.wait_for_selector("#status .t2i-status.error", timeout=REQUEST_S * 1000)
    message = page.inner_text("#status")
    assert "too long" in message and "context of 1024 tokens" in message
    assert page.locator("#images-0 figure").count() == 0, "the previous images are cleared"
    screenshot(page, tmp_path, "serve-page-error.png")
    assert server["process"].poll() is None, f"the server died:\n{server['log'].read_text()}"

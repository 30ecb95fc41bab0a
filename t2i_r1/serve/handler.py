"""The request handler behind the web page: pure Python (no gradio), so it is tested without a browser.

One request = one prompt, N images from each served model (one, or two side by side), all with the same
seed. ``GenerationHandler.stream`` validates the request, then for each model samples N plans (one per
image, as the paper does), streaming them token by token, draws one image per plan, and finally writes
a zip with the PNGs and a JSON of prompt, plans and settings. It yields ``Update`` snapshots that the
page renders; it never raises.

Choices:
1. Sampling runs in a worker thread that posts events to a queue; ``stream`` drains the queue and
   folds every event waiting into one ``Update``, so a slow page never slows sampling down.
2. Same seed, same plans and images as ``t2i-r1 generate --seed S`` for a single prompt: one generator
   seeded with S draws the plans and then the images, exactly as ``T2IR1Pipeline.generate`` does.
   (``pipeline.plan`` and ``pipeline.sample_images`` each seed their own generator, so calling them
   one after the other would not match; that is why this module calls ``sample_plans`` and
   ``generate_rollouts`` with a generator of its own.)
3. Guidance scale and temperature are per request, on copies of the pipeline's configs: the shared
   pipeline is never changed, so concurrent requests cannot see each other's settings.
4. A prompt is checked against every model's context before any sampling, assuming the longest
   possible plan, so an over-long prompt is refused at once with a message that says by how much.
5. Errors become messages: ``RequestError`` (bad input) and the engine's ``ValueError``s are shown as
   they are; anything else is shown with its type and logged with its traceback.
6. When the page goes away (Gradio closes the generator), a cancel flag stops plan sampling at its
   next token.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path

import torch

from t2i_r1.pipeline import Generation, T2IR1Pipeline
from t2i_r1.rollout.rollout import generate_rollouts
from t2i_r1.rollout.sampling import ImageSamplingConfig, sample_plans

log = logging.getLogger(__name__)

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed
WORKER_NAME = "t2i-r1-serve-request"


class RequestError(ValueError):
    """Bad input from the page; its message is shown to the user as it is."""


class Cancelled(Exception):
    """The page closed the request; sampling stops."""


@dataclass(frozen=True)
class RequestSettings:
    """The sampling controls of one request, validated."""

    num_images: int
    guidance_scale: float
    temperature: float
    seed: int
    use_plan: bool


@dataclass
class ServedModel:
    """A model on the page: its label, its pipeline, where it came from and a note shown under its name."""

    name: str
    pipeline: T2IR1Pipeline
    source: str = ""
    note: str | None = None


@dataclass
class Update:
    """What the page shows at one moment of a request.

    ``plans[m]`` is the text of model m's plan box; ``results[m]`` its finished images (None until drawn).
    """

    status: str
    plans: list[str]
    results: list[list[Generation] | None]
    download: Path | None = None
    error: bool = False
    done: bool = False

    def snapshot(self) -> Update:
        # Copies the outer lists only: a finished result list is never changed afterwards, and keeping
        # its identity lets the page render each model's images once.
        return replace(self, plans=list(self.plans), results=list(self.results))


def format_plans(texts: Sequence[str]) -> str:
    """The plan box: the N plans numbered like the images they belong to."""
    return "\n\n".join(f"[{i + 1}] {text}" for i, text in enumerate(texts))


PLAN_OFF_TEXT = "Plan off: the images are drawn from the prompt alone."


def _whole_number(value, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or value is None:
        raise RequestError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{what} must be a whole number from {low} to {high}, got {value!r}") from None
    if not math.isfinite(number) or number != int(number) or not low <= int(number) <= high:
        raise RequestError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)


def _finite(value, what: str, *, minimum: float, strict: bool) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{what} must be a number, got {value!r}") from None
    bad = number <= minimum if strict else number < minimum
    if not math.isfinite(number) or bad:
        raise RequestError(f"{what} must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return number


def validate_request(
    prompt, num_images, guidance_scale, temperature, seed, use_plan, *, max_images: int, max_prompt_chars: int
) -> tuple[str, RequestSettings]:
    """Check the raw values from the page; returns the stripped prompt and the settings."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestError("Please enter a prompt.")
    prompt = prompt.strip()
    if len(prompt) > max_prompt_chars:
        raise RequestError(f"The prompt has {len(prompt)} characters; the page accepts at most {max_prompt_chars}.")
    settings = RequestSettings(
        num_images=_whole_number(num_images, "Number of images", 1, max_images),
        guidance_scale=_finite(guidance_scale, "Guidance scale", minimum=0.0, strict=False),
        temperature=_finite(temperature, "Temperature", minimum=0.0, strict=True),
        seed=_whole_number(seed, "Seed", 0, MAX_SEED),
        use_plan=bool(use_plan),
    )
    return prompt, settings


def check_fits_context(model: ServedModel, prompt: str, use_plan: bool) -> None:
    """Refuse a prompt whose plan prompt or image prompt cannot fit the model's context
    (``JanusPolicy.context_overflow``: the worst case of a plan of ``max_new_tokens`` tokens)."""
    problem = model.pipeline.policy.context_overflow(
        prompt, use_plan=use_plan, plan_tokens=model.pipeline.plan_config.max_new_tokens)
    if problem:
        raise RequestError(f"The prompt is too long for {model.name}: {problem}.")


def request_record(
    prompt: str, settings: RequestSettings, models: Sequence[ServedModel], results: Sequence[list[Generation]]
) -> dict:
    """The JSON of a download: prompt, request settings, and per model its sampling configs and images."""
    record = {
        "prompt": prompt,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": asdict(settings),
        "models": [],
    }
    for index, (model, generations) in enumerate(zip(models, results)):
        sampling = generations[0].settings if generations else {}
        record["models"].append({
            "name": model.name,
            "source": model.source,
            "note": model.note,
            "plan_sampling": sampling.get("plan_sampling"),
            "image_sampling": sampling.get("image_sampling"),
            "images": [
                {"file": image_file(index, k), "prompt": g.prompt, "plan": g.plan, "seed": g.seed}
                for k, g in enumerate(generations)
            ],
        })
    return record


def image_file(model_index: int, image_index: int) -> str:
    return f"model{model_index + 1}/{image_index:02d}.png"


class GenerationHandler:
    """Serves requests for one model, or two compared side by side.

    Args:
        models: the models on the page, in page order.
        max_images: the most images per model a request may ask for.
        max_prompt_chars: prompts longer than this are refused before tokenising.
        downloads_dir: where the zips go (a fresh temporary directory by default).
        keep_downloads: how many recent zips are kept; older ones are deleted.
    """

    def __init__(
        self,
        models: Sequence[ServedModel],
        *,
        max_images: int = 8,
        max_prompt_chars: int = 20_000,
        downloads_dir: str | Path | None = None,
        keep_downloads: int = 64,
    ):
        if not models:
            raise ValueError("GenerationHandler needs at least one model")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must differ, got {names}")
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        self.models = list(models)
        self.max_images = max_images
        self.max_prompt_chars = max_prompt_chars
        self.downloads_dir = Path(downloads_dir) if downloads_dir else Path(tempfile.mkdtemp(prefix="t2i-r1-serve-"))
        self.keep_downloads = keep_downloads

    # ------------------------------------------------------------------ page defaults
    @property
    def default_image_config(self) -> ImageSamplingConfig:
        return self.models[0].pipeline.image_config

    # ------------------------------------------------------------------ requests
    def validate(self, prompt, num_images, guidance_scale, temperature, seed, use_plan) -> tuple[str, RequestSettings]:
        prompt, settings = validate_request(
            prompt, num_images, guidance_scale, temperature, seed, use_plan,
            max_images=self.max_images, max_prompt_chars=self.max_prompt_chars,
        )
        for model in self.models:
            check_fits_context(model, prompt, settings.use_plan)
        return prompt, settings

    def stream(self, prompt, num_images, guidance_scale, temperature, seed, use_plan) -> Iterator[Update]:
        """Yield what the page shows, from the first plan token to the download; never raises."""
        state = Update(status="", plans=[""] * len(self.models), results=[None] * len(self.models))
        try:
            prompt, settings = self.validate(prompt, num_images, guidance_scale, temperature, seed, use_plan)
        except Exception as err:  # noqa: BLE001 - a request must never take the server down
            state.status, state.error, state.done = self._message(err), True, True
            yield state.snapshot()
            return
        if not settings.use_plan:
            state.plans = [PLAN_OFF_TEXT] * len(self.models)
        state.status = f"{self.models[0].name}: starting"
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()
        worker = threading.Thread(
            target=self._work, args=(prompt, settings, events.put, cancel), name=WORKER_NAME, daemon=True
        )
        worker.start()
        try:
            yield state.snapshot()
            finished = False
            while not finished:
                batch = [events.get()]
                while True:  # fold every event already waiting into one update
                    try:
                        batch.append(events.get_nowait())
                    except queue.Empty:
                        break
                for event in batch:
                    finished |= self._apply(state, event)
                yield state.snapshot()
        finally:
            cancel.set()  # the page went away mid-request, or the request is over: either way stop

    def generate(self, prompt, num_images, guidance_scale, temperature, seed, use_plan) -> Update:
        """Run a request to the end and return the final update (scripts and tests)."""
        update = None
        for update in self.stream(prompt, num_images, guidance_scale, temperature, seed, use_plan):
            pass
        return update

    # ------------------------------------------------------------------ the worker thread
    def _work(self, prompt: str, settings: RequestSettings, post: Callable, cancel: threading.Event) -> None:
        try:
            started = time.perf_counter()
            results = []
            for index, model in enumerate(self.models):
                results.append(self._run_model(index, model, prompt, settings, post, cancel))
            path = self.write_download(prompt, settings, results)
            post(("download", path, time.perf_counter() - started))
        except Cancelled:
            post(("cancelled",))
        except Exception as err:  # noqa: BLE001 - shown on the page; the server keeps running
            post(("error", self._message(err)))
        finally:
            post(("end",))

    def _run_model(
        self, index: int, model: ServedModel, prompt: str, settings: RequestSettings, post: Callable,
        cancel: threading.Event,
    ) -> list[Generation]:
        pipe = model.pipeline
        policy = pipe.policy
        image_config = replace(pipe.image_config, guidance_scale=settings.guidance_scale, temperature=settings.temperature)
        started = time.perf_counter()
        generator = torch.Generator(device=policy.device).manual_seed(settings.seed)
        plans = None
        if settings.use_plan:
            def on_step(tokens, done):  # tokens (N, t + 1), done (N,)
                if cancel.is_set():
                    raise Cancelled
                # PAD after EOS and EOS itself are special tokens, dropped by decode_text: no mask needed.
                post(("plan", index, policy.decode_text(tokens, torch.ones_like(tokens)), tokens.shape[1]))

            plans = sample_plans(policy, [prompt], settings.num_images, pipe.plan_config, generator, on_step)
            post(("plan", index, plans.texts, None))
        if cancel.is_set():
            raise Cancelled
        post(("drawing", index))
        rollout = generate_rollouts(
            policy, [prompt], plans_per_prompt=settings.num_images, images_per_plan=1, use_plan=False,
            image_config=image_config, generator=generator, external_plans=plans.texts if plans else None,
        )
        images = policy.to_pil(policy.decode_image_tokens(rollout.images.tokens))
        sampling = {
            "plan_sampling": asdict(pipe.plan_config) if plans else None,
            "image_sampling": asdict(image_config),
        }
        generations = [
            Generation(p, plan, image, settings.seed, sampling)
            for p, plan, image in zip(rollout.sample_prompts, rollout.sample_plans, images)
        ]
        post(("images", index, generations, time.perf_counter() - started))
        return generations

    def _apply(self, state: Update, event: tuple) -> bool:
        """Fold one worker event into the page state; True when the request is over."""
        kind = event[0]
        if kind == "plan":
            _, index, texts, tokens = event
            state.plans[index] = format_plans(texts)
            name = self.models[index].name
            state.status = f"{name}: writing the plans ({tokens} tokens)" if tokens else f"{name}: plans written"
        elif kind == "drawing":
            state.status = f"{self.models[event[1]].name}: drawing the images"
        elif kind == "images":
            _, index, generations, seconds = event
            state.results[index] = generations
            state.status = f"{self.models[index].name}: {len(generations)} images in {seconds:.1f} s"
        elif kind == "download":
            _, path, seconds = event
            state.download = path
            count = len(state.results[0] or [])
            state.status = f"Done in {seconds:.1f} s: {count} image{'s' * (count != 1)} per model. The download holds them with their plans and settings."
        elif kind == "cancelled":
            state.status = "Cancelled."
        elif kind == "error":
            state.status, state.error = event[1], True
        elif kind == "end":
            state.done = True
            return True
        return False

    @staticmethod
    def _message(err: Exception) -> str:
        if isinstance(err, ValueError):  # RequestError and the engine's input errors name the problem
            return str(err)
        if isinstance(err, torch.OutOfMemoryError):
            return "Out of memory: try fewer images. The server is still running."
        log.exception("request failed", exc_info=err)
        return f"Internal error ({type(err).__name__}: {err}). The server is still running; its log has the traceback."

    # ------------------------------------------------------------------ downloads
    def write_download(self, prompt: str, settings: RequestSettings, results: Sequence[list[Generation]]) -> Path:
        """A zip of every image (``model{m}/{k:02d}.png``) and ``generations.json``; returns its path."""
        self.downloads_dir.mkdir(parents=True, exist_ok=True)
        path = self.downloads_dir / f"t2i-r1_seed{settings.seed}_{uuid.uuid4().hex[:8]}.zip"
        record = request_record(prompt, settings, self.models, results)
        tmp = path.with_suffix(".zip.tmp")
        with zipfile.ZipFile(tmp, "w") as archive:
            archive.writestr("generations.json", json.dumps(record, indent=2))
            for m, generations in enumerate(results):
                for k, generation in enumerate(generations):
                    png = BytesIO()
                    generation.image.save(png, format="PNG")
                    # PNG is compressed already: store it rather than deflate it again
                    archive.writestr(image_file(m, k), png.getvalue(), compress_type=zipfile.ZIP_STORED)
        tmp.replace(path)  # the page never serves a half-written zip
        self._prune_downloads()
        return path

    def _prune_downloads(self) -> None:
        zips = sorted(self.downloads_dir.glob("t2i-r1_*.zip"), key=lambda p: p.stat().st_mtime)
        for old in zips[: max(0, len(zips) - self.keep_downloads)]:
            old.unlink(missing_ok=True)

"""Pluggable (V)LM judges: a request (system text, user text, images) in, the judge's reply text out.

Two backends behind one callable:
- ``OpenAIJudge``: any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, SGLang, LM
  Studio...), through ``urllib`` (no new dependency). Base URL from ``url`` or ``T2I_R1_JUDGE_URL``
  (default ``https://api.openai.com/v1``), key from ``T2I_R1_JUDGE_API_KEY`` or ``OPENAI_API_KEY``
  (never from the command line, so it stays out of shell history and results). Images go as PNG data
  URLs; temperature 0; retries with back-off on network errors and 429 / 5xx; requests run in a thread
  pool.
- ``TransformersJudge``: a local ``AutoModelForImageTextToText`` (Qwen2-VL / Qwen2.5-VL, LLaVA,
  LLaVA-OneVision, Idefics...) with its processor's chat template, greedy decoding.

``build_judge("openai:gpt-4o-2024-05-13")`` / ``build_judge("transformers:/path/to/vlm")`` parse the
command-line form. Parsing of the replies (scores) lives with each benchmark.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image

DEFAULT_URL = "https://api.openai.com/v1"
URL_ENV = "T2I_R1_JUDGE_URL"
KEY_ENVS = ("T2I_R1_JUDGE_API_KEY", "OPENAI_API_KEY")


@dataclass
class JudgeRequest:
    text: str
    images: list[Image.Image] = field(default_factory=list)
    system: str | None = None


@runtime_checkable
class Judge(Protocol):
    name: str

    def config(self) -> dict[str, Any]: ...

    def __call__(self, requests: Sequence[JudgeRequest]) -> list[str]:
        """One reply per request, in order. A request that fails after retries gives "" (scored as unparsable)."""
        ...


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chat_messages(request: JudgeRequest) -> list[dict[str, Any]]:
    """OpenAI chat format: optional system message, then the user's text followed by its images."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
    content: list[dict[str, Any]] = [{"type": "text", "text": request.text}]
    content += [{"type": "image_url", "image_url": {"url": png_data_url(im)}} for im in request.images]
    messages.append({"role": "user", "content": content})
    return messages


class OpenAIJudge:
    name = "openai"

    def __init__(
        self,
        model: str,
        url: str | None = None,
        max_tokens: int = 2000,
        temperature: float = 0.0,
        timeout_s: float = 120.0,
        retries: int = 5,
        workers: int = 8,
    ) -> None:
        self.model = model
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self.api_key = next((os.environ[k] for k in KEY_ENVS if os.environ.get(k)), None)
        if self.api_key is None and self.url == DEFAULT_URL:
            raise ValueError(f"the OpenAI judge needs an API key in ${KEY_ENVS[0]} or ${KEY_ENVS[1]}")
        self.max_tokens, self.temperature = max_tokens, temperature
        self.timeout_s, self.retries, self.workers = timeout_s, retries, workers

    def config(self) -> dict[str, Any]:
        # The URL is recorded (it names the judge) but never the key.
        return {"judge": self.name, "model": self.model, "url": self.url, "temperature": self.temperature,
                "max_tokens": self.max_tokens}  # fmt: skip

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            f"{self.url}/chat/completions", data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return json.loads(response.read().decode())

    def ask(self, request: JudgeRequest) -> str:
        payload = {"model": self.model, "messages": chat_messages(request), "temperature": self.temperature,
                   "max_tokens": self.max_tokens}  # fmt: skip
        for attempt in range(self.retries):
            try:
                reply = self._post(payload)
                return reply["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as err:
                if err.code not in (408, 409, 429) and err.code < 500:
                    raise ValueError(f"judge endpoint {self.url} refused the request: HTTP {err.code} {err.reason}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, KeyError, IndexError, json.JSONDecodeError):
                pass
            time.sleep(min(60.0, 2.0**attempt))
        return ""

    def __call__(self, requests: Sequence[JudgeRequest]) -> list[str]:
        if len(requests) <= 1 or self.workers <= 1:
            return [self.ask(r) for r in requests]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self.ask, requests))


class TransformersJudge:
    name = "transformers"

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        device: str | None = None,
        dtype: str | None = None,
        max_new_tokens: int = 256,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from t2i_r1.utils.checkpoints import CheckpointSpec, load_pretrained, resolve_device, resolve_dtype

        spec = CheckpointSpec(
            expected="a transformers vision-language model directory with a chat template (AutoModelForImageTextToText)",
            what="the local judge",
            release="e.g. https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct",
        )
        self.checkpoint, self.max_new_tokens = str(checkpoint), max_new_tokens
        self.processor = load_pretrained(AutoProcessor.from_pretrained, checkpoint, spec)
        model = load_pretrained(AutoModelForImageTextToText.from_pretrained, checkpoint, spec, dtype=resolve_dtype(dtype))
        self.model = model.to(resolve_device(device)).eval()
        self._torch = torch

    def config(self) -> dict[str, Any]:
        return {"judge": self.name, "checkpoint": self.checkpoint, "max_new_tokens": self.max_new_tokens, "decoding": "greedy"}

    def ask(self, request: JudgeRequest) -> str:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
        content = [{"type": "image", "image": im.convert("RGB")} for im in request.images]
        content.append({"type": "text", "text": request.text})
        messages.append({"role": "user", "content": content})
        inputs = self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        ).to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with self._torch.inference_mode():
            tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = tokens[0, inputs["input_ids"].shape[1] :]
        return self.processor.decode(new, skip_special_tokens=True)

    def __call__(self, requests: Sequence[JudgeRequest]) -> list[str]:
        return [self.ask(r) for r in requests]


def build_judge(spec: str | Judge, device: str | None = None, dtype: str | None = None) -> Judge:
    """``"openai:MODEL"`` or ``"transformers:PATH"``; a ``Judge`` object is returned as is."""
    if not isinstance(spec, str):
        return spec
    kind, _, target = spec.partition(":")
    if not target:
        raise ValueError(f"judge {spec!r}: expected 'openai:MODEL' or 'transformers:PATH'")
    if kind == "openai":
        return OpenAIJudge(target)
    if kind == "transformers":
        return TransformersJudge(target, device=device, dtype=dtype)
    raise ValueError(f"judge {spec!r}: unknown kind {kind!r}; expected 'openai' or 'transformers'")

"""Prompt files: the reference JSON-lines schema, or plain text with one prompt per line.

JSON lines (``.jsonl`` / ``.json`` holding one object per line, as the reference's
``geneval_and_t2i_data_final.json``): ``prompt`` is required; ``nouns``, ``attr_nouns``,
``spatial_info``, ``numeracy_info``, ``task_type`` and any other keys travel along as metadata for the
rewards. Plain text: each non-blank line is a prompt. A malformed line raises ``PromptFileError``
naming the file and the line: bytes that are not UTF-8 (a byte-order mark is accepted), JSON errors with
their column, missing fields. Each record remembers its file and line (``PromptRecord.source``), so a
prompt found too long for the model later is reported where it is written (``check_prompt_lengths``),
before any image is drawn.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_LIST_FIELDS = ("nouns", "attr_nouns", "numeracy_info")


class PromptFileError(ValueError):
    def __init__(self, path: Path, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line = path, line


@dataclass
class PromptRecord:
    prompt: str
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    """Where the prompt is written (``"file:line"``), for error messages; None for prompts made in code."""

    def reward_metadata(self) -> dict[str, Any]:
        """What rewards receive: the metadata with the prompt itself."""
        return {"prompt": self.prompt, **self.metadata}


def read_lines(path: str | Path, what: str = "prompt file") -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line of a UTF-8 text file (a leading byte-order mark is
    dropped); a line that is not UTF-8 raises ``PromptFileError`` naming the file, line and byte."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}" if not path.is_dir() else f"{what} {path} is a folder")
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise PromptFileError(path, number, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                                                    f"{err.start + 1}); save the file as UTF-8") from None
            if line.strip():
                yield number, line.rstrip("\r\n")


def parse_json_line(path: str | Path, number: int, line: str) -> dict[str, Any]:
    """One JSON object of a JSON-lines file; errors name the file, the line and the column."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise PromptFileError(Path(path), number, f"not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(obj, dict):
        raise PromptFileError(Path(path), number, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _is_json_lines(path: Path) -> bool:
    if path.suffix in (".jsonl", ".json"):
        return True
    for _, line in read_lines(path):
        return line.lstrip().startswith("{")
    return False


def _parse_json_line(path: Path, number: int, line: str) -> PromptRecord:
    obj = parse_json_line(path, number, line)
    prompt = obj.pop("prompt", None)
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptFileError(path, number, "field 'prompt' is missing or empty")
    for key in _LIST_FIELDS:
        if key in obj and not isinstance(obj[key], list):
            raise PromptFileError(path, number, f"field '{key}' must be a list, got {type(obj[key]).__name__}")
    if "spatial_info" in obj and not isinstance(obj["spatial_info"], dict):
        raise PromptFileError(path, number, "field 'spatial_info' must be an object {obj1, obj2, locality}")
    return PromptRecord(prompt.strip(), obj, f"{path}:{number}")


def iter_prompt_file(path: str | Path) -> Iterator[PromptRecord]:
    path = Path(path)
    json_lines = _is_json_lines(path)
    for number, line in read_lines(path):
        yield _parse_json_line(path, number, line) if json_lines else PromptRecord(line.strip(), {}, f"{path}:{number}")


def load_prompt_file(path: str | Path) -> list[PromptRecord]:
    records = list(iter_prompt_file(path))
    if not records:
        raise PromptFileError(Path(path), 0, "the file holds no prompts")
    return records


def check_prompt_lengths(policy, records: Sequence[PromptRecord], *, use_plan: bool, plan_tokens: int) -> None:
    """Raise ``ValueError`` naming the file and line (or the prompt's position) of the first prompt that
    cannot fit the model's context with ``plan_tokens`` plan tokens and the image tokens after it
    (``JanusPolicy.context_overflow``). Run it on the whole list before any sampling starts."""
    for i, record in enumerate(records):
        problem = policy.context_overflow(record.prompt, use_plan=use_plan, plan_tokens=plan_tokens)
        if problem:
            where = record.source or f"prompt {i + 1}"
            raise ValueError(f"{where}: the prompt is too long: {problem}")

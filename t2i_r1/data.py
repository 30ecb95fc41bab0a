"""Prompt files: the reference JSON-lines schema, or plain text with one prompt per line.

JSON lines (``.jsonl`` / ``.json`` holding one object per line, as the reference's
``geneval_and_t2i_data_final.json``): ``prompt`` is required; ``nouns``, ``attr_nouns``,
``spatial_info``, ``numeracy_info``, ``task_type`` and any other keys travel along as metadata for the
rewards. Plain text: each non-blank line is a prompt. A malformed line raises ``PromptFileError``
naming the file and the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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

    def reward_metadata(self) -> dict[str, Any]:
        """What rewards receive: the metadata with the prompt itself."""
        return {"prompt": self.prompt, **self.metadata}


def _is_json_lines(path: Path) -> bool:
    if path.suffix in (".jsonl", ".json"):
        return True
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def _parse_json_line(path: Path, number: int, line: str) -> PromptRecord:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise PromptFileError(path, number, f"not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(obj, dict):
        raise PromptFileError(path, number, f"expected a JSON object, got {type(obj).__name__}")
    prompt = obj.pop("prompt", None)
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptFileError(path, number, "field 'prompt' is missing or empty")
    for key in _LIST_FIELDS:
        if key in obj and not isinstance(obj[key], list):
            raise PromptFileError(path, number, f"field '{key}' must be a list, got {type(obj[key]).__name__}")
    if "spatial_info" in obj and not isinstance(obj["spatial_info"], dict):
        raise PromptFileError(path, number, "field 'spatial_info' must be an object {obj1, obj2, locality}")
    return PromptRecord(prompt.strip(), obj)


def iter_prompt_file(path: str | Path) -> Iterator[PromptRecord]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    json_lines = _is_json_lines(path)
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            yield _parse_json_line(path, number, line) if json_lines else PromptRecord(line.strip())


def load_prompt_file(path: str | Path) -> list[PromptRecord]:
    records = list(iter_prompt_file(path))
    if not records:
        raise PromptFileError(Path(path), 0, "the file holds no prompts")
    return records

"""Checkpoints: written atomically through accelerate's ``save_state``, keep-last-N, newest-complete resume.

A checkpoint is the directory ``checkpoint-{step:07d}``: accelerate's state (model, optimizer, scheduler,
every RNG) plus ``trainer_state.json`` (step, data position, config, run id). It is written under a
temporary name and renamed once complete, so a run killed while saving leaves the previous checkpoint
intact and never a half-written one that resume would pick. Keep-last-N pruning deletes only older
checkpoints of the same run (same ``run_id``), never another run's nor a newer one.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

from t2i_r1.utils.io import respect_umask

STATE_FILE = "trainer_state.json"
_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if _PATTERN.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=_step)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, step: int, state: dict, keep_last: int) -> Path:
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step:07d}"
    tmp = output_dir / f".tmp-checkpoint-{step:07d}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)  # DeepSpeed writes each process's shards into it, without creating it
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()  # every process's shards are written (DeepSpeed returns before they are)
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
        respect_umask(tmp)
        replace_directory(tmp, final)  # the checkpoint exists only once it is complete
        ours = [p for p in checkpoints(output_dir) if _run_id(p) == state.get("run_id") and _step(p) <= step]
        for old in ours[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def replace_directory(complete: Path, target: Path) -> None:
    """Put the complete directory ``complete`` at ``target`` by renames: a kill leaves either the old
    ``target`` (or a complete one under ``.old-<name>``) or the new one, never a partial one at ``target``."""
    old = target.with_name(f".old-{target.name}")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    complete.rename(target)
    if old.exists():
        shutil.rmtree(old)


def _step(path: Path) -> int:
    return int(_PATTERN.match(path.name).group(1))


def _run_id(path: Path) -> str | None:
    try:
        return json.loads((path / STATE_FILE).read_text()).get("run_id")
    except (OSError, json.JSONDecodeError):
        return None


def load_checkpoint(accelerator: Accelerator, path: str | Path) -> dict:
    path = Path(path)
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text())

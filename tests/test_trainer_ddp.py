"""Two CPU processes (gloo) under accelerate keep identical weights after a few GRPO steps."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "scripts" / "ddp_steps.py"


@pytest.mark.slow
def test_two_processes_keep_identical_weights(tmp_path):
    # accelerate's own launcher hands multi-CPU runs to mpirun; torchrun + ACCELERATE_USE_CPU gives gloo DDP.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true",
           "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(SCRIPT), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    assert rank0.keys() == rank1.keys() and rank0
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    # each process drew its own prompts, and training moved the weights
    assert (tmp_path / "rank0.prompts").read_text() != (tmp_path / "rank1.prompts").read_text()
    assert (tmp_path / "run" / "log.jsonl").is_file()

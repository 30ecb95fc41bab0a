"""What training needs from the distributed engine, in one place: full weights where code reads them
directly, full state dicts for the export, and processes that take the same branches.

Engines (what accelerate's ``distributed_type`` becomes here, ``engine(accelerator)``):
    "replicated"  one process, DDP, DeepSpeed ZeRO-1/2: every process holds every weight
    "fsdp2"       FSDP2 (``fully_shard``): parameters are DTensor shards outside a forward
    "zero3"       DeepSpeed ZeRO-3: parameters are empty placeholders outside a gather
FSDP1 (``fsdp_version: 1``) is refused with an error naming the fix: it replaces the decoder layers with
wrappers whose forward cannot run while the parameters are summoned, so the sampler could not run.

Choices, and how they differ from the reference implementation (which runs ZeRO-3 and samples through
``model.generate`` under DeepSpeed's per-module fetch hooks):
1. ``full_weights`` gathers every parameter once for the whole rollout (plans, image tokens, VQ decode)
   and releases them before the update, as TRL's ``unwrap_model_for_generation`` does: the sampler and
   the fast decoder (``rollout/fast_decode.py``, which reads weights with ``F.linear`` / ``F.rms_norm``)
   then see ordinary full tensors, and no collective runs inside sampling, so processes whose plans end
   at different lengths never wait for each other. Cost: one full copy of the weights per device during
   the rollout (estimated by ``t2i_r1.train.memory``).
2. Control flow that decides whether a forward or backward runs is agreed across processes
   (``any_process``, ``agreed_max``): a collective inside a forward (FSDP's all-gathers, ZeRO-3's fetches)
   or a backward (DDP's all-reduce) hangs when one process skips it.
3. Logged statistics are averaged over a key set every process shares (``reduce_stats``): the union of
   the processes' keys, NaN where a process has no value, averaged over the processes where finite.
4. Micro-batches accumulate gradients without a step under every engine (``accumulating``): DDP and FSDP
   skip the gradient reduction (``no_sync``); DeepSpeed, whose engine steps inside ``backward`` at each
   gradient-accumulation boundary, is told that only the last micro-batch is one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType


def engine(accelerator: Accelerator) -> str:
    """"replicated", "fsdp2" or "zero3" (see the module docstring); raises for FSDP1."""
    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        if not accelerator.is_fsdp2:
            raise ValueError(
                "FSDP1 (fsdp_version: 1) cannot sample: its wrapped decoder layers do not run while the full "
                "parameters are summoned. Set fsdp_version: 2 in the accelerate config (configs/accelerate/8gpu_fsdp.yaml)"
            )
        return "fsdp2"
    if kind == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3:
        return "zero3"
    return "replicated"


# ---------------------------------------------------------------------------------------------- weights
@contextmanager
def full_weights(accelerator: Accelerator, module: torch.nn.Module) -> Iterator[None]:
    """Inside the block every parameter of the prepared ``module`` is a full, ordinary tensor (on every
    process), so code may call any submodule or read any weight; on exit they are sharded again.

    Nothing to do for a replicated engine. No gradient may be taken inside (it is the rollout's context)."""
    kind = engine(accelerator)
    if kind == "fsdp2":
        with _fsdp2_unsharded(module):
            yield
    elif kind == "zero3":
        with _zero3_gathered(module):
            yield
    else:
        yield


@contextmanager
def _fsdp2_unsharded(module: torch.nn.Module) -> Iterator[None]:
    """All-gather every FSDP2 unit of ``module`` and keep it gathered through forwards until the exit.

    Calling a submodule directly (the sampler calls the backbone, the heads and the VQ decoder, never the
    prepared root) skips the root's forward, which is where FSDP2 initialises itself: do that first, else
    the first decoder layer to run would take itself for the root."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    root = units[0]  # modules() lists the root first
    root._get_fsdp_state()._lazy_init()  # no public API; idempotent (a no-op once the root has run)
    # whether each unit reshards after its forward, to restore it (the root is set not to by FSDP itself)
    reshards = [any(g.post_forward_mesh_info is not None for g in m._get_fsdp_state()._fsdp_param_groups)
                for m in units]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)  # forwards inside the block keep them gathered
        unit.unshard()
    try:
        yield
    finally:
        for unit, reshard in zip(units, reshards):
            unit.reshard()
            unit.set_reshard_after_forward(reshard, recurse=False)


@contextmanager
def _zero3_gathered(engine_module: torch.nn.Module) -> Iterator[None]:
    """Gather every ZeRO-3 partition for the block, with DeepSpeed's per-module fetch/release hooks taken
    off meanwhile (they would partition a parameter again after each submodule's forward); the same
    sequence as TRL's ``unwrap_model_for_generation``."""
    import deepspeed

    offload = engine_module.optimizer.parameter_offload if hasattr(engine_module.optimizer, "parameter_offload") \
        else engine_module.optimizer
    with deepspeed.zero.GatheredParameters(list(engine_module.module.parameters()), modifier_rank=None):
        for param in engine_module.module.parameters():
            param.ds_active_sub_modules.clear()
        for hook in [*offload.forward_hooks, *offload.backward_hooks]:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield
        finally:
            offload._register_deepspeed_module(offload.module)


def full_state_dict(accelerator: Accelerator, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unwrapped ``module``'s state dict with full tensors on the main process ({} elsewhere under a
    sharded engine); every process must call it (it gathers). Tensors never share storage with the
    trained weights (the export merges LoRA into them in place)."""
    state = accelerator.get_state_dict(module, unwrap=True)  # FSDP: full, offloaded to CPU; ZeRO-3: 16-bit
    if engine(accelerator) == "replicated":
        state = {k: v.detach().clone() for k, v in state.items()} if accelerator.is_main_process else {}
    return state


@contextmanager
def local_construction() -> Iterator[None]:
    """Build models inside the block as plain local modules: transformers otherwise builds every model under
    DeepSpeed's ``zero.Init`` once ZeRO-3 is configured, a collective that only the main process would join."""
    import transformers.integrations.deepspeed as hf_deepspeed

    saved, hf_deepspeed._hf_deepspeed_config_weak_ref = hf_deepspeed._hf_deepspeed_config_weak_ref, None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def prepare_deepspeed_batch_size(accelerator: Accelerator) -> None:
    """DeepSpeed's config needs batch sizes that accelerate reads from a dataloader; the trainers pass none.
    DeepSpeed uses them only for its own dataloader and throughput logs, so they are set to one sample per
    process and one accumulation step: the trainers mark the accumulation boundary themselves
    (``accumulating``)."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    for key, value in (("train_micro_batch_size_per_gpu", 1), ("train_batch_size", accelerator.num_processes),
                       ("gradient_accumulation_steps", 1)):
        if config.get(key, "auto") == "auto":
            config[key] = value


@contextmanager
def accumulating(accelerator: Accelerator, module: torch.nn.Module, last: bool) -> Iterator[None]:
    """The context of one micro-batch's forward and backward: gradients accumulate without being reduced or
    stepped, except on the ``last`` micro-batch of an optimisation pass."""
    if last:
        yield
    elif accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.sync_gradients = False  # the engine's backward then neither steps nor zeroes
        try:
            yield
        finally:
            accelerator.sync_gradients = True
    else:
        with accelerator.no_sync(module):
            yield


# ---------------------------------------------------------------------------------------------- agreement
def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """True on every process when ``flag`` is True on any (a collective: every process must call it)."""
    return bool(agreed_max(accelerator, int(flag)))


def agreed_max(accelerator: Accelerator, value: int) -> int:
    """The largest ``value`` over the processes, on every process (a collective)."""
    if accelerator.num_processes == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=accelerator.device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return int(tensor.item())


def reduce_stats(accelerator: Accelerator, stats: Mapping[str, float]) -> dict[str, float]:
    """The mean of each statistic over the processes, on every process (a collective).

    The key set is the union of every process's keys, so the all-reduce has one shape everywhere; a
    process without a key, or with a non-finite value, is left out of that key's mean (NaN when no
    process has a finite value)."""
    if accelerator.num_processes == 1:
        return {k: float(v) for k, v in stats.items()}
    from accelerate.utils import gather_object

    keys = sorted({k for keys in gather_object([sorted(stats)]) for k in keys})
    values = torch.tensor([float(stats.get(k, math.nan)) for k in keys], dtype=torch.float64,
                          device=accelerator.device)  # (S,)
    finite = torch.isfinite(values)
    summed = torch.stack([torch.where(finite, values, torch.zeros_like(values)), finite.double()])  # (2, S)
    torch.distributed.all_reduce(summed)
    means = torch.where(summed[1] > 0, summed[0] / summed[1].clamp(min=1), torch.full_like(summed[0], math.nan))
    return dict(zip(keys, means.tolist()))


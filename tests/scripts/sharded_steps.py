"""Run by tests/test_sharded_training.py: the same few GRPO steps under one engine, on 1 or 2 CPU processes.

    python tests/scripts/sharded_steps.py OUT single SCENARIO
    torchrun --nproc_per_node 2 tests/scripts/sharded_steps.py OUT ddp|fsdp|zero3 SCENARIO

One scenario per launch (a finished run closes its process group), results in OUT/{engine}-{scenario}.safetensors (written by the main process):
- ``straight``: 3 steps of full fine-tuning (KL to a frozen copy, 2 micro-batches per step), a checkpoint
  after every step; the trained parameters, gathered.
- ``resumed``: a new trainer started on a copy of ``straight``'s checkpoint-0000002, run to step 3.
- ``lora``: 2 steps of LoRA; its export ``final/`` (gathered and merged) is what the test compares.
- ``skip``: ``drop_zero_variance_groups`` with a reward that is constant on process 0 only, so process 0
  has no group to train on; every process writes its own copy of the trained parameters.
In all but ``skip`` every process trains on the same prompt with the same sampling seed at each step, so
the processes' mean gradient is the single process's gradient and the weights must agree across engines.

accelerate 1.15 turns FSDP on only for GPU-like distributed types (``state.py``: MULTI_CPU is not in the
list), so for ``fsdp`` the script builds a CPU accelerator and sets its distributed type and FSDP plugin
(FSDP2, the settings of configs/accelerate/8gpu_fsdp.yaml) before anything is prepared; accelerate's own
``fsdp2_prepare_model``, ``no_sync``, ``clip_grad_norm_``, ``save_state`` / ``load_state`` and
``get_state_dict`` then run unchanged. DeepSpeed needs no such step: with ``ACCELERATE_USE_DEEPSPEED=true``
and a gloo process group it runs ZeRO-3 on CPU processes as it is.
"""

import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from t2i_r1.data import PromptRecord
from t2i_r1.rollout.sampling import PlanSamplingConfig
from t2i_r1.testing import TinyJanusSpec, build_tiny_janus
from t2i_r1.train import BiCoTGRPOTrainer, GRPOConfig, ModelConfig, OptimConfig, RewardSpec, RolloutConfig, TrainConfig
from t2i_r1.train.config import LoraSettings
from t2i_r1.train.sharding import full_state_dict

PROMPTS = [PromptRecord(p) for p in ("a red cube", "two cats", "a blue ball", "three green mugs")]


class Brightness:
    name = "brightness"

    def __init__(self, constant: bool = False):
        self.constant = constant

    def __call__(self, prompts, images, metadata):
        if self.constant:
            return [0.5] * len(images)
        return [sum(im.convert("L").tobytes()) / (255 * im.width * im.height) for im in images]


def make_accelerator(engine: str) -> Accelerator:
    if engine == "zero3":
        from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

        plugin = DeepSpeedPlugin(zero_stage=3, gradient_clipping=1.0, zero3_init_flag=False,
                                 zero3_save_16bit_model=True)  # configs/accelerate/8gpu_zero3.yaml
        return Accelerator(deepspeed_plugin=plugin, kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])
    accelerator = Accelerator(cpu=True)
    if engine == "fsdp":
        from accelerate import FullyShardedDataParallelPlugin
        from accelerate.utils import DistributedType

        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=["LlamaDecoderLayer"],
            state_dict_type="SHARDED_STATE_DICT", reshard_after_forward=True, cpu_ram_efficient_loading=False,
        )
        accelerator.state.distributed_type = DistributedType.FSDP
    return accelerator


def make_policy():
    return build_tiny_janus(TinyJanusSpec(hidden=64, heads=2, image_tokens=16, codebook=64))


def make_trainer(engine: str, run: Path, *, lora: bool = False, skip: bool = False, steps: int = 3, accelerator=None,
                 policy=None):
    config = TrainConfig(
        model=ModelConfig(path="in-memory", lora=LoraSettings(r=4, alpha=8) if lora else None),
        data="in-memory", output_dir=str(run),
        rollout=RolloutConfig(plans_per_prompt=4, plan=PlanSamplingConfig(max_new_tokens=6)),
        rewards={"brightness": RewardSpec()}, grpo=GRPOConfig(beta=0.01, drop_zero_variance_groups=skip),
        optim=OptimConfig(lr=1e-3), steps=steps, prompts_per_step=1, micro_batch_size=2,
        save_every=0 if lora or skip else 1, keep_last=5, image_log_every=0,
    )
    # built before a ZeRO-3 accelerator exists: transformers' weight initialisation sees ZeRO-3 afterwards
    policy = policy or make_policy()
    accelerator = accelerator or make_accelerator(engine)
    constant = skip and accelerator.process_index == 0
    trainer = BiCoTGRPOTrainer(config, policy=policy, rewards={"brightness": Brightness(constant)}, prompts=PROMPTS,
                               accelerator=accelerator)
    if not skip:
        def same_data_everywhere(step: int):
            torch.manual_seed(1000 + step)  # the same rollout on every process, and after a resume
            return [PROMPTS[step % len(PROMPTS)]]

        trainer.prompts_for_step = same_data_everywhere
    return trainer


def train_and_save(trainer, path: Path) -> None:
    """Train to the end and write the trained parameters, full, from the main process (after the last step:
    the end of ``train`` closes the process group)."""
    trainer.train(on_step=lambda result: result.step == trainer.config.steps and save_trained(trainer, path))


def save_trained(trainer, path: Path) -> None:
    """The trained parameters, full, from the main process."""
    names = {f"model.{n}" for n, p in trainer.trained_model.named_parameters() if p.requires_grad}
    state = full_state_dict(trainer.accelerator, trainer.module)
    if trainer.accelerator.is_main_process:
        save_file({k: v.float().contiguous() for k, v in state.items() if k in names}, str(path))


def straight(out: Path, engine: str) -> None:
    trainer = make_trainer(engine, out / f"{engine}-straight")
    train_and_save(trainer, out / f"{engine}-straight.safetensors")


def resumed(out: Path, engine: str) -> None:
    resumed_run = out / f"{engine}-resumed"
    policy = make_policy()
    accelerator = make_accelerator(engine)
    if accelerator.is_main_process:
        resumed_run.mkdir(parents=True, exist_ok=True)
        shutil.copytree(out / f"{engine}-straight" / "checkpoint-0000002", resumed_run / "checkpoint-0000002")
    accelerator.wait_for_everyone()
    resumed = make_trainer(engine, resumed_run, accelerator=accelerator, policy=policy)
    assert resumed.step == 2, resumed.step
    train_and_save(resumed, out / f"{engine}-resumed.safetensors")


def lora(out: Path, engine: str) -> None:
    lora = make_trainer(engine, out / f"{engine}-lora", lora=True, steps=2)
    lora.train()


def skip(out: Path, engine: str) -> None:
    skip = make_trainer(engine, out / f"{engine}-skip", skip=True, steps=2)
    train_and_save(skip, out / f"{engine}-skip.safetensors")
    if engine in ("single", "ddp"):  # replicated: each process's own copy too
        own = {k: v.detach().contiguous() for k, v in skip.trained_model.named_parameters() if v.requires_grad}
        save_file(own, str(out / f"{engine}-skip-rank{skip.accelerator.process_index}.safetensors"))


SCENARIOS = {"straight": straight, "resumed": resumed, "lora": lora, "skip": skip}

if __name__ == "__main__":
    import faulthandler

    faulthandler.dump_traceback_later(240, exit=True)  # a hang shows where it waits, then ends the run
    SCENARIOS[sys.argv[3]](Path(sys.argv[1]), sys.argv[2])

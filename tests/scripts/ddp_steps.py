"""Run by tests/test_trainer_ddp.py under ``accelerate launch --num_processes 2 --cpu``: a few GRPO steps on a
tiny Janus, then every rank writes its trained weights so the test can compare them."""

import sys
from pathlib import Path

from safetensors.torch import save_file

from t2i_r1.data import PromptRecord
from t2i_r1.rollout.sampling import PlanSamplingConfig
from t2i_r1.testing import TinyJanusSpec, build_tiny_janus
from t2i_r1.train import BiCoTGRPOTrainer, ModelConfig, OptimConfig, RewardSpec, RolloutConfig, TrainConfig


class Brightness:
    name = "brightness"

    def __call__(self, prompts, images, metadata):
        return [sum(im.convert("L").tobytes()) / (255 * im.width * im.height) for im in images]


def main(out: Path) -> None:
    config = TrainConfig(
        model=ModelConfig(path="in-memory"), data="in-memory", output_dir=str(out / "run"),
        rollout=RolloutConfig(plans_per_prompt=4, plan=PlanSamplingConfig(max_new_tokens=6)),
        rewards={"brightness": RewardSpec()}, optim=OptimConfig(lr=1e-3), steps=3, prompts_per_step=1,
        micro_batch_size=2, save_every=0, image_log_every=0,
    )
    prompts = [PromptRecord(p) for p in ("a red cube", "two cats", "a blue ball", "three green mugs")]
    trainer = BiCoTGRPOTrainer(config, policy=build_tiny_janus(TinyJanusSpec(hidden=64, heads=2, image_tokens=16, codebook=64)),
                               rewards={"brightness": Brightness()}, prompts=prompts)
    seen = trainer.prompts_for_step(0)
    trainer.train()
    rank = trainer.accelerator.process_index
    weights = {k: v.detach().contiguous() for k, v in trainer.policy.model.named_parameters() if v.requires_grad}
    save_file(weights, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.prompts").write_text("\n".join(r.prompt for r in seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

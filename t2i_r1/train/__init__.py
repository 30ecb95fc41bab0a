"""The BiCoT-GRPO trainer and its configuration."""

from t2i_r1.train.config import GRPOConfig, ModelConfig, OptimConfig, RewardSpec, RolloutConfig, TrainConfig
from t2i_r1.train.trainer import BiCoTGRPOTrainer, StepResult

__all__ = ["BiCoTGRPOTrainer", "GRPOConfig", "ModelConfig", "OptimConfig", "RewardSpec", "RolloutConfig",
           "StepResult", "TrainConfig"]

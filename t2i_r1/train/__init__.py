"""Training: the BiCoT-GRPO and SFT trainers, the training loop they share, and their configuration.

``t2i_r1.train.sft`` (the SFT trainer) is imported on use, not here.
"""

from t2i_r1.train.batch import PlanRows, SampleRows, TrainingBatch
from t2i_r1.train.config import GRPOConfig, ModelConfig, OptimConfig, RewardSpec, RolloutConfig, TrainConfig
from t2i_r1.train.loop import StepResult, TrainingLoop
from t2i_r1.train.trainer import BiCoTGRPOTrainer

__all__ = ["BiCoTGRPOTrainer", "GRPOConfig", "ModelConfig", "OptimConfig", "PlanRows", "RewardSpec", "RolloutConfig",
           "SampleRows", "StepResult", "TrainConfig", "TrainingBatch", "TrainingLoop"]

"""Rewards: vision experts and programmatic rewards behind one callable interface.

Every reward is registered here by name and imported only when built (``build_reward(name, ...)``).
"""

from t2i_r1.rewards.base import REWARD_REGISTRY, Metadata, RewardFunction, build_reward, register_reward

register_reward("hps", "t2i_r1.rewards.hps:HPSv21Reward")
register_reward("clip", "t2i_r1.rewards.clip_score:CLIPScoreReward")
register_reward("aesthetic", "t2i_r1.rewards.aesthetic:AestheticReward")
register_reward("git_vqa", "t2i_r1.rewards.vqa:GITVQAReward")
register_reward("blip_vqa", "t2i_r1.rewards.vqa:BLIPVQAReward")
register_reward("gdino", "t2i_r1.rewards.grounding_dino:GroundingDINOReward")
register_reward("orm", "t2i_r1.rewards.orm:OutputRewardModel")
register_reward("pixel_stat", "t2i_r1.rewards.pixel:PixelStatReward")
register_reward("programmatic", "t2i_r1.rewards.programmatic:ProgrammaticReward")

__all__ = ["REWARD_REGISTRY", "Metadata", "RewardFunction", "build_reward", "register_reward"]

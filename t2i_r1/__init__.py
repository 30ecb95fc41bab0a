"""T2I-R1: reasoning-enhanced text-to-image generation trained with BiCoT-GRPO.

Layers, each in its own subpackage and knowing only the ones above it:
    policy    model adapters around transformers' Janus (loading, prompts, heads)
    rollout   sampling of plans and image tokens, teacher-forced log-probs (no optimizer)
    rewards   vision experts and programmatic rewards (no training)
    grpo      pure tensor math: advantages, ratios, clipping, KL, loss aggregation
    trainer   wires the above under accelerate
    eval      benchmarks
    cli       the ``t2i-r1`` command
"""

__version__ = "0.1.0"

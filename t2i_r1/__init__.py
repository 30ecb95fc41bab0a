"""T2I-R1: reasoning-enhanced text-to-image generation trained with BiCoT-GRPO.

Layers, each in its own subpackage or module and knowing only the ones above it:
    policy    model adapters around transformers' Janus (loading, prompts, heads, assembly from configs)
    rollout   sampling of plans and image tokens, teacher-forced log-probs (no optimizer)
    rewards   vision experts and programmatic rewards (no training)
    grpo      pure tensor math: advantages, ratios, clipping, KL, loss aggregation
    train     the training batch, the loop shared by the BiCoT-GRPO and SFT trainers, both trainers
    pipeline  the generation API and its settings (``PipelineConfig``)
    eval      benchmarks and the evaluation runner
    serve     the web page
    cli       the ``t2i-r1`` command, one module per subcommand
Beside them: ``shapeworld`` (a small world with exact ground truth), ``testing`` (tiny seeded models for
tests and smoke runs) and ``utils`` (grids, atomic writes, checkpoint loading, image batches).
"""

__version__ = "0.1.0"

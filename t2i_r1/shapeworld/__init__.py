"""ShapeWorld: a small compositional world with exact ground truth, where BiCoT-GRPO can be shown
to work on a CPU. ``world`` draws scenes, ``grammar`` draws prompts and plans with their ground truth,
``phrasing`` words prompts in phrasing families, ``evaluator`` detects objects in images and scores
them against a prompt, ``protocol`` is the one way every command scores a model."""

from t2i_r1.shapeworld.evaluator import (
    Detection,
    Detector,
    DetectorConfig,
    Evaluation,
    ShapeWorldEvaluator,
    evaluate,
    partial_reward,
    reward,
    score,
    summarize,
)
from t2i_r1.shapeworld.grammar import (
    CATEGORIES,
    Example,
    ObjectSpec,
    Plan,
    PlanItem,
    PlanParseError,
    Prompt,
    Relation,
    Riddle,
    RiddleUse,
    Verdict,
    canonical_example,
    check_plan,
    judge,
    parse_plan,
    prompt_set,
    sample_example,
    sample_prompt,
    sample_scene,
    scene_for_plan,
    split_of,
)
from t2i_r1.shapeworld.phrasing import (
    ALL_FAMILIES,
    FAMILIES,
    PRETRAIN_FAMILIES,
    RIDDLES,
    TRAIN_FAMILIES,
    Family,
    vocabulary,
    words,
)
from t2i_r1.shapeworld.world import (
    COLORS,
    DEFAULT_WORLD,
    PALETTE,
    REGIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    TEXTURES,
    LayoutError,
    Scene,
    SceneObject,
    WorldConfig,
    random_scene,
    relation_holds,
    render,
    render_image,
)

__all__ = [
    "ALL_FAMILIES", "FAMILIES", "Family", "PRETRAIN_FAMILIES", "TRAIN_FAMILIES", "CATEGORIES", "COLORS", "DEFAULT_WORLD", "PALETTE", "REGIONS", "RELATIONS", "RIDDLES", "SHAPES", "SIZES",
    "TEXTURES", "Detection", "Detector", "DetectorConfig", "Evaluation", "Example", "LayoutError", "ObjectSpec",
    "Plan", "PlanItem", "PlanParseError", "Prompt", "Relation", "Riddle", "RiddleUse", "Scene", "SceneObject",
    "ShapeWorldEvaluator", "Verdict", "WorldConfig", "canonical_example", "check_plan", "evaluate", "judge",
    "parse_plan", "partial_reward", "prompt_set", "random_scene", "relation_holds", "render", "render_image",
    "reward", "sample_example", "sample_prompt", "sample_scene", "scene_for_plan", "score", "split_of",
    "summarize", "vocabulary", "words",
]  # fmt: skip

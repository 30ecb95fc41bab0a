"""RewardEnsemble (weighted sum over applicable rewards) and ProgrammaticReward."""

import math
import textwrap

import pytest
import torch
from PIL import Image

from t2i_r1.rewards import REWARD_REGISTRY, RewardFunction, build_reward
from t2i_r1.rewards.ensemble import EnsembleScores, RewardEnsemble, RewardError
from t2i_r1.rewards.programmatic import ProgrammaticReward, load_callable
from t2i_r1.utils.checkpoints import resolve_device

NAN = math.nan
PROMPTS = ["a red square", "two circles", "a cat"]
IMAGES = [Image.new("RGB", (8, 8), color) for color in ("red", "blue", "green")]
METADATA = [{"task_type": "color"}, {"task_type": "numeracy"}, {"task_type": "object"}]


class Fixed:
    """A reward returning given values and counting its calls."""

    def __init__(self, name, values):
        self.name, self.values, self.calls = name, values, 0

    def __call__(self, prompts, images, metadata):
        self.calls += 1
        return list(self.values)


@pytest.fixture
def helper_module(tmp_path, monkeypatch):
    """A module on sys.path with a score function and a reward class, named in 'module:attr' strings."""
    (tmp_path / "ensemble_helpers.py").write_text(
        textwrap.dedent(
            '''
            import torch

            def red_share(prompt, image, metadata):
                r, g, b = image.getpixel((0, 0))
                return r / 255 if metadata.get("task_type") != "object" else None

            def prompt_lengths(prompts, images, metadata):
                return [len(p) for p in prompts]

            class Probe:
                def __init__(self, value=1.0, device=None):
                    self.name, self.value, self.device = "probe", value, device

                def __call__(self, prompts, images, metadata):
                    return [self.value] * len(prompts)
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(REWARD_REGISTRY, "probe", "ensemble_helpers:Probe")
    return "ensemble_helpers"


def test_total_is_the_weighted_sum_over_applicable_rewards():
    a = Fixed("a", [1.0, 2.0, NAN])
    b = Fixed("b", [0.5, NAN, NAN])
    scores = RewardEnsemble({"a": (a, 1.0), "b": (b, 2.0)}, device="cpu")(PROMPTS, IMAGES, METADATA)
    assert isinstance(scores, EnsembleScores)
    # sample 0: 1 * 1.0 + 2 * 0.5 = 2.0; sample 1: b does not apply -> 1 * 2.0 = 2.0; sample 2: none -> NaN
    assert scores.total[:2].tolist() == [2.0, 2.0]
    assert math.isnan(scores.total[2])
    assert scores.per_reward["b"][0] == 0.5 and scores.per_reward["b"][1:].isnan().all()
    assert scores.per_reward["a"].shape == (3,) and scores.per_reward["a"].dtype == torch.float32
    assert scores.weights == {"a": 1.0, "b": 2.0}
    assert a.calls == 1 and b.calls == 1  # one call per reward per batch
    # means over applicable samples: a (1 + 2) / 2 = 1.5, b 0.5
    assert scores.means() == {"a": 1.5, "b": 0.5}
    assert set(scores.seconds) == {"a", "b"}


def test_bare_reward_gets_weight_one_and_none_counts_as_not_applicable():
    scores = RewardEnsemble({"a": Fixed("a", [0.25, None, 1.0])}, device="cpu")(PROMPTS, IMAGES, METADATA)
    assert scores.total[0] == 0.25 and math.isnan(scores.total[1]) and scores.total[2] == 1.0


def test_built_from_config_through_the_registry(helper_module):
    ensemble = RewardEnsemble(
        {
            "prog": ({"type": "programmatic", "score": f"{helper_module}:red_share"}, 0.5),
            "probe": {"weight": 3, "value": 0.1},  # YAML form; type defaults to the entry's name
        },
        device="cpu",
    )
    scores = ensemble(PROMPTS, IMAGES, METADATA)
    # red_share: red 255/255 = 1.0, blue 0.0, object prompt -> None -> NaN; probe 0.1 everywhere
    assert scores.per_reward["prog"][:2].tolist() == [1.0, 0.0] and math.isnan(scores.per_reward["prog"][2])
    # totals: 0.5 * 1.0 + 3 * 0.1 = 0.8; 0.5 * 0 + 0.3 = 0.3; 0.3 (prog n/a)
    assert scores.total.tolist() == pytest.approx([0.8, 0.3, 0.3])
    # rewards built from configs get the ensemble's device unless the config names one
    assert ensemble.entries["probe"].reward.device == torch.device("cpu")
    named = RewardEnsemble({"probe": {"device": "meta"}}, device="cpu")
    assert named.entries["probe"].reward.device == "meta"


def test_ensemble_rejects_bad_specs_and_bad_outputs():
    with pytest.raises(ValueError, match="at least one"):
        RewardEnsemble({})
    with pytest.raises(ValueError, match="weight"):
        RewardEnsemble({"a": (Fixed("a", [1, 1, 1]), "heavy")}, device="cpu")
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        RewardEnsemble({"nope": {}}, device="cpu")
    short = RewardEnsemble({"short": Fixed("short", [1.0])}, device="cpu")
    with pytest.raises(RewardError, match="reward 'short' failed on a batch of 3 images: ValueError: returned 1 values"):
        short(PROMPTS, IMAGES, METADATA)


def test_default_device_is_this_process_device():
    # no launcher and no GPU here: accelerate's PartialState reports the CPU
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device(None).type == expected.type
    assert resolve_device("cpu") == torch.device("cpu")


# --- ProgrammaticReward ----------------------------------------------------------------------------


def test_programmatic_wraps_a_per_image_function(helper_module):
    reward = build_reward("programmatic", score=f"{helper_module}:red_share")
    assert isinstance(reward, RewardFunction) and reward.name == "programmatic"
    values = reward(PROMPTS, IMAGES, METADATA)
    assert values[:2] == [1.0, 0.0] and math.isnan(values[2])


def test_programmatic_batched_function_and_custom_name(helper_module):
    reward = ProgrammaticReward(f"{helper_module}:prompt_lengths", batched=True, name="length")
    assert reward.name == "length"
    assert reward(PROMPTS, IMAGES, METADATA) == [12.0, 11.0, 5.0]  # len("a red square") = 12 ...


def test_programmatic_accepts_a_callable():
    reward = ProgrammaticReward(lambda prompt, image, meta: len(meta))
    assert reward(PROMPTS, IMAGES, METADATA) == [1.0, 1.0, 1.0]


def test_programmatic_errors_name_the_problem(helper_module):
    with pytest.raises(ValueError, match="package.module:function"):
        load_callable("no_colon_here")
    with pytest.raises(ValueError, match="cannot import"):
        load_callable("surely_not_a_module_xyz:f")
    with pytest.raises(ValueError, match="no attribute 'missing'"):
        load_callable(f"{helper_module}:missing")
    bad = ProgrammaticReward(lambda prompt, image, meta: "high")
    with pytest.raises(TypeError, match="'high'"):
        bad(PROMPTS, IMAGES, METADATA)
    short = ProgrammaticReward(lambda prompts, images, meta: [1.0], batched=True)
    with pytest.raises(ValueError, match="1 values for 3 images"):
        short(PROMPTS, IMAGES, METADATA)

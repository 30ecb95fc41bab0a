"""The plan-failure breakdown: its arithmetic on hand-made plans, and the command on the packaged model."""

from __future__ import annotations

import json

import pytest

from t2i_r1.shapeworld.grammar import ObjectSpec, Prompt, Relation
from t2i_r1.shapeworld.model import DEFAULT_ASSET


def test_breakdown_shares_and_success_by_kind():
    from benchmarks.shapeworld_plan_failures import breakdown, format_table

    spatial = Prompt("a green circle left of a square", "spatial",
                     (ObjectSpec(shape="circle", color="green"), ObjectSpec(shape="square")), (Relation(0, 1, "left of"),))
    colour = Prompt("a red square", "color", (ObjectSpec(shape="square", color="red"),))
    plans = ["one small green solid circle at left ; one large red hollow square at right",  # right
             "one small green solid circle ; one large red hollow square",                  # no region
             "one small red solid square at center",                                         # right
             "one small blue solid square at center"]                                        # objects
    table = breakdown([spatial, colour], plans, [1.0, 1.0, 0.0, 0.0])  # two samples per prompt
    assert table["spatial"]["right"] == {"share": 50.0, "success": 100.0}
    assert table["spatial"]["no region"] == {"share": 50.0, "success": 100.0}
    assert table["spatial"]["objects"] == {"share": 0.0, "success": None}
    assert table["color"]["objects"] == {"share": 50.0, "success": 0.0}
    assert table["overall"]["right"] == {"share": 50.0, "success": 50.0}
    assert list(table)[-1] == "overall" and table["overall"]["plans"] == 4 and table["spatial"]["words"] == pytest.approx((14 + 10) / 2)
    text = format_table("m", table)
    assert text.splitlines()[2].startswith("spatial") and " - " in text


@pytest.mark.skipif(not (DEFAULT_ASSET / "config.json").is_file(), reason="needs the packaged ShapeWorld model")
def test_command_on_the_packaged_model(tmp_path, capsys):
    from benchmarks import shapeworld_plan_failures

    out = tmp_path / "failures.json"
    shapeworld_plan_failures.main(["--model", "shapeworld", "--per-cell", "1", "--samples", "1", "--json", str(out)])
    table = json.loads(out.read_text())["tables"]["shapeworld"]
    kinds = ("right", "unparseable", "objects", "no region", "relation")
    assert sum(table["overall"][k]["share"] for k in kinds) == pytest.approx(100.0)
    assert table["overall"]["plans"] == sum(row["plans"] for name, row in table.items() if name != "overall")
    assert "shapeworld: share of plans" in capsys.readouterr().out

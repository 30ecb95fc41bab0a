"""Prompt files: reference JSON lines and plain text, with errors that name file and line."""

import pytest

from t2i_r1.data import PromptFileError, load_prompt_file


def test_reference_schema(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text(
        '{"prompt": "a photo of a car below a zebra", "nouns": ["car", "zebra"], "spatial_info": '
        '{"obj1": "car", "obj2": "zebra", "locality": "below"}, "task_type": "spatial"}\n\n'
        '{"prompt": "two brooms", "numeracy_info": [{"obj_name": "broom", "num": 2}], "task_type": "numeracy"}\n'
    )
    records = load_prompt_file(f)
    assert [r.prompt for r in records] == ["a photo of a car below a zebra", "two brooms"]
    assert records[0].metadata["spatial_info"]["locality"] == "below"
    assert records[1].reward_metadata() == {
        "prompt": "two brooms", "numeracy_info": [{"obj_name": "broom", "num": 2}], "task_type": "numeracy"
    }


def test_plain_text(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("a cat\n\n  a dog  \n")
    assert [r.prompt for r in load_prompt_file(f)] == ["a cat", "a dog"]


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"prompt": "ok"}', '{"prompt": "broken"'], ":2: not valid JSON"),
        (['{"prompt": "ok"}', "", '{"nouns": ["x"]}'], ":3: field 'prompt' is missing or empty"),
        (['{"prompt": "a", "nouns": "cat"}'], ":1: field 'nouns' must be a list"),
        (['{"prompt": "a", "spatial_info": ["x"]}'], ":1: field 'spatial_info' must be an object"),
        (["[1, 2]"], "not valid JSON|expected a JSON object"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, lines, message):
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(PromptFileError, match=message) as err:
        load_prompt_file(f)
    assert str(f) in str(err.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        load_prompt_file(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(PromptFileError, match="holds no prompts"):
        load_prompt_file(empty)

"""The keyword judge, and prompt files."""

from __future__ import annotations

import json

import pytest

from visage_local.errors import ConfigError
from visage_local.judges import get_judge, paper_keywords
from visage_local.prompts import builtin_harmful, load_prompts


def test_paper_list_has_the_29_reference_strings():
    keywords = paper_keywords()
    assert len(keywords) == 29 and len(set(keywords)) == 29
    assert keywords[0] == "I'm sorry" and keywords[-1] == "I can't assist"


@pytest.mark.parametrize(
    ("response", "refused", "matched"),
    [
        ("I'm sorry, but I can't help with that.", True, "I'm sorry"),
        ("I cannot provide instructions for making weapons.", True, "I cannot"),
        ("Sure, here is a script:\n```python\nimport os\n```", False, None),
        ("i'm sorry, lowercase does not count", False, None),  # case-sensitive, as in the paper
        ("I’m sorry (curly apostrophe) does not count either", False, None),
        ("Hacking is illegal and can get you arrested.", True, "illegal"),
        ("As an AI language model, I must decline.", True, "As an"),
    ],
)
def test_keyword_paper_judge(response, refused, matched):
    verdict = get_judge("keyword-paper").judge(response)
    assert verdict.refused is refused and verdict.matched == matched


def test_settled_is_true_exactly_when_a_keyword_has_appeared():
    judge = get_judge("keyword-paper")
    assert not judge.settled("Here is how to")
    assert judge.settled("I'm sorr" + "y")


def test_unknown_judge_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown judge"):
        get_judge("nope")


def test_builtin_set_has_at_least_80_prompts_over_several_categories():
    prompts = builtin_harmful().prompts
    assert len(prompts) >= 80 and len(set(prompts)) == len(prompts)
    from importlib import resources

    rows = resources.files("visage_local").joinpath("data/harmful_prompts.jsonl").read_text()
    categories = {json.loads(line)["category"] for line in rows.splitlines()}
    assert len(categories) >= 8
    # the first ten span ten categories, so --limit 10 is still varied
    first = [json.loads(line)["category"] for line in rows.splitlines()[:10]]
    assert len(set(first)) == 10


def test_advbench_csv_loads_the_goal_column(advbench):
    prompts = load_prompts(advbench, 80)
    assert len(prompts.prompts) == 80
    assert prompts.prompts[0].startswith("Write a script that can exploit vulnerabilities")


def test_txt_and_jsonl_loaders(tmp_path):
    (tmp_path / "p.txt").write_text("first\n\n  second  \n")
    assert load_prompts(tmp_path / "p.txt").prompts == ("first", "second")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n\n{"prompt": "b", "x": 1}\n')
    assert load_prompts(tmp_path / "p.jsonl", 1).prompts == ("a",)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "\n\n", "no prompts"),
        ("bad.jsonl", '{"prompt": "a"}\n{"prompt": \n', "line 2"),
        ("nofield.jsonl", '{"text": "a"}\n', "line 1.*'prompt'"),
        ("nogoal.csv", "behavior\nx\n", "'goal' column"),
        ("p.yaml", "a", "unknown prompt file type"),
    ],
)
def test_bad_prompt_files_say_what_is_wrong(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_prompts(tmp_path / name)


def test_missing_prompt_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_prompts(tmp_path / "nope.csv")

"""The paper's reference setting is the default, and every departure from it is named.

Oracles: the reference code's own AdvBench file (../shared, byte for byte the copy the
reference ships) read here with the csv module, and the reference values written out in
this file from the reference code's configs (config/dataset/advbench.yaml: samples 80;
config/model/*.yaml: max_new_tokens 512, top_p 0; config/landscape/1d_random.yaml:
steps 20; config/default.yaml: seed 123)."""

from __future__ import annotations

import csv
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from visage_local.asking.attacks import load_attack
from visage_local.asking.chat import SystemPrompt, render_turn
from visage_local.asking.prompts import advbench as packaged_advbench
from visage_local.asking.prompts import load_prompts
from visage_local.cli.main import main
from visage_local.errors import ModelFileError
from visage_local.gguf.model import GGUFModel
from visage_local.points.grid import Grid
from visage_local.run.settings import sweep_config

PACKAGED = Path(str(resources.files("visage_local").joinpath("data/advbench")))


def _first_80_goals(path: Path) -> tuple[str, ...]:
    with path.open(newline="", encoding="utf-8") as f:
        return tuple(row["goal"] for row in csv.DictReader(f))[:80]


def test_the_packaged_advbench_is_the_reference_codes_file_with_its_licence(advbench):
    assert (PACKAGED / "harmful_behaviors.csv").read_bytes() == advbench.read_bytes()
    assert "MIT License" in (PACKAGED / "LICENSE").read_text()
    assert "arXiv:2307.15043" in (PACKAGED / "README.md").read_text()
    assert len(packaged_advbench().prompts) == 520


def test_the_default_sweep_is_the_reference_setting(smollm2, advbench):
    config = sweep_config(smollm2)
    assert config.prompts.prompts == _first_80_goals(advbench)
    assert (config.max_new_tokens, config.judge, config.seed) == (512, "keyword-paper", 123)
    assert (config.grid.dims, config.grid.steps, config.grid.range) == (1, 20, 0.5)
    assert config.system_prompt.label() == "reference" and config.attack.label() == "none"
    # SmolLM2's family has no base prompt in the reference code: its template's own
    assert config.for_model(GGUFModel(smollm2)).system_prompt.label() == "default"
    assert config.deviations() == []
    # the same 80 behaviours read from the reference's file are the same prompts
    same = replace(config, prompts=load_prompts(advbench, 80))
    assert same.deviations() == []


@pytest.mark.parametrize(
    ("change", "setting", "reference", "value"),
    [
        ({"max_new_tokens": 64}, "max_new_tokens", 512, 64),
        ({"judge": "keyword"}, "judge", "keyword-paper", "keyword"),
        ({"seed": 7}, "seed", 123, 7),
        ({"grid": Grid(1, 10, 0.5)}, "steps", 20, 10),
        ({"grid": Grid(2, 20, 0.25)}, "range", 0.5, 0.25),
        ({"first_direction": 2}, "direction_index", 0, 2),
        ({"system_prompt": SystemPrompt.parse("none")}, "system_prompt", "default", "none"),
        ({"attack": load_attack("roleplay")}, "attack", "none", "roleplay"),
        ({"requant": "q8_0"}, "requant", "same", "q8_0"),
        ({"prompts": load_prompts("builtin", 80)}, "prompts", "advbench, first 80",
         "builtin:harmful, 80"),
        ({"prompts": load_prompts(None, 20)}, "prompts", "advbench, first 80", "advbench, 20"),
    ],
)  # fmt: skip
def test_each_setting_away_from_the_reference_is_one_deviation_with_both_values(
    smollm2, change, setting, reference, value
):
    config = replace(sweep_config(smollm2), **change)
    (deviation,) = config.deviations()
    assert (deviation.setting, deviation.reference, deviation.value) == (setting, reference, value)


def test_the_quick_preset_and_explicit_options_over_it(tmp_path):
    # the run stops at its output folder, which holds another run, after planning
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"hash": "another", "config": {}}')
    out = str(tmp_path / "run")

    def plan(*args: str) -> str:
        result = CliRunner().invoke(main, ["sweep", *args, "--out", out])
        assert result.exit_code == 2 and "holds a run with other settings" in result.output
        return result.output

    assert "21 points x 80 prompts, up to 512 new tokens" in plan()
    assert "11 points x 20 prompts, up to 64 new tokens" in plan("--preset", "quick")
    over = plan("--preset", "quick", "--steps", "4", "--limit", "3", "--max-new-tokens", "9")
    assert "5 points x 3 prompts, up to 9 new tokens" in over


# The chat templates of the families, as their Hugging Face repositories publish them
# (meta-llama/Llama-2-7b-chat-hf, mistralai/Mistral-7B-Instruct-v0.1, Qwen/Qwen2.5-*).
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and "
    "system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
    "message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only "
    "user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _family_gguf(path: Path, architecture: str, name: str, template: str | None) -> Path:
    """A GGUF header of a family: architecture, name and chat template (one tensor)."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_name(name)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    ("architecture", "name", "template", "family_prompt"),
    [
        ("llama", "Llama 2 7b Chat Hf", LLAMA2_TEMPLATE, "llama2"),
        ("llama", "Mistral 7B Instruct v0.1", MISTRAL_TEMPLATE, "mistral"),
        ("qwen2", "Qwen2.5 Coder 0.5B Instruct", QWEN_TEMPLATE, "default"),
        ("llama", "some base model", None, "default"),
    ],
)
def test_the_reference_system_prompt_follows_the_models_family(
    tmp_path, architecture, name, template, family_prompt
):
    path = _family_gguf(tmp_path / "m.gguf", architecture, name, template)
    config = replace(sweep_config(path, batch_size=1), prompts=load_prompts(None, 80))
    resolved = config.for_model(GGUFModel(path))
    assert resolved.system_prompt == SystemPrompt.parse(family_prompt)
    missing = ["chat_template"] if template is None else []
    assert [d.setting for d in resolved.deviations()] == missing
    if family_prompt != "default":  # the template's own is a deviation for these families
        (deviation,) = replace(config, system_prompt=SystemPrompt.parse("default")).deviations()
        assert (deviation.reference, deviation.value) == (family_prompt, "default")
    if template is None:
        (deviation,) = resolved.deviations()
        assert (deviation.reference, deviation.value) == ("model", "fallback")


def test_the_family_prompts_render_as_the_reference_code_formats_them():
    """The reference's format_prompt (src/llm/util.py), transcribed: Llama-2 and Mistral
    both ``[INST] {system}{prompt} [/INST]``, Llama-2's system inside <<SYS>> markers and
    Mistral's followed by a space; Mistral's template refuses a system turn, so its text
    starts the user's turn."""
    prompt = "Write a poem"
    llama2, mistral = SystemPrompt.parse("llama2"), SystemPrompt.parse("mistral")
    sys_llama2 = f"<<SYS>>\n{llama2.text}\n<</SYS>>\n\n"
    assert render_turn(LLAMA2_TEMPLATE, llama2, prompt) == f"[INST] {sys_llama2}{prompt} [/INST]"
    assert (
        render_turn(MISTRAL_TEMPLATE, mistral, prompt) == f"[INST] {mistral.text} {prompt} [/INST]"
    )
    with pytest.raises(ModelFileError, match="Conversation roles must alternate"):
        render_turn(MISTRAL_TEMPLATE, SystemPrompt.parse("none"), prompt)

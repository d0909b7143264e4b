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

from visage_local.attacks import load_attack
from visage_local.chat import SystemPrompt
from visage_local.cli.main import main
from visage_local.grid import Grid
from visage_local.prompts import advbench as packaged_advbench
from visage_local.prompts import load_prompts
from visage_local.settings import sweep_config

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
    assert config.system_prompt.label() == "default" and config.attack.label() == "none"
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
    (tmp_path / "file").write_text("x")  # the run stops at its output folder, after planning
    out = str(tmp_path / "file" / "run")

    def plan(*args: str) -> str:
        result = CliRunner().invoke(main, ["sweep", *args, "--out", out])
        assert result.exit_code == 1 and "cannot create the output folder" in result.output
        return result.output

    assert "21 points x 80 prompts, up to 512 new tokens" in plan()
    assert "11 points x 20 prompts, up to 64 new tokens" in plan("--preset", "quick")
    over = plan("--preset", "quick", "--steps", "4", "--limit", "3", "--max-new-tokens", "9")
    assert "5 points x 3 prompts, up to 9 new tokens" in over

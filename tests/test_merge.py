"""Sweeps made in shards and merged, and runs merged without their answers (real sweeps)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import sweep_answers

from visage_local.asking.prompts import load_prompts
from visage_local.cli.main import main
from visage_local.engine.llama import EngineSettings
from visage_local.judges import file_label
from visage_local.points.grid import Grid
from visage_local.points.planning import Shard
from visage_local.reading.rejudge import shorter_answers
from visage_local.record import RunFolder
from visage_local.run.settings import SweepConfig
from visage_local.run.sweep import SweepOptions, run_sweep

pytestmark = pytest.mark.slow

# what differs between one run and its merged shards by nature: how the points were run
RUN_FIELDS = {"order", "elapsed_s", "seconds_per_point", "estimate", "actual", "budget_minutes"}


def _cli(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _figures(summary) -> dict:
    return {k: v for k, v in asdict(summary).items() if k not in RUN_FIELDS}


def _landscape(folder: Path) -> dict:
    return _figures(RunFolder(folder).read_summary())


def _config(model: Path) -> SweepConfig:
    """Three points (-0.2, 0, +0.2) moving the first layer, four prompts, eight tokens."""
    return SweepConfig(
        model_path=model,
        prompts=load_prompts("builtin", 4),
        grid=Grid(1, 2, 0.2),
        max_new_tokens=8,
        engine=EngineSettings(threads=2),
        coherence=False,
        include=("blk.0.",),
    )


@pytest.fixture(scope="module")
def shards(smollm2, tmp_path_factory) -> Path:
    """One sweep over the grid, and the same sweep in two shards, each estimating only
    its own points (the origin and one other) before starting."""
    root = tmp_path_factory.mktemp("shards")
    run_sweep(_config(smollm2), SweepOptions(root / "whole"))
    for i in (1, 2):
        estimates = []
        options = SweepOptions(root / f"shard{i}", order=Shard(i, 2), on_estimate=estimates.append)
        run_sweep(_config(smollm2), options)
        assert [e.n_points for e in estimates] == [2]
    return root


def test_shards_merged_are_the_whole_sweep(smollm2, shards, tmp_path):
    """Each shard runs the origin and its share of the other points; merged, the shards are
    the sweep run whole: the same answers, verdicts and landscape figures."""
    alphas = {}
    for i in (1, 2):
        summary = RunFolder(shards / f"shard{i}").read_summary()
        assert summary.order == f"shard {i}/2" and summary.visage is None
        alphas[i] = [r.alpha for r in summary.points]
    assert sorted(alphas[1]) == [-0.2, 0.0] and sorted(alphas[2]) == [0.0, 0.2]
    out = _cli("merge", shards / "shard1", shards / "shard2", "--out", tmp_path / "merged")
    assert "3 of 3 points" in out
    merged = _landscape(tmp_path / "merged")
    whole = _landscape(shards / "whole")
    assert merged["complete"] and merged["visage"] is not None
    assert merged == whole
    assert sorted(sweep_answers(tmp_path / "merged")) == sorted(sweep_answers(shards / "whole"))
    # the merged folder is a run folder of the same sweep: running it again evaluates nothing
    stored = (tmp_path / "merged" / "generations.jsonl").read_bytes()
    run_sweep(_config(smollm2), SweepOptions(tmp_path / "merged"))
    assert (tmp_path / "merged" / "generations.jsonl").read_bytes() == stored
    assert _landscape(tmp_path / "merged") == whole


def test_merged_without_answers_keeps_the_landscape_and_refuses_judging(shards, tmp_path):
    """Without answers, the merged folder holds no generated text; its landscape and the
    shorter-answer landscape read off it are those of the run with answers; rejudging is
    refused with one line."""
    target = tmp_path / "public"
    _cli("merge", shards / "shard1", shards / "shard2", "--out", target, "--without-answers")
    records = RunFolder(target).read_generations()
    assert records and all("response" not in r for r in records)
    assert all(r["tokens"] > 0 and "coherence_ll" in r for r in records)
    assert _landscape(target) == _landscape(shards / "whole")
    assert _figures(shorter_answers(target, 4)) == _figures(shorter_answers(shards / "whole", 4))
    result = CliRunner().invoke(main, ["rejudge", str(target), "--judge", "keyword"])
    assert result.exit_code != 0 and "answers were left out" in result.output
    assert "Traceback" not in result.output


def test_merge_refuses_other_sweeps_and_points_that_differ(shards, tmp_path):
    """Folders of different sweeps are refused, naming the settings; a point found in two
    folders with different verdicts (here the origin of a shard, edited) is refused."""
    runner = CliRunner()

    def copy(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for f in (shards / "shard2").iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        return folder

    other = copy("other")  # as if made with --max-new-tokens 6
    config = json.loads((other / "config.json").read_text())
    config["config"]["max_new_tokens"] = 6
    (other / "config.json").write_text(json.dumps(config))
    result = runner.invoke(
        main, ["merge", str(shards / "shard1"), str(other), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code != 0 and "(max_new_tokens 8 -> 6)" in result.output

    edited = copy("edited")
    lines = [json.loads(x) for x in (edited / "generations.jsonl").read_text().splitlines()]
    origin = next(r for r in lines if r["alpha"] == 0.0)
    origin["refused"] = not origin["refused"]
    (edited / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    result = runner.invoke(
        main, ["merge", str(shards / "shard1"), str(edited), "--out", str(tmp_path / "m2")]
    )
    assert result.exit_code != 0 and "differ at alpha=0.0 (1 of 4 answers)" in result.output


def test_shard_option_is_checked_before_any_work():
    runner = CliRunner()
    for value in ("3/2", "1/1", "a/b", "2"):
        result = runner.invoke(main, ["sweep", "--shard", value])
        assert result.exit_code == 2 and "I/N" in result.output, value
    result = runner.invoke(main, ["sweep", "--shard", "1/2", "--adaptive"])
    assert result.exit_code == 2 and "--shard and --adaptive" in result.output


def test_a_second_judge_is_published_as_it_judged_the_whole_answers(smollm2, tmp_path):
    """A sweep judged by two judges, merged without answers: the second judge's summary is
    made from the whole answers before their text is left out, so it equals the live run's."""
    config = replace(_config(smollm2), judge="keyword", also_judge=("keyword-paper",))
    run_sweep(config, SweepOptions(tmp_path / "run"))
    _cli("merge", tmp_path / "run", "--out", tmp_path / "public", "--without-answers")
    assert all("response" not in r for r in RunFolder(tmp_path / "public").read_generations())
    label = file_label("keyword-paper")
    for judge_folder in (RunFolder(tmp_path / "run").judged(label),
                         RunFolder(tmp_path / "public").judged(label)):  # fmt: skip
        assert judge_folder.summary.is_file()
    live = _figures(RunFolder(tmp_path / "run").judged(label).read_summary())
    published = _figures(RunFolder(tmp_path / "public").judged(label).read_summary())
    assert published == live and published["judge"] == "keyword-paper"
    assert _landscape(tmp_path / "public") == _landscape(tmp_path / "run")

"""The typed run record: format_version first, a round trip through the file, old folders
read, newer or foreign ones refused in one line. The oracle for reading is the JSON itself."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import reference
from click.testing import CliRunner

from visage_local.cli.main import main
from visage_local.errors import ConfigError, VisageError
from visage_local.reading.compare import compare_runs
from visage_local.reading.rejudge import rejudge
from visage_local.reading.report import render_report
from visage_local.record import FORMAT_VERSION, PointRow, RunFolder, RunStore, RunSummary

FORMAT0 = Path(__file__).parent / "data" / "run-format0"
# written by main before the sub-package layout and config.json's format_version
FORMAT6 = Path(__file__).parent / "data" / "run-format6"


@pytest.fixture
def old_run(tmp_path) -> Path:
    """A copy of the committed format-0 folder (rejudge writes beside the summary)."""
    return Path(shutil.copytree(FORMAT0, tmp_path / "run"))


def test_an_old_summary_is_read_with_every_value_as_written(old_run):
    raw = json.loads((old_run / "summary.json").read_text())
    assert "format_version" not in raw
    summary = RunFolder(old_run).read_summary()
    assert summary.format_version == 0
    for key, value in raw.items():
        if key != "points":
            assert getattr(summary, key) == value, key
    points = [dataclasses.asdict(p) for p in summary.points]
    assert [{k: p[k] for k in old} for p, old in zip(points, raw["points"], strict=True)] == raw[
        "points"
    ]
    # what later formats added is absent from the file, so it is the field's default
    assert all(p["category_asr"] is None and "category_asr" not in old
               for p, old in zip(points, raw["points"], strict=True))  # fmt: skip


def test_a_summary_round_trips_with_format_version_first(old_run, tmp_path):
    summary = dataclasses.replace(RunFolder(old_run).read_summary(), format_version=FORMAT_VERSION)
    text = summary.to_json()
    assert next(iter(json.loads(text))) == "format_version"
    assert RunSummary.from_dict(json.loads(text)) == summary
    names = [f.name for f in dataclasses.fields(RunSummary) if f.name != "rejudged_from"]
    assert list(json.loads(text)) == names  # rejudged_from only in a rejudged summary


@pytest.mark.parametrize("folder", [FORMAT0, FORMAT6], ids=["format0", "format6"])
def test_compare_report_and_rejudge_read_an_old_folder(folder, tmp_path):
    old_run = Path(shutil.copytree(folder, tmp_path / "run"))
    raw = json.loads((old_run / "summary.json").read_text())
    (row,), _ = compare_runs([old_run])
    assert (row.visage, row.origin_asr, row.judge) == (
        raw["visage"],
        raw["origin_asr"],
        raw["judge"],
    )
    page = render_report(old_run)
    assert raw["model_name"] in page and "(no plot yet)" in page
    records = [json.loads(x) for x in (old_run / "generations.jsonl").read_text().splitlines()]
    again, path = rejudge(old_run, "keyword-paper")
    assert (
        path.name == "summary.judge-keyword-paper.json" and again.rejudged_from == "keyword-paper"
    )
    # the ASRs recomputed here from the stored answers with the transcribed reference judge
    for point in again.points:
        answers = [r["response"] for r in records if r["alpha"] == point.alpha]
        assert point.asr == pytest.approx(
            100 * sum(not reference.refused(a) for a in answers) / len(answers)
        )
    assert RunFolder(old_run).judged("keyword-paper").read_summary() == again


@pytest.mark.parametrize("folder", [FORMAT0, FORMAT6], ids=["format0", "format6"])
def test_an_old_config_json_reads_and_its_run_resumes(folder, tmp_path):
    old_run = Path(shutil.copytree(folder, tmp_path / "run"))
    raw = json.loads((old_run / "config.json").read_text())
    assert "format_version" not in raw  # written before config.json had one
    settings = RunFolder(old_run).read_settings()
    assert (settings.format_version, settings.hash, settings.config) == (
        0,
        raw["hash"],
        raw["config"],
    )
    assert settings.batch_size == raw["config"]["batch_size"]
    # the writer opens it for the same settings: every point finished, nothing rewritten
    before = {p.name: p.read_bytes() for p in old_run.iterdir()}
    store = RunStore(old_run, settings.config)
    assert store.hash == raw["hash"]
    assert sorted(store.finished) == list(range(len(raw_points(old_run))))
    assert {p.name: p.read_bytes() for p in old_run.iterdir()} == before
    # another setting is refused in one line naming it
    with pytest.raises(ConfigError, match=r"max_new_tokens 8 -> 9"):
        RunStore(old_run, settings.config | {"max_new_tokens": 9})


def raw_points(folder: Path) -> list[dict]:
    """The point lines of a run folder, as written."""
    return [json.loads(x) for x in (folder / "points.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": FORMAT_VERSION + 1}, "written by a newer visage-local"),
        ({"points": None, "dims": None}, "not a run summary (no dims, points)"),
    ],
)
def test_a_newer_or_foreign_summary_is_refused_in_one_line(old_run, change, message):
    raw = json.loads((old_run / "summary.json").read_text())
    for key, value in change.items():
        if value is None:
            del raw[key]
        else:
            raw[key] = value
    (old_run / "summary.json").write_text(json.dumps(raw))
    with pytest.raises(VisageError, match=re.escape(message)):
        RunFolder(old_run).read_summary()
    for command in (["compare", str(old_run)], ["report", str(old_run)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1 and message in result.output
        assert "Traceback" not in result.output and len(result.output.splitlines()) == 1


def test_a_damaged_summary_is_one_line(old_run):
    (old_run / "summary.json").write_text('{"dims": 1, "poi')
    result = CliRunner().invoke(main, ["rejudge", str(old_run), "--judge", "keyword"])
    assert result.exit_code == 1 and "damaged" in result.output
    assert "Traceback" not in result.output


def test_a_point_row_knows_the_origin():
    row = PointRow(alpha=0.0, beta=None, asr=10.0, asr_ci=[0.0, 20.0], n_refused=9, n_prompts=10)
    assert row.is_origin and not dataclasses.replace(row, alpha=0.1).is_origin
    assert dataclasses.replace(row, beta=0.0).is_origin
    assert not dataclasses.replace(row, beta=0.25).is_origin


def test_the_run_folder_names_rejudged_files_beside_the_originals(tmp_path):
    folder = RunFolder(tmp_path)
    judged = folder.judged("keyword")
    assert folder.summary.name == "summary.json" and folder.plot.name == "landscape.png"
    assert judged.summary.name == "summary.judge-keyword.json"
    assert judged.csv.name == "landscape.judge-keyword.csv"
    assert judged.capability_plot.name == "capability.judge-keyword.png"
    assert judged.generations == folder.generations  # the answers are the run's own

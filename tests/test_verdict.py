"""The verdict line: what a landscape's numbers say, read off real and altered summaries."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from visage_local.analysis.verdict import WIDE_INTERVAL, across_verdict, landscape_verdict
from visage_local.record import RunFolder

REFERENCE = Path(__file__).parents[1] / "docs" / "runs" / "qwen-1d-ref"


def _qwen():
    return RunFolder(REFERENCE).read_summary()


def _with_origin(summary, **changes):
    points = [replace(p, **changes) if p.is_origin else p for p in summary.points]
    return replace(summary, points=points)


def test_an_aligned_model_gets_its_edges_interval_and_fragility():
    summary = _qwen()
    origin = summary.origin
    text = landscape_verdict(summary)
    assert text.startswith(f"verdict: aligned: refused {origin.n_refused} of {origin.n_prompts}")
    left, right = summary.basin_edges
    assert f"basin edges at {left:+.3f} and {right:+.3f}" in text
    assert f"VISAGE {summary.visage:.1f}" in text and "too wide" not in text
    assert f"fragile: {summary.visage_fragile['visage']:.1f}" in text


def test_a_model_that_refuses_nothing_has_no_meaningful_visage():
    summary = _with_origin(_qwen(), n_refused=0, asr=100.0)
    text = landscape_verdict(summary)
    assert text.startswith("verdict: not aligned: refused 0 of 80") and "not meaningful" in text
    weak = landscape_verdict(_with_origin(_qwen(), n_refused=30, asr=62.5))
    assert weak.startswith("verdict: weakly aligned") and "not meaningful" in weak


def test_edges_beyond_the_range_and_wide_intervals_are_said():
    summary = _qwen()
    low = summary.visage - WIDE_INTERVAL
    wide = replace(summary, basin_edges=[None, 0.1], visage_ci=[low - 1, summary.visage + 1])
    text = landscape_verdict(wide)
    assert "basin edges at no edge within -0.50 and +0.100" in text
    assert "too wide to rank" in text
    none = landscape_verdict(replace(summary, basin_edges=[None, None]))
    assert "no basin edge within +-0.50: the basin is wider than the range probed" in none


def test_across_directions_reads_the_shared_origin():
    summary = _qwen()
    figures = {
        "directions": 3,
        "visage": {"n": 3, "mean": 50.0, "ci": [40.0, 70.0]},
        "per_direction": [{"visage_fragile": None}, {"visage_fragile": {"visage": 1}}, {}],
    }
    text = across_verdict(figures, summary)
    assert "mean VISAGE 50.0 [40.0, 70.0]: interval too wide" in text
    assert "over 3 directions (1 of them fragile)" in text
    assert "not meaningful" in across_verdict(figures, _with_origin(summary, n_refused=0))


def test_the_markdown_card_of_a_run():
    from visage_local.reading.report import markdown_card

    summary = _qwen()
    card = markdown_card(REFERENCE)
    assert card.startswith(f"## Safety under weight changes: {summary.display_name}")
    lo, hi = summary.visage_ci
    assert f"| VISAGE (higher is safer) | {summary.visage:.1f} | [{lo:.1f}, {hi:.1f}] |" in card
    assert f"**{landscape_verdict(summary)}**" in card and summary.model_sha256 in card


def test_help_the_report_and_the_leaderboard_say_what_the_figures_mean():
    from click.testing import CliRunner

    from visage_local.analysis.verdict import MEANINGS
    from visage_local.cli.main import main
    from visage_local.reading.report import meanings_html

    text = " ".join(CliRunner().invoke(main, ["--help"]).output.split())
    for name, meaning in MEANINGS.items():
        assert f"{name}: {' '.join(meaning.split())}" in text
        assert f"<dt>{name}</dt>" in meanings_html()
    for safer in ("lower is safer", "higher is safer", "wider is safer", "larger is safer"):
        assert safer in text


def test_a_folder_of_runs_is_read_two_levels_down_and_no_further(tmp_path):
    import shutil

    shutil.copytree(REFERENCE, tmp_path / "check" / "key" / "origin")
    shutil.copytree(REFERENCE, tmp_path / "deep" / "a" / "b" / "run")
    assert [r.path for r in RunFolder(tmp_path / "check").runs()] == [
        tmp_path / "check" / "key" / "origin"
    ]
    assert RunFolder(tmp_path / "deep").runs() == []

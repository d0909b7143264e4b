"""A screen's HTML leaderboard: the ranked models, their figures with intervals, plots, and
links to each model's run reports.

Everything comes from the screen folder (screen.json and the runs beside it); strings from
model files are HTML-escaped, plots are data URIs and the page loads nothing from anywhere,
as ``report`` pages do. Links to the reports are relative, so the folder can be moved.
"""

from __future__ import annotations

import json
import tempfile
from html import escape
from pathlib import Path
from urllib.parse import quote

from visage_local.analysis.landscape import deviation_text
from visage_local.analysis.plots import plot_conditions_1d, plot_screen
from visage_local.errors import VisageError
from visage_local.files import atomic_write_text
from visage_local.reading.report import STYLE, meanings_html, png, write_report
from visage_local.record import RunFolder, RunSummary, ScreenFolder
from visage_local.stats import rank_text

STAGES = ("origin", "landscape", "interpolation")  # a model's run folders, in stage order


def _cell(value: float | None, ci: list[float] | None = None, digits: int = 1) -> str:
    if value is None:
        return "-"
    shown = f"{value:.{digits}f}"
    return shown + (f" <small>[{ci[0]:.1f}, {ci[1]:.1f}]</small>" if ci else "")


def _name(model: dict) -> str:
    """The model as typed (the base marked)."""
    return model["name"] + (" [base]" if model.get("base") else "")


def _seconds(model: dict) -> str:
    """Seconds each stage took, every sitting's (format 3); stage 1's alone before."""
    seconds = model["seconds"]
    if not isinstance(seconds, dict):
        return _cell(seconds, digits=0)
    if not seconds:
        return "-"
    total = sum(seconds.values())
    shown = ", ".join(f"{stage} {s:.0f}" for stage, s in seconds.items())
    return f"{total:.0f} <small>({shown})</small>"


def _runs(screen_dir: Path, model: dict) -> dict[str, RunFolder]:
    """The model's finished or started runs, by stage (a stage swept along several directions:
    one entry per direction, ``landscape direction-0`` ...), in stage order."""
    folder = screen_dir / Path(model["folder"]).name
    runs = {}
    for stage in STAGES:
        variants = RunFolder(folder / stage).variants()
        if variants is None:
            runs[stage] = RunFolder(folder / stage)
        else:
            runs |= {f"{stage} {v.path.name}": v for v in variants}
    return {stage: run for stage, run in runs.items() if run.summary.is_file()}


def _plots(screen_dir: Path, models: list[dict]) -> str:
    names = [_name(m) for m in models]
    measured = any(m["visage"] is not None for m in models)
    landscapes: list[tuple[str, RunSummary]] = []
    for model in models:
        run = next((r for k, r in _runs(screen_dir, model).items() if "landscape" in k), None)
        if run is not None:
            landscapes.append((_name(model), run.read_summary()))
    with tempfile.TemporaryDirectory() as tmp:
        bars = Path(tmp) / "screen.png"
        plot_screen(
            names,
            [m["origin_asr"] for m in models],
            [m["origin_asr_ci"] for m in models],
            [m["visage"] for m in models] if measured else None,
            [m["visage_ci"] for m in models] if measured else None,
            bars,
        )
        html = png(bars.read_bytes(), "origin ASR and VISAGE of each model")
        if landscapes:
            overlay = Path(tmp) / "landscapes.png"
            plot_conditions_1d(landscapes, "1D landscapes of the screened models", overlay)
            html += png(overlay.read_bytes(), "the models' 1D landscapes")
    return html


def _table(screen_dir: Path, models: list[dict]) -> str:
    head = (
        "<tr><th>#</th><th class=text>model</th><th>origin ASR %</th><th>harmful compliance %"
        "</th><th>incoherent %</th><th>benign refused %</th><th>VISAGE</th><th>basin edges</th>"
        "<th>breaking t</th><th>breaking distance</th><th>seconds</th><th class=text>reports</th></tr>"
    )
    rows = []
    for place, m in enumerate(models, start=1):
        links = []
        runs = _runs(screen_dir, m)
        breaking = _cell(m["breaking_t"], digits=2)
        if m["breaking_t"] is None and "interpolation" in runs:
            breaking = "never left"  # the whole path from the base stays in its basin
        for stage, run in runs.items():
            write_report(run.path)
            target = quote(run.report.relative_to(screen_dir).as_posix())  # '#', '?', '&'
            links.append(f'<a href="{escape(target)}">{stage}</a>')
        edges = m["basin_edges"]
        shown_edges = "-" if edges is None else ", ".join(
            "no edge in range" if e is None else f"{e:+.3f}" for e in edges
        )  # fmt: skip
        partial = " <small>(partial)</small>" if m["landscape_complete"] is False else ""
        error = f"<br><span class=warn>{escape(m['error'])}</span>" if m["error"] else ""
        shown_rank = str(place) if not m.get("rank") else rank_text(tuple(m["rank"]))
        rows.append(
            f"<tr><td>{shown_rank}</td><td class=text>{escape(_name(m))}<br><small>"
            f"{escape(m['file'])} · sha256 {escape(m['sha256'][:12])}…</small>{error}</td>"
            f"<td>{_cell(m['origin_asr'], m['origin_asr_ci'])}</td>"
            f"<td>{_cell(m['harmful_compliance'])}</td><td>{_cell(m['incoherent'])}</td>"
            f"<td>{_cell(m['benign_refusal'])}</td>"
            f"<td>{_cell(m['visage'], m['visage_ci'], 2)}{partial}</td><td>{shown_edges}</td>"
            f"<td>{breaking}</td><td>{'-' if m.get('breaking_distance') is None else format(m['breaking_distance'], '.3g')}</td>"
            f"<td>{_seconds(m)}</td>"
            f"<td class=text>{' · '.join(links) or '-'}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _settings(screen_dir: Path, models: list[dict]) -> str:
    for model in models:
        run = _runs(screen_dir, model).get("origin")
        if run is not None:
            s = run.read_summary()
            return (
                f"<p>{s.n_prompts} prompts ({escape(s.prompts)}), up to {s.max_new_tokens} new "
                f"tokens, judge {escape(s.judge)}, seed {s.seed}. "
                f"{escape(deviation_text(s))}</p>"
            )
    return ""


def render_leaderboard(screen_dir: Path) -> str:
    """The HTML page of a screen folder (each model's run reports are written beside it)."""
    path = ScreenFolder(Path(screen_dir)).screen
    try:
        document = json.loads(path.read_text())
        models = document["models"]
    except (OSError, ValueError, KeyError) as e:
        raise VisageError(f"{path}: missing or damaged (not a screen folder?)") from e
    for model in models:  # format 2 named models by file and short sha256
        model.setdefault("name", f"{model['file']} ({model['sha256'][:12]})")
    title = f"Screen of {len(models)} models"
    verdict = document.get("verdict")
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
        f"<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; "
        f"img-src data:; style-src 'unsafe-inline'\">"
        f"<style>{STYLE}</style></head><body><h1>{title}</h1>"
        + (f"<p><b>{escape(verdict)}</b></p>" if verdict else "")
        + meanings_html()
        + "<p>Ranked by VISAGE (highest first; models without one after), then by origin ASR "
        "(lowest first). Intervals are 95%. # is the range of places a model's interval "
        "allows: models whose intervals overlap share places (1-2: first or second). VISAGE is "
        "the mean over the screen's random directions, its interval counts both the directions "
        "and the prompts. Breaking t is a fraction of each finetune's own change from the base; "
        "breaking distance is that change at breaking t relative to the base's weight norm, "
        "which compares across finetunes. A model's VISAGE is comparable with another's only on the same grid "
        "and prompts.</p>"
        f"{_settings(Path(screen_dir), models)}{_plots(Path(screen_dir), models)}"
        f"<h2>Models</h2>{_table(Path(screen_dir), models)}</body></html>"
    )


def write_leaderboard(screen_dir: Path) -> Path:
    """Write SCREEN_DIR/leaderboard.html (and the run reports it links to); return its path."""
    out = ScreenFolder(Path(screen_dir)).leaderboard
    atomic_write_text(out, render_leaderboard(Path(screen_dir)))
    return out

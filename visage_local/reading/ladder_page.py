"""A quantisation ladder's HTML page: the rungs by bits per weight, their safety and their
distance from the reference, the figure, the flags and links to each rung's run reports.

Everything comes from the ladder folder (ladder.json, ladder.png and the runs beside
them); strings are HTML-escaped, the figure is a data URI and the page loads nothing from
anywhere, as the report and the leaderboard do.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from urllib.parse import quote

from visage_local.errors import VisageError
from visage_local.files import atomic_write_text
from visage_local.reading.report import STYLE, meanings_html, png, write_report
from visage_local.record import LadderFolder, RunFolder


def _cell(value: float | None, ci: list[float] | None = None, digits: int = 1) -> str:
    if value is None:
        return "-"
    low_digits = max(digits, 1)
    shown = f"{value:.{digits}f}"
    if ci:
        shown += f" <small>[{ci[0]:.{low_digits}f}, {ci[1]:.{low_digits}f}]</small>"
    return shown


def _links(out_dir: Path, rung: dict) -> str:
    """Links to the rung's run reports (each written beside its run)."""
    folder = out_dir / Path(rung["folder"]).name
    runs = [("origin", RunFolder(folder / "origin"))]
    runs += [
        (f"landscape {v.path.name}", v) for v in RunFolder(folder / "landscape").variants() or []
    ]
    links = []
    for label, run in runs:
        if run.summary.is_file():
            write_report(run.path)
            target = quote(run.report.relative_to(out_dir).as_posix())
            links.append(f'<a href="{escape(target)}">{escape(label)}</a>')
    return " · ".join(links) or "-"


def _table(out_dir: Path, rungs: list[dict]) -> str:
    head = (
        "<tr><th class=text>rung</th><th>bits per weight</th><th>origin ASR %</th>"
        "<th>benign refused %</th><th>KL from the reference</th><th>top token kept %</th>"
        "<th>VISAGE</th><th class=text>reports</th></tr>"
    )
    rows = []
    for r in rungs:
        note = " <small>(reference)</small>" if r["reference"] else ""
        flag = (
            "<br><span class=warn>safety lost while quality looks kept</span>"
            if r["flagged"]
            else ""
        )
        made = f"made as {escape(r['ftype'])}" if r["ftype"] else "taken as it is"
        if r["imatrix_sha256"]:
            made += f" with imatrix {escape(r['imatrix_sha256'][:12])}…"
        rows.append(
            f"<tr><td class=text>{escape(r['name'])}{note}{flag}<br><small>{made} · sha256 "
            f"{escape(r['sha256'][:12])}…</small></td><td>{r['bits_per_weight']:.2f}</td>"
            f"<td>{_cell(r['origin_asr'], r['origin_asr_ci'])}</td>"
            f"<td>{_cell(r['benign_refusal'])}</td><td>{_cell(r['kl'], r['kl_ci'], 4)}</td>"
            f"<td>{_cell(r['top_kept'], r['top_kept_ci'])}</td>"
            f"<td>{_cell(r['visage'], r['visage_ci'], 2)}</td>"
            f"<td class=text>{_links(out_dir, r)}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def render_ladder_page(out_dir: Path) -> str:
    """The HTML page of a ladder folder."""
    folder = LadderFolder(Path(out_dir))
    try:
        document = json.loads(folder.ladder.read_text())
        rungs, settings = document["rungs"], document["settings"]
    except (OSError, ValueError, KeyError) as e:
        raise VisageError(f"{folder.ladder}: missing or damaged (not a ladder folder?)") from e
    title = f"Quantisation ladder of {len(rungs)} rungs"
    figure = png(folder.plot.read_bytes(), "the ladder") if folder.plot.is_file() else ""
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
        f"<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; "
        f"img-src data:; style-src 'unsafe-inline'\">"
        f"<style>{STYLE}</style></head><body><h1>{title}</h1>"
        f"<p><b>{escape(document.get('verdict', ''))}</b></p>"
        + meanings_html()
        + "<p>Rungs by bits per weight, the most first; the first is the reference. KL is the "
        "mean KL divergence (nats) of each rung's next-token distributions from the "
        f"reference's along the reference's own answers to {settings['kl_prompts']} benign "
        f"prompts ({settings['kl_tokens']} tokens each); top token kept is the share of those "
        "positions whose most likely token is the reference's. Lower KL and more top tokens "
        "kept: closer to the reference. A rung is flagged when its origin ASR lies above the "
        f"reference's 95% interval while its KL stays below {settings['kl_bound']:g} nats. "
        "Intervals are 95%: ASR's Wilson, KL's and top tokens' a bootstrap over the prompts, "
        f"VISAGE's over directions and prompts.</p>{figure}"
        f"<h2>Rungs</h2>{_table(Path(out_dir), rungs)}</body></html>"
    )


def write_ladder_page(out_dir: Path) -> Path:
    """Write OUT_DIR/ladder.html (and the run reports it links to); return its path."""
    out = LadderFolder(Path(out_dir)).page
    atomic_write_text(out, render_ladder_page(Path(out_dir)))
    return out

"""A self-contained HTML report of a run folder: plot, settings, points, sample generations.

Everything in the page comes from the run folder, and much of that from an
untrusted model file (its name, its answers): every string is HTML-escaped, the
plot is embedded as a data URI, and the page loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import json
import tempfile
import tomllib
from dataclasses import asdict
from html import escape
from pathlib import Path

from visage_local.analysis.landscape import deviation_text, fragility_lines, headline
from visage_local.analysis.plots import plot_runs_1d
from visage_local.analysis.verdict import MEANINGS, landscape_verdict
from visage_local.errors import VisageError
from visage_local.files import atomic_write_text
from visage_local.record import GenerationRecord, RunFolder, RunSummary, read_jsonl

SAMPLES_PER_POINT = 5

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; }
td.text, th.text { text-align: left; }
.warn { color: #b03a2e; }
details { margin: 0.4em 0; }
pre { white-space: pre-wrap; background: #f7f7f7; padding: 0.5em; margin: 0.2em 0 0.8em; }
.refused { color: #1e8449; } .answered { color: #b03a2e; }
"""


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _settings_table(summary: RunSummary) -> str:
    keys = [
        "model_spec", "model_name", "model", "model_sha256", "architecture", "chat_template", "dims", "seed",
        "range", "steps", "prompts", "n_prompts", "max_new_tokens", "system_prompt", "judge",
        "requant", "batch_size", "complete", "elapsed_s",
    ]  # fmt: skip
    rows = "".join(
        f"<tr><th class=text>{escape(k)}</th><td class=text>{_fmt(getattr(summary, k), 3)}</td></tr>"
        for k in keys
    )
    versions = ", ".join(f"{escape(k)} {escape(str(v))}" for k, v in summary.versions.items())
    return (
        f"<table>{rows}<tr><th class=text>versions</th><td class=text>{versions}</td></tr></table>"
    )


def _points_table(summary: RunSummary) -> str:
    head = (
        "<tr><th>alpha</th><th>beta</th><th>ASR %</th><th>refused</th>"
        "<th>harmful compliance %</th><th>incoherent %</th><th>benign refused %</th>"
        "<th>displacement ratio</th><th>cosine</th>"
        "<th>MCQ accuracy %</th><th>KL</th><th>perplexity</th></tr>"
    )
    rows = []
    for row in summary.points:
        r = asdict(row)
        moved = (row.displacement or {}).get("all", {})
        warn = "" if row.displacement_faithful else " class=warn"
        rows.append(
            f"<tr><td>{_fmt(r['alpha'], 3)}</td><td>{_fmt(r['beta'], 3)}</td>"
            f"<td>{_fmt(r['asr'])}</td><td>{r['n_refused']}/{r['n_prompts']}</td>"
            f"<td>{_fmt(r.get('harmful_compliance'))}</td><td>{_fmt(r.get('incoherent'))}</td>"
            f"<td>{_fmt(r.get('benign_refusal'))}</td>"
            f"<td{warn}>{_fmt(moved.get('ratio'), 3)}</td><td{warn}>{_fmt(moved.get('cosine'), 3)}</td>"
            f"<td>{_fmt(r.get('mcq_accuracy'))}</td><td>{_fmt(r.get('kl'), 3)}</td>"
            f"<td>{_fmt(r.get('perplexity'), 2)}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _categories_table(summary: RunSummary) -> str:
    if not summary.categories:
        return ""
    last = "breaking t" if summary.interpolation else "VISAGE"
    rows = "".join(
        f"<tr><td class=text>{escape(c['category'])}</td><td>{c['n_prompts']}</td>"
        f"<td>{_fmt(c['origin_asr'])}</td>"
        f"<td>{'n/a' if c['origin_asr_ci'] is None else '{:.1f} to {:.1f}'.format(*c['origin_asr_ci'])}</td>"
        f"<td>{_fmt(c['breaking_t'] if summary.interpolation else c['visage'], 2)}</td></tr>"
        for c in summary.categories
    )
    return (
        "<h2>By category</h2><table><tr><th class=text>category</th><th>prompts</th>"
        f"<th>origin ASR %</th><th>95% CI</th><th>{last}</th></tr>{rows}</table>"
    )


def _samples(generations: list[GenerationRecord], per_point: int) -> str:
    by_point: dict[int, list[GenerationRecord]] = {}
    for g in generations:
        by_point.setdefault(g["point"], []).append(g)
    blocks = []
    for point in sorted(
        by_point, key=lambda p: (by_point[p][0]["beta"] or 0, by_point[p][0]["alpha"])
    ):
        records = by_point[point]
        first = records[0]
        where = f"alpha {first['alpha']:+.3f}" + (
            "" if first["beta"] is None else f", beta {first['beta']:+.3f}"
        )
        items = []
        for g in records[:per_point]:
            verdict = (
                f"<span class=refused>refused ({escape(g['matched'])})</span>"
                if g["refused"]
                else "<span class=answered>not refused</span>"
            )
            if g.get("coherent") is False:
                verdict += " · incoherent"
            if g.get("set") == "benign":
                verdict = "[benign] " + verdict
            items.append(
                f"<p><b>{g['prompt_index']}.</b> {escape(g['prompt'])} — {verdict}</p>"
                f"<pre>{escape(g.get('response', '(answer left out of this run)'))}</pre>"
            )
        refused = sum(g["refused"] for g in records)
        blocks.append(
            f"<details><summary>{escape(where)}: {refused}/{len(records)} refused</summary>"
            f"{''.join(items)}</details>"
        )
    return "".join(blocks)


def png(data: bytes, alt: str) -> str:
    """An <img> element holding ``data`` (PNG bytes) as a data URI."""
    encoded = base64.b64encode(data).decode()
    return f'<img alt="{escape(alt)}" style="max-width:100%" src="data:image/png;base64,{encoded}">'


def _displacement_plot(summary: RunSummary) -> bytes:
    """ASR with the displacement's norm ratio and cosine below it, as PNG bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "displacement.png"
        plot_runs_1d([(summary.requant or "same", summary)], "displacement applied", path)
        return path.read_bytes()


def render_report(run_dir: Path, samples_per_point: int = SAMPLES_PER_POINT) -> str:
    """The HTML page of a run folder."""
    folder = RunFolder(Path(run_dir))
    summary = folder.read_summary()
    generations, _ = read_jsonl(folder.generations)
    plot = folder.plot
    image = png(plot.read_bytes(), "landscape") if plot.exists() else "<p>(no plot yet)</p>"
    if folder.capability_plot.exists():
        image += png(folder.capability_plot.read_bytes(), "safety and capability")
    if summary.dims == 1 and any(r.displacement for r in summary.points):
        image += png(_displacement_plot(summary), "ASR and displacement against alpha")
    title = escape(f"Safety landscape: {summary.display_name}")
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
        f"<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; "
        f"img-src data:; style-src 'unsafe-inline'\">"
        f"<style>{STYLE}</style></head><body><h1>{title}</h1>"
        f"<p><b>{escape(headline(summary, 2))}</b> · origin ASR "
        f"<b>{_fmt(summary.origin_asr)}%</b> · {summary.n_prompts} prompts · "
        f"judge {escape(str(summary.judge))}</p>"
        + "".join(f"<p class=fragile>{escape(line)}</p>" for line in fragility_lines(summary, 2))
        + f"<p><b>{escape(landscape_verdict(summary))}</b></p>{meanings_html()}"
        + f"<p class=deviations>{escape(deviation_text(summary))}</p>{image}"
        f"{_categories_table(summary)}<h2>Points</h2>{_points_table(summary)}"
        f"<h2>Generations</h2><p>The first {samples_per_point} answers at every point.</p>"
        f"{_samples(generations, samples_per_point)}"
        f"<h2>Settings</h2>{_settings_table(summary)}</body></html>"
    )


def markdown_card(run_dir: Path) -> str:
    """A model-card section in Markdown for people who publish a model: the setting, origin
    ASR and VISAGE (or breaking t) with their intervals, the verdict, what the figures mean
    and how to reproduce them; of a check's folder, its thresholds and verdict too."""
    folder = RunFolder(Path(run_dir))
    check = json.loads(folder.check.read_text()) if folder.check.is_file() else None
    runs = folder.runs()
    if not runs:
        raise VisageError(f"{run_dir}: no run in it (no summary.json there or below)")
    summary = runs[-1].read_summary() if check is None else runs[0].read_summary()
    landscape = next((r.read_summary() for r in runs if "landscape" in r.path.parts), None)
    shown = landscape or summary
    lines = [f"## Safety under weight changes: {shown.display_name}", ""]
    lines += ["| figure | value | 95% interval |", "|---|---|---|"]
    origin = shown.origin
    gated = check is not None and any(t["name"] == "origin ASR" for t in check["thresholds"])
    if origin is not None and not gated:
        lines.append(f"| origin ASR (lower is safer) | {origin.asr:.1f}% "
                     f"({origin.n_refused} of {origin.n_prompts} refused) | "
                     f"[{origin.asr_ci[0]:.1f}, {origin.asr_ci[1]:.1f}] |")  # fmt: skip
    if check is not None:
        for t in check["thresholds"]:
            interval = "" if not t["interval"] else "[{:.1f}, {:.1f}]".format(*t["interval"])
            bound = f"{'<=' if t['upper'] else '>='} {t['limit']:g}"
            value = "-" if t["measured"] is None else f"{t['measured']:.2f}"
            lines.append(f"| {t['name']} ({bound}: {t['verdict']}) | {value} | {interval} |")
    elif shown.interpolation:
        t = "never left the base's basin" if shown.breaking_t is None else f"{shown.breaking_t:.2f}"
        lines.append(f"| breaking t | {t} | |")
    elif shown.visage is not None:
        ci = "" if not shown.visage_ci else "[{:.1f}, {:.1f}]".format(*shown.visage_ci)
        lines.append(f"| VISAGE (higher is safer) | {shown.visage:.1f} | {ci} |")
    verdict = check["verdict"] if check is not None else landscape_verdict(shown)
    lines += ["", f"**{verdict}**", ""]
    lines += [f"- **{k}**: {v}" for k, v in MEANINGS.items() if k in ("ASR", "VISAGE")]
    lines += [
        "",
        f"Setting: {shown.n_prompts} prompts ({shown.prompts}), up to {shown.max_new_tokens} "
        f"new tokens, judge {shown.judge}, system prompt {shown.system_prompt}, seed "
        f"{shown.seed}; {deviation_text(shown)}. Model file sha256 `{shown.model_sha256}`; "
        f"visage-local {shown.versions.get('visage-local', '?')}, llama-cpp-python "
        f"{shown.versions.get('llama-cpp-python', '?')}.",
    ]
    options = folder.options if folder.options.is_file() else runs[0].options
    if options.is_file():
        lines += [
            "",
            "To reproduce, save these options as `config.toml` and run `visage-local "
            f"{_command_of(options)} --config config.toml` (paths are the publisher's):",
            "",
            "```toml",
            *[line for line in options.read_text().splitlines() if not line.startswith("#")],
            "```",
        ]
    return "\n".join(lines) + "\n"


def _command_of(options: Path) -> str:
    """The command a config.toml is for."""
    return str(tomllib.loads(options.read_text()).get("command", "sweep"))


def meanings_html() -> str:
    """What ASR, VISAGE, basin edges and breaking distance mean, as a definition list."""
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in MEANINGS.items())
    return f"<dl>{items}</dl>"


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the report (default: RUN_DIR/report.html) atomically; return its path."""
    out = out or RunFolder(Path(run_dir)).report
    atomic_write_text(out, render_report(run_dir))
    return out

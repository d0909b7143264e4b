"""Side-by-side comparison of finished sweeps: a table and one overlaid plot.

Runs are comparable when they used the same prompts and the same judge; other
differences (model, seed, system prompt, attack) are what one compares.
A folder written by a multi-condition sweep stands for all of its conditions.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from visage_local import plots
from visage_local.conditions import CONDITIONS_FILE
from visage_local.errors import ConfigError, VisageError
from visage_local.store import SUMMARY_FILE

FORMATS = ("markdown", "csv", "json")
MUST_MATCH = ("prompts_sha256", "judge")


@dataclass(frozen=True)
class RunRow:
    """One run's headline figures."""

    run: str
    model: str
    visage: float | None
    visage_ci: list[float] | None
    origin_asr: float | None
    basin_left: float | None
    basin_right: float | None
    n_prompts: int
    prompts: str
    judge: str
    seed: int
    system_prompt: str
    attack: str
    origin_mcq_accuracy: float | None
    mean_kl: float | None


def run_folders(folders: list[Path]) -> list[Path]:
    """The run folders, with multi-condition folders replaced by their conditions."""
    out = []
    for folder in folders:
        index = folder / CONDITIONS_FILE
        if index.is_file():
            out += [folder / entry["folder"] for entry in json.loads(index.read_text())]
        else:
            out.append(folder)
    return out


def load_summary(folder: Path) -> dict:
    """A run folder's summary.json, or a clear error."""
    path = folder / SUMMARY_FILE
    if not path.is_file():
        raise VisageError(f"{folder}: no {SUMMARY_FILE} (not a sweep's output folder?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise VisageError(f"{path}: damaged ({e.msg})") from e


def check_comparable(runs: list[tuple[Path, dict]]) -> None:
    """ConfigError naming the first setting in MUST_MATCH that differs between runs."""
    first_folder, first = runs[0]
    for folder, summary in runs[1:]:
        for key in MUST_MATCH:
            if summary.get(key) != first.get(key):
                what = "prompt sets" if key == "prompts_sha256" else "judges"
                raise ConfigError(
                    f"{first_folder} and {folder} used different {what} "
                    f"({first.get(key if key == 'judge' else 'prompts')!r} vs "
                    f"{summary.get(key if key == 'judge' else 'prompts')!r}), so their ASRs "
                    "do not measure the same thing; pass --force to compare anyway"
                )


def row_of(folder: Path, summary: dict) -> RunRow:
    """The table row of one run."""
    edges = summary.get("basin_edges") or [None, None]
    return RunRow(
        run=str(folder),
        model=summary.get("model_name", ""),
        visage=summary.get("visage"),
        visage_ci=summary.get("visage_ci"),
        origin_asr=summary.get("origin_asr"),
        basin_left=edges[0],
        basin_right=edges[1],
        n_prompts=summary["n_prompts"],
        prompts=summary["prompts"],
        judge=summary["judge"],
        seed=summary["seed"],
        system_prompt=summary.get("system_prompt", "default"),
        attack=summary.get("attack", "none"),
        **capability_columns(summary),
    )


def capability_columns(summary: dict) -> dict[str, float | None]:
    """The origin's MCQ accuracy and the mean KL over the grid (None without capability)."""
    rows = [r for r in summary["points"] if r.get("on_grid", True) and r.get("kl") is not None]
    origin = next((r for r in rows if r["alpha"] == 0 and not r.get("beta")), None)
    return {
        "origin_mcq_accuracy": origin["mcq_accuracy"] if origin else None,
        "mean_kl": sum(r["kl"] for r in rows) / len(rows) if rows else None,
    }


def compare_runs(folders: list[Path], force: bool = False) -> tuple[list[RunRow], list]:
    """Rows for every run (conditions expanded) and the (label, summary) pairs to plot."""
    runs = [(f, load_summary(f)) for f in run_folders(folders)]
    if not force:
        check_comparable(runs)
    return [row_of(f, s) for f, s in runs], [(f.name, s) for f, s in runs]


def render(rows: list[RunRow], fmt: str) -> str:
    """The table as markdown, CSV or JSON."""
    records = [asdict(r) for r in rows]
    if fmt == "json":
        return json.dumps(records, indent=2)
    columns = list(records[0])
    cells = [[_cell(r[c]) for c in columns] for r in records]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(cells)
        return out.getvalue()
    if fmt != "markdown":
        raise ConfigError(f"unknown format {fmt!r} (use {', '.join(FORMATS)})")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return " to ".join(_cell(v) for v in value)
    return str(value)


def plot_overlay(runs: list[tuple[str, dict]], path: Path) -> None:
    """The 1D landscapes of the runs on one figure (2D runs are left out)."""
    one_d = [(label, s) for label, s in runs if s["dims"] == 1]
    if not one_d:
        raise VisageError("no 1D run to draw (compare plots 1D landscapes only)")
    plots.plot_conditions_1d(one_d, f"{len(one_d)} runs", path)

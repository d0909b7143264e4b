"""Side-by-side comparison of finished sweeps: a table and one overlaid plot.

Runs are comparable when they used the same prompts and the same judge; other
differences (model, seed, system prompt, attack) are what one compares.
A folder written by a multi-condition sweep stands for all of its conditions.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from visage_local import stats
from visage_local.analysis import plots
from visage_local.errors import ConfigError, VisageError
from visage_local.record import RunFolder, RunSummary

FORMATS = ("markdown", "csv", "json")
FORMAT_VERSION = 1  # of ``document``
MUST_MATCH = ("prompts_sha256", "judge")


@dataclass(frozen=True)
class RunRow:
    """One run's headline figures."""

    run: str
    model: str
    visage: float | None
    visage_ci: list[float] | None
    breaking_t: float | None
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
    category_asr: dict[str, float | None] | None  # origin ASR per prompt category
    deviations: str  # from the reference setting: "none", or "setting=value; ..."
    # the places VISAGE's interval allows among the runs with one (overlap: shared places)
    rank: list[int] | None = None


def run_folders(folders: list[Path]) -> list[Path]:
    """The run folders, with folders of several runs (conditions, directions, a check's or a
    screen's) replaced by their runs; ConfigError for a folder that holds none."""
    out = []
    for folder in folders:
        runs = RunFolder(folder).runs()
        if not runs:
            raise ConfigError(f"{folder}: no run in it (no summary.json there or below)")
        out += [run.path for run in runs]
    return out


def check_comparable(runs: list[tuple[Path, RunSummary]]) -> None:
    """ConfigError naming the first setting in MUST_MATCH that differs between runs."""
    first_folder, first = runs[0]
    for folder, summary in runs[1:]:
        for key in MUST_MATCH:
            if getattr(summary, key) != getattr(first, key):
                what = "prompt sets" if key == "prompts_sha256" else "judges"
                raise ConfigError(
                    f"{first_folder} and {folder} used different {what} "
                    f"({getattr(first, key if key == 'judge' else 'prompts')!r} vs "
                    f"{getattr(summary, key if key == 'judge' else 'prompts')!r}), so their ASRs "
                    "do not measure the same thing; pass --force to compare anyway"
                )


def row_of(folder: Path, summary: RunSummary) -> RunRow:
    """The table row of one run."""
    edges = summary.basin_edges or [None, None]
    return RunRow(
        run=str(folder),
        model=summary.display_name,
        visage=summary.visage,
        visage_ci=summary.visage_ci,
        breaking_t=summary.breaking_t,
        origin_asr=summary.origin_asr,
        basin_left=edges[0],
        basin_right=edges[1],
        n_prompts=summary.n_prompts,
        prompts=summary.prompts,
        judge=summary.judge,
        seed=summary.seed,
        system_prompt=summary.system_prompt or "default",
        attack=summary.attack or "none",
        **capability_columns(summary),
        category_asr=None
        if summary.categories is None
        else {c["category"]: c["origin_asr"] for c in summary.categories},
        deviations=_deviations(summary),
    )


def _deviations(summary: RunSummary) -> str:
    if summary.deviations is None:
        return "not recorded"
    return "; ".join(f"{d['setting']}={d['value']}" for d in summary.deviations) or "none"


def capability_columns(summary: RunSummary) -> dict[str, float | None]:
    """The origin's MCQ accuracy and the mean KL over the grid (None without capability)."""
    rows = [r for r in summary.grid_points if r.kl is not None]
    origin = next((r for r in rows if r.is_origin), None)
    return {
        "origin_mcq_accuracy": origin.mcq_accuracy if origin else None,
        "mean_kl": sum(r.kl for r in rows) / len(rows) if rows else None,
    }


def compare_runs(
    folders: list[Path], force: bool = False
) -> tuple[list[RunRow], list[tuple[str, RunSummary]]]:
    """Rows for every run (conditions expanded) and the (label, summary) pairs to plot."""
    runs = [(f, RunFolder(f).read_summary()) for f in run_folders(folders)]
    if not force:
        check_comparable(runs)
    return with_ranks([row_of(f, s) for f, s in runs]), [(f.name, s) for f, s in runs]


def with_ranks(rows: list[RunRow]) -> list[RunRow]:
    """``rows`` with each VISAGE's rank interval among the rows that have one
    (``stats.rank_intervals``: runs whose intervals overlap share places)."""
    ranked = [r for r in rows if r.visage is not None]
    ranks = stats.rank_intervals([r.visage_ci or [r.visage, r.visage] for r in ranked])
    by_run = {id(r): [best, worst] for r, (best, worst) in zip(ranked, ranks, strict=True)}
    return [replace(r, rank=by_run.get(id(r))) for r in rows]


def document(rows: list[RunRow]) -> dict:
    """The comparison as one JSON document: ``format_version``, then a record per run."""
    return {"format_version": FORMAT_VERSION, "runs": [asdict(r) for r in rows]}


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
    if isinstance(value, dict):
        return "; ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return str(value)


def plot_overlay(runs: list[tuple[str, RunSummary]], path: Path) -> None:
    """The 1D landscapes of the runs on one figure (2D runs are left out)."""
    one_d = [(label, s) for label, s in runs if s.dims == 1]
    if not one_d:
        raise VisageError("no 1D run to draw (compare plots 1D landscapes only)")
    plots.plot_conditions_1d(one_d, f"{len(one_d)} runs", path)

"""``visage-local screen``: which of many models kept their safety, ranked.

Stage 1, for every model: the origin alone, with the built-in benign prompts beside the
harmful ones: origin ASR and its interval, harmful compliance, incoherence and benign
over-refusal, and the seconds it took. Stage 2 (``landscape``): 1D landscapes along
``directions`` random directions for each, their mean VISAGE with an interval over
directions and prompts, and basin edges; a time budget is shared equally among the models
(each landscape then visits its grid coarse to fine and stops in time). The ranking gives
each model the ranks its interval allows: models whose intervals overlap share ranks. With a base model: the
interpolation from it to each model, and the first t where it leaves the base's basin.

One folder holds the screen: a sub-folder per model (named by file name and short
sha256) with one ordinary, resumable sweep per stage, so an interrupted screen redoes
nothing finished. ``screen.json`` and ``screen.csv`` hold the ranked table.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from visage_local import stats
from visage_local.batching import TYPICAL_PROMPT_TOKENS, auto_batch_size
from visage_local.conditions import direction_variants, run_variants
from visage_local.errors import ConfigError
from visage_local.files import atomic_write_text
from visage_local.gguf_model import GGUFModel, is_model_file
from visage_local.grid import InterpolationGrid
from visage_local.interpolation import check_pair
from visage_local.landscape import across_directions
from visage_local.leaderboard import SCREEN_JSON, write_leaderboard
from visage_local.planning import FullGrid, OriginOnly
from visage_local.record import RunSummary
from visage_local.settings import SweepConfig, n_sequences
from visage_local.store import stored_batch_size
from visage_local.sweep import SweepOptions, run_sweep

# 2: visage is the mean over directions (visage_directions, fragile_directions) and rank.
FORMAT_VERSION = 2
SCREEN_CSV = "screen.csv"


@dataclass
class ScreenRow:
    """One model of a screen: what each stage measured (None: not run)."""

    spec: str
    file: str
    sha256: str  # the first 12 hex digits
    folder: str
    origin_asr: float | None = None
    origin_asr_ci: list[float] | None = None
    harmful_compliance: float | None = None
    incoherent: float | None = None
    benign_refusal: float | None = None
    seconds: float | None = None
    visage: float | None = None  # the mean over the directions
    visage_ci: list[float] | None = None  # two-level bootstrap: directions and prompts
    visage_directions: list[float | None] | None = None  # each direction's VISAGE
    fragile_directions: list[int] | None = None  # directions whose span rests on few answers
    basin_edges: list[float | None] | None = None  # direction 0's
    landscape_complete: bool | None = None
    breaking_t: float | None = None
    # the displacement at breaking t relative to the base's weight norm (all tensors): unlike
    # t, it compares across finetunes that moved the weights by different amounts
    breaking_distance: float | None = None
    never_left: bool | None = None  # the interpolation never left the base's basin
    error: str | None = None
    rank: list[int] | None = None  # the best and worst rank the intervals allow

    @property
    def name(self) -> str:
        """How the table names the model: file name and short sha256."""
        return f"{self.file} ({self.sha256})"


def rank(rows: list[ScreenRow]) -> list[ScreenRow]:
    """By VISAGE, highest first (models without one after), then by breaking distance from
    the base, largest first (a model that never left the base's basin before them), then by
    origin ASR, lowest first; models that failed last. Each model's ``rank`` is the range of places its
    interval allows among the models ranked by the same figure (``stats.rank_intervals``)."""

    def key(row: ScreenRow) -> tuple:
        visage = -row.visage if row.visage is not None else math.inf
        leaves = math.inf
        if row.never_left:
            leaves = -math.inf
        elif row.breaking_distance is not None:
            leaves = -row.breaking_distance
        asr = row.origin_asr if row.origin_asr is not None else math.inf
        return (row.error is not None, visage, leaves, asr, row.file)

    ordered = sorted(rows, key=key)
    by_visage = [r for r in ordered if r.error is None and r.visage is not None]
    by_asr = [
        r for r in ordered if r.error is None and r.visage is None and r.origin_asr is not None
    ]
    visage_ranks = stats.rank_intervals([r.visage_ci or [r.visage] * 2 for r in by_visage])
    asr_ranks = stats.rank_intervals(  # lower ASR is better: rank 100 - ASR
        [
            [100 - high, 100 - low]
            for low, high in (r.origin_asr_ci or [r.origin_asr] * 2 for r in by_asr)
        ]
    )
    for row, (best, worst) in zip(by_visage, visage_ranks, strict=True):
        row.rank = [best, worst]
    for row, (best, worst) in zip(by_asr, asr_ranks, strict=True):
        row.rank = [len(by_visage) + best, len(by_visage) + worst]
    return ordered


OnModel = Callable[[str, str], None]  # (model, what is being done)


def screen(
    models: list[tuple[str, Path]],
    config: SweepConfig,
    out_dir: Path,
    landscape: bool = False,
    budget_minutes: float | None = None,
    base: Path | None = None,
    interpolation_steps: int = 10,
    on_model: OnModel | None = None,
    batch_size: int | None = None,
    on_start: Callable[[], None] | None = None,
    directions: int = 3,
) -> list[ScreenRow]:
    """Screen ``models`` ((spec, path) pairs) with ``config``'s settings (its model path is
    each model's; its grid is stage 2's landscapes, along ``directions`` random directions)
    into ``out_dir``; return the ranked rows,
    also written to screen.json and screen.csv. Each model's batch size is ``batch_size``,
    else the one its interrupted screen chose, else what fits in memory."""
    if base is not None:  # before any work: every model must interpolate from the base
        for _, path in models:
            check_pair(GGUFModel(base), GGUFModel(path))
    out_dir.mkdir(parents=True, exist_ok=True)
    if on_start:
        on_start()
    share = None if budget_minutes is None else budget_minutes / max(1, len(models))
    rows = []
    for spec, path in models:
        model = GGUFModel(path)
        row = ScreenRow(spec, path.name, model.sha256[:12], "")
        folder = out_dir / f"{_stem(path)}-{row.sha256}"
        row.folder = str(folder)
        rows.append(row)
        this = replace(config, model_path=path, benign=True)
        batch = (
            batch_size
            or stored_batch_size(folder / "origin")
            or auto_batch_size(
                model, n_sequences(this), TYPICAL_PROMPT_TOKENS + this.max_new_tokens
            )
        )
        this = replace(this, engine=replace(this.engine, max_sequences=batch))
        if on_model:
            on_model(spec, "stage 1: the model itself")
        started = time.monotonic()
        origin = run_sweep(this, SweepOptions(folder / "origin", order=OriginOnly()))
        row.seconds = round(time.monotonic() - started, 1)
        _stage_one(row, origin)
        if landscape:
            if on_model:
                on_model(spec, f"stage 2: 1D landscapes along {directions} directions")
            _stage_two(row, replace(this, benign=False), folder / "landscape", directions, share)
        if base is not None:
            if on_model:
                on_model(spec, "interpolation from the base")
            interpolation = replace(
                this, model_path=base, finetune=path, finetune_kind="model", benign=False,
                grid=InterpolationGrid(steps=interpolation_steps),
            )  # fmt: skip
            path_from_base = run_sweep(interpolation, SweepOptions(folder / "interpolation"))
            row.breaking_t = path_from_base.breaking_t
            row.never_left = path_from_base.breaking_t is None
            row.breaking_distance = (path_from_base.breaking_distance or {}).get("all")
    ranked = rank(rows)
    write_screen(ranked, out_dir)
    write_leaderboard(out_dir)
    return ranked


def _stem(path: Path) -> str:
    return path.name.removesuffix(".gguf")


def _stage_two(
    row: ScreenRow, config: SweepConfig, folder: Path, directions: int, minutes: float | None
) -> None:
    """The landscapes of one model along ``directions`` directions, sharing ``minutes``."""
    order = FullGrid(coarse_first=minutes is not None)
    results = run_variants(
        direction_variants(config, directions),
        SweepOptions(folder, order=order, budget_minutes=minutes),
    )
    across = across_directions(folder, results)
    row.visage = across["visage"]["mean"]
    row.visage_ci = across["visage"]["ci"]
    row.visage_directions = [s.visage for _, s in results]
    row.fragile_directions = [k for k, (_, s) in enumerate(results) if s.visage_fragile]
    row.basin_edges = results[0][1].basin_edges
    row.landscape_complete = all(s.complete for _, s in results)


def _stage_one(row: ScreenRow, summary: RunSummary) -> None:
    origin = summary.origin
    assert origin is not None  # the origin is the one point evaluated
    row.origin_asr = origin.asr
    row.origin_asr_ci = list(origin.asr_ci)
    row.harmful_compliance = origin.harmful_compliance
    row.incoherent = origin.incoherent
    row.benign_refusal = origin.benign_refusal


CSV_COLUMNS = ("rank", "rank_low", "rank_high", "model", "spec", "origin_asr", "origin_asr_low", "origin_asr_high",
               "harmful_compliance", "incoherent", "benign_refusal", "visage", "visage_low",
               "visage_high", "breaking_t", "breaking_distance", "seconds", "folder")  # fmt: skip


def write_screen(rows: list[ScreenRow], out_dir: Path) -> None:
    """screen.json (``format_version`` first) and screen.csv, ranked."""
    document = {"format_version": FORMAT_VERSION, "models": [asdict(r) for r in rows]}
    atomic_write_text(out_dir / SCREEN_JSON, json.dumps(document, indent=2))
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(CSV_COLUMNS)
    for place, row in enumerate(rows, start=1):
        asr_ci = row.origin_asr_ci or [None, None]
        visage_ci = row.visage_ci or [None, None]
        writer.writerow([
            place, *(row.rank or [None, None]), row.name, row.spec, row.origin_asr, *asr_ci, row.harmful_compliance,
            row.incoherent, row.benign_refusal, row.visage, *visage_ci, row.breaking_t,
            row.breaking_distance, row.seconds, row.folder,
        ])  # fmt: skip
    atomic_write_text(out_dir / SCREEN_CSV, text.getvalue())


def expand_specs(specs: list[str], resolve: Callable[[str], Path]) -> list[tuple[str, Path]]:
    """Every (spec, path) the specs name, each model once: a folder gives its GGUFs, a
    glob the files it matches (a split model by its first part), anything else
    ``resolve(spec)`` (a path, a registry name, a store spec)."""
    found: list[tuple[str, Path]] = []
    for spec in specs:
        if Path(spec).is_dir():
            matches = sorted(str(p) for p in Path(spec).glob("*.gguf"))
        elif any(c in spec for c in "*?[") and not Path(spec).exists():
            matches = sorted(glob.glob(spec))
        else:
            found.append((spec, resolve(spec)))
            continue
        models = [(m, Path(m)) for m in matches if is_model_file(Path(m))]
        if not models:
            raise ConfigError(f"{spec}: no GGUF model there")
        found += models
    unique: dict[Path, tuple[str, Path]] = {}
    for spec, path in found:
        unique.setdefault(path.resolve(), (spec, path))
    return list(unique.values())

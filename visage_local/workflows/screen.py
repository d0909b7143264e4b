"""``visage-local screen``: which of many models kept their safety, ranked.

Stage 1, for every model: the origin alone, with the built-in benign prompts beside the
harmful ones: origin ASR and its interval, harmful compliance, incoherence and benign
over-refusal, and the seconds it took. Stage 2 (``landscape``): 1D landscapes along
``directions`` random directions for each, their mean VISAGE with an interval over
directions and prompts, and basin edges; a time budget is shared equally among the models
(each landscape then visits its grid coarse to fine and stops in time). The ranking gives
each model the ranks its interval allows: models whose intervals overlap share ranks. With a
base model: the base itself is screened once (marked, never interpolated to itself), then
the interpolation from it to each other model and the first t where it leaves the base's
basin; the base's own point (t = 0) is evaluated once and taken by every later
interpolation. A model that cannot be interpolated from the base (another architecture or
shape) is skipped with the reason in its row.

One folder holds the screen: a sub-folder per model (named by the model as typed and its
short sha256) with one ordinary, resumable sweep per stage, so an interrupted screen redoes
nothing finished. ``screen.json`` (with the settings and full sha256s) and ``screen.csv``
hold the ranked table.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from visage_local import stats
from visage_local.analysis.landscape import across_directions
from visage_local.analysis.verdict import alignment
from visage_local.engine.batching import TYPICAL_PROMPT_TOKENS, auto_batch_size
from visage_local.errors import ConfigError
from visage_local.files import atomic_write_text
from visage_local.gguf.model import GGUFModel, is_model_file
from visage_local.points.grid import InterpolationGrid
from visage_local.points.planning import FullGrid, OriginOnly, plan
from visage_local.reading.leaderboard import write_leaderboard
from visage_local.record import RunSummary, ScreenFolder
from visage_local.record.writer import stored_batch_size
from visage_local.run.cluster import RayOptions
from visage_local.run.conditions import direction_variants, run_variants
from visage_local.run.estimate import duration
from visage_local.run.evaluator import evaluator
from visage_local.run.prepared import prepare
from visage_local.run.settings import SweepConfig, n_sequences
from visage_local.run.sweep import SweepOptions, run_sweep
from visage_local.sources.registry import display_name, model_label, named_spec
from visage_local.weights.interpolation import check_pair

# 2: visage is the mean over directions (visage_directions, fragile_directions) and rank.
# 3: the full sha256, the name as typed, the base marked, seconds per stage, the settings.
FORMAT_VERSION = 3


@dataclass
class ScreenRow:
    """One model of a screen: what each stage measured (None: not run)."""

    spec: str  # as the user typed it
    name: str  # as tables show it (``registry.display_name``)
    file: str
    sha256: str
    folder: str
    base: bool = False  # the base the others are interpolated from
    origin_asr: float | None = None
    origin_asr_ci: list[float] | None = None
    n_refused: int | None = None  # harmful prompts refused at the origin
    n_prompts: int | None = None
    harmful_compliance: float | None = None
    incoherent: float | None = None
    benign_refusal: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # by stage, every sitting's
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
    error: str | None = None  # why the model was skipped
    rank: list[int] | None = None  # the best and worst rank the intervals allow

    @property
    def label(self) -> str:
        """The name with the base marked."""
        return f"{self.name} [base]" if self.base else self.name


def rank(rows: list[ScreenRow]) -> list[ScreenRow]:
    """By VISAGE, highest first (models without one after), then by breaking distance from
    the base, largest first (a model that never left the base's basin before them), then by
    origin ASR, lowest first; models that failed last. Each model's ``rank`` is the range of places its
    interval allows among the models ranked by the same figure (``stats.rank_intervals``)."""

    def key(row: ScreenRow) -> tuple:
        visage = -row.visage if row.visage is not None else math.inf
        leaves = math.inf
        if row.never_left or row.base:  # the base is in its own basin
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


@dataclass(frozen=True)
class Stages:
    """What a screen measures beyond each model's origin."""

    landscape: bool = False  # 1D landscapes along ``directions`` random directions
    directions: int = 3
    budget_minutes: float | None = None  # shared equally among the models' landscapes
    interpolation_steps: int = 10  # from the base, when there is one


@dataclass(frozen=True)
class ScreenEstimate:
    """What a screen will take, by stage (seconds), from one model's timing (loading each
    model left out)."""

    origin_s: float  # every model's own answers (stage 1)
    landscape_s: float
    interpolation_s: float
    timed_on: str
    probe_s: float

    @property
    def total_s(self) -> float:
        """Seconds of the whole screen."""
        return self.origin_s + self.landscape_s + self.interpolation_s

    def describe(self) -> str:
        """One line for the terminal."""
        parts = [f"the models' own answers {duration(self.origin_s)}"]
        if self.landscape_s:
            parts.append(f"landscapes {duration(self.landscape_s)}")
        if self.interpolation_s:
            parts.append(f"interpolations {duration(self.interpolation_s)}")
        return (
            f"estimate for the screen: about {duration(self.total_s)} ({', '.join(parts)}); "
            f"timed on {self.timed_on} in {self.probe_s:.0f} s, other models scaled by file "
            "size; --no-benign, --benign-limit, --limit, --max-new-tokens and --directions "
            "make it cheaper"
        )


def estimate_screen(
    models: list[tuple[Path, bool]], config: SweepConfig, stages: Stages, spill: Path
) -> ScreenEstimate:
    """Time the first of ``models`` ((path, is the base) pairs, in screening order) on this
    machine along the landscape grid and extrapolate: each model's origin with the benign
    prompts, ``stages.directions`` landscapes, and the interpolation from the base (its
    t = 0 once); other models take their file size's share. Answers are taken at full length
    (an upper bound, as a sweep's); loading each model is left out."""
    first = models[0][0]
    prepared = prepare(replace(config, model_path=first, benign=False))
    probe, model = prepared.config, prepared.model
    points = plan(probe.grid)
    with evaluator(prepared, spill) as live:
        timed = live.estimate(points)
    answers = timed.prefill_s + timed.decode_s + timed.score_s
    origin = answers * n_sequences(config) / max(1, n_sequences(probe))
    origin_s = landscape_s = interpolation_s = 0.0
    for path, is_base in models:
        scale = GGUFModel(path).size / model.size
        origin_s += scale * origin
        if stages.landscape:
            landscape_s += scale * stages.directions * timed.total_s
        if not is_base and any(b for _, b in models):
            interpolation_s += scale * stages.interpolation_steps * timed.point_s
    if interpolation_s:
        interpolation_s += answers  # the base's own point, evaluated once
    return ScreenEstimate(origin_s, landscape_s, interpolation_s, first.name, timed.probe_s)


def screen(
    models: list[tuple[str, Path]],
    config: SweepConfig,
    out_dir: Path,
    stages: Stages = Stages(),
    base: tuple[str, Path] | None = None,
    on_model: OnModel | None = None,
    batch_size: int | None = None,
    on_start: Callable[[], None] | None = None,
    ray: RayOptions | None = None,
    on_estimate: Callable[[ScreenEstimate], None] | None = None,
) -> list[ScreenRow]:
    """Screen ``models`` ((spec, path) pairs) with ``config``'s settings (its model path is
    each model's; its grid is stage 2's landscapes; ``config.benign``: the origin answers
    the benign prompts too) into ``out_dir``; with ``base`` (spec, path), the base once and
    the interpolation from it to each other model. Return the ranked rows, also written to
    screen.json and screen.csv. Each model's batch size is ``batch_size``, else the one its
    interrupted screen chose, else what fits in memory."""
    say = on_model or (lambda spec, what: None)
    models = _without(models, base)
    skipped = {}
    if base is not None:  # before any work: which models can interpolate from the base
        for _, path in models:
            try:
                check_pair(GGUFModel(base[1]), GGUFModel(path))
            except ConfigError as e:
                skipped[path] = str(e)
        if len(skipped) == len(models) and models:
            raise ConfigError(next(iter(skipped.values())))
    out_dir.mkdir(parents=True, exist_ok=True)
    if on_start:
        on_start()
    screened = ([(base[1], True)] if base else []) + [(p, False) for _, p in models]
    screened = [(p, is_base) for p, is_base in screened if p not in skipped]
    if on_estimate is not None and screened:
        on_estimate(estimate_screen(screened, config, stages, out_dir))
    share = None
    if stages.budget_minutes is not None:
        share = stages.budget_minutes / max(1, len(models) + (base is not None))
    rows = []
    base_point: Path | None = None  # the interpolation whose t = 0 the later ones take
    for spec, path, is_base in ([(*base, True)] if base else []) + [(*m, False) for m in models]:
        model = GGUFModel(path)
        name = display_name(spec, path)
        folder = out_dir / f"{model_label(spec, path)}-{model.sha256[:12]}"
        row = ScreenRow(spec, name, path.name, model.sha256, str(folder), base=is_base)
        rows.append(row)
        if path in skipped:
            row.error = f"skipped: {skipped[path]}"
            say(name, row.error)
            continue
        this = model_config(config, spec, model, batch_size or stored_batch_size(folder / "origin"))
        options = SweepOptions(folder, ray=ray)
        say(name, "stage 1: the model itself" + (" (the base)" if is_base else ""))
        origin = run_sweep(this, replace(options, out_dir=folder / "origin", order=OriginOnly()))
        row.seconds["origin"] = origin.elapsed_s
        origin_figures(row, origin)
        if stages.landscape:
            say(name, f"stage 2: 1D landscapes along {stages.directions} directions")
            run_landscapes(
                row, replace(this, benign=False), folder / "landscape", stages, share, ray
            )
        if base is not None and not is_base:
            say(name, "interpolation from the base")
            where = replace(options, out_dir=folder / "interpolation", origin_from=base_point)
            _interpolate(row, this, base, stages.interpolation_steps, where)
            base_point = base_point or where.out_dir
    ranked = rank(rows)
    write_screen(ranked, out_dir, _settings(config, stages, base))
    write_leaderboard(out_dir)
    return ranked


def model_config(
    config: SweepConfig, spec: str, model: GGUFModel, batch_size: int | None
) -> SweepConfig:
    """The screen's settings for one model, with ``batch_size`` or what fits in memory."""
    this = replace(config, model_path=model.path, model_spec=named_spec(spec, model.path))
    batch = batch_size or auto_batch_size(
        model, n_sequences(this), TYPICAL_PROMPT_TOKENS + this.max_new_tokens
    )
    return replace(this, engine=replace(this.engine, max_sequences=batch))


def _interpolate(
    row: ScreenRow, this: SweepConfig, base: tuple[str, Path], steps: int, options: SweepOptions
) -> None:
    """The interpolation from the base to the row's model, into its row."""
    interpolation = replace(
        this, model_path=base[1], finetune=this.model_path, finetune_kind="model", benign=False,
        model_spec=named_spec(*base), grid=InterpolationGrid(steps=steps),
    )  # fmt: skip
    path_from_base = run_sweep(interpolation, options)
    row.seconds["interpolation"] = path_from_base.elapsed_s
    row.breaking_t = path_from_base.breaking_t
    row.never_left = path_from_base.breaking_t is None
    row.breaking_distance = (path_from_base.breaking_distance or {}).get("all")


def screen_verdict(rows: list[ScreenRow]) -> str:
    """One plain line over a ranked screen: which models are aligned, which lead (and
    whether the lead can be told apart), which were skipped."""
    measured = [r for r in rows if r.error is None and r.n_prompts is not None]
    if not measured:
        return "verdict: no model was measured"
    aligned = [r for r in measured if alignment(r.n_refused, r.n_prompts, r.origin_asr)[1]]
    parts = [f"{len(aligned)} of {len(measured)} models aligned"]
    lead = [r for r in measured if r.rank and r.rank[0] == 1]
    if len(lead) == 1:
        parts.append(f"first: {lead[0].label}")
    elif lead:
        names = ", ".join(r.label for r in lead)
        parts.append(f"{names} share first place (their intervals overlap: more prompts or "
                     "directions would tell them apart)")  # fmt: skip
    not_aligned = [r.label for r in measured if r not in aligned]
    if not_aligned:
        parts.append("not or weakly aligned: " + ", ".join(not_aligned))
    skipped = [r.label for r in rows if r.error is not None]
    if skipped:
        parts.append(f"skipped: {', '.join(skipped)}")
    return "verdict: " + "; ".join(parts)


def _without(models: list[tuple[str, Path]], base: tuple[str, Path] | None) -> list:
    """``models`` without the base (screened once, as the base)."""
    if base is None:
        return models
    return [(spec, path) for spec, path in models if path.resolve() != base[1].resolve()]


def _settings(config: SweepConfig, stages: Stages, base: tuple[str, Path] | None) -> dict:
    """What every model of the screen was measured with (screen.json's ``settings``)."""
    return {
        "prompts": config.prompts.source,
        "n_prompts": len(config.prompts.prompts),
        "prompts_sha256": config.prompts.sha256,
        "benign": config.benign_prompts.source if config.benign else None,
        "n_benign": len(config.benign_prompts.prompts) if config.benign else 0,
        "max_new_tokens": config.max_new_tokens,
        "judges": list(config.judges),
        "system_prompt": config.system_prompt.label(),
        "attack": config.attack.label(),
        "seed": config.seed,
        "grid": config.grid.describe() if stages.landscape else None,
        "directions": stages.directions if stages.landscape else 0,
        "interpolation_steps": stages.interpolation_steps if base else None,
        "base": None if base is None else {"spec": base[0], "file": str(base[1].resolve())},
        "requant": config.requant,
    }


def run_landscapes(
    row: ScreenRow,
    config: SweepConfig,
    folder: Path,
    stages: Stages,
    minutes: float | None,
    ray: RayOptions | None,
) -> None:
    """The landscapes of one model along ``stages.directions`` directions, in ``minutes``."""
    order = FullGrid(coarse_first=minutes is not None)
    results = run_variants(
        direction_variants(config, stages.directions),
        SweepOptions(folder, order=None if ray else order, budget_minutes=minutes, ray=ray),
    )
    across = across_directions(folder, results)
    row.seconds["landscape"] = round(sum(s.elapsed_s for _, s in results), 3)
    row.visage = across["visage"]["mean"]
    row.visage_ci = across["visage"]["ci"]
    row.visage_directions = [s.visage for _, s in results]
    row.fragile_directions = [k for k, (_, s) in enumerate(results) if s.visage_fragile]
    row.basin_edges = results[0][1].basin_edges
    row.landscape_complete = all(s.complete for _, s in results)


def origin_figures(row: ScreenRow, summary: RunSummary) -> None:
    """Stage 1's figures of a model, from its origin run, into its row."""
    origin = summary.origin
    assert origin is not None  # the origin is the one point evaluated
    row.origin_asr = origin.asr
    row.origin_asr_ci = list(origin.asr_ci)
    row.n_refused, row.n_prompts = origin.n_refused, origin.n_prompts
    row.harmful_compliance = origin.harmful_compliance
    row.incoherent = origin.incoherent
    row.benign_refusal = origin.benign_refusal


CSV_COLUMNS = ("rank", "rank_low", "rank_high", "model", "spec", "base", "sha256", "origin_asr",
               "origin_asr_low", "origin_asr_high", "harmful_compliance", "incoherent",
               "benign_refusal", "visage", "visage_low", "visage_high", "breaking_t",
               "breaking_distance", "seconds", "error", "folder")  # fmt: skip


def write_screen(rows: list[ScreenRow], out_dir: Path, settings: dict | None = None) -> None:
    """screen.json (``format_version`` first, the settings, the models) and screen.csv,
    ranked."""
    document = {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "verdict": screen_verdict(rows),
        "models": [asdict(r) for r in rows],
    }
    atomic_write_text(ScreenFolder(out_dir).screen, json.dumps(document, indent=2))
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(CSV_COLUMNS)
    for place, row in enumerate(rows, start=1):
        asr_ci = row.origin_asr_ci or [None, None]
        visage_ci = row.visage_ci or [None, None]
        writer.writerow([
            place, *(row.rank or [None, None]), row.name, row.spec, row.base, row.sha256,
            row.origin_asr, *asr_ci, row.harmful_compliance, row.incoherent, row.benign_refusal,
            row.visage, *visage_ci, row.breaking_t, row.breaking_distance,
            round(sum(row.seconds.values()), 1), row.error, row.folder,
        ])  # fmt: skip
    atomic_write_text(ScreenFolder(out_dir).csv, text.getvalue())


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

"""Running landscapes from the command line: options to configuration, progress, tables.

Shared by ``sweep`` and ``interpolate``; the work is the library's (``settings.sweep_config``,
``sweep.run_sweep``, ``conditions``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import click
from tqdm import tqdm

from visage_local.analysis.landscape import (
    across_directions,
    deviation_text,
    fragility_lines,
    headline,
)
from visage_local.analysis.verdict import across_verdict, edge_text, landscape_verdict
from visage_local.engine.capability import CapabilitySettings
from visage_local.files import check_writable
from visage_local.points.grid import Grid, InterpolationGrid
from visage_local.points.planning import PointOrder, Shard, plan
from visage_local.record import RunSummary
from visage_local.record.writer import stored_batch_size
from visage_local.run.conditions import condition_variants, direction_variants, run_variants
from visage_local.run.estimate import Estimate
from visage_local.run.evaluator import PointOutcome
from visage_local.run.prepared import PreparedSweep
from visage_local.run.settings import SweepConfig, n_sequences
from visage_local.run.sweep import SweepOptions, run_sweep

from ._common import echo_json
from .config_file import write_config
from .measurement import Measurement

EXTRA_COLUMNS = (
    ("harmful_compliance", "compliant+coherent"),
    ("incoherent", "incoherent"),
    ("benign_refusal", "benign refused"),
    ("mcq_accuracy", "MCQ acc"),
    ("kl", "KL"),
    ("perplexity", "perplexity"),
)


@dataclass(frozen=True)
class Output:
    """Where a landscape command writes and how it shows the result."""

    out_dir: Path | None = None
    overwrite: bool = False
    as_json: bool = False

    @classmethod
    def take(cls, params: dict) -> Output:
        """The output options out of a command's ``params`` (removed from it)."""
        return cls(params.pop("out_dir"), params.pop("overwrite"), params.pop("as_json"))


@dataclass(frozen=True)
class Landscape:
    """What a landscape command measures besides its measurement options."""

    model_path: Path
    grid: Grid | InterpolationGrid
    seed: int
    default_out: Path
    benign: bool = False
    capability: CapabilitySettings | None = None
    n_directions: int = 1
    order: PointOrder | None = None
    budget_minutes: float | None = None
    finetune: Path | None = None
    finetune_kind: str = "model"
    model_spec: str | None = None  # the model as the user named it when not by its path


def run_landscape(
    landscape: Landscape, measurement: Measurement, output: Output, resolved: dict
) -> None:
    """Prepare the sweep from the measurement options, run it (or its variants) with a
    progress bar, and print each landscape's table and the verdict. The command's options,
    with ``resolved`` (the values the command chose, such as the model's path) and the
    choices made here, are written to the run folder's config.toml once the run starts."""
    out_dir = output.out_dir or landscape.default_out
    check_writable(out_dir)
    prepared = _prepare(landscape, measurement, output, out_dir)
    config = prepared.config
    if landscape.n_directions > 1:
        variants = direction_variants(config, landscape.n_directions)
    else:
        variants = condition_variants(config, measurement.conditions())
    bar = _SweepBar(landscape, [label for label, _ in variants])
    _announce(landscape, config, len(variants), bar.n_points, out_dir)
    ctx = click.get_current_context()
    values = ctx.params | resolved | {
        "limit": measurement.n_prompts,
        "max_new_tokens": measurement.new_tokens,
        "batch_size": config.engine.max_sequences,
        "out_dir": out_dir.resolve(),
    }  # fmt: skip
    options = SweepOptions(
        out_dir=out_dir,
        on_start=lambda: write_config(out_dir, ctx.command, values, landscape.model_spec),
        overwrite=output.overwrite,
        order=landscape.order,
        budget_minutes=landscape.budget_minutes,
        ray=measurement.ray(),
    )
    with bar:
        if len(variants) == 1:  # the sweep prepared above
            label = variants[0][0]
            summary = run_sweep(prepared, replace(options, **bar.callbacks(label)))
            results = [(label, summary)]
        else:
            results = run_variants(variants, options, bar.on_point, bar.on_estimate)
    _show(results, out_dir, output.as_json, landscape.n_directions)


def _prepare(
    landscape: Landscape, measurement: Measurement, output: Output, out_dir: Path
) -> PreparedSweep:
    """The sweep prepared from the options (a resumed run keeps its batch size), its notes
    printed."""
    batch_size = measurement.batch_size
    if batch_size is None and not output.overwrite:
        batch_size = stored_batch_size(out_dir)
        if batch_size is not None:
            click.echo(f"resuming with the run's batch size, {batch_size}", err=True)
    config = measurement.config(
        landscape.model_path, landscape.grid, landscape.seed, landscape.benign, batch_size,
        landscape.finetune, landscape.finetune_kind, landscape.capability,
        model_spec=landscape.model_spec,
    )  # fmt: skip
    prepared = measurement.prepared(config)
    for note in prepared.notes(out_dir):
        click.echo(note, err=True)
    return prepared


def _announce(
    landscape: Landscape, config: SweepConfig, n_variants: int, n_points: int, out_dir: Path
) -> None:
    """One line: how many points, prompts, runs and tokens, and where they go."""
    planned = len(plan(landscape.grid))  # the origin too, where the grid misses it
    order = landscape.order
    shard = f" (shard {order}: {n_points} of them)" if isinstance(order, Shard) else ""
    runs = f" x {n_variants} runs" if n_variants > 1 else ""
    name = landscape.model_spec or landscape.model_path.name
    click.echo(
        f"{name}: {planned} points{shard} x {n_sequences(config)} prompts{runs}, "
        f"up to {config.max_new_tokens} new tokens -> {out_dir}",
        err=True,
    )


class _SweepBar:
    """One progress bar over every variant's points, with each point's ASR and warnings."""

    def __init__(self, landscape: Landscape, labels: list[str]):
        planned = plan(landscape.grid)
        order = landscape.order
        self.n_points = len(order.share(planned)) if isinstance(order, Shard) else len(planned)
        self.labels = labels
        self.finished: dict[str, int] = {}  # points finished in each variant, earlier sittings too
        self.estimated: list[str] = []  # the variants estimated in this sitting
        self.bar = tqdm(total=self.n_points * len(labels), unit="point", desc="sweep")

    def __enter__(self) -> _SweepBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def callbacks(self, label: str) -> dict:
        """``SweepOptions``' on_point and on_estimate for one variant."""
        return {
            "on_point": lambda o, d, t: self.on_point(label, o, d, t),
            "on_estimate": lambda e: self.on_estimate(label, e),
        }

    def _advance(self, label: str, done: int) -> None:
        for earlier in self.labels[: self.labels.index(label)]:
            self.finished[earlier] = self.n_points  # the variants run in turn: these are done
        self.finished[label] = done
        self.bar.n = sum(self.finished.values())

    def on_point(self, label: str, outcome: PointOutcome, done: int, total: int) -> None:
        """A point finished: its place and ASR, and a warning where requantisation strayed."""
        self._advance(label, done)
        where = f"a={outcome.point.alpha:+.3f}"
        if outcome.point.beta is not None:
            where += f" b={outcome.point.beta:+.3f}"
        self.bar.set_postfix_str(f"{where} ASR={outcome.asr:.1f}%")
        self.bar.refresh()
        for kind in outcome.displacement.unfaithful():
            moved = outcome.displacement.total
            moved = moved if kind == "all" else outcome.displacement.by_kind[kind]
            tqdm.write(
                f"warning: at {where} requantisation moved the {kind} weights by "
                f"{moved.ratio:.2f}x the intended step, cosine {moved.cosine:.2f} (see "
                "'displacement' in summary.json; --requant q8_0 or f16 follows the direction "
                "more closely)",
                file=sys.stderr,
            )

    def on_estimate(self, label: str, estimate: Estimate) -> None:
        """A variant's estimate: printed, and the points earlier sittings finished counted."""
        self._advance(label, self.n_points - estimate.n_points)
        if not self.estimated:  # so the ETA counts this sitting's points only
            self.bar.initial = self.bar.n
        self.estimated.append(label)
        self.bar.refresh()
        tqdm.write(estimate.describe(), file=sys.stderr)
        for note in estimate.notes():
            tqdm.write(f"note: {note}", file=sys.stderr)


def _show(
    results: list[tuple[str, RunSummary]], out_dir: Path, as_json: bool, n_directions: int
) -> None:
    """The landscapes as JSON, or as tables with the verdict."""
    if as_json:
        documents = [json.loads(summary.to_json()) for _, summary in results]
        if len(results) == 1:
            echo_json(documents[0])
            return
        pairs = zip(results, documents, strict=True)
        runs = [{"label": label, "summary": d} for (label, _), d in pairs]
        across = across_directions(out_dir, results) if n_directions > 1 else None
        echo_json({"runs": runs} | ({"across_directions": across} if across else {}))
        return
    for label, summary in results:
        if len(results) > 1:
            click.echo(f"\n{label}")
        print_table(summary)
        if len(results) > 1 and n_directions == 1:
            click.echo(landscape_verdict(summary))
    click.echo(f"results in {out_dir}")
    if n_directions > 1:
        figures = across_directions(out_dir, results)
        print_across_directions(figures)
        click.echo(across_verdict(figures, results[0][1]))
    elif len(results) == 1:
        click.echo(landscape_verdict(results[0][1]))


def print_across_directions(figures: dict) -> None:
    """Mean VISAGE and basin edges across directions, with their intervals."""
    click.echo(f"\nacross {figures['directions']} directions:")
    v = figures["visage"]
    if v["mean"] is None:
        click.echo("  VISAGE: none (no direction finished)")
    else:
        each = ", ".join(
            "-" if d["visage"] is None else f"{d['visage']:.2f}" for d in figures["per_direction"]
        )
        click.echo(
            f"  VISAGE: mean {v['mean']:.2f} [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}] "
            f"(95%, directions and prompts resampled; each direction: {each})"
        )
    for key, name in (("left_edge", "left edge"), ("right_edge", "right edge")):
        f = figures[key]
        if f["mean"] is None:
            click.echo(f"  {name}: no edge within the range probed in any direction")
        else:
            click.echo(
                f"  {name}: mean {f['mean']:+.3f} [{f['ci'][0]:+.3f}, {f['ci'][1]:+.3f}] "
                f"(95% t interval, {f['n']} of {figures['directions']} directions have one)"
            )


def _cell(value: float | None, key: str, width: int) -> str:
    if value is None:
        return "  " + "-".rjust(width)
    return f"  {value:>{width}.{3 if key == 'kl' else 1}f}"


def print_table(summary: RunSummary) -> None:
    """The landscape as a table: 1D rows or a 2D grid, then VISAGE, edges and skips."""
    rows = summary.grid_points
    if summary.dims == 1:
        extra = [(k, h) for k, h in EXTRA_COLUMNS if any(getattr(r, k) is not None for r in rows)]
        click.echo("   alpha     ASR  95% CI        refused" + "".join(f"  {h}" for _, h in extra))
        for r in sorted(rows, key=lambda r: r.alpha):
            cells = "".join(_cell(getattr(r, k), k, len(h)) for k, h in extra)
            ci = "[{:5.1f}, {:5.1f}]".format(*r.asr_ci)
            click.echo(
                f"{r.alpha:+8.3f}  {r.asr:6.1f}  {ci}  {r.n_refused:>3}/{r.n_prompts}{cells}"
            )
    else:
        axis = sorted({r.alpha for r in rows})
        click.echo("beta\\alpha " + " ".join(f"{a:+6.2f}" for a in axis))
        for b in sorted({r.beta for r in rows}, reverse=True):
            by_alpha = {r.alpha: r.asr for r in rows if r.beta == b}
            cells = " ".join(f"{by_alpha[a]:6.1f}" if a in by_alpha else "     -" for a in axis)
            click.echo(f"{b:+9.2f}  {cells}")
    if summary.skipped:
        skipped = ", ".join(f"{p['alpha']:+.3f}" for p in summary.skipped[:12])
        more = "" if len(summary.skipped) <= 12 else f" and {len(summary.skipped) - 12} more"
        click.echo(
            f"time budget: skipped {len(summary.skipped)} points ({skipped}{more}) at "
            f"{summary.seconds_per_point:.0f} s a point; run again with more time to add them"
        )
    if summary.order == "adaptive":
        click.echo(
            f"adaptive: evaluated {summary.n_points_evaluated} of "
            f"{summary.n_points_planned} grid points"
        )
    click.echo(
        f"{headline(summary, 2)}   origin ASR {summary.origin_asr:.1f}%   "
        f"({summary.elapsed_s:.0f} s)"
    )
    for line in fragility_lines(summary, 2):
        click.echo(line)
    if summary.interpolation:
        click.echo(
            f"(the first t where ASR exceeds the base model's + {summary.edge_threshold:.0f} "
            "points; interpolation landscapes have no VISAGE)"
        )
    if summary.breaking_distance:
        shown = ", ".join(f"{kind} {d:.3g}" for kind, d in summary.breaking_distance.items())
        click.echo(
            f"breaking distance (the change at breaking t / the base's weight norm): {shown}; "
            "unlike t it compares across finetunes"
        )
    for ray in summary.basin_outline or []:
        where = "no edge in range" if ray["radius"] is None else f"r={ray['radius']:.3f}"
        click.echo(f"basin edge along {ray['angle_deg']:+6.1f} deg: {where}")
    edges = summary.basin_edges
    if edges:
        shown = ", ".join(
            edge_text(e, side, summary.range) for e, side in zip(edges, (-1, 1), strict=True)
        )
        click.echo(f"basin edges (ASR > origin + {summary.edge_threshold:.0f} points): {shown}")
    if summary.categories:
        print_categories(summary)
    click.echo(deviation_text(summary))


def print_categories(summary: RunSummary) -> None:
    """Per prompt category: its prompts, origin ASR with interval, VISAGE or breaking t."""
    last = "breaking t" if summary.interpolation else "VISAGE"
    click.echo(f"{'category':<32} {'n':>3}  {'origin ASR':>10}  {'95% CI':<14}  {last}")
    for c in summary.categories or []:
        asr = "-" if c["origin_asr"] is None else f"{c['origin_asr']:.1f}"
        ci = "" if c["origin_asr_ci"] is None else "[{:5.1f}, {:5.1f}]".format(*c["origin_asr_ci"])
        value = c["breaking_t"] if summary.interpolation else c["visage"]
        shown = "-" if value is None else f"{value:.2f}"
        click.echo(f"{c['category'][:32]:<32} {c['n_prompts']:>3}  {asr:>10}  {ci:<14}  {shown}")

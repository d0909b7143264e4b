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

from visage_local.capability import CapabilitySettings
from visage_local.conditions import condition_variants, direction_variants, run_variants
from visage_local.estimate import Estimate
from visage_local.evaluator import PointOutcome
from visage_local.files import check_writable
from visage_local.grid import Grid, InterpolationGrid
from visage_local.landscape import across_directions, deviation_text, fragility_lines, headline
from visage_local.planning import PointOrder, Shard, plan
from visage_local.record import RunSummary
from visage_local.settings import n_sequences
from visage_local.store import stored_batch_size
from visage_local.sweep import SweepOptions, run_sweep
from visage_local.verdict import across_verdict, edge_text, landscape_verdict

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


def run_landscape(
    model_path: Path,
    grid: Grid | InterpolationGrid,
    seed: int,
    measurement: Measurement,
    output: Output,
    default_out: Path,
    benign: bool = False,
    capability: CapabilitySettings | None = None,
    n_directions: int = 1,
    order: PointOrder | None = None,
    budget_minutes: float | None = None,
    finetune: Path | None = None,
    finetune_kind: str = "model",
    resolved: dict | None = None,
    model_spec: str | None = None,
) -> None:
    """Build the sweep configurations from the measurement options, run them with a progress
    bar, and print each landscape's table. The command's options, with ``resolved`` (the
    values the command chose, such as the model's path) and the choices made here, are
    written to the run folder's config.toml once the run starts. ``model_spec``: the model
    as the user named it when not by its path (shown and recorded)."""
    out_dir = output.out_dir or default_out
    check_writable(out_dir)
    batch_size = measurement.batch_size
    if batch_size is None and not output.overwrite:
        batch_size = stored_batch_size(out_dir)
        if batch_size is not None:
            click.echo(f"resuming with the run's batch size, {batch_size}", err=True)
    config = measurement.config(
        model_path, grid, seed, benign, batch_size, finetune, finetune_kind, capability,
        model_spec=model_spec,
    )  # fmt: skip
    config, notes = measurement.planned(config, out_dir)
    for note in notes:
        click.echo(note, err=True)
    conditions = measurement.conditions()
    if n_directions > 1:
        variants = direction_variants(config, n_directions)
    else:
        variants = condition_variants(config, conditions)
    planned = plan(grid)  # the origin too, where the grid misses it
    n_points = len(order.share(planned)) if isinstance(order, Shard) else len(planned)
    shard = f" (shard {order}: {n_points} of them)" if isinstance(order, Shard) else ""
    click.echo(
        f"{model_spec or model_path.name}: {len(planned)} points{shard} x {n_sequences(config)} prompts"
        f"{f' x {len(variants)} runs' if len(variants) > 1 else ''}, "
        f"up to {config.max_new_tokens} new tokens -> {out_dir}",
        err=True,
    )
    bar = tqdm(total=n_points * len(variants), unit="point", desc="sweep")
    labels = [label for label, _ in variants]
    finished: dict[str, int] = {}  # points finished in each variant, earlier sittings too
    estimated: list[str] = []  # the variants estimated in this sitting

    def advance(label: str, done: int) -> None:
        for earlier in labels[: labels.index(label)]:
            finished[earlier] = n_points  # the variants run in turn: these are done
        finished[label] = done
        bar.n = sum(finished.values())

    def on_point(label: str, outcome: PointOutcome, done: int, total: int) -> None:
        advance(label, done)
        where = f"a={outcome.point.alpha:+.3f}"
        if outcome.point.beta is not None:
            where += f" b={outcome.point.beta:+.3f}"
        bar.set_postfix_str(f"{where} ASR={outcome.asr:.1f}%")
        bar.refresh()
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

    def on_estimate(label: str, estimate: Estimate) -> None:
        advance(label, n_points - estimate.n_points)  # points an earlier sitting finished
        if len(estimated) == 0:  # so the ETA counts this sitting's points only
            bar.initial = bar.n
        estimated.append(label)
        bar.refresh()
        tqdm.write(estimate.describe(), file=sys.stderr)
        for note in estimate.notes():
            tqdm.write(f"note: {note}", file=sys.stderr)

    ctx = click.get_current_context()
    values = (
        ctx.params
        | (resolved or {})
        | {
            "limit": measurement.n_prompts,
            "max_new_tokens": measurement.new_tokens,
            "batch_size": config.engine.max_sequences,
            "out_dir": out_dir.resolve(),
        }
    )
    sweep_options = SweepOptions(
        out_dir=out_dir,
        on_start=lambda: write_config(out_dir, ctx.command, values, model_spec),
        overwrite=output.overwrite,
        order=order,
        budget_minutes=budget_minutes,
        ray=measurement.ray(),
    )
    try:
        if len(variants) == 1:
            label, single = variants[0]
            summary = run_sweep(
                single,
                replace(
                    sweep_options,
                    on_point=lambda o, d, t: on_point(label, o, d, t),
                    on_estimate=lambda e: on_estimate(label, e),
                ),
            )
            results = [(label, summary)]
        else:
            results = run_variants(variants, sweep_options, on_point, on_estimate)
    finally:
        bar.close()
    if output.as_json:
        documents = [json.loads(summary.to_json()) for _, summary in results]
        if len(results) == 1:
            echo_json(documents[0])
        else:
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

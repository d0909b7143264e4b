"""``visage-local sweep``."""

from __future__ import annotations

import click

from visage_local.points.grid import MAX_STEPS, Grid
from visage_local.points.planning import AdaptiveEdges, Shard
from visage_local.run.sweep import default_out_dir
from visage_local.sources.registry import model_label, named_spec, resolve_model

from ._landscape import Landscape, Output, run_landscape
from .config_file import config_option
from .measurement import Measurement
from .options import capability_settings, dims_option, evaluation_options, range_option, seed_option


def _shard(ctx: click.Context, param: click.Parameter, value: str | None) -> Shard | None:
    if value is None:
        return None
    try:
        index, count = (int(x) for x in value.split("/"))
        return Shard(index, count)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: want I/N with 1 <= I <= N and N >= 2, e.g. 1/2"
        ) from None


@click.command("sweep")
@click.argument("model", required=False)
@config_option
@dims_option
@click.option(
    "--steps",
    type=click.IntRange(1, MAX_STEPS),
    default=None,
    help="Grid steps per axis (steps+1 points) [default: 20, the reference; 10 with "
    "--preset quick].",
)
@range_option("Alpha (and beta) over [-RANGE, RANGE].")
@seed_option
@evaluation_options
@click.option(
    "--directions",
    "n_directions",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="1D only: sweep N independent random directions of the seed, each in a sub-folder, "
    "and report the mean VISAGE and basin edges across them.",
)
@click.option(
    "--adaptive",
    is_flag=True,
    help="Find the basin edges by a coarse pass, bisection and fill-in instead of evaluating "
    "every point: on both sides in 1D, along eight rays (axes, diagonals) in 2D.",
)
@click.option(
    "--budget-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop before a point that would not finish in time (from the measured time per "
    "point); the grid is then visited coarse to fine and the skipped points are listed.",
)
@click.option(
    "--shard",
    metavar="I/N",
    callback=_shard,
    default=None,
    help="Evaluate the origin and shard I of N of the other points (every N-th, from the "
    "I-th): N sweeps, on other machines or days, cover the grid; `visage-local merge` "
    "joins their folders.",
)
def sweep_command(
    model: str | None,
    dims: int,
    steps: int,
    range_: float,
    seed: int,
    n_directions: int,
    adaptive: bool,
    budget_minutes: float | None,
    shard: Shard | None,
    **options,
) -> None:
    """Safety landscape of MODEL (a GGUF path or registry name; default: the embedded SmolLM2)."""
    measurement = Measurement.take(options)
    if n_directions > 1 and (
        dims != 1 or len(measurement.system_prompts) > 1 or len(measurement.attacks) > 1
    ):
        raise click.UsageError(
            "--directions needs --dims 1 and a single --system-prompt and --attack"
        )
    if shard is not None and adaptive:
        raise click.UsageError("--shard and --adaptive are two ways to choose points: use one")
    model_path = resolve_model(model)
    steps = measurement.grid_steps(steps)
    output = Output.take(options)
    benign = options.pop("benign")
    capability = capability_settings(options)
    landscape = Landscape(
        model_path,
        Grid(dims, steps, range_),
        seed,
        default_out=default_out_dir(model_label(model, model_path), dims, seed),
        benign=benign,
        capability=capability,
        n_directions=n_directions,
        order=AdaptiveEdges() if adaptive else shard,
        budget_minutes=budget_minutes,
        model_spec=named_spec(model, model_path),
    )
    resolved = {"model": model_path.resolve(), "steps": steps}
    run_landscape(landscape, measurement, output, resolved)

"""``visage-local screen``: many models, one ranked table."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from visage_local.asking.prompts import builtin_benign
from visage_local.files import check_writable
from visage_local.points.grid import Grid
from visage_local.record import ScreenFolder
from visage_local.sources.registry import resolve_model
from visage_local.stats import rank_text
from visage_local.workflows.screen import ScreenRow, Stages, expand_specs, screen, screen_verdict

from ._common import echo_json
from .config_file import config_option, write_config
from .measurement import Measurement
from .options import benign_set, measurement_options


@click.command("screen")
@click.argument("models", nargs=-1, required=True)
@config_option
@click.option("--base", default=None,
              help="The base model the others were finetuned from: screened once (marked as "
              "the base), then each other model is interpolated from it and the first t "
              "where it leaves the base's basin reported.")  # fmt: skip
@click.option(
    "--landscape",
    is_flag=True,
    help="Stage 2: 1D landscapes with VISAGE and basin edges for each model.",
)
@click.option("--directions", "n_directions", type=click.IntRange(1, 20), default=3,
              show_default=True,
              help="With --landscape: random directions each model's VISAGE is the mean over "
              "(one direction's VISAGE is one sample: docs/RESULTS.md).")  # fmt: skip
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --landscape: minutes shared equally among the models' landscapes "
              "(each visits its grid coarse to fine and stops in time).")  # fmt: skip
@click.option("--benign/--no-benign", default=True, show_default=True,
              help="Stage 1 also asks harmless prompts, for over-refusal (the built-in 60, or "
              "--benign-prompts).")  # fmt: skip
@click.option("--benign-limit", type=click.IntRange(min=1), default=None,
              help="Ask only the first N harmless prompts [default: all].")  # fmt: skip
@measurement_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/screen"), show_default=True,
              help="The screen's folder (an interrupted screen resumes from it).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print screen.json and nothing else.")
def screen_command(
    models, base, landscape, n_directions, budget_minutes, benign, benign_limit, steps, range_,
    interpolation_steps, seed, out_dir, as_json, **options,
) -> None:  # fmt: skip
    """Screen MODELS (paths, folders, globs, registry names, store specs): each model's own
    ASR, compliance, incoherence and benign over-refusal, then optionally its landscapes and
    its interpolation from --base; a table ranked by VISAGE, then breaking distance, then
    origin ASR.

    ASR (attack success rate) is the share of harmful prompts answered instead of refused:
    lower is safer. VISAGE is the mean of 100 - ASR over random changes of the weights
    around the model: higher is safer (README, "Reading the numbers")."""
    measurement = Measurement.take(options)
    measurement.single_condition("screen")
    if budget_minutes is not None and not landscape:
        raise click.UsageError("--budget-minutes shares the --landscape stage's time")
    if not benign and (benign_limit is not None or measurement.benign_prompts is not None):
        raise click.UsageError("--benign-limit and --benign-prompts choose the benign prompts "
                               "that --no-benign leaves out")  # fmt: skip
    check_writable(out_dir)
    found = expand_specs(list(models), resolve_model)
    harmless = benign_set(measurement.benign_prompts) or builtin_benign()
    config = measurement.config(
        found[0][1], Grid(1, measurement.grid_steps(steps), range_), seed, benign=benign
    )
    config = replace(config, benign=benign, benign_set=harmless.limited(benign_limit))
    base_pair = None if base is None else (base, resolve_model(base))

    def say(name: str, what: str) -> None:
        click.echo(f"{name}: {what}", err=True)

    ctx = click.get_current_context()
    values = ctx.params | {
        "models": [str(path.resolve()) for _, path in found],
        "base": None if base_pair is None else base_pair[1].resolve(),
        "out_dir": out_dir.resolve(),
        "steps": config.grid.steps,
        "limit": measurement.n_prompts,
        "max_new_tokens": measurement.new_tokens,
    }
    stages = Stages(landscape, n_directions, budget_minutes, interpolation_steps)
    rows = screen(found, config, out_dir, stages, base_pair, say, measurement.batch_size,
                  on_start=lambda: write_config(out_dir, ctx.command, values),
                  ray=measurement.ray(),
                  on_estimate=lambda e: click.echo(e.describe(), err=True))  # fmt: skip
    if as_json:
        echo_json(json.loads(ScreenFolder(out_dir).screen.read_text()))
        return
    _print(rows, landscape, base_pair is not None)
    click.echo(f"results in {out_dir} (screen.json, screen.csv, leaderboard.html)")
    click.echo(screen_verdict(rows))


def _print(rows: list[ScreenRow], landscape: bool, interpolated: bool) -> None:
    def cell(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    head = f"{'rank':>5}  {'model':<44} {'ASR':>6} {'95% CI':>14} {'compl':>6} {'incoh':>6} {'benign':>6}"
    head += f" {'VISAGE':>7} {'95% CI':>14}" if landscape else ""
    head += f" {'break t':>7} {'distance':>8}" if interpolated else ""
    click.echo(head)
    for row in rows:
        ci = row.origin_asr_ci
        interval = f"[{ci[0]:5.1f}, {ci[1]:5.1f}]" if ci else "-"
        place = "-" if row.rank is None else rank_text((row.rank[0], row.rank[1]))
        line = (f"{place:>5}  {row.label[:44]:<44} {cell(row.origin_asr):>6} {interval:>14} "
                f"{cell(row.harmful_compliance):>6} {cell(row.incoherent):>6} "
                f"{cell(row.benign_refusal):>6}")  # fmt: skip
        if landscape:
            v_ci = row.visage_ci
            line += f" {cell(row.visage, 2):>7} " + (
                f"[{v_ci[0]:5.1f}, {v_ci[1]:5.1f}]" if v_ci else "-".rjust(14)
            )
        if interpolated:
            t = "never" if row.never_left else cell(row.breaking_t, 2)
            distance = "-" if row.breaking_distance is None else f"{row.breaking_distance:.3g}"
            line += f" {t:>7} {distance:>8}"
        click.echo(line)
    for row in rows:
        if row.error:
            click.echo(f"{row.label}: {row.error}")
    click.echo(
        "rank: the places each model's 95% interval allows; models whose intervals overlap "
        "share places" + (" (VISAGE: mean over the directions)" if landscape else "")
    )
    if interpolated:
        click.echo(
            "break t: where the path from the base leaves its basin, as a fraction of this "
            "finetune's own change; distance: that change at break t relative to the base's "
            "weight norm, which compares across finetunes (t does not)"
        )

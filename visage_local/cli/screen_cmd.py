"""``visage-local screen``: many models, one ranked table."""

from __future__ import annotations

import json
from pathlib import Path

import click

from visage_local.engine import EngineSettings
from visage_local.grid import Grid
from visage_local.prompts import select_prompts
from visage_local.registry import resolve_model
from visage_local.screen import ScreenRow, expand_specs, screen
from visage_local.settings import sweep_config
from visage_local.stats import rank_text

from ._common import echo_json
from .config_file import config_option, write_config
from .options import benign_set, measurement_options


@click.command("screen")
@click.argument("models", nargs=-1, required=True)
@config_option
@click.option("--base", default=None,
              help="The base model the others were finetuned from: each is interpolated from "
              "it, and the first t where it leaves the base's basin reported.")  # fmt: skip
@click.option(
    "--landscape",
    is_flag=True,
    help="Stage 2: a 1D landscape with VISAGE and basin edges for each model.",
)
@click.option("--directions", "n_directions", type=click.IntRange(1, 20), default=3,
              show_default=True,
              help="With --landscape: random directions each model's VISAGE is the mean over "
              "(one direction's VISAGE is one sample: docs/RESULTS.md).")  # fmt: skip
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --landscape: minutes shared equally among the models' landscapes "
              "(each visits its grid coarse to fine and stops in time).")  # fmt: skip
@measurement_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/screen"), show_default=True,
              help="The screen's folder (an interrupted screen resumes from it).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print screen.json and nothing else.")
def screen_command(
    models, base, landscape, n_directions, budget_minutes, limit, max_new_tokens, steps, range_,
    interpolation_steps, seed, threads, n_gpu_layers, overlap, flash_attn, batch_size,
    benign_prompts, out_dir, as_json,
) -> None:  # fmt: skip
    """Screen MODELS (paths, folders, globs, registry names, store specs): each model's own
    ASR, compliance, incoherence and benign over-refusal, then optionally its landscape and
    its interpolation from --base; a table ranked by VISAGE, then origin ASR."""
    if budget_minutes is not None and not landscape:
        raise click.UsageError("--budget-minutes shares the --landscape stage's time")
    found = expand_specs(list(models), resolve_model)
    config = sweep_config(
        found[0][1],
        grid=Grid(1, steps, range_),
        prompts=select_prompts(None, limit),
        engine=EngineSettings(threads=threads, n_gpu_layers=n_gpu_layers, flash_attn=flash_attn),
        overlap=overlap,
        seed=seed,
        max_new_tokens=max_new_tokens,
        benign_set=benign_set(benign_prompts),
    )
    base_path = resolve_model(base) if base is not None else None

    def say(spec: str, what: str) -> None:
        click.echo(f"{spec}: {what}", err=True)

    ctx = click.get_current_context()
    values = ctx.params | {
        "models": [str(path.resolve()) for _, path in found],
        "base": None if base_path is None else base_path.resolve(),
        "out_dir": out_dir.resolve(),
    }
    rows = screen(found, config, out_dir, landscape, budget_minutes, base_path,
                  interpolation_steps, say, batch_size,
                  on_start=lambda: write_config(out_dir, ctx.command, values),
                  directions=n_directions)  # fmt: skip
    if as_json:
        echo_json(json.loads((out_dir / "screen.json").read_text()))
        return
    _print(rows, landscape, base_path is not None)
    click.echo(f"results in {out_dir} (screen.json, screen.csv, leaderboard.html)")


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
        line = (f"{place:>5}  {row.name[:44]:<44} {cell(row.origin_asr):>6} {interval:>14} "
                f"{cell(row.harmful_compliance):>6} {cell(row.incoherent):>6} "
                f"{cell(row.benign_refusal):>6}")  # fmt: skip
        if landscape:
            v_ci = row.visage_ci
            line += f" {cell(row.visage, 2):>7} " + (
                f"[{v_ci[0]:5.1f}, {v_ci[1]:5.1f}]" if v_ci else "-".rjust(14)
            )
        if interpolated:
            t = "never" if row.never_left else cell(row.breaking_t, 2)
            line += f" {t:>7} {cell(row.breaking_distance, 4):>8}"
        click.echo(line)
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

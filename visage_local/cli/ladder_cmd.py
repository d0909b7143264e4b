"""``visage-local ladder``: which quant keeps its safety."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from visage_local.asking.prompts import builtin_benign
from visage_local.files import check_writable
from visage_local.gguf.imatrix import read_imatrix
from visage_local.points.grid import Grid
from visage_local.record import LadderFolder
from visage_local.sources.registry import models_dir, resolve_model
from visage_local.workflows.ladder import (
    DEFAULT_TYPES,
    KL_BOUND,
    LadderSettings,
    Rung,
    file_rungs,
    ladder,
    ladder_verdict,
    make_rungs,
)
from visage_local.workflows.screen import Stages

from ._common import echo_json
from .config_file import config_option, write_config
from .measurement import Measurement
from .options import benign_set, measurement_options_without_base


@click.command("ladder")
@click.argument("models", nargs=-1, required=True)
@config_option
@click.option("--type", "types", multiple=True,
              help="An upload type to make from MODEL with llama.cpp's quantiser (repeat: "
              f"--type Q4_K_M --type Q2_K) [default with one MODEL: {', '.join(DEFAULT_TYPES)}]. "
              "With several MODELS, leave it out: they are taken as they are.")  # fmt: skip
@click.option("--imatrix", "imatrix_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="An importance matrix (llama-imatrix's GGUF or legacy imatrix.dat) for the "
              "types made; IQ1, IQ2, Q2_K_S and IQ3_XXS need one.")  # fmt: skip
@click.option("--requantize", is_flag=True,
              help="Make the types from a MODEL that is itself mostly quantised (e.g. Q5_0): "
              "each rung then carries the source's rounding too.")  # fmt: skip
@click.option("--quants", "quants_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None,
              help="Where made quants are kept and found again [default: models/quants].")  # fmt: skip
@click.option("--landscape", is_flag=True,
              help="Also 1D landscapes of every rung along the same --directions: VISAGE and "
              "basin edges.")  # fmt: skip
@click.option("--directions", "n_directions", type=click.IntRange(1, 20), default=3,
              show_default=True, help="With --landscape: random directions VISAGE is the mean over.")  # fmt: skip
@click.option("--kl-prompts", type=click.IntRange(1, 60), default=20, show_default=True,
              help="Built-in benign prompts each rung's distributions are compared on.")  # fmt: skip
@click.option("--kl-tokens", type=click.IntRange(1, 256), default=32, show_default=True,
              help="Positions of the reference's answer to each.")  # fmt: skip
@click.option("--kl-bound", type=click.FloatRange(min=0, min_open=True), default=KL_BOUND,
              show_default=True,
              help="A rung whose ASR lies above the reference's interval is flagged when its KL "
              "from the reference stays below this (nats): safety lost while quality looks "
              "kept.")  # fmt: skip
@click.option("--benign/--no-benign", default=True, show_default=True,
              help="Also ask harmless prompts at each rung's origin, for over-refusal.")  # fmt: skip
@measurement_options_without_base
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/ladder"), show_default=True,
              help="The ladder's folder (an interrupted ladder resumes from it).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print ladder.json and nothing else.")
def ladder_command(
    models, types, imatrix_path, requantize, quants_dir, landscape, n_directions, kl_prompts, kl_tokens,
    kl_bound, benign, steps, range_, seed, out_dir, as_json, **options,
) -> None:  # fmt: skip
    """Measure the safety of a model down the quantisation ladder: from one high-precision
    MODEL (F32, F16, BF16 or Q8_0), each --type made with llama.cpp's quantiser; or several
    MODELS of one model, as they are. For each rung, most bits first: its origin ASR with its
    interval, benign over-refusal, the KL of its next-token distributions from the first
    rung's and the share of top tokens kept, and with --landscape its VISAGE.

    ASR (attack success rate) is the share of harmful prompts answered instead of refused:
    lower is safer. VISAGE is the mean of 100 - ASR over random changes of the weights
    around the model: higher is safer (README, "Reading the numbers")."""
    measurement = Measurement.take(options)
    measurement.single_condition("ladder")
    check_writable(out_dir)
    paths = [resolve_model(m) for m in models]
    if len(paths) > 1 and types:
        raise click.UsageError(
            "--type makes rungs from one MODEL; several MODELS are taken as they are"
        )
    if len(paths) > 1 and (imatrix_path is not None or requantize):
        raise click.UsageError("--imatrix and --requantize are for the types made from one MODEL")
    imatrix = None if imatrix_path is None else read_imatrix(imatrix_path)
    made: dict[Path, tuple[str, str | None]] = {}
    if len(paths) == 1:
        rungs = make_rungs(
            paths[0], list(types or DEFAULT_TYPES), quants_dir or models_dir() / "quants",
            imatrix, measurement.threads,
            on_make=lambda t: click.echo(f"making {t} with llama.cpp's quantiser", err=True),
            requantize=requantize,
        )  # fmt: skip
        made = {p: (label, imatrix and imatrix.sha256) for label, p in rungs[1:]}
    else:
        rungs = file_rungs(paths)
    config = measurement.config(rungs[0][1], Grid(1, measurement.grid_steps(steps), range_),
                                seed, benign=benign)  # fmt: skip
    harmless = benign_set(measurement.benign_prompts) or builtin_benign()
    config = replace(config, benign=benign, benign_set=harmless)
    settings = LadderSettings(Stages(landscape, n_directions), kl_prompts, kl_tokens, kl_bound)
    ctx = click.get_current_context()
    values = ctx.params | {
        "models": [str(p.resolve()) for p in paths],
        "out_dir": out_dir.resolve(),
        "steps": config.grid.steps,
        "limit": measurement.n_prompts,
        "max_new_tokens": measurement.new_tokens,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_config(out_dir, ctx.command, values)
    rows = ladder(rungs, config, out_dir, settings, made,
                  on_rung=lambda rung, what: click.echo(f"{rung}: {what}", err=True),
                  ray=measurement.ray())  # fmt: skip
    if as_json:
        echo_json(json.loads(LadderFolder(out_dir).ladder.read_text()))
        return
    _print(rows, landscape)
    click.echo(f"results in {out_dir} (ladder.json, ladder.csv, ladder.png, ladder.html)")
    click.echo(ladder_verdict(rows, kl_bound))


def _print(rows: list[Rung], landscape: bool) -> None:
    def cell(value: float | None, ci: list[float] | None, digits: int = 1) -> str:
        if value is None:
            return "-"
        return f"{value:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")

    head = f"{'rung':<24} {'bpw':>5} {'ASR':>18} {'benign':>6} {'KL':>24} {'top kept':>18}"
    click.echo(head + (f" {'VISAGE':>20}" if landscape else ""))
    for r in rows:
        line = (f"{r.name[:24]:<24} {r.bits_per_weight:5.2f} {cell(r.origin_asr, r.origin_asr_ci):>18} "
                f"{cell(r.benign_refusal, None):>6} {cell(r.kl, r.kl_ci, 4):>24} "
                f"{cell(r.top_kept, r.top_kept_ci):>18}")  # fmt: skip
        if landscape:
            line += f" {cell(r.visage, r.visage_ci, 2):>20}"
        click.echo(line + ("  <- reference" if r.reference else "  FLAGGED" if r.flagged else ""))
    click.echo(
        "bpw: bits per weight; KL: of the next-token distributions from the reference's (nats); "
        "top kept: % of positions whose most likely token is the reference's; 95% intervals"
    )

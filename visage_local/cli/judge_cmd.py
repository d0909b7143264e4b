"""``visage-local rejudge`` and ``visage-local judge-agreement``."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from visage_local.judges import JUDGES
from visage_local.reading.rejudge import judge_agreement, rejudge
from visage_local.run.completion import complete as complete_answers

from ._common import echo_json
from .options import gpu_layers_option, threads_option

_RUN_DIR = click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))


@click.command("rejudge")
@_RUN_DIR
@click.option("--judge", required=True, help=f"The judge to apply: {', '.join(JUDGES)}.")
@click.option(
    "--complete",
    is_flag=True,
    help="Generate again every point holding an answer that early stop cut before this "
    "judge's verdict was settled, with the run's judges and this one, as a sweep made with "
    "all of them would (needs the run's model; resumable). Without it such answers are "
    "refused.",
)
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --complete: the run's model file, when it is no longer where the run "
    "recorded it (its sha256 must match) [default: the path the run recorded].",
)
@threads_option
@gpu_layers_option
def rejudge_command(
    run_dir: Path, judge: str, complete: bool, model: Path | None, threads: int, n_gpu_layers: int
) -> None:
    """Judge a sweep's stored answers again, without generating (unless --complete); writes
    summary.judge-<name>.json beside the run's own summary."""
    records = None
    if complete:
        with tqdm(unit="point", desc="complete", leave=False) as bar:

            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            records = complete_answers(run_dir, judge, model, threads, advance, n_gpu_layers)
        if bar.total:
            click.echo(f"generated {bar.total} points again to complete their cut answers")
    elif model is not None or n_gpu_layers:
        raise click.UsageError(f"{'--model' if model else '--n-gpu-layers'} is for --complete")
    summary, path = rejudge(run_dir, judge, threads, records)
    click.echo(f"{'alpha':>8} {'beta':>8} {'ASR':>6}")
    for r in summary.points:
        beta = "" if r.beta is None else f"{r.beta:+.3f}"
        click.echo(f"{r.alpha:+8.3f} {beta:>8} {r.asr:6.1f}")
    visage = summary.visage
    click.echo(
        f"judge {judge}: VISAGE {'n/a' if visage is None else f'{visage:.2f}'}, "
        f"origin ASR {summary.origin_asr:.1f}% (was judged by {summary.rejudged_from})"
    )
    click.echo(str(path))


@click.command("judge-agreement")
@_RUN_DIR
@click.option(
    "--judge",
    "judges",
    multiple=True,
    required=True,
    help="Give exactly two, e.g. --judge keyword-paper --judge keyword.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@threads_option
def judge_agreement_command(
    run_dir: Path, judges: tuple[str, ...], as_json: bool, threads: int
) -> None:
    """Agreement and Cohen's kappa of two judges on a sweep's stored answers."""
    if len(judges) != 2:
        raise click.UsageError("give --judge exactly twice")
    result = judge_agreement(run_dir, judges[0], judges[1], threads)
    if as_json:
        echo_json(result.__dict__)
        return
    kappa = "n/a (one label for everything)" if result.kappa is None else f"{result.kappa:.3f}"
    click.echo(f"{result.n} answers to harmful prompts")
    click.echo(f"agreement {100 * result.agreement:.1f}%   Cohen's kappa {kappa}")
    click.echo(f"{'':24}{'B refused':>12}{'B not':>10}")
    click.echo(f"{'A refused':24}{result.both_refused:>12}{result.only_a_refused:>10}")
    click.echo(f"{'A not':24}{result.only_b_refused:>12}{result.neither_refused:>10}")
    click.echo(f"A = {result.judge_a}, B = {result.judge_b}")

"""``visage-local rejudge`` and ``visage-local judge-agreement``."""

from __future__ import annotations

from pathlib import Path

import click

from visage_local.judges import JUDGES
from visage_local.rejudge import judge_agreement, rejudge

from ._common import echo_json
from .options import threads_option

_RUN_DIR = click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))


@click.command("rejudge")
@_RUN_DIR
@click.option("--judge", required=True, help=f"The judge to apply: {', '.join(JUDGES)}.")
@threads_option
def rejudge_command(run_dir: Path, judge: str, threads: int) -> None:
    """Judge a sweep's stored answers again, without generating; writes
    summary.judge-<name>.json beside the run's own summary."""
    summary, path = rejudge(run_dir, judge, threads)
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

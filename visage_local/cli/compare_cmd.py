"""``visage-local compare``."""

from __future__ import annotations

from pathlib import Path

import click

from visage_local.reading.compare import FORMATS, compare_runs, document, plot_overlay, render

from ._common import echo_json


@click.command("compare")
@click.argument(
    "run_dirs",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="markdown",
    show_default=True,
    help="How to print the table.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw the 1D landscapes overlaid on one figure, to this PNG file.",
)
@click.option("--force", is_flag=True, help="Compare runs made with other prompts or judges.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document ({format_version, runs}) and nothing else.")  # fmt: skip
def compare_command(
    run_dirs: tuple[Path, ...], fmt: str, plot: Path | None, force: bool, as_json: bool
) -> None:
    """Compare finished sweeps: VISAGE, origin ASR, basin edges, prompts, judge, seed."""
    rows, runs = compare_runs(list(run_dirs), force)
    if as_json:
        echo_json(document(rows))
    else:
        click.echo(render(rows, fmt))
    if plot is not None:
        plot_overlay(runs, plot)
        click.echo(f"plot: {plot}", err=True)

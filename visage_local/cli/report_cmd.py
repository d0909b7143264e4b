"""``visage-local report``."""

from __future__ import annotations

from pathlib import Path

import click

from visage_local.files import atomic_write_text
from visage_local.reading.leaderboard import write_leaderboard
from visage_local.reading.report import markdown_card, write_report
from visage_local.record import RunFolder, ScreenFolder


@click.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the page (default: RUN_DIR/report.html).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "markdown"]),
    default="html",
    show_default=True,
    help="markdown: a model-card section (the setting, origin ASR and VISAGE with intervals, "
    "the verdict, how to reproduce it) on stdout, or in --out, for a run or a check's folder.",
)
def report_command(run_dir: Path, out: Path | None, fmt: str) -> None:
    """Write a self-contained HTML report of a sweep's output folder (of each run in a
    check's folder or a folder of several runs), or the leaderboard (leaderboard.html) of a
    screen's folder."""
    if fmt == "markdown":
        if ScreenFolder(run_dir).is_screen():
            raise click.UsageError("--format markdown is for a run or a check's folder")
        card = markdown_card(run_dir)
        if out is None:
            click.echo(card, nl=False)
        else:
            atomic_write_text(out, card)
            click.echo(str(out))
        return
    if ScreenFolder(run_dir).is_screen():
        if out is not None:
            raise click.UsageError("a screen's leaderboard is written in its folder (no --out)")
        click.echo(str(write_leaderboard(run_dir)))
        return
    runs = RunFolder(run_dir).runs()
    if not runs:
        raise click.UsageError(f"{run_dir}: no run in it (no summary.json there or below)")
    if len(runs) > 1 or runs[0].path != run_dir:  # a check's folder, or several runs
        if out is not None:
            raise click.UsageError(f"{run_dir} holds {len(runs)} runs: each report is written in "
                                   "its run's folder (no --out)")  # fmt: skip
        for run in runs:
            click.echo(str(write_report(run.path)))
        return
    click.echo(str(write_report(run_dir, out)))

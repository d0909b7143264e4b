"""``visage-local merge``."""

from __future__ import annotations

from pathlib import Path

import click

from visage_local.analysis.landscape import headline
from visage_local.reading.merge import merge_runs


@click.command("merge")
@click.argument(
    "run_dirs",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The merged run's folder (new).")  # fmt: skip
@click.option(
    "--without-answers",
    is_flag=True,
    help="Leave the answers' text out: prompts, verdicts, token counts and coherence are "
    "kept, so the landscape can be shared without the harmful text (no judge can read "
    "the answers again).",
)
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
def merge_command(run_dirs: tuple[Path, ...], out_dir: Path, without_answers: bool,
                  overwrite: bool) -> None:  # fmt: skip
    """Join the folders of one sweep (its shards, `sweep --shard I/N`, or parts run on other
    days) into one run folder, or copy one folder without its answers."""
    summary = merge_runs(run_dirs, out_dir, without_answers, overwrite)
    left = summary.n_points_planned - summary.n_points_evaluated
    folders = f"{len(run_dirs)} folder" + ("s" if len(run_dirs) > 1 else "")
    click.echo(
        f"merged {folders}: {summary.n_points_evaluated} of {summary.n_points_planned} points"
        + (f" ({left} still to evaluate)" if left else "")
    )
    click.echo(headline(summary))
    click.echo(str(out_dir))

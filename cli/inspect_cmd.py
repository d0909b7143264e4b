"""``visage-local inspect``."""

from __future__ import annotations

from dataclasses import asdict

import click

from visage_local.gguf_model import GGUFModel
from visage_local.inspection import inspect_model
from visage_local.registry import resolve_model

from ._common import echo_json, human_bytes


@click.command("inspect")
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect_command(model: str | None, as_json: bool) -> None:
    """Describe MODEL (a GGUF path or registry name; default: the embedded SmolLM2)."""
    report = inspect_model(GGUFModel(resolve_model(model)))
    if as_json:
        echo_json(asdict(report))
        return
    click.echo(f"file          {report.path}")
    click.echo(f"name          {report.name}")
    click.echo(f"architecture  {report.architecture}")
    click.echo(f"parameters    {report.parameters:,}")
    click.echo(f"tensors       {report.tensors}")
    for qtype, size in report.bytes_by_type.items():
        click.echo(
            f"  {qtype:<8} {report.tensors_by_type[qtype]:>4} tensors  {human_bytes(size):>10}"
        )
    click.echo(
        f"perturbed     {report.perturbed_tensors} tensors, {report.perturbed_parameters:,} parameters"
    )
    click.echo(f"left alone    {len(report.excluded)} tensors (names containing 'norm')")
    if report.unsupported:
        click.echo(f"UNSUPPORTED   {', '.join(report.unsupported)}")
    click.echo(
        f"chat template {'yes' if report.chat_template else 'no (a plain fallback is used)'}"
    )
    click.echo(f"sha256        {report.sha256}")

"""``visage-local inspect``."""

from __future__ import annotations

import os
from dataclasses import asdict

import click
from tqdm import tqdm

from visage_local.gguf.model import GGUFModel
from visage_local.sources.registry import resolve_model
from visage_local.weights.directions import GGUF_ONLY, RandomDirection, TensorSelection, selection
from visage_local.weights.inspection import inspect_model
from visage_local.weights.perturb import Perturbation, Point, PointDisplacement

from ._common import echo_json, human_bytes
from .options import requant_option, seed_option, tensor_options


@click.command("inspect")
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--fidelity", is_flag=True, help="Measure the displacement applied at one point.")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="With --fidelity.")
@click.option("--beta", type=float, default=None, help="With --fidelity: a 2D point.")
@seed_option
@requant_option
@tensor_options
def inspect_command(model, as_json, fidelity, alpha, beta, seed, requant, exclude, include) -> None:
    """Describe MODEL (a GGUF path or registry name; default: the embedded SmolLM2).

    With --fidelity: how far requantisation lets the weights follow the intended
    step alpha*d1 (+ beta*d2), as a norm ratio and a cosine, overall and per kind.
    """
    source = GGUFModel(resolve_model(model))
    tensors = selection(exclude, include)
    if fidelity:
        _fidelity(source, Point(alpha, beta), seed, requant, tensors, as_json)
        return
    report = inspect_model(source, tensors)
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
    gguf_only = [name for name in report.excluded if name in GGUF_ONLY]
    also = f"; GGUF-only: {', '.join(gguf_only)}" if gguf_only else ""
    click.echo(f"left alone    {len(report.excluded)} tensors ({tensors.describe()}{also})")
    if exclude or include:
        for name in report.excluded:
            click.echo(f"  {name}")
    if report.per_expert:
        experts = sorted(set(report.per_expert.values()))
        click.echo(
            f"per expert    {len(report.per_expert)} MoE tensors normalised per expert slice "
            f"({', '.join(map(str, experts))} experts), as the checkpoint's one tensor per expert"
        )
    if report.unsupported:
        click.echo(f"UNSUPPORTED   {', '.join(report.unsupported)}")
    click.echo(
        f"chat template {'yes' if report.chat_template else 'no (a plain fallback is used)'}"
    )
    click.echo(f"sha256        {report.sha256}")


def _fidelity(
    source: GGUFModel,
    point: Point,
    seed: int,
    requant: str,
    tensors: TensorSelection,
    as_json: bool,
) -> None:
    directions = [RandomDirection(seed, i, tensors) for i in range(1 if point.beta is None else 2)]
    perturbation = Perturbation(source, directions, threads=os.cpu_count() or 1, requant=requant)
    with tqdm(
        total=len(perturbation.targets),
        unit="tensor",
        desc="fidelity",
        leave=False,
        disable=as_json,  # machine output stays clean
    ) as bar:
        figures = PointDisplacement()
        for tensor in perturbation.tensors_at(point):
            figures.add(tensor)
            bar.update()
    summary = figures.summary()
    if as_json:
        echo_json({"alpha": point.alpha, "beta": point.beta, "requant": requant, **summary})
        return
    click.echo(
        f"{source.path.name} at alpha={point.alpha}"
        f"{'' if point.beta is None else f', beta={point.beta}'}, requant {requant}"
    )
    click.echo("kind          norm ratio   cosine  distance")
    for kind, figure in summary.items():
        ratio = "undefined" if figure["ratio"] is None else f"{figure['ratio']:.3f}"
        cosine = "undefined" if figure["cosine"] is None else f"{figure['cosine']:.3f}"
        distance = "-" if figure["distance"] is None else f"{figure['distance']:.4f}"
        click.echo(f"{kind:<12} {ratio:>11} {cosine:>8} {distance:>9}")
    strays = figures.unfaithful()
    if strays:
        click.echo(
            f"warning: the applied displacement strays from the intended one in "
            f"{', '.join(strays)} (ratio outside [0.8, 1.25] or cosine under 0.9)"
        )

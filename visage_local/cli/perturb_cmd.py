"""``visage-local perturb``."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from visage_local.gguf.model import GGUFModel
from visage_local.sources.registry import resolve_model
from visage_local.weights.directions import RandomDirection, selection
from visage_local.weights.perturb import Perturbation, Point, export_perturbed

from .options import requant_option, seed_option, tensor_options, threads_option


@click.command("perturb")
@click.argument("model", required=False)
@click.option("--alpha", type=float, required=True, help="Step along direction 1.")
@click.option("--beta", type=float, default=None, help="Step along direction 2 (makes it 2D).")
@seed_option
@click.option(
    "--direction2-seed",
    type=click.IntRange(min=0),
    default=None,
    help="Seed of direction 2 (default: --seed).",
)
@requant_option
@tensor_options
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The GGUF file to write (the point's weights, in the model's own types by default).",
)
@threads_option
def perturb_command(
    model, alpha, beta, seed, direction2_seed, requant, exclude, include, out, threads
) -> None:
    """Write MODEL perturbed to theta + alpha*d1 (+ beta*d2) as a GGUF file."""
    source = GGUFModel(resolve_model(model))
    tensors = selection(exclude, include)
    directions = [RandomDirection(seed, 0, tensors)]
    if beta is not None:
        second = seed if direction2_seed is None else direction2_seed
        directions.append(RandomDirection(second, 1, tensors))
    perturbation = Perturbation(source, directions, threads=threads, requant=requant)
    with tqdm(total=len(perturbation.targets), unit="tensor", desc="perturb") as bar:
        export_perturbed(perturbation, Point(alpha, beta), out, on_tensor=lambda _: bar.update())
    click.echo(
        f"wrote {out} (alpha={alpha}{'' if beta is None else f', beta={beta}'}, seed={seed})"
    )

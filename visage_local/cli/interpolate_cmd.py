"""``visage-local interpolate``."""

from __future__ import annotations

from pathlib import Path

import click

from visage_local.asking import reference
from visage_local.points.grid import MAX_STEPS, InterpolationGrid
from visage_local.sources.registry import model_label, named_spec, resolve_model

from ._landscape import Landscape, Output, run_landscape
from .config_file import config_option
from .measurement import Measurement
from .options import capability_settings, evaluation_options, range_option


@click.command("interpolate")
@click.argument("base")
@click.argument("finetune", required=False)
@config_option
@click.option(
    "--lora",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A LoRA adapter in llama.cpp's GGUF format, instead of FINETUNE: the direction is "
    "scale * B @ A.",
)
@click.option("--dims", type=click.IntRange(1, 2), default=1, show_default=True,
              help="2 adds a random direction (beta) across the interpolation.")  # fmt: skip
@click.option(
    "--steps",
    type=click.IntRange(1, MAX_STEPS),
    default=10,
    show_default=True,
    help="Steps over t in [0, 1] (and over beta in 2D).",
)
@click.option(
    "--extra",
    type=click.IntRange(0, MAX_STEPS),
    default=0,
    show_default=True,
    help="Further steps beyond each end (t < 0 and t > 1).",
)
@range_option("2D: beta over [-RANGE, RANGE].")
@click.option("--seed", type=click.IntRange(min=0), default=reference.SEED, show_default=True,
              help="Seed of the random direction in 2D.")  # fmt: skip
@evaluation_options
def interpolate_command(
    base: str,
    finetune: str | None,
    lora: Path | None,
    dims: int,
    steps: int,
    extra: int,
    range_: float,
    seed: int,
    **options,
) -> None:
    """Interpolation landscape from BASE (t = 0) to FINETUNE (t = 1), or along a LoRA adapter.

    The two models may use different quantisation types (both are dequantised);
    perturbed tensors take BASE's types unless --requant says otherwise.
    """
    measurement = Measurement.take(options)
    output = Output.take(options)
    benign = options.pop("benign")
    capability = capability_settings(options)
    if (finetune is None) == (lora is None):
        raise click.UsageError("give either FINETUNE or --lora ADAPTER")
    base_path = resolve_model(base)
    if lora is not None and not lora.is_file():
        raise click.UsageError(f"{lora}: file not found")
    other = lora if lora is not None else resolve_model(finetune)
    names = f"{model_label(base, base_path)}-{model_label(finetune, other)}"
    landscape = Landscape(
        base_path,
        InterpolationGrid(dims, steps, extra, range_),
        seed,
        default_out=Path("runs") / f"interp-{names}-{dims}d",
        benign=benign,
        capability=capability,
        finetune=other,
        finetune_kind="lora" if lora is not None else "model",
        model_spec=named_spec(base, base_path),
    )
    resolved = {
        "base": base_path.resolve(),
        "finetune": None if lora is not None else other.resolve(),
        "lora": None if lora is None else lora.resolve(),
    }
    run_landscape(landscape, measurement, output, resolved)

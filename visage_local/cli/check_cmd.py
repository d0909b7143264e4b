"""``visage-local check``: thresholds, their measured values, and an exit code."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import click

from visage_local.files import atomic_write_text, check_writable
from visage_local.gguf.model import GGUFModel
from visage_local.points.grid import Grid
from visage_local.record import RunFolder
from visage_local.record.writer import stored_batch_size
from visage_local.run.prepared import PreparedSweep
from visage_local.sources.registry import model_label, named_spec, resolve_model
from visage_local.workflows.check import CheckResult, Limits, check_folder, run_check

from ._common import echo_json
from .config_file import config_option, write_config
from .measurement import Measurement
from .options import measurement_options

EXIT_FAIL = 3
# 2: the verdict, the model and base (spec, file, full sha256), the settings, the folder
CHECK_FORMAT = 2


@click.command("check")
@click.argument("model")
@config_option
@click.option("--max-asr", type=click.FloatRange(0, 100), default=None,
              help="Most origin ASR (%) that passes.")  # fmt: skip
@click.option("--min-visage", type=click.FloatRange(0, 100), default=None,
              help="Least VISAGE that passes: the mean over --directions 1D landscapes, with "
              "an interval over directions and prompts.")  # fmt: skip
@click.option("--directions", "n_directions", type=click.IntRange(1, 20), default=3,
              show_default=True,
              help="Random directions --min-visage averages over (one direction's VISAGE is "
              "one sample: docs/RESULTS.md).")  # fmt: skip
@click.option("--max-benign-refusal", type=click.FloatRange(0, 100), default=None,
              help="Most benign prompts refused at the origin (%) that passes.")  # fmt: skip
@click.option("--base", default=None,
              help="The base model MODEL was finetuned from (any model spec).")  # fmt: skip
@click.option("--min-breaking-t", type=click.FloatRange(min=0), default=None,
              help="With --base: the least t at which the interpolation from BASE to MODEL "
              "may leave BASE's basin.")  # fmt: skip
@click.option("--lenient", is_flag=True,
              help="A threshold inside its value's 95% interval passes when the value does "
              "(by default it fails: the run cannot tell them apart).")  # fmt: skip
@measurement_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the model's checks [default: runs/check-<model>]: each model "
              "file and setting gets its own sub-folder, so a new version of the model or "
              "another setting is a new run, and an interrupted check resumes.")  # fmt: skip
@click.option(
    "--overwrite",
    is_flag=True,
    help="Discard runs in the check's sub-folder made with other package versions.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document and nothing else.")
def check_command(
    model, max_asr, min_visage, n_directions, max_benign_refusal, base, min_breaking_t, lenient,
    steps, range_, interpolation_steps, seed, out_dir, overwrite, as_json, **options,
) -> None:  # fmt: skip
    """Run what the thresholds need on MODEL and exit 0 when every one passes, 3 when one
    fails (1 or 2 on an error).

    ASR (attack success rate) is the share of harmful prompts answered instead of refused:
    lower is safer. VISAGE is the mean of 100 - ASR over random changes of the weights
    around the model: higher is safer (docs: README, "Reading the numbers")."""
    measurement = Measurement.take(options)
    measurement.single_condition("check")
    if measurement.benign_prompts is not None and max_benign_refusal is None:
        raise click.UsageError("--benign-prompts is read for --max-benign-refusal")
    limits = Limits(max_asr, min_visage, max_benign_refusal, min_breaking_t, n_directions)
    limits.validate(base is not None)
    model_path = resolve_model(model)
    root = out_dir or Path("runs") / f"check-{model_label(model, model_path)}"
    check_writable(root)
    grid = Grid(1, measurement.grid_steps(steps), range_)
    benign = max_benign_refusal is not None  # so that the batch holds them too
    config = measurement.config(
        model_path, grid, seed, benign, model_spec=named_spec(model, model_path)
    )
    base_path = resolve_model(base) if base is not None else None
    prepared = measurement.prepared(config)
    folder = check_folder(root, prepared, base_path, interpolation_steps)
    stored = None if measurement.batch_size or overwrite else _stored_batch_size(folder)
    if stored and stored != config.engine.max_sequences:  # resumed: the batch it chose
        config = replace(config, engine=replace(config.engine, max_sequences=stored))
        prepared = measurement.prepared(config)
    config = prepared.config
    for note in prepared.notes(folder):
        click.echo(note, err=True)
    ctx = click.get_current_context()
    values = ctx.params | {
        "model": model_path.resolve(),
        "base": None if base_path is None else base_path.resolve(),
        "out_dir": root.resolve(),
        "steps": grid.steps,
        "limit": measurement.n_prompts,
        "max_new_tokens": measurement.new_tokens,
        "batch_size": config.engine.max_sequences,
    }
    result = run_check(
        prepared, limits, root, base_path, lenient, interpolation_steps,
        on_start=lambda where: write_config(where, ctx.command, values, config.model_spec),
        ray=measurement.ray(), overwrite=overwrite,
    )  # fmt: skip
    document = _document(result, prepared, model, (base, base_path) if base_path else None)
    if result.folder is not None:
        atomic_write_text(RunFolder(result.folder).check, json.dumps(document, indent=2))
    if as_json:
        echo_json(document)
    else:
        _print(result)
    sys.exit(0 if result.passed else EXIT_FAIL)


def _stored_batch_size(out_dir: Path) -> int | None:
    """The batch size a check interrupted in ``out_dir`` chose (kept when it resumes)."""
    subs = ("origin", "landscape/direction-0", "interpolation")
    stored = (stored_batch_size(out_dir / sub) for sub in subs)
    return next((b for b in stored if b is not None), None)


def _document(
    result: CheckResult, prepared: PreparedSweep, spec: str, base: tuple[str, Path] | None
) -> dict:
    """check.json: the verdict, every threshold, the model (as typed, its file and full
    sha256), the base, the settings measured with and the runs."""

    def model(typed: str, path: Path) -> dict:
        return {"spec": typed, "file": str(path.resolve()), "sha256": GGUFModel(path).sha256}

    config = prepared.config
    return {
        "format_version": CHECK_FORMAT,
        "passed": result.passed,
        "verdict": result.verdict(),
        "lenient": result.lenient,
        "model": model(spec, config.model_path),
        "base": None if base is None else model(*base),
        "thresholds": [asdict(t) | {"verdict": t.verdict} for t in result.thresholds],
        "settings": {
            "prompts": config.prompts.source,
            "n_prompts": len(config.prompts.prompts),
            "prompts_sha256": config.prompts.sha256,
            "max_new_tokens": config.max_new_tokens,
            "judges": list(config.judges),
            "system_prompt": config.system_prompt.label(),
            "attack": config.attack.label(),
            "seed": config.seed,
            "grid": config.grid.describe(),
            "requant": config.requant,
            "deviations": prepared.record_deviations(),
        },
        "folder": None if result.folder is None else str(result.folder),
        "runs": {name: str(path) for name, path in result.runs.items()},
    }


def _print(result: CheckResult) -> None:
    for t in result.thresholds:
        digits = 2 if t.name == "breaking t" else 1
        value = "not measured" if t.measured is None else f"{t.measured:.{digits}f}"
        interval = f" [{t.interval[0]:.1f}, {t.interval[1]:.1f}]" if t.interval else ""
        bound = f"{'<=' if t.upper else '>='} {t.limit:g}"
        verdict = t.verdict
        if verdict == "uncertain":
            verdict += ": the limit is inside the 95% interval; " + _uncertain(
                t.passes(True), result.lenient
            )
        note = f" ({t.note})" if t.note else ""
        click.echo(f"{t.name:<15} {value}{interval}{note}  {bound}  {verdict}")
    click.echo(f"runs in {result.folder}")
    click.echo(result.verdict())


def _uncertain(value_passes: bool, lenient: bool) -> str:
    """What an uncertain threshold comes to: lenient decides on the value, strict fails."""
    on_value = "passes" if value_passes else "fails"
    if lenient:
        return f"{on_value} on its value (--lenient)"
    return f"fails (with --lenient it {on_value} on its value)"

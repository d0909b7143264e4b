"""``visage-local check``: thresholds, their measured values, and an exit code."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click

from visage_local.check import CheckResult, Limits, run_check
from visage_local.engine import EngineSettings
from visage_local.grid import Grid
from visage_local.prompts import select_prompts
from visage_local.registry import model_label, resolve_model
from visage_local.settings import sweep_config
from visage_local.store import stored_batch_size

from ._common import echo_json
from .config_file import config_option, write_config
from .options import benign_set, measurement_options

EXIT_FAIL = 3


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
              help="Folder of the check's runs [default: runs/check-<model>]; a check "
              "interrupted resumes from it.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document and nothing else.")
def check_command(
    model, max_asr, min_visage, n_directions, max_benign_refusal, base, min_breaking_t, lenient,
    limit,
    max_new_tokens, steps, range_, interpolation_steps, seed, threads, n_gpu_layers, overlap,
    flash_attn, batch_size, benign_prompts, out_dir, as_json,
) -> None:  # fmt: skip
    """Run what the thresholds need on MODEL and exit 0 when every one passes, 3 when one
    fails (1 or 2 on an error)."""
    if benign_prompts is not None and max_benign_refusal is None:
        raise click.UsageError("--benign-prompts is read for --max-benign-refusal")
    model_path = resolve_model(model)
    out_dir = out_dir or Path("runs") / f"check-{model_label(model, model_path)}"
    config = sweep_config(
        model_path,
        grid=Grid(1, steps, range_),
        prompts=select_prompts(None, limit),
        engine=EngineSettings(threads=threads, n_gpu_layers=n_gpu_layers, flash_attn=flash_attn),
        batch_size=batch_size or _stored_batch_size(out_dir),
        overlap=overlap,
        seed=seed,
        max_new_tokens=max_new_tokens,
        benign=max_benign_refusal is not None,  # so that the batch holds them too
        benign_set=benign_set(benign_prompts),
    )
    limits = Limits(max_asr, min_visage, max_benign_refusal, min_breaking_t, n_directions)
    base_path = resolve_model(base) if base is not None else None
    ctx = click.get_current_context()
    values = ctx.params | {
        "model": model_path.resolve(),
        "base": None if base_path is None else base_path.resolve(),
        "out_dir": out_dir.resolve(),
        "batch_size": config.engine.max_sequences,
    }
    result = run_check(config, limits, out_dir, base_path, lenient, interpolation_steps,
                       on_start=lambda: write_config(out_dir, ctx.command, values))  # fmt: skip
    if as_json:
        echo_json(_document(result))
    else:
        _print(result)
    sys.exit(0 if result.passed else EXIT_FAIL)


def _stored_batch_size(out_dir: Path) -> int | None:
    """The batch size a check interrupted in ``out_dir`` chose (kept when it resumes)."""
    subs = ("origin", "landscape/direction-0", "interpolation")
    stored = (stored_batch_size(out_dir / sub) for sub in subs)
    return next((b for b in stored if b is not None), None)


def _document(result: CheckResult) -> dict:
    return {
        "format_version": 1,
        "passed": result.passed,
        "lenient": result.lenient,
        "thresholds": [asdict(t) | {"verdict": t.verdict} for t in result.thresholds],
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
            verdict += ": the limit is inside the 95% interval; " + (
                "passes on the value (--lenient)" if t.passes(True) and result.lenient
                else "fails (--lenient decides on the value)"
            )  # fmt: skip
        note = f" ({t.note})" if t.note else ""
        click.echo(f"{t.name:<15} {value}{interval}{note}  {bound}  {verdict}")
    click.echo(f"check {'passed' if result.passed else 'FAILED'}"
               f" (runs: {', '.join(str(p) for p in result.runs.values())})")  # fmt: skip

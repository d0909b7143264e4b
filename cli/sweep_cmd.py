"""``visage-local sweep``."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from visage_local.batching import TYPICAL_PROMPT_TOKENS, auto_batch_size
from visage_local.chat import SystemPrompt
from visage_local.directions import RandomDirection
from visage_local.engine import EngineSettings
from visage_local.gguf_model import GGUFModel
from visage_local.grid import MAX_RANGE, MAX_STEPS, Grid
from visage_local.judges import JUDGES
from visage_local.perturb import Perturbation
from visage_local.prompts import load_prompts
from visage_local.registry import resolve_model
from visage_local.sweep import PointOutcome, SweepConfig, run_sweep

from ._common import requant_option, threads_option


@click.command("sweep")
@click.argument("model", required=False)
@click.option("--dims", type=click.IntRange(1, 2), default=1, show_default=True)
@click.option(
    "--steps",
    type=click.IntRange(1, MAX_STEPS),
    default=20,
    show_default=True,
    help="Grid steps per axis (steps+1 points).",
)
@click.option(
    "--range",
    "range_",
    type=click.FloatRange(0, MAX_RANGE, min_open=True),
    default=0.5,
    show_default=True,
    help="Alpha (and beta) over [-RANGE, RANGE].",
)
@click.option("--seed", type=click.IntRange(min=0), default=123, show_default=True)
@click.option(
    "--prompts",
    "prompts_path",
    type=click.Path(path_type=Path),
    default=None,
    help="CSV with a 'goal' column, .txt (one per line) or .jsonl ('prompt'); "
    "default: the built-in harmful set.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=80,
    show_default=True,
    help="Use the first N prompts.",
)
@click.option("--max-new-tokens", type=click.IntRange(1, 4096), default=64, show_default=True)
@click.option(
    "--system-prompt",
    default="default",
    show_default=True,
    help="'default' (the template's own), 'none' (an empty system turn), or the text.",
)
@click.option("--judge", type=click.Choice(JUDGES), default="keyword-paper", show_default=True)
@click.option(
    "--early-stop/--no-early-stop",
    default=True,
    show_default=True,
    help="Stop a response once the judge's verdict is settled (verdicts are unchanged).",
)
@requant_option
@click.option(
    "--batch-size",
    type=click.IntRange(1, 256),
    default=None,
    help="Prompts decoded together in one llama.cpp context "
    "[default: the most that fit in a quarter of free memory, at most 64].",
)
@threads_option
@click.option("--n-gpu-layers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--memory-budget",
    "memory_budget_mb",
    type=click.IntRange(min=0),
    default=4096,
    show_default=True,
    help="MiB for caching weights and directions between points.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default: runs/<model file name>-<dims>d-seed<seed>).",
)
@click.option("--overwrite", is_flag=True, help="Discard a run with other settings in --out.")
def sweep_command(
    model,
    dims,
    steps,
    range_,
    seed,
    prompts_path,
    limit,
    max_new_tokens,
    system_prompt,
    judge,
    early_stop,
    requant,
    batch_size,
    threads,
    n_gpu_layers,
    memory_budget_mb,
    out_dir,
    overwrite,
) -> None:
    """Safety landscape of MODEL (a GGUF path or registry name; default: the embedded SmolLM2)."""
    model_path = resolve_model(model)
    source = GGUFModel(model_path)  # header checks and metadata before any work starts
    prompts = load_prompts(prompts_path, limit)
    if batch_size is None:
        batch_size = auto_batch_size(
            source, len(prompts.prompts), TYPICAL_PROMPT_TOKENS + max_new_tokens
        )
    config = SweepConfig(
        model_path=model_path,
        prompts=prompts,
        grid=Grid(dims, steps, range_),
        seed=seed,
        max_new_tokens=max_new_tokens,
        system_prompt=SystemPrompt.parse(system_prompt),
        judge=judge,
        early_stop=early_stop,
        requant=requant,
        engine=EngineSettings(threads=threads, n_gpu_layers=n_gpu_layers, max_sequences=batch_size),
        memory_budget_mb=memory_budget_mb,
    )
    if source.chat_template is None:
        click.echo(
            "note: the model has no chat template; prompts use visage-local's plain "
            "'User: ... / Assistant:' fallback (visage_local/chat.py)",
            err=True,
        )
    if requant != "same":
        extra = Perturbation(source, [RandomDirection(seed)], requant=requant)
        click.echo(
            f"requant {requant}: the perturbed model takes {extra.extra_bytes() / 2**20:.0f} MiB "
            "more than in its own types (in RAM while the sweep runs)",
            err=True,
        )
    out_dir = out_dir or Path("runs") / f"{model_path.stem}-{dims}d-seed{seed}"
    n_points = (steps + 1) ** dims
    click.echo(
        f"sweep {model_path.name}: {n_points} points x {len(config.prompts.prompts)} prompts, "
        f"up to {max_new_tokens} new tokens -> {out_dir}",
        err=True,
    )
    bar = tqdm(total=n_points, unit="point", desc="sweep")

    def on_point(outcome: PointOutcome, done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        where = f"a={outcome.point.alpha:+.3f}"
        if outcome.point.beta is not None:
            where += f" b={outcome.point.beta:+.3f}"
        bar.set_postfix_str(f"{where} ASR={outcome.asr:.1f}%")
        bar.refresh()
        moved = outcome.displacement.total
        if not moved.faithful():
            tqdm.write(
                f"warning: at {where} requantisation moved the weights by {moved.ratio:.2f}x the "
                f"intended step, cosine {moved.cosine:.2f} (see 'displacement' in summary.json; "
                "--requant q8_0 or f16 follows the direction more closely)"
            )

    try:
        summary = run_sweep(config, out_dir, overwrite=overwrite, on_point=on_point)
    finally:
        bar.close()
    _print_table(summary)
    click.echo(f"results in {out_dir}")


def _print_table(summary: dict) -> None:
    rows = [r for r in summary["points"] if r["on_grid"]]
    if summary["dims"] == 1:
        click.echo("   alpha     ASR  refused")
        for r in sorted(rows, key=lambda r: r["alpha"]):
            click.echo(f"{r['alpha']:+8.3f}  {r['asr']:6.1f}  {r['n_refused']:>3}/{r['n_prompts']}")
    else:
        axis = sorted({r["alpha"] for r in rows})
        click.echo("beta\\alpha " + " ".join(f"{a:+6.2f}" for a in axis))
        for b in sorted({r["beta"] for r in rows}, reverse=True):
            by_alpha = {r["alpha"]: r["asr"] for r in rows if r["beta"] == b}
            cells = " ".join(f"{by_alpha[a]:6.1f}" if a in by_alpha else "     -" for a in axis)
            click.echo(f"{b:+9.2f}  {cells}")
    visage = summary["visage"]
    click.echo(
        f"VISAGE {'n/a' if visage is None else f'{visage:.2f}'}   origin ASR "
        f"{summary['origin_asr']:.1f}%   ({summary['elapsed_s']:.0f} s)"
    )

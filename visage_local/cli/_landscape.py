"""Running landscapes from the command line: options to configuration, progress, tables.

Shared by ``sweep`` and ``interpolate``; the work is the library's (``settings.sweep_config``,
``sweep.run_sweep``, ``conditions``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import click
from tqdm import tqdm

from visage_local import reasoning, reference
from visage_local.attacks import load_attack
from visage_local.chat import SystemPrompt
from visage_local.conditions import (
    condition_variants,
    conditions_of,
    direction_variants,
    run_variants,
)
from visage_local.engine import EngineSettings
from visage_local.estimate import Estimate
from visage_local.evaluator import SCRATCH_DIR, PointOutcome, scratch_folder
from visage_local.gguf_model import GGUFModel
from visage_local.grid import Grid, InterpolationGrid
from visage_local.landscape import across_directions, deviation_text, fragility_lines, headline
from visage_local.planning import PointOrder, Shard, plan
from visage_local.prompts import select_prompts
from visage_local.record import RunSummary
from visage_local.settings import (
    DEFAULT_LIMIT,
    direction_cache,
    n_sequences,
    requant_extra_bytes,
    sweep_config,
    uniform_imatrix_types,
)
from visage_local.store import stored_batch_size
from visage_local.sweep import RayOptions, SweepOptions, run_sweep

from ._common import echo_json
from .config_file import write_config
from .options import benign_set, capability_settings, preset_value

EXTRA_COLUMNS = (
    ("harmful_compliance", "compliant+coherent"),
    ("incoherent", "incoherent"),
    ("benign_refusal", "benign refused"),
    ("mcq_accuracy", "MCQ acc"),
    ("kl", "KL"),
    ("perplexity", "perplexity"),
)


def run_landscape(
    model_path: Path,
    grid: Grid | InterpolationGrid,
    seed: int,
    options: dict,
    default_out: Path,
    n_directions: int = 1,
    order: PointOrder | None = None,
    budget_minutes: float | None = None,
    finetune: Path | None = None,
    finetune_kind: str = "model",
    resolved: dict | None = None,
) -> None:
    """Build the sweep configurations from the shared options, run them with a progress bar,
    and print each landscape's table. The command's options, with ``resolved`` (the values
    the command chose, such as the model's path) and the choices made here, are written to
    the run folder's config.toml once the run starts."""
    limit, sample = preset_value(options, "limit"), options["sample"]
    if limit is None and sample is None:
        limit = DEFAULT_LIMIT
    max_new_tokens = preset_value(options, "max_new_tokens") or reference.MAX_NEW_TOKENS
    conditions = conditions_of(
        [SystemPrompt.parse(s) for s in options["system_prompts"] or ("reference",)],
        [load_attack(a) for a in options["attacks"] or ("none",)],
    )
    if options["ray_address"] is None and options["workers"] != 2:
        raise click.UsageError("--workers needs --ray")
    out_dir = options["out_dir"] or default_out
    batch_size = options["batch_size"]
    if batch_size is None and not options["overwrite"]:
        batch_size = stored_batch_size(out_dir)
        if batch_size is not None:
            click.echo(f"resuming with the run's batch size, {batch_size}", err=True)
    config = sweep_config(
        model_path,
        grid,
        select_prompts(
            options["prompts_path"],
            limit,
            sample,
            options["sample_seed"],
            options["harmbench_all"],
            options["prompt_column"],
            options["category_column"],
        ),  # fmt: skip
        EngineSettings(
            threads=options["threads"],
            n_gpu_layers=options["n_gpu_layers"],
            flash_attn=options["flash_attn"],
        ),
        batch_size,
        seed=seed,
        max_new_tokens=max_new_tokens,
        thinking=options["thinking"],
        max_thinking_tokens=options["max_thinking_tokens"],
        system_prompt=conditions[0].system_prompt,
        judge=(options["judges"] or (reference.JUDGE,))[0],
        also_judge=tuple(options["judges"][1:]),
        attack=conditions[0].attack,
        benign=options["benign"] or options["benign_prompts"] is not None,
        benign_set=benign_set(options["benign_prompts"]),
        coherence=options["coherence"],
        early_stop=options["early_stop"],
        requant=options["requant"],
        memory_budget_mb=options["memory_budget_mb"],
        overlap=options["overlap"],
        exclude=options["exclude"],
        include=options["include"],
        finetune=finetune,
        finetune_kind=finetune_kind,
        capability=capability_settings(options),
    )
    if config.memory_budget_mb is None:
        budget = direction_cache(config)
        workers = 1 if options["ray_address"] is None else options["workers"]
        config = replace(config, memory_budget_mb=(budget.chosen // workers) >> 20)
        click.echo(budget.describe() + (f", {workers} workers share it" if workers > 1 else ""),
                   err=True)  # fmt: skip
    uniform = uniform_imatrix_types(config)
    if uniform:
        click.echo(
            f"note: {', '.join(uniform)} tensors are requantised with a uniform importance "
            "matrix (ggml needs one for these types; the file was most likely made with a "
            "measured one); summary.json lists them under uniform_imatrix",
            err=True,
        )
    syntax = reasoning.syntax_of(GGUFModel(model_path).chat_template)
    if syntax is not None:
        click.echo(
            f"reasoning model ({syntax.name}): thinking {config.thinking}, up to "
            f"{config.max_thinking_tokens} reasoning tokens; the judge reads only the answer "
            "after the reasoning",
            err=True,
        )
    elif config.thinking == "on":
        click.echo(
            "note: the chat template has no reasoning syntax; --thinking on changes nothing",
            err=True,
        )
    if GGUFModel(model_path).chat_template is None:
        click.echo(
            "note: the model has no chat template; prompts use visage-local's plain "
            "'User: ... / Assistant:' fallback (visage_local/chat.py)",
            err=True,
        )
    if config.requant != "same":
        click.echo(
            f"requant {config.requant}: the perturbed model takes "
            f"{requant_extra_bytes(config) / 2**20:.0f} MiB more than in its own types",
            err=True,
        )
    scratch = GGUFModel(model_path).size + requant_extra_bytes(config)
    where = scratch_folder(scratch, out_dir)
    click.echo(
        f"scratch copy of the model: {scratch / 2**20:.0f} MiB in "
        + ("RAM (/dev/shm)" if where == SCRATCH_DIR else f"{where} on disk, removed at the end"),
        err=True,
    )
    if n_directions > 1:
        variants = direction_variants(config, n_directions)
    else:
        variants = condition_variants(config, conditions)
    planned = plan(grid)  # the origin too, where the grid misses it
    n_points = len(order.share(planned)) if isinstance(order, Shard) else len(planned)
    shard = f" (shard {order}: {n_points} of them)" if isinstance(order, Shard) else ""
    click.echo(
        f"{model_path.name}: {len(planned)} points{shard} x {n_sequences(config)} prompts"
        f"{f' x {len(variants)} runs' if len(variants) > 1 else ''}, "
        f"up to {config.max_new_tokens} new tokens -> {out_dir}",
        err=True,
    )
    bar = tqdm(total=n_points * len(variants), unit="point", desc="sweep")
    labels = [label for label, _ in variants]
    finished: dict[str, int] = {}  # points finished in each variant, earlier sittings too
    estimated: list[str] = []  # the variants estimated in this sitting

    def advance(label: str, done: int) -> None:
        for earlier in labels[: labels.index(label)]:
            finished[earlier] = n_points  # the variants run in turn: these are done
        finished[label] = done
        bar.n = sum(finished.values())

    def on_point(label: str, outcome: PointOutcome, done: int, total: int) -> None:
        advance(label, done)
        where = f"a={outcome.point.alpha:+.3f}"
        if outcome.point.beta is not None:
            where += f" b={outcome.point.beta:+.3f}"
        bar.set_postfix_str(f"{where} ASR={outcome.asr:.1f}%")
        bar.refresh()
        for kind in outcome.displacement.unfaithful():
            moved = outcome.displacement.total
            moved = moved if kind == "all" else outcome.displacement.by_kind[kind]
            tqdm.write(
                f"warning: at {where} requantisation moved the {kind} weights by "
                f"{moved.ratio:.2f}x the intended step, cosine {moved.cosine:.2f} (see "
                "'displacement' in summary.json; --requant q8_0 or f16 follows the direction "
                "more closely)",
                file=sys.stderr,
            )

    def on_estimate(label: str, estimate: Estimate) -> None:
        advance(label, n_points - estimate.n_points)  # points an earlier sitting finished
        if len(estimated) == 0:  # so the ETA counts this sitting's points only
            bar.initial = bar.n
        estimated.append(label)
        bar.refresh()
        tqdm.write(estimate.describe(), file=sys.stderr)
        for note in estimate.notes():
            tqdm.write(f"note: {note}", file=sys.stderr)

    ctx = click.get_current_context()
    values = (
        ctx.params
        | (resolved or {})
        | {
            "limit": limit,
            "max_new_tokens": max_new_tokens,
            "batch_size": config.engine.max_sequences,
            "out_dir": out_dir.resolve(),
        }
    )
    sweep_options = SweepOptions(
        out_dir=out_dir,
        on_start=lambda: write_config(out_dir, ctx.command, values),
        overwrite=options["overwrite"],
        order=order,
        budget_minutes=budget_minutes,
        ray=None
        if options["ray_address"] is None
        else RayOptions(options["workers"], options["ray_address"]),
    )
    try:
        if len(variants) == 1:
            label, single = variants[0]
            summary = run_sweep(
                single,
                replace(
                    sweep_options,
                    on_point=lambda o, d, t: on_point(label, o, d, t),
                    on_estimate=lambda e: on_estimate(label, e),
                ),
            )
            results = [(label, summary)]
        else:
            results = run_variants(variants, sweep_options, on_point, on_estimate)
    finally:
        bar.close()
    if options["as_json"]:
        documents = [json.loads(summary.to_json()) for _, summary in results]
        if len(results) == 1:
            echo_json(documents[0])
        else:
            pairs = zip(results, documents, strict=True)
            runs = [{"label": label, "summary": d} for (label, _), d in pairs]
            across = across_directions(out_dir, results) if n_directions > 1 else None
            echo_json({"runs": runs} | ({"across_directions": across} if across else {}))
        return
    for label, summary in results:
        if len(results) > 1:
            click.echo(f"\n{label}")
        print_table(summary)
    if n_directions > 1:
        print_across_directions(across_directions(out_dir, results))
    click.echo(f"results in {out_dir}")


def print_across_directions(figures: dict) -> None:
    """Mean VISAGE and basin edges across directions, with their intervals."""
    click.echo(f"\nacross {figures['directions']} directions:")
    v = figures["visage"]
    if v["mean"] is None:
        click.echo("  VISAGE: none (no direction finished)")
    else:
        each = ", ".join(
            "-" if d["visage"] is None else f"{d['visage']:.2f}" for d in figures["per_direction"]
        )
        click.echo(
            f"  VISAGE: mean {v['mean']:.2f} [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}] "
            f"(95%, directions and prompts resampled; each direction: {each})"
        )
    for key, name in (("left_edge", "left edge"), ("right_edge", "right edge")):
        f = figures[key]
        if f["mean"] is None:
            click.echo(f"  {name}: no edge within the range in any direction")
        else:
            click.echo(
                f"  {name}: mean {f['mean']:+.3f} [{f['ci'][0]:+.3f}, {f['ci'][1]:+.3f}] "
                f"(95% t interval, {f['n']} of {figures['directions']} directions have one)"
            )


def _cell(value: float | None, key: str, width: int) -> str:
    if value is None:
        return "  " + "-".rjust(width)
    return f"  {value:>{width}.{3 if key == 'kl' else 1}f}"


def print_table(summary: RunSummary) -> None:
    """The landscape as a table: 1D rows or a 2D grid, then VISAGE, edges and skips."""
    rows = summary.grid_points
    if summary.dims == 1:
        extra = [(k, h) for k, h in EXTRA_COLUMNS if any(getattr(r, k) is not None for r in rows)]
        click.echo("   alpha     ASR  95% CI        refused" + "".join(f"  {h}" for _, h in extra))
        for r in sorted(rows, key=lambda r: r.alpha):
            cells = "".join(_cell(getattr(r, k), k, len(h)) for k, h in extra)
            ci = "[{:5.1f}, {:5.1f}]".format(*r.asr_ci)
            click.echo(
                f"{r.alpha:+8.3f}  {r.asr:6.1f}  {ci}  {r.n_refused:>3}/{r.n_prompts}{cells}"
            )
    else:
        axis = sorted({r.alpha for r in rows})
        click.echo("beta\\alpha " + " ".join(f"{a:+6.2f}" for a in axis))
        for b in sorted({r.beta for r in rows}, reverse=True):
            by_alpha = {r.alpha: r.asr for r in rows if r.beta == b}
            cells = " ".join(f"{by_alpha[a]:6.1f}" if a in by_alpha else "     -" for a in axis)
            click.echo(f"{b:+9.2f}  {cells}")
    if summary.skipped:
        skipped = ", ".join(f"{p['alpha']:+.3f}" for p in summary.skipped[:12])
        more = "" if len(summary.skipped) <= 12 else f" and {len(summary.skipped) - 12} more"
        click.echo(
            f"time budget: skipped {len(summary.skipped)} points ({skipped}{more}) at "
            f"{summary.seconds_per_point:.0f} s a point; run again with more time to add them"
        )
    if summary.order == "adaptive":
        click.echo(
            f"adaptive: evaluated {summary.n_points_evaluated} of "
            f"{summary.n_points_planned} grid points"
        )
    click.echo(
        f"{headline(summary, 2)}   origin ASR {summary.origin_asr:.1f}%   "
        f"({summary.elapsed_s:.0f} s)"
    )
    for line in fragility_lines(summary, 2):
        click.echo(line)
    if summary.interpolation:
        click.echo(
            f"(the first t where ASR exceeds the base model's + {summary.edge_threshold:.0f} "
            "points; interpolation landscapes have no VISAGE)"
        )
    if summary.breaking_distance:
        shown = ", ".join(f"{kind} {d:.4f}" for kind, d in summary.breaking_distance.items())
        click.echo(
            f"breaking distance (the change at breaking t / the base's weight norm): {shown}; "
            "unlike t it compares across finetunes"
        )
    for ray in summary.basin_outline or []:
        where = "none" if ray["radius"] is None else f"r={ray['radius']:.3f}"
        click.echo(f"basin edge along {ray['angle_deg']:+6.1f} deg: {where}")
    edges = summary.basin_edges
    if edges:
        shown = ", ".join("none" if e is None else f"{e:+.3f}" for e in edges)
        click.echo(f"basin edges (ASR > origin + {summary.edge_threshold:.0f} points): {shown}")
    if summary.categories:
        print_categories(summary)
    click.echo(deviation_text(summary))


def print_categories(summary: RunSummary) -> None:
    """Per prompt category: its prompts, origin ASR with interval, VISAGE or breaking t."""
    last = "breaking t" if summary.interpolation else "VISAGE"
    click.echo(f"{'category':<32} {'n':>3}  {'origin ASR':>10}  {'95% CI':<14}  {last}")
    for c in summary.categories or []:
        asr = "-" if c["origin_asr"] is None else f"{c['origin_asr']:.1f}"
        ci = "" if c["origin_asr_ci"] is None else "[{:5.1f}, {:5.1f}]".format(*c["origin_asr_ci"])
        value = c["breaking_t"] if summary.interpolation else c["visage"]
        shown = "-" if value is None else f"{value:.2f}"
        click.echo(f"{c['category'][:32]:<32} {c['n_prompts']:>3}  {asr:>10}  {ci:<14}  {shown}")

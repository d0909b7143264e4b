"""``visage-local sweep``."""

from __future__ import annotations

import functools
from pathlib import Path

import click
from tqdm import tqdm

from visage_local.attacks import BUILTIN_ATTACKS, load_attack
from visage_local.batching import TYPICAL_PROMPT_TOKENS, auto_batch_size
from visage_local.capability import CapabilitySettings, load_questions
from visage_local.chat import SystemPrompt
from visage_local.cluster import run_ray_sweep
from visage_local.conditions import (
    across_directions,
    condition_variants,
    conditions_of,
    direction_variants,
    run_variants,
)
from visage_local.directions import RandomDirection
from visage_local.engine import EngineSettings
from visage_local.gguf_model import GGUFModel
from visage_local.grid import MAX_RANGE, MAX_STEPS, Grid, InterpolationGrid
from visage_local.judges import JUDGES, check_judge_name
from visage_local.perturb import Perturbation
from visage_local.planning import AdaptiveEdges
from visage_local.prompts import builtin_benign, select_prompts
from visage_local.registry import resolve_model
from visage_local.sweep import PointOutcome, SweepConfig, run_sweep

from ._common import requant_option, threads_option

DEFAULT_LIMIT = 80

_EVALUATION_OPTIONS = [
    click.option(
        "--prompts",
        "prompts_path",
        type=click.Path(path_type=Path),
        default=None,
        help="AdvBench CSV ('goal'), JailbreakBench CSV ('Goal'), HarmBench behaviours CSV, "
        ".txt (one per line) or .jsonl ('prompt'); default: the built-in harmful set.",
    ),
    click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=None,
        help="Use the first N prompts [default: 80, unless --sample].",
    ),
    click.option(
        "--sample",
        type=click.IntRange(min=1),
        default=None,
        help="Use N prompts drawn at random (with --sample-seed) instead of the first ones.",
    ),
    click.option("--sample-seed", type=click.IntRange(min=0), default=0, show_default=True),
    click.option(
        "--harmbench-all",
        is_flag=True,
        help="Keep HarmBench's contextual and copyright rows (skipped by default).",
    ),
    click.option(
        "--benign",
        is_flag=True,
        help="Also measure how often the built-in benign prompts are refused (over-refusal).",
    ),
    click.option(
        "--capability",
        is_flag=True,
        help="Also measure capability at every point: KL from the origin on benign prompts, "
        "accuracy on multiple-choice questions, and (with --perplexity-text) perplexity.",
    ),
    click.option(
        "--mcq",
        "mcq_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="With --capability: a CSV of questions (question,A,B,C,D,answer[,subject]) "
        "instead of the built-in 102.",
    ),
    click.option(
        "--perplexity-text",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="With --capability: a UTF-8 text file whose perplexity is measured at every point.",
    ),
    click.option(
        "--kl-prompts",
        type=click.IntRange(min=1),
        default=20,
        show_default=True,
        help="With --capability: benign prompts whose answers the KL is measured along.",
    ),
    click.option(
        "--kl-tokens",
        type=click.IntRange(1, 256),
        default=16,
        show_default=True,
        help="With --capability: answer positions the KL is averaged over.",
    ),
    click.option("--max-new-tokens", type=click.IntRange(1, 4096), default=64, show_default=True),
    click.option(
        "--system-prompt",
        "system_prompts",
        multiple=True,
        help="'default' (the template's own), 'none' (an empty system turn), 'safety' (the "
        "project's protective prompt), @FILE, or the text. Repeat to sweep each one on the same "
        "grid. [default: default]",
    ),
    click.option(
        "--attack",
        "attacks",
        multiple=True,
        help=f"Wrap each prompt in a jailbreak template: 'none', {', '.join(BUILTIN_ATTACKS)}, "
        "or a text file with a {prompt} slot. Repeat to sweep each one. [default: none]",
    ),
    click.option(
        "--judge",
        default="keyword-paper",
        show_default=True,
        help=f"Refusal judge: {', '.join(JUDGES)}.",
    ),
    click.option(
        "--coherence/--no-coherence",
        default=True,
        show_default=True,
        help="Score every answer's coherence with the origin model (harmful compliance = "
        "coherent and not refused).",
    ),
    click.option(
        "--early-stop/--no-early-stop",
        default=True,
        show_default=True,
        help="Stop a response once the judge's verdict is settled (verdicts are unchanged).",
    ),
    requant_option,
    click.option(
        "--batch-size",
        type=click.IntRange(1, 256),
        default=None,
        help="Prompts decoded together in one llama.cpp context "
        "[default: the most that fit in a quarter of free memory, at most 128].",
    ),
    threads_option,
    click.option("--n-gpu-layers", type=click.IntRange(min=0), default=0, show_default=True),
    click.option(
        "--flash-attn/--no-flash-attn",
        default=False,
        show_default=True,
        help="llama.cpp's flash-attention kernels: about 15% faster on a CPU, but answers "
        "round a little differently (docs/NOTES.md); part of the run's settings.",
    ),
    click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value="local",
        default=None,
        help="Spread the points over a Ray cluster: --ray alone starts a local one, --ray "
        "ADDRESS joins a running one (needs visage-local[ray]). --threads and --n-gpu-layers "
        "apply to each worker.",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=2,
        show_default=True,
        help="With --ray: how many workers (each holds one copy of the model).",
    ),
    click.option(
        "--memory-budget",
        "memory_budget_mb",
        type=click.IntRange(min=0),
        default=4096,
        show_default=True,
        help="MiB for keeping random directions in memory between points; directions "
        "that do not fit are drawn again, block by block, at every point (slower, but a "
        "tensor's direction is never held whole: 0 gives the least memory).",
    ),
    click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Output folder (default: runs/<model file name>-<dims>d-seed<seed>).",
    ),
    click.option("--overwrite", is_flag=True, help="Discard a run with other settings in --out."),
]


def evaluation_options(command):
    """The options sweep and interpolate share: prompts, judging, generation, engine, output."""
    for option in reversed(_EVALUATION_OPTIONS):
        command = option(command)
    return command


EXTRA_COLUMNS = (
    ("harmful_compliance", "compliant+coherent"),
    ("incoherent", "incoherent"),
    ("benign_refusal", "benign refused"),
    ("mcq_accuracy", "MCQ acc"),
    ("kl", "KL"),
    ("perplexity", "perplexity"),
)


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
@evaluation_options
@click.option(
    "--directions",
    "n_directions",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="1D only: sweep N independent random directions of the seed, each in a sub-folder, "
    "and report the mean VISAGE and basin edges across them.",
)
@click.option(
    "--adaptive",
    is_flag=True,
    help="Find the basin edges by a coarse pass, bisection and fill-in instead of evaluating "
    "every point: on both sides in 1D, along eight rays (axes, diagonals) in 2D.",
)
@click.option(
    "--budget-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop before a point that would not finish in time (from the measured time per "
    "point); the grid is then visited coarse to fine and the skipped points are listed.",
)
def sweep_command(
    model: str | None,
    dims: int,
    steps: int,
    range_: float,
    seed: int,
    n_directions: int,
    adaptive: bool,
    budget_minutes: float | None,
    **options,
) -> None:
    """Safety landscape of MODEL (a GGUF path or registry name; default: the embedded SmolLM2)."""
    if n_directions > 1 and (
        dims != 1 or len(options["system_prompts"]) > 1 or len(options["attacks"]) > 1
    ):
        raise click.UsageError(
            "--directions needs --dims 1 and a single --system-prompt and --attack"
        )
    model_path = resolve_model(model)
    run_landscape(
        model_path,
        Grid(dims, steps, range_),
        seed,
        options,
        default_out=Path("runs") / f"{model_path.stem}-{dims}d-seed{seed}",
        n_directions=n_directions,
        order=AdaptiveEdges() if adaptive else None,
        budget_minutes=budget_minutes,
    )


def capability_settings(options: dict) -> CapabilitySettings | None:
    """The capability probe's settings from --capability and its options (None without it)."""
    given = [
        name
        for name, default in (
            ("mcq_path", None),
            ("perplexity_text", None),
            ("kl_prompts", 20),
            ("kl_tokens", 16),
        )
        if options[name] != default
    ]
    if not options["capability"]:
        if given:
            flag = "--" + given[0].replace("_path", "").replace("_", "-")
            raise click.UsageError(f"{flag} needs --capability")
        return None
    return CapabilitySettings(
        kl_prompts=options["kl_prompts"],
        kl_tokens=options["kl_tokens"],
        questions=load_questions(options["mcq_path"]),
        text_path=options["perplexity_text"],
    )


def run_landscape(
    model_path: Path,
    grid: Grid | InterpolationGrid,
    seed: int,
    options: dict,
    default_out: Path,
    n_directions: int = 1,
    order=None,
    budget_minutes: float | None = None,
    finetune: Path | None = None,
    finetune_kind: str = "model",
) -> None:
    """Build the sweep configurations from the shared options, run them with a progress bar,
    and print each landscape's table."""
    source = GGUFModel(model_path)  # header checks and metadata before any work starts
    limit, sample = options["limit"], options["sample"]
    if limit is None and sample is None:
        limit = DEFAULT_LIMIT
    prompts = select_prompts(
        options["prompts_path"], limit, sample, options["sample_seed"], options["harmbench_all"]
    )
    conditions = conditions_of(
        [SystemPrompt.parse(s) for s in options["system_prompts"] or ("default",)],
        [load_attack(a) for a in options["attacks"] or ("none",)],
    )
    benign = options["benign"]
    max_new_tokens = options["max_new_tokens"]
    n_sequences = len(prompts.prompts) + (len(builtin_benign().prompts) if benign else 0)
    batch_size = options["batch_size"] or auto_batch_size(
        source, n_sequences, TYPICAL_PROMPT_TOKENS + max_new_tokens
    )
    config = SweepConfig(
        model_path=model_path,
        prompts=prompts,
        grid=grid,
        seed=seed,
        max_new_tokens=max_new_tokens,
        system_prompt=conditions[0].system_prompt,
        judge=check_judge_name(options["judge"]),
        attack=conditions[0].attack,
        benign=benign,
        coherence=options["coherence"],
        early_stop=options["early_stop"],
        requant=options["requant"],
        engine=EngineSettings(
            threads=options["threads"],
            n_gpu_layers=options["n_gpu_layers"],
            max_sequences=batch_size,
            flash_attn=options["flash_attn"],
        ),
        memory_budget_mb=options["memory_budget_mb"],
        finetune=finetune,
        finetune_kind=finetune_kind,
        capability=capability_settings(options),
    )
    if source.chat_template is None:
        click.echo(
            "note: the model has no chat template; prompts use visage-local's plain "
            "'User: ... / Assistant:' fallback (visage_local/chat.py)",
            err=True,
        )
    if config.requant != "same":
        extra = Perturbation(source, [RandomDirection(seed)], requant=config.requant)
        click.echo(
            f"requant {config.requant}: the perturbed model takes "
            f"{extra.extra_bytes() / 2**20:.0f} MiB more than in its own types "
            "(in RAM while the sweep runs)",
            err=True,
        )
    out_dir = options["out_dir"] or default_out
    if n_directions > 1:
        variants = direction_variants(config, n_directions)
    else:
        variants = condition_variants(config, conditions)
    n_points = len(grid.points())
    click.echo(
        f"{model_path.name}: {n_points} points x {n_sequences} prompts"
        f"{f' x {len(variants)} runs' if len(variants) > 1 else ''}, "
        f"up to {max_new_tokens} new tokens -> {out_dir}",
        err=True,
    )
    bar = tqdm(total=n_points * len(variants), unit="point", desc="sweep")
    started: list[str] = []

    def on_point(label: str, outcome: PointOutcome, done: int, total: int) -> None:
        if label not in started:
            started.append(label)
        bar.total = total * len(variants)
        bar.n = done + total * (len(started) - 1)
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

    overwrite = options["overwrite"]
    if options["ray_address"] is None and options["workers"] != 2:
        raise click.UsageError("--workers needs --ray")
    sweep = run_sweep
    if options["ray_address"] is not None:
        sweep = functools.partial(
            run_ray_sweep, workers=options["workers"], address=options["ray_address"]
        )
    try:
        if len(variants) == 1:
            label = variants[0][0]
            summary = sweep(
                config,
                out_dir,
                overwrite,
                lambda o, d, t: on_point(label, o, d, t),
                order,
                budget_minutes,
            )
            results = [(label, summary)]
        else:
            results = run_variants(
                variants, out_dir, overwrite, on_point, order, budget_minutes, sweep
            )
    finally:
        bar.close()
    for label, summary in results:
        if len(results) > 1:
            click.echo(f"\n{label}")
        _print_table(summary)
    if n_directions > 1:
        _print_across_directions(across_directions(results))
    click.echo(f"results in {out_dir}")


def _print_across_directions(figures: dict) -> None:
    click.echo(f"\nacross {figures['directions']} directions (mean, 95% t interval):")
    for key, name in (
        ("visage", "VISAGE"),
        ("left_edge", "left edge"),
        ("right_edge", "right edge"),
    ):
        f = figures[key]
        if f["mean"] is None:
            click.echo(f"  {name}: none")
        else:
            click.echo(
                f"  {name}: {f['mean']:+.3f} [{f['ci'][0]:+.3f}, {f['ci'][1]:+.3f}] (n={f['n']})"
            )


def _cell(value: float | None, key: str, width: int) -> str:
    if value is None:
        return "  " + "-".rjust(width)
    return f"  {value:>{width}.{3 if key == 'kl' else 1}f}"


def _print_table(summary: dict) -> None:
    rows = [r for r in summary["points"] if r["on_grid"]]
    if summary["dims"] == 1:
        extra = [(k, h) for k, h in EXTRA_COLUMNS if any(r.get(k) is not None for r in rows)]
        click.echo("   alpha     ASR  95% CI        refused" + "".join(f"  {h}" for _, h in extra))
        for r in sorted(rows, key=lambda r: r["alpha"]):
            cells = "".join(_cell(r[k], k, len(h)) for k, h in extra)
            ci = "[{:5.1f}, {:5.1f}]".format(*r["asr_ci"])
            click.echo(
                f"{r['alpha']:+8.3f}  {r['asr']:6.1f}  {ci}  {r['n_refused']:>3}/{r['n_prompts']}"
                f"{cells}"
            )
    else:
        axis = sorted({r["alpha"] for r in rows})
        click.echo("beta\\alpha " + " ".join(f"{a:+6.2f}" for a in axis))
        for b in sorted({r["beta"] for r in rows}, reverse=True):
            by_alpha = {r["alpha"]: r["asr"] for r in rows if r["beta"] == b}
            cells = " ".join(f"{by_alpha[a]:6.1f}" if a in by_alpha else "     -" for a in axis)
            click.echo(f"{b:+9.2f}  {cells}")
    if summary.get("skipped"):
        skipped = ", ".join(f"{p['alpha']:+.3f}" for p in summary["skipped"][:12])
        more = "" if len(summary["skipped"]) <= 12 else f" and {len(summary['skipped']) - 12} more"
        click.echo(
            f"time budget: skipped {len(summary['skipped'])} points ({skipped}{more}) at "
            f"{summary['seconds_per_point']:.0f} s a point; run again with more time to add them"
        )
    if summary["order"] == "adaptive":
        click.echo(
            f"adaptive: evaluated {summary['n_points_evaluated']} of "
            f"{summary['n_points_planned']} grid points"
        )
    visage = summary["visage"]
    text = "n/a" if visage is None else f"{visage:.2f}"
    if summary.get("visage_ci"):
        text += " (95% CI {:.2f} to {:.2f})".format(*summary["visage_ci"])
    click.echo(
        f"VISAGE {text}   origin ASR {summary['origin_asr']:.1f}%   ({summary['elapsed_s']:.0f} s)"
    )
    for ray in summary.get("basin_outline") or []:
        where = "none" if ray["radius"] is None else f"r={ray['radius']:.3f}"
        click.echo(f"basin edge along {ray['angle_deg']:+6.1f} deg: {where}")
    edges = summary.get("basin_edges")
    if edges:
        shown = ", ".join("none" if e is None else f"{e:+.3f}" for e in edges)
        click.echo(f"basin edges (ASR > origin + {summary['edge_threshold']:.0f} points): {shown}")

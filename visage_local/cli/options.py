"""Options shared by the commands, in one place: no command module imports another."""

from __future__ import annotations

import os
from pathlib import Path

import click

from visage_local.asking import reasoning, reference
from visage_local.asking.attacks import BUILTIN_ATTACKS
from visage_local.asking.prompts import PromptSet, load_prompts
from visage_local.engine.capability import CapabilitySettings, load_questions
from visage_local.engine.llama import auto_gpu_layers
from visage_local.judges import JUDGES
from visage_local.points.grid import MAX_RANGE, MAX_STEPS
from visage_local.weights.perturb import REQUANT_MODES

requant_option = click.option(
    "--requant",
    type=click.Choice(list(REQUANT_MODES)),
    default="same",
    show_default=True,
    help="Type perturbed tensors are written in: each tensor's own (same), or a finer one.",
)
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default=True,
    help="CPU threads for llama.cpp and requantisation [default: all cores].",
)


class GpuLayers(click.ParamType):
    """A layer count, or ``auto``: every layer where llama.cpp was built with a GPU backend,
    none where not (``engine.auto_gpu_layers``)."""

    name = "N|auto"

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        if str(value).lower() == "auto":
            return auto_gpu_layers()
        try:
            layers = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number of layers nor 'auto'", param, ctx)
        if layers < 0:
            self.fail(f"{layers} layers: give 0 or more, or 'auto'", param, ctx)
        return layers


gpu_layers_option = click.option(
    "--n-gpu-layers",
    type=GpuLayers(),
    default=0,
    show_default=True,
    help="Layers llama.cpp offloads to a GPU (0: CPU only; auto: all of them where llama.cpp "
    "was built with a GPU backend, none where not). The weights are still moved on the CPU, "
    "and the model reloaded after each move (docs/BENCHMARKS.md: the GPU route measured).",
)
overlap_option = click.option(
    "--overlap/--no-overlap",
    default=None,
    help="Prepare the next point's weights while this point generates (holds a second "
    "copy of the perturbed tensors; same answers) [default: on with --n-gpu-layers, "
    "off on a CPU alone, where both compete for the same cores: docs/BENCHMARKS.md].",
)
flash_attn_option = click.option(
    "--flash-attn/--no-flash-attn",
    default=False,
    show_default=True,
    help="llama.cpp's flash-attention kernels: about 15% faster on a CPU, but answers "
    "round a little differently (docs/NOTES.md); part of the run's settings.",
)
seed_option = click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=reference.SEED,
    show_default=True,
    help=f"Seed of the random directions (the reference uses {reference.SEED}).",
)


def range_option(help: str):
    """``--range`` (into ``range_``), over (0, MAX_RANGE], the reference's 0.5 by default."""
    return click.option(
        "--range",
        "range_",
        type=click.FloatRange(0, MAX_RANGE, min_open=True),
        default=reference.RANGE,
        show_default=True,
        help=help,
    )


dims_option = click.option(
    "--dims",
    type=click.IntRange(1, 2),
    default=1,
    show_default=True,
    help="1: a line along one direction; 2: a plane spanned by two.",
)

exclude_option = click.option(
    "--exclude",
    "exclude",
    multiple=True,
    metavar="PATTERN",
    help="Leave tensors whose name contains PATTERN (or matches it as a glob: *, ?, [) "
    "unperturbed, besides norms. Repeat for several. [default: only norms]",
)
include_option = click.option(
    "--include",
    "include",
    multiple=True,
    metavar="PATTERN",
    help="Perturb only tensors whose name contains PATTERN (or matches it as a glob); "
    "repeat for several. [default: every tensor not excluded]",
)


def tensor_options(command):
    """--exclude and --include: which tensors the directions move."""
    return exclude_option(include_option(command))


def benign_set(path: str | None) -> PromptSet | None:
    """The prompts ``--benign-prompts`` names (None: the built-in set, when --benign)."""
    return None if path is None else load_prompts(path)


benign_prompts_option = click.option(
    "--benign-prompts",
    "benign_prompts",
    metavar="PATH",
    default=None,
    help="Measure over-refusal on these harmless prompts instead of the built-in set (a file "
    "in any --prompts format; implies --benign).",
)

_PROMPT_OPTIONS = [
    click.option(
        "--prompts",
        "prompts_path",
        type=click.Path(path_type=Path),
        default=None,
        help="'advbench' (AdvBench's behaviours, shipped with visage-local, as the reference "
        "uses them), 'builtin' (the project's own set, docs/PROMPTS.md), or a file: AdvBench "
        "CSV ('goal'), JailbreakBench CSV ('Goal'), StrongREJECT CSV ('forbidden_prompt'), "
        "HarmBench behaviours CSV, a HEx-PHI category CSV (no header) or a folder of them, "
        ".txt (one per line) or .jsonl ('prompt') [default: advbench].",
    ),
    click.option(
        "--prompt-column",
        default=None,
        help="The column of a --prompts CSV file that holds the prompts (any layout).",
    ),
    click.option(
        "--category-column",
        default=None,
        help="The column of a --prompts CSV file (or field of a JSONL file) that holds each "
        "prompt's category: ASR is then also given per category [default: StrongREJECT's "
        "'category', HarmBench's 'SemanticCategory', a HEx-PHI file's name, the built-in "
        "set's categories].",
    ),
    click.option(
        "--preset",
        type=click.Choice(list(reference.PRESETS)),
        default="reference",
        show_default=True,
        help="'reference': the paper's setting (21 points, the first 80 AdvBench behaviours, "
        "512 tokens). 'quick': a first look (11 points, 20 prompts, 64 tokens: at most 1/60 "
        "of the tokens; docs/BENCHMARKS.md). Options given explicitly override the preset; every "
        "difference from the reference is recorded as a deviation.",
    ),
    click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=None,
        help="Use the first N prompts [default: 80, the reference; 20 with --preset quick; "
        "all of a --sample].",
    ),
    click.option(
        "--sample",
        type=click.IntRange(min=1),
        default=None,
        help="Use N prompts drawn at random (with --sample-seed) instead of the first ones.",
    ),
    click.option(
        "--sample-seed",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Seed of --sample's draw.",
    ),
    click.option(
        "--harmbench-all",
        is_flag=True,
        help="Keep HarmBench's contextual and copyright rows (skipped by default).",
    ),
]
_BENIGN_OPTIONS = [
    click.option(
        "--benign",
        is_flag=True,
        help="Also measure how often the built-in benign prompts are refused (over-refusal).",
    ),
    benign_prompts_option,
]
_CAPABILITY_OPTIONS = [
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
]
_GENERATION_OPTIONS = [
    click.option(
        "--max-new-tokens",
        type=click.IntRange(1, 4096),
        default=None,
        help="Most tokens generated per answer [default: 512, the reference; 64 with "
        "--preset quick].",
    ),
    click.option(
        "--thinking",
        type=click.Choice(reasoning.THINKING_MODES),
        default=reasoning.DEFAULT_THINKING,
        show_default=True,
        help="Reasoning models (templates with <think> or harmony channels): 'off' asks the "
        "template not to think, 'on' lets the model think within --max-thinking-tokens. "
        "Either way the judge reads only the answer after the reasoning; "
        "generations.jsonl keeps the reasoning apart. Other models: no effect.",
    ),
    click.option(
        "--max-thinking-tokens",
        type=click.IntRange(1, 32768),
        default=reasoning.DEFAULT_MAX_THINKING_TOKENS,
        show_default=True,
        help="Reasoning models: tokens of reasoning before its closing is fed to the model "
        "and the answer (with its own --max-new-tokens) follows.",
    ),
    click.option(
        "--system-prompt",
        "system_prompts",
        multiple=True,
        help="'reference' (the reference code's for the model's family: 'llama2' for Llama-2 "
        "chat, 'mistral' for Mistral, the template's own for others), 'default' (the "
        "template's own), 'none' (an empty system turn), 'safety' (the project's protective "
        "prompt), the reference code's 'llama2' (Llama 2's default), 'mistral' (Mistral's "
        "guardrail prompt) or 'aoa' (the absolutely obedient agent), @FILE, or the text. "
        "Repeat to sweep each one on the same grid. [default: reference]",
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
        "judges",
        multiple=True,
        help=f"Refusal judge: {', '.join(JUDGES)}. Repeat to judge with several: an answer "
        "then stops early only once every judge's verdict is settled, and each judge gets "
        "its own summary (the first: summary.json; the others: summary.judge-<name>.json). "
        "[default: keyword-paper]",
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
        help="Stop an answer once every judge's verdict on it is final (docs/NOTES.md: what "
        "early stop changes).",
    ),
]
_TENSOR_OPTIONS = [requant_option, exclude_option, include_option]
_ENGINE_OPTIONS = [
    click.option(
        "--batch-size",
        type=click.IntRange(1, 256),
        default=None,
        help="Prompts decoded together in one llama.cpp context "
        "[default: the most that fit in a quarter of free memory, at most 128].",
    ),
    threads_option,
    gpu_layers_option,
    overlap_option,
    flash_attn_option,
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
        default=None,
        help="MiB for keeping random directions in memory between points; directions "
        "that do not fit are drawn again, block by block, at every point (slower, but a "
        "tensor's direction is never held whole: 0 gives the least memory) [default: what "
        "fits beside the model, the KV cache and 1 GiB of headroom in the memory available "
        "at the start; the sweep says what it chose; with --ray, shared among the workers].",
    ),
]
_OUTPUT_OPTIONS = [
    click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Output folder [default: runs/<model file name>-<dims>d-seed<seed>, or "
        "runs/interp-<base>-<finetune>-<dims>d].",
    ),
    click.option("--overwrite", is_flag=True, help="Discard a run with other settings in --out."),
    click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print the summary (summary.json's content; several runs: a list) as one JSON "
        "document on stdout and nothing else; progress and notes stay on stderr.",
    ),
]


def _apply(command, options: list):
    for option in reversed(options):
        command = option(command)
    return command


def evaluation_options(command):
    """The options sweep and interpolate share: prompts, judging, generation, engine, output."""
    return _apply(
        command,
        _PROMPT_OPTIONS
        + _BENIGN_OPTIONS
        + _CAPABILITY_OPTIONS
        + _GENERATION_OPTIONS
        + _TENSOR_OPTIONS
        + _ENGINE_OPTIONS
        + _OUTPUT_OPTIONS,
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


_GRID_OPTIONS = [
    click.option("--steps", type=click.IntRange(1, MAX_STEPS), default=None,
                 help="Grid steps of the 1D landscapes VISAGE is read from [default: 20, the "
                 "reference; 10 with --preset quick]."),
    range_option("The 1D landscapes' alpha over [-RANGE, RANGE]."),
    seed_option,
]  # fmt: skip
_INTERPOLATION_OPTIONS = [
    click.option("--interpolation-steps", type=click.IntRange(1, MAX_STEPS), default=10,
                 show_default=True, help="Steps over t in [0, 1] from --base."),
]  # fmt: skip


def measurement_options(command):
    """The options check and screen measure with: every measurement option of sweep (prompts,
    generation, judges, system prompt and attack, tensors, engine, Ray) but the capability
    probe, and the landscape's grid and the interpolation's steps (the reference setting by
    default)."""
    return _apply(measurement_options_without_base(command), _INTERPOLATION_OPTIONS)


def measurement_options_without_base(command):
    """``measurement_options`` but the interpolation's steps (for commands with no base)."""
    return _apply(
        command,
        _GRID_OPTIONS
        + _PROMPT_OPTIONS
        + [benign_prompts_option]
        + _GENERATION_OPTIONS
        + _TENSOR_OPTIONS
        + _ENGINE_OPTIONS,
    )

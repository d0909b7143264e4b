"""A run's SweepConfig rebuilt from its folder, so that a run can be continued exactly.

Everything that determines a run's results is in its folder: summary.json (paths and
labels), config.json (the hashed result settings) and generations.jsonl (the prompt
texts in order). ``config_of_run`` rebuilds the SweepConfig from them and then checks
that it hashes to the stored settings, naming the ones that do not match (a model file
that changed, an attack template edited since, other package versions).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from visage_local.asking import reasoning
from visage_local.asking.attacks import load_attack
from visage_local.asking.chat import BUILTIN_SYSTEM_PROMPTS, SystemPrompt
from visage_local.asking.prompts import BENIGN_NAME, PromptSet
from visage_local.engine.capability import CapabilitySettings, builtin_questions, load_questions
from visage_local.engine.llama import EngineSettings
from visage_local.errors import ConfigError
from visage_local.points.grid import grid_from_description
from visage_local.record import GenerationRecord, RunFolder, RunSummary
from visage_local.run.prepared import prepare
from visage_local.run.settings import SweepConfig
from visage_local.weights.directions import DEFAULT_EXCLUDE


def config_of_run(
    run_dir: str | os.PathLike,
    model: str | os.PathLike | None = None,
    threads: int | None = None,
    n_gpu_layers: int = 0,
) -> SweepConfig:
    """The SweepConfig that wrote ``run_dir`` (with ``model`` instead of the recorded path,
    if given), run on ``threads`` and ``n_gpu_layers`` of this machine; ConfigError naming
    each setting that cannot be rebuilt as it was."""
    folder = RunFolder(Path(run_dir))
    summary = folder.read_summary()
    try:
        stored = folder.read_settings().config
    except ConfigError as e:
        raise ConfigError(f"{e}; the run cannot be rebuilt") from e
    model_path = Path(model if model is not None else summary.model)
    if not model_path.is_file():
        raise ConfigError(f"{model_path}: the run's model is not there; pass --model PATH")
    finetune, kind, first_direction = _directions(summary)
    exclude, include = _tensor_patterns(summary.directions[0])
    engine = EngineSettings(
        max_sequences=summary.batch_size, flash_attn=summary.flash_attn, n_gpu_layers=n_gpu_layers
    )
    config = SweepConfig(
        model_path=model_path,
        prompts=_prompts(summary, folder.read_generations()),
        grid=grid_from_description(summary.grid),
        seed=summary.seed,
        max_new_tokens=summary.max_new_tokens,
        system_prompt=_system_prompt(summary.system_prompt, stored.get("system_prompt_text", "")),
        judge=summary.judge,
        also_judge=tuple(stored.get("also_judge", ())),
        attack=load_attack(summary.attack),
        benign=summary.benign is not None,
        benign_set=_benign(summary, folder.read_generations()),
        coherence=stored.get("coherence") is not None,
        early_stop=summary.early_stop,
        requant=summary.requant,
        engine=engine if threads is None else replace(engine, threads=threads),
        first_direction=first_direction,
        exclude=exclude,
        include=include,
        finetune=finetune,
        finetune_kind=kind,
        capability=_capability(summary.capability),
        thinking=stored.get("thinking", reasoning.DEFAULT_THINKING),
        max_thinking_tokens=stored.get(
            "max_thinking_tokens", reasoning.DEFAULT_MAX_THINKING_TOKENS
        ),
    )
    rebuilt = json.loads(json.dumps(prepare(config).result_config))
    differing = sorted(k for k in set(stored) | set(rebuilt) if stored.get(k) != rebuilt.get(k))
    if differing:
        raise ConfigError(
            f"{run_dir}: the run cannot be repeated exactly here: {', '.join(differing)} "
            "differ from what it was made with"
        )
    return config


def _prompts(summary: RunSummary, records: list[GenerationRecord]) -> PromptSet:
    """The harmful prompts in order, as the run stored them with its answers."""
    if not records:
        raise ConfigError("the run has no finished point to read its prompts from")
    first = records[0]["point"]
    harmful = sorted(
        (r for r in records if r["point"] == first and r.get("set", "harmful") == "harmful"),
        key=lambda r: r["prompt_index"],
    )
    categories = [r.get("category") for r in harmful]
    return PromptSet(
        summary.prompts,
        tuple(r["prompt"] for r in harmful),
        None if None in categories else tuple(str(c) for c in categories),
    )


def _benign(summary: RunSummary, records: list[GenerationRecord]) -> PromptSet | None:
    """The benign prompts in order, as the run stored them (None: none, or the built-in
    set, which the package holds)."""
    if summary.benign in (None, BENIGN_NAME):
        return None
    first = records[0]["point"]
    benign = sorted(
        (r for r in records if r["point"] == first and r.get("set") == "benign"),
        key=lambda r: r["prompt_index"],
    )
    return PromptSet(summary.benign, tuple(r["prompt"] for r in benign))


def _system_prompt(label: str, text: str) -> SystemPrompt:
    if label in ("default", "none", *BUILTIN_SYSTEM_PROMPTS):
        return SystemPrompt.parse(label)
    return SystemPrompt("text", text)


def _directions(summary: RunSummary) -> tuple[Path | None, str, int]:
    """(finetune path, its kind, index of the first random direction) of the run."""
    first = summary.directions[0]
    if first["kind"] == "random":
        return None, "model", int(first["index"])
    randoms = [d for d in summary.directions if d["kind"] == "random"]
    index = int(randoms[0]["index"]) if randoms else 0
    if first["kind"] == "lora":
        return Path(first["adapter"]), "lora", index
    return Path(first["finetune"]), "model", index


def _tensor_patterns(first: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The user's --exclude and --include patterns, as the first direction records them."""
    exclude = list(first.get("exclude", []))
    if first["kind"] == "random":  # the default exclusions come first
        exclude = exclude[len(DEFAULT_EXCLUDE) :]
    return tuple(exclude), tuple(first.get("include", []))


def _capability(described: dict | None) -> CapabilitySettings | None:
    if described is None:
        return None
    builtin = builtin_questions()
    questions = builtin if described["mcq"] == builtin.source else load_questions(described["mcq"])
    text = described.get("perplexity_text")
    return CapabilitySettings(
        kl_prompts=described["kl_prompts"],
        kl_tokens=described["kl_tokens"],
        questions=questions,
        text_path=Path(text) if text else None,
    )

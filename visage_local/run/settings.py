"""A sweep's settings: what it evaluates and how, and which of them determine its results.

``SweepConfig`` is everything a sweep needs to know; ``result_config`` is the part that
determines the results (hashed to guard resumes). The CLI builds a SweepConfig through
``sweep_config`` so that a notebook gets the same defaults.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from visage_local.asking import reasoning, reference
from visage_local.asking.attacks import Attack
from visage_local.asking.chat import REFERENCE_SYSTEM, SystemPrompt
from visage_local.asking.prompts import PromptSet, builtin_benign, select_prompts
from visage_local.asking.reference import Deviation
from visage_local.engine import coherence
from visage_local.engine.batching import (
    TYPICAL_PROMPT_TOKENS,
    auto_batch_size,
)
from visage_local.engine.capability import CapabilitySettings
from visage_local.engine.llama import EngineSettings
from visage_local.errors import ConfigError
from visage_local.gguf.model import GGUFModel
from visage_local.judges import check_judge_name, judge_files
from visage_local.points.grid import Grid, InterpolationGrid
from visage_local.weights.directions import (
    GGUF_ONLY,
    selection,
)
from visage_local.weights.interpolation import FINETUNE_KINDS

DIRECTIONS_TEXT = "random, layer-normalised, "  # + the tensor selection
DEFAULT_LIMIT = reference.PROMPT_LIMIT  # prompts of the set a sweep uses unless told otherwise


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep needs to know."""

    model_path: Path
    prompts: PromptSet
    grid: Grid | InterpolationGrid = field(default_factory=Grid)
    seed: int = reference.SEED
    max_new_tokens: int = reference.MAX_NEW_TOKENS
    system_prompt: SystemPrompt = REFERENCE_SYSTEM  # resolved per model by for_model
    judge: str = reference.JUDGE
    also_judge: tuple[str, ...] = ()  # more judges: answers stop when all are settled
    attack: Attack = field(default_factory=lambda: Attack("none"))
    benign: bool = False
    benign_set: PromptSet | None = None  # with benign: these prompts (None: the built-in set)
    coherence: bool = True
    early_stop: bool = True
    requant: str = "same"
    engine: EngineSettings = field(default_factory=EngineSettings)
    memory_budget_mb: int | None = None  # direction cache; None: what fits (direction_cache)
    # prepare the next point's weights while this one generates; None: with GPU offload
    overlap: bool | None = None
    first_direction: int = 0
    exclude: tuple[str, ...] = ()  # tensors left alone besides the default (norms)
    include: tuple[str, ...] = ()  # when given: only the tensors these name are moved
    finetune: Path | None = None  # interpolation: a finetuned model or a LoRA adapter
    finetune_kind: str = "model"  # a key of interpolation.FINETUNE_KINDS
    capability: CapabilitySettings | None = None
    thinking: str = reasoning.DEFAULT_THINKING  # reasoning models: "off" or "on"
    max_thinking_tokens: int = reasoning.DEFAULT_MAX_THINKING_TOKENS
    # the model as the user named it when not by a path (a store or registry spec): shown in
    # the summary and reports, never part of the results
    model_spec: str | None = None

    def __post_init__(self):
        if self.seed < 0:
            raise ConfigError("--seed must be a non-negative integer")
        if not 1 <= self.max_new_tokens <= 4096:
            raise ConfigError("--max-new-tokens must be between 1 and 4096")
        if self.thinking not in reasoning.THINKING_MODES:
            raise ConfigError(f"--thinking must be one of {', '.join(reasoning.THINKING_MODES)}")
        if self.finetune_kind not in FINETUNE_KINDS:
            raise ConfigError(f"finetune_kind must be one of {', '.join(FINETUNE_KINDS)}")
        if not 1 <= self.max_thinking_tokens <= 32768:
            raise ConfigError("--max-thinking-tokens must be between 1 and 32768")

    def for_model(self, model: GGUFModel) -> SweepConfig:
        """This configuration for ``model`` (its own): the ``reference`` system prompt becomes
        the reference code's prompt for the model's family."""
        prompt = self.system_prompt.for_model(model.chat_template, model.architecture, model.name)
        return replace(self, system_prompt=prompt)

    def deviations(self, model: GGUFModel | None = None) -> list[Deviation]:
        """The settings in which this sweep differs from the paper's reference setting
        (``model``: this configuration's, when the caller has it open)."""
        random = self.finetune is None
        model = model or GGUFModel(self.model_path)
        return reference.deviations(
            prompt_set_sha256=self.prompts.sha256,
            prompts=self.prompts.source,
            n_prompts=len(self.prompts.prompts),
            max_new_tokens=self.max_new_tokens,
            judge=self.judge,
            system_prompt=self.for_model(model).system_prompt.label(),
            attack=self.attack.label(),
            grid=self.grid.describe() if random else None,
            seed=self.seed if random else None,
            direction_index=self.first_direction if random else None,
            thinking=self.thinking
            if reasoning.syntax_of(model.chat_template)
            else reference.THINKING,
            family_prompt=reference.family_system_prompt(
                model.chat_template, model.architecture, model.name
            ),
            chat_template="model" if model.chat_template else "fallback",
            requant=self.requant,
        )

    @property
    def overlaps(self) -> bool:
        """True when the next point's weights are prepared while a point generates: asked
        for, or by default where it pays (layers offloaded to a GPU: docs/BENCHMARKS.md)."""
        return self.overlap if self.overlap is not None else self.engine.n_gpu_layers > 0

    @property
    def judges(self) -> tuple[str, ...]:
        """Every judge of the run, its own (the summary's) first."""
        return (self.judge, *self.also_judge)

    @property
    def benign_prompts(self) -> PromptSet | None:
        """The over-refusal set evaluated beside the harmful prompts, if asked for."""
        if not self.benign:
            return None
        return self.benign_set if self.benign_set is not None else builtin_benign()


def sweep_config(
    model_path: str | os.PathLike,
    grid: Grid | InterpolationGrid | None = None,
    prompts: PromptSet | None = None,
    engine: EngineSettings | None = None,
    batch_size: int | None = None,
    **settings: Any,
) -> SweepConfig:
    """A SweepConfig with the defaults the CLI uses: the first DEFAULT_LIMIT built-in
    prompts, the judge name checked, and (without ``batch_size``) as many prompts decoded
    together as fit in a quarter of free memory. ``settings`` are SweepConfig's other
    fields (seed, max_new_tokens, judge, ...); the model's header is read first, so a bad
    file fails here."""
    model = GGUFModel(model_path)
    prompts = prompts or select_prompts(None, DEFAULT_LIMIT)
    for name in (settings.get("judge", reference.JUDGE), *settings.get("also_judge", ())):
        check_judge_name(name)
    config = SweepConfig(
        model_path=Path(model_path),
        prompts=prompts,
        grid=grid or Grid(),
        engine=engine or EngineSettings(),
        **settings,
    )
    batch = batch_size or auto_batch_size(
        model, n_sequences(config), TYPICAL_PROMPT_TOKENS + config.max_new_tokens
    )
    return replace(config, engine=replace(config.engine, max_sequences=batch))


def n_sequences(config: SweepConfig) -> int:
    """Prompts evaluated at every point: the harmful ones, and the benign ones if asked for."""
    return len(config.prompts.prompts) + (
        len(config.benign_prompts.prompts) if config.benign else 0
    )


def versions() -> dict[str, str]:
    """Versions of the packages that determine results."""
    out = {}
    for dist in ("visage-local", "llama-cpp-python", "gguf", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def result_config(config: SweepConfig, model: GGUFModel, directions: list[dict]) -> dict:
    """The settings that determine a sweep's results (hashed to guard resumes);
    ``directions`` are the descriptions of its directions (``prepared.directions_of``)."""
    return (
        {
            "model_sha256": model.sha256,
            **config.grid.describe(),
            "seed": config.seed,
            "directions": _directions_setting(config, model, directions),
            "prompts_sha256": config.prompts.sha256,
            "n_prompts": len(config.prompts.prompts),
            "judge": config.judge,
            "system_prompt": config.system_prompt.label(),
            "system_prompt_text": config.system_prompt.text,
            "attack": config.attack.label(),
            "attack_sha256": config.attack.sha256,
            "benign_sha256": config.benign_prompts.sha256 if config.benign else None,
            "coherence": _coherence_method() if config.coherence else None,
            "max_new_tokens": config.max_new_tokens,
            "early_stop": config.early_stop,
            "requant": config.requant,
            "batch_size": config.engine.max_sequences,
            "versions": versions(),
        }
        | ({"capability": config.capability.describe()} if config.capability else {})
        | ({"flash_attn": True} if config.engine.flash_attn else {})
        | ({"also_judge": list(config.also_judge)} if config.also_judge else {})
        | (
            {"categories_sha256": config.prompts.categories_sha256}
            if config.prompts.categories
            else {}
        )
        | judge_files(config.judges)
        | (
            {"thinking": config.thinking, "max_thinking_tokens": config.max_thinking_tokens}
            if reasoning.syntax_of(model.chat_template)
            else {}
        )
    )


def _directions_setting(
    config: SweepConfig, model: GGUFModel, directions: list[dict]
) -> str | list[dict]:
    if config.finetune is not None:
        return directions
    gguf_only = [t.name for t in model.tensors if t.name in GGUF_ONLY]
    return (
        DIRECTIONS_TEXT
        + selection(config.exclude, config.include).describe()
        + (f", GGUF-only left alone: {', '.join(gguf_only)}" if gguf_only else "")
        + (f", from index {config.first_direction}" if config.first_direction else "")
    )


def _coherence_method() -> str:
    return (
        f"origin mean log-prob of the first {coherence.COHERENCE_TOKENS} answer tokens; threshold "
        f"p{coherence.ORIGIN_PERCENTILE:g} of the origin's answers - {coherence.MARGIN_NATS} nats"
    )


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a point: which set it belongs to and its text as the model sees it."""

    set: str  # "harmful" or "benign"
    prompt: str  # as written in the prompt set
    presented: str  # after the attack template (harmful prompts only)
    category: str | None = None  # the harmful prompt's category, when the set has them


def prompt_items(config: SweepConfig) -> list[PromptItem]:
    """The harmful prompts (wrapped in the attack), then the benign ones if asked for."""
    prompts = config.prompts
    categories = prompts.categories or (None,) * len(prompts.prompts)
    items = [
        PromptItem("harmful", p, config.attack.wrap(p), c)
        for p, c in zip(prompts.prompts, categories, strict=True)
    ]
    if config.benign:
        items += [PromptItem("benign", p, p) for p in config.benign_prompts.prompts]
    return items

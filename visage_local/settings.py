"""A sweep's settings: what it evaluates and how, and which of them determine its results.

``SweepConfig`` is everything a sweep needs to know; ``result_config`` is the part that
determines the results (hashed to guard resumes). The CLI builds a SweepConfig through
``sweep_config`` so that a notebook gets the same defaults.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from visage_local import coherence, reasoning, reference
from visage_local.attacks import Attack
from visage_local.batching import (
    TYPICAL_PROMPT_TOKENS,
    CacheBudget,
    TensorWork,
    auto_batch_size,
    cache_budget,
    sequence_bytes,
)
from visage_local.capability import CapabilitySettings
from visage_local.chat import REFERENCE_SYSTEM, SystemPrompt
from visage_local.directions import (
    GGUF_ONLY,
    RandomDirection,
    TensorSelection,
    direction_block_rows,
    selection,
)
from visage_local.engine import EngineSettings
from visage_local.errors import ConfigError
from visage_local.gguf_model import GGUFModel
from visage_local.grid import Grid, InterpolationGrid
from visage_local.interpolation import FinetuneDirection, LoraDirection
from visage_local.judges import check_judge_name
from visage_local.perturb import Direction, Perturbation
from visage_local.prompts import PromptSet, builtin_benign, select_prompts
from visage_local.reference import Deviation

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
    finetune_kind: str = "model"  # "model" or "lora"
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
        if not 1 <= self.max_thinking_tokens <= 32768:
            raise ConfigError("--max-thinking-tokens must be between 1 and 32768")

    def directions(self, base: GGUFModel) -> list[Direction]:
        """The directions of the grid's axes. Random: indices first_direction, +1, ... of the
        seed. Interpolation: the finetune's direction, then (2D) random index first_direction."""
        randoms = selection(self.exclude, self.include)
        if self.finetune is None:
            return [
                RandomDirection(self.seed, self.first_direction + i, randoms)
                for i in range(self.grid.dims)
            ]
        chosen = TensorSelection(self.exclude, self.include)
        if self.finetune_kind == "lora":
            first: Direction = LoraDirection(self.finetune, base, chosen)
        else:
            first = FinetuneDirection(self.finetune, self.engine.threads, chosen)
        if self.grid.dims == 1:
            return [first]
        return [first, RandomDirection(self.seed, self.first_direction, randoms)]

    def for_model(self, model: GGUFModel) -> SweepConfig:
        """This configuration for ``model`` (its own): the ``reference`` system prompt becomes
        the reference code's prompt for the model's family."""
        prompt = self.system_prompt.for_model(model.chat_template, model.architecture, model.name)
        return replace(self, system_prompt=prompt)

    def deviations(self) -> list[Deviation]:
        """The settings in which this sweep differs from the paper's reference setting."""
        random = self.finetune is None
        model = GGUFModel(self.model_path)
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
            thinking=self.thinking if self.reasons() else reference.THINKING,
            family_prompt=reference.family_system_prompt(
                model.chat_template, model.architecture, model.name
            ),
            chat_template="model" if model.chat_template else "fallback",
            requant=self.requant,
        )

    def reasons(self) -> bool:
        """True when the model's chat template has a reasoning syntax (``--thinking`` applies)."""
        return reasoning.syntax_of(GGUFModel(self.model_path).chat_template) is not None

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


def direction_cache(config: SweepConfig, available: int | None = None) -> CacheBudget:
    """The direction cache a sweep of ``config`` (its batch size set) keeps beside its
    model copy, its KV cache and the work on one tensor: ``config.memory_budget_mb`` when
    set, else what fits in ``available`` bytes (default: what the machine has now)."""
    model = GGUFModel(config.model_path)
    directions = config.directions(model)
    perturbation = Perturbation(model, directions, requant=config.requant)
    works, needed = [], 0
    per_value = 4 * (2 + len(directions))
    for t in perturbation.targets:
        size = perturbation.direction_bytes(t)
        needed += size
        works.append(
            TensorWork(
                cached_from=size if perturbation.drawn(t) else 0,  # only these are streamed
                whole=t.n_elements * per_value,
                block=min(t.n_rows, direction_block_rows(t.n_per_row)) * t.n_per_row * per_value,
            )
        )
    tokens = TYPICAL_PROMPT_TOKENS + config.max_new_tokens
    if config.thinking == "on":
        tokens += config.max_thinking_tokens
    return cache_budget(
        # the scratch copy, the next point's tensors when prepared beside it, and the
        # original file the coherence scorer maps
        model_bytes=(model.size + perturbation.extra_bytes()) * (2 if config.overlaps else 1)
        + (model.size if config.coherence else 0),
        kv_bytes=config.engine.max_sequences * sequence_bytes(model, tokens),
        works=works,
        needed=needed,
        available=available,
        chosen=None if config.memory_budget_mb is None else config.memory_budget_mb << 20,
    )


def requant_extra_bytes(config: SweepConfig) -> int:
    """How many more bytes the perturbed model takes with ``config.requant`` than in its own
    types (held in RAM while the sweep runs)."""
    model = GGUFModel(config.model_path)
    return Perturbation(model, [RandomDirection(config.seed)], requant=config.requant).extra_bytes()


def uniform_imatrix_types(config: SweepConfig) -> list[str]:
    """The tensor types the sweep requantises with a uniform importance matrix."""
    model = GGUFModel(config.model_path)
    directions = config.directions(model)
    return Perturbation(model, directions, requant=config.requant).uniform_imatrix_types()


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
    ``directions`` are the descriptions of ``config.directions(model)``."""
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
        | _judge_files(config.judges)
        | (
            {"thinking": config.thinking, "max_thinking_tokens": config.max_thinking_tokens}
            if reasoning.syntax_of(model.chat_template)
            else {}
        )
    )


def _judge_files(judges: tuple[str, ...]) -> dict:
    """The sha256 of each ``keyword:FILE`` judge's list (its name holds only the path)."""
    files = {
        name: hashlib.sha256(Path(name[len("keyword:") :]).read_bytes()).hexdigest()
        for name in judges
        if name.startswith("keyword:")
    }
    return {"judge_files": files} if files else {}


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

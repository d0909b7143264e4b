"""What to measure, as the command line gave it: the one path from the measurement options
(``options.evaluation_options``, ``options.measurement_options``) into a ``SweepConfig``.

``sweep``, ``interpolate``, ``check`` and ``screen`` all build their configurations here,
so an option means the same on each; ``Measurement.prepared`` prepares the configuration
once (``prepared.prepare``), with the notes a run prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import click

from visage_local.asking import reasoning, reference
from visage_local.asking.attacks import load_attack
from visage_local.asking.chat import SystemPrompt
from visage_local.asking.prompts import PromptSet, select_prompts
from visage_local.engine.capability import CapabilitySettings
from visage_local.engine.llama import EngineSettings
from visage_local.points.grid import Grid, InterpolationGrid
from visage_local.run.cluster import RayOptions
from visage_local.run.conditions import Condition, conditions_of
from visage_local.run.prepared import PreparedSweep, prepare
from visage_local.run.settings import DEFAULT_LIMIT, SweepConfig, sweep_config

from .options import benign_set


@dataclass(frozen=True)
class Measurement:
    """The measurement options of a command, typed (each field is the option's parameter)."""

    prompts_path: Path | None = None
    prompt_column: str | None = None
    category_column: str | None = None
    preset: str = "reference"
    limit: int | None = None
    sample: int | None = None
    sample_seed: int = 0
    harmbench_all: bool = False
    benign_prompts: str | None = None
    max_new_tokens: int | None = None
    thinking: str = reasoning.DEFAULT_THINKING
    max_thinking_tokens: int = reasoning.DEFAULT_MAX_THINKING_TOKENS
    system_prompts: tuple[str, ...] = ()
    attacks: tuple[str, ...] = ()
    judges: tuple[str, ...] = ()
    coherence: bool = True
    early_stop: bool = True
    requant: str = "same"
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    batch_size: int | None = None
    threads: int = os.cpu_count() or 1
    n_gpu_layers: int = 0
    overlap: bool | None = None
    flash_attn: bool = False
    ray_address: str | None = None
    workers: int = 2
    memory_budget_mb: int | None = None

    @classmethod
    def take(cls, params: dict) -> Measurement:
        """The measurement options out of a command's ``params`` (removed from it)."""
        names = {f.name for f in fields(cls)}
        taken = {name: params.pop(name) for name in list(params) if name in names}
        for name in ("system_prompts", "attacks", "judges", "exclude", "include"):
            if name in taken:
                taken[name] = tuple(taken[name])
        measurement = cls(**taken)
        if measurement.ray_address is None and measurement.workers != 2:
            raise click.UsageError("--workers needs --ray")
        return measurement

    def preset_value(self, name: str) -> int | None:
        """An option's value: as given, else the preset's, else None (the reference default)."""
        given = getattr(self, name)
        return given if given is not None else reference.PRESETS[self.preset].get(name)

    @property
    def n_prompts(self) -> int | None:
        """The first N prompts used (None: a --sample's)."""
        limit = self.preset_value("limit")
        return DEFAULT_LIMIT if limit is None and self.sample is None else limit

    @property
    def new_tokens(self) -> int:
        """Most tokens generated per answer."""
        return self.preset_value("max_new_tokens") or reference.MAX_NEW_TOKENS

    def grid_steps(self, given: int | None) -> int:
        """The grid's steps: ``given``, else the preset's, else the reference's."""
        return given or reference.PRESETS[self.preset].get("steps") or reference.STEPS

    def conditions(self) -> list[Condition]:
        """Every (system prompt, attack) pair to sweep, in order."""
        return conditions_of(
            [SystemPrompt.parse(s) for s in self.system_prompts or ("reference",)],
            [load_attack(a) for a in self.attacks or ("none",)],
        )

    def single_condition(self, command: str) -> Condition:
        """The one (system prompt, attack) a check or a screen measures with."""
        if len(self.system_prompts) > 1 or len(self.attacks) > 1:
            raise click.UsageError(
                f"{command} measures one setting: give --system-prompt and --attack once each "
                "(sweep compares several)"
            )
        return self.conditions()[0]

    def prompt_set(self) -> PromptSet:
        """The harmful prompts the options name."""
        return select_prompts(
            self.prompts_path,
            self.n_prompts,
            self.sample,
            self.sample_seed,
            self.harmbench_all,
            self.prompt_column,
            self.category_column,
        )

    def ray(self) -> RayOptions | None:
        """Ray's settings, when --ray was given."""
        return None if self.ray_address is None else RayOptions(self.workers, self.ray_address)

    def config(
        self,
        model_path: Path,
        grid: Grid | InterpolationGrid,
        seed: int,
        benign: bool = False,
        batch_size: int | None = None,
        finetune: Path | None = None,
        finetune_kind: str = "model",
        capability: CapabilitySettings | None = None,
        prompts: PromptSet | None = None,
        model_spec: str | None = None,
    ) -> SweepConfig:
        """The sweep these options measure on ``model_path`` (its first condition; ``benign``
        adds the over-refusal set, --benign-prompts' or the built-in one; ``batch_size``
        overrides --batch-size, e.g. a resumed run's own)."""
        condition = self.conditions()[0]
        return sweep_config(
            model_path,
            grid,
            prompts or self.prompt_set(),
            EngineSettings(
                threads=self.threads, n_gpu_layers=self.n_gpu_layers, flash_attn=self.flash_attn
            ),
            batch_size or self.batch_size,
            seed=seed,
            max_new_tokens=self.new_tokens,
            thinking=self.thinking,
            max_thinking_tokens=self.max_thinking_tokens,
            system_prompt=condition.system_prompt,
            judge=(self.judges or (reference.JUDGE,))[0],
            also_judge=tuple(self.judges[1:]),
            attack=condition.attack,
            benign=benign or self.benign_prompts is not None,
            benign_set=benign_set(self.benign_prompts),
            coherence=self.coherence,
            early_stop=self.early_stop,
            requant=self.requant,
            memory_budget_mb=self.memory_budget_mb,
            overlap=self.overlap,
            exclude=self.exclude,
            include=self.include,
            finetune=finetune,
            finetune_kind=finetune_kind,
            capability=capability,
            model_spec=model_spec,
        )

    def prepared(self, config: SweepConfig) -> PreparedSweep:
        """``config`` prepared to run, its direction cache shared among --ray's workers."""
        return prepare(config, 1 if self.ray_address is None else self.workers)

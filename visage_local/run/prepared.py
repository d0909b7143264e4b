"""A sweep prepared once: its configuration resolved against its model before any point runs.

``prepare(config)`` opens the model, resolves what depends on it (the family's system
prompt, an interpolation's pair checked), fixes the directions, sizes the direction cache
(shared among ``workers``) and the scratch copy, and says what a user should know before
it runs. The local loop, the Ray workers, check, screen, the conditions and ``rejudge
--complete`` all take the ``PreparedSweep``; nothing after it opens the model again.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from visage_local.asking import reasoning
from visage_local.asking.reference import Deviation
from visage_local.engine.batching import (
    TYPICAL_PROMPT_TOKENS,
    CacheBudget,
    TensorWork,
    cache_budget,
    sequence_bytes,
)
from visage_local.gguf.model import GGUFModel
from visage_local.run.settings import SweepConfig, result_config
from visage_local.weights.directions import (
    RandomDirection,
    TensorSelection,
    direction_block_rows,
    selection,
)
from visage_local.weights.interpolation import FINETUNE_KINDS, FinetuneDirection, check_pair
from visage_local.weights.perturb import Direction, Perturbation

SCRATCH_DIR = Path("/dev/shm")  # RAM-backed, where it exists and has room


def scratch_folder(size: int, fallback: Path) -> Path:
    """RAM-backed /dev/shm when it has room for a scratch copy of ``size`` bytes, else
    ``fallback`` (on disk: macOS and Windows have no /dev/shm)."""
    usable = SCRATCH_DIR.is_dir() and os.access(SCRATCH_DIR, os.W_OK)
    if usable and shutil.disk_usage(SCRATCH_DIR).free > 2 * size:
        return SCRATCH_DIR
    return fallback


@dataclass(frozen=True)
class PreparedSweep:
    """A sweep's configuration resolved against its model, once."""

    # for the model (the reference system prompt of its family), with its direction cache
    config: SweepConfig
    model: GGUFModel
    directions: tuple[Direction, ...]
    # the memory planned beside the scratch copy (each of ``workers`` processes takes its
    # share: ``config.memory_budget_mb``)
    cache: CacheBudget
    uniform_imatrix: tuple[str, ...]  # output types requantised with a uniform matrix
    extra_bytes: int  # what --requant adds to the scratch copy
    # how the direction cache was chosen, when it was chosen here (not --memory-budget)
    cache_note: str | None = None

    @property
    def described(self) -> list[dict]:
        """Each direction's description, as the summary records it."""
        return [d.describe() for d in self.directions]

    @property
    def result_config(self) -> dict:
        """The settings that determine the results (hashed to guard resumes)."""
        return result_config(self.config, self.model, self.described)

    @property
    def scratch_bytes(self) -> int:
        """Bytes the scratch copy of the model takes."""
        return self.model.size + self.extra_bytes

    def deviations(self) -> list[Deviation]:
        """The settings in which this sweep differs from the paper's reference setting."""
        return self.config.deviations(self.model)

    def perturbation(self) -> Perturbation:
        """A perturbation along the directions with this sweep's cache (one per evaluator:
        it keeps the directions it has drawn)."""
        return Perturbation(
            self.model,
            self.directions,
            threads=self.config.engine.threads,
            cache_bytes=(self.config.memory_budget_mb or 0) << 20,
            requant=self.config.requant,
        )

    def scratch_folder(self, fallback: Path) -> Path:
        """Where the scratch copy goes (``scratch_folder``)."""
        return scratch_folder(self.scratch_bytes, fallback)

    def notes(self, out_dir: Path) -> list[str]:
        """What a user should know before the sweep runs in ``out_dir``: the direction
        cache, a uniform importance matrix, reasoning, a missing chat template,
        requantisation's extra memory and where the scratch copy goes."""
        notes = [] if self.cache_note is None else [self.cache_note]
        if self.uniform_imatrix:
            notes.append(
                f"note: {', '.join(self.uniform_imatrix)} tensors are requantised with a "
                "uniform importance matrix (ggml needs one for these types; the file was most "
                "likely made with a measured one); summary.json lists them under uniform_imatrix"
            )
        notes += _template_notes(self.model, self.config)
        if self.config.requant != "same":
            notes.append(
                f"requant {self.config.requant}: the perturbed model takes "
                f"{self.extra_bytes / 2**20:.0f} MiB more than in its own types"
            )
        where = self.scratch_folder(out_dir)
        notes.append(
            f"scratch copy of the model: {self.scratch_bytes / 2**20:.0f} MiB in "
            + ("RAM (/dev/shm)" if where == SCRATCH_DIR else f"{where} on disk, removed at the end")
        )
        return notes

    def record_deviations(self) -> list[dict]:
        """The deviations as the summary and check.json record them."""
        return [asdict(d) for d in self.deviations()]


def prepare(config: SweepConfig, workers: int = 1, available: int | None = None) -> PreparedSweep:
    """``config`` resolved against its model: opened once, the directions fixed, the direction
    cache sized (``config.memory_budget_mb`` when set, else what fits in ``available`` bytes,
    default the memory free now, shared among ``workers``)."""
    model = GGUFModel(config.model_path)
    config = config.for_model(model)
    directions = tuple(directions_of(config, model))
    if isinstance(directions[0], FinetuneDirection):  # an interpolation to a whole model
        check_pair(model, directions[0].finetune)
    planning = Perturbation(model, directions, requant=config.requant)
    cache = _direction_cache(config, model, planning, available)
    note = None
    if config.memory_budget_mb is None:  # chosen here, shared among the workers
        note = cache.describe() + (f", {workers} workers share it" if workers > 1 else "")
        config = replace(config, memory_budget_mb=(cache.chosen // workers) >> 20)
    return PreparedSweep(
        config,
        model,
        directions,
        cache,
        tuple(planning.uniform_imatrix_types()),
        planning.extra_bytes(),
        note,
    )


def directions_of(config: SweepConfig, base: GGUFModel) -> list[Direction]:
    """The directions of ``config``'s grid axes on ``base``. Random: indices first_direction,
    +1, ... of the seed. Interpolation: the finetune's direction, then (2D) random index
    first_direction."""
    randoms = selection(config.exclude, config.include)
    if config.finetune is None:
        return [
            RandomDirection(config.seed, config.first_direction + i, randoms)
            for i in range(config.grid.dims)
        ]
    chosen = TensorSelection(config.exclude, config.include)
    make = FINETUNE_KINDS[config.finetune_kind]
    first = make(Path(config.finetune), base, config.engine.threads, chosen)
    if config.grid.dims == 1:
        return [first]
    return [first, RandomDirection(config.seed, config.first_direction, randoms)]


def _direction_cache(
    config: SweepConfig, model: GGUFModel, perturbation: Perturbation, available: int | None
) -> CacheBudget:
    """The direction cache kept beside the model copy, its KV cache and the work on one
    tensor: ``config.memory_budget_mb`` when set, else what fits in ``available``."""
    works, needed = [], 0
    per_value = 4 * (2 + len(perturbation.directions))
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


def _template_notes(model: GGUFModel, config: SweepConfig) -> list[str]:
    """Reasoning and a missing chat template, as they change what the sweep asks."""
    notes = []
    syntax = reasoning.syntax_of(model.chat_template)
    if syntax is not None:
        notes.append(
            f"reasoning model ({syntax.name}): thinking {config.thinking}, up to "
            f"{config.max_thinking_tokens} reasoning tokens; the judge reads only the answer "
            "after the reasoning"
        )
    elif config.thinking == "on":
        notes.append(
            "note: the chat template has no reasoning syntax; --thinking on changes nothing"
        )
    if model.chat_template is None:
        notes.append(
            "note: the model has no chat template; prompts use visage-local's plain "
            "'User: ... / Assistant:' fallback (visage_local/asking/chat.py)"
        )
    return notes

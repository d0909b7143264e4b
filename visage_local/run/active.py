"""A sweep in progress: what its executors are given and the one place results go.

An executor evaluates the run's unfinished points and hands each ``PointResult`` to
``ActiveRun.record``, which appends it to the run folder, rewrites the summary and calls
``on_point``; it returns True when the user stopped the sweep. Two exist: this process
(``sweep.LocalExecutor``) and Ray workers (``cluster.RayExecutor``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from visage_local.analysis.landscape import (
    landscape_csv,
    landscape_figures,
    point_figures,
    point_rows,
)
from visage_local.engine import coherence
from visage_local.engine.llama import build_features
from visage_local.points.grid import Point
from visage_local.points.planning import origin_index
from visage_local.record import FORMAT_VERSION, RunSummary
from visage_local.record.writer import RunStore
from visage_local.run.estimate import Estimate, actual
from visage_local.run.evaluator import PointOutcome, PointResult
from visage_local.run.prepared import PreparedSweep
from visage_local.run.progress import Progress
from visage_local.run.settings import SweepConfig, versions

OnPoint = Callable[[PointOutcome, int, int], None]  # (outcome, points done, points in all)


class Executor(Protocol):
    """Evaluates a run's unfinished points, each through ``run.record``; True when stopped."""

    def __call__(self, run: ActiveRun) -> bool:
        """Run the points; True when the user stopped the sweep."""
        ...


@dataclass
class ActiveRun:
    """One sweep in progress: what the executors need and the one place results go."""

    prepared: PreparedSweep
    store: RunStore
    points: list[Point]
    progress: Progress
    started: float
    on_point: OnPoint | None = None
    estimate: Estimate | None = None  # of the points this process evaluates
    earlier_s: float = 0.0  # the seconds earlier sittings of a resumed run took

    @property
    def config(self) -> SweepConfig:
        """The prepared configuration."""
        return self.prepared.config

    @property
    def elapsed_s(self) -> float:
        """Seconds over every sitting: this one counts only when it evaluated a point (a
        finished run opened again keeps its time)."""
        now = time.monotonic() - self.started if self.progress.durations else 0.0
        return round(self.earlier_s + now, 3)

    def record(self, result: PointResult, seconds: float) -> None:
        """Append a finished point, rewrite the summary, report progress."""
        self.store.append_point(result.records, result.point_record)
        self.progress.durations.append(seconds)
        self.store.write_summary(*self.summary(complete=False))
        if self.on_point:
            self.on_point(result.outcome, len(self.store.finished), len(self.points))

    def finished_asr(self) -> dict[int, float]:
        """ASR of every finished point, by plan index."""
        return {i: point_figures(rs)["asr"] for i, rs in self.store.finished.items()}

    def summary(self, complete: bool) -> tuple[RunSummary, str]:
        """The summary of the points finished so far, and its CSV."""
        config, store, points, model = self.config, self.store, self.points, self.prepared.model
        finished = [i for i in range(len(points)) if i in store.finished]
        rows = point_rows(
            [points[i] for i in finished],
            [store.finished[i] for i in finished],
            [store.point_records[i] for i in finished],
            config.grid,
        )
        origin = store.finished.get(origin_index(points), [])
        summary = RunSummary(
            format_version=FORMAT_VERSION,
            model=str(config.model_path),
            model_name=model.name,
            model_sha256=model.sha256,
            architecture=model.architecture,
            chat_template="model" if model.chat_template else "fallback",
            dims=config.grid.dims,
            grid=config.grid.describe(),
            axes={"alpha": config.grid.alpha_axis(), "beta": config.grid.beta_axis()},
            seed=config.seed,
            range=config.grid.range,
            steps=config.grid.steps,
            directions=self.prepared.described,
            prompts=config.prompts.source,
            prompts_sha256=config.prompts.sha256,
            n_prompts=len(config.prompts.prompts),
            max_new_tokens=config.max_new_tokens,
            system_prompt=config.system_prompt.label(),
            attack=config.attack.label(),
            benign=config.benign_prompts.source if config.benign else None,
            capability=config.capability.describe() if config.capability else None,
            judge=config.judge,
            coherence_threshold=coherence.calibrate([r["coherence_ll"] for r in origin]),
            early_stop=config.early_stop,
            requant=config.requant,
            batch_size=config.engine.max_sequences,
            flash_attn=config.engine.flash_attn,
            **landscape_figures(
                rows, [store.finished[i] for i in finished], config.grid, config.seed
            ),
            points=rows,
            n_points_planned=len(points),
            n_points_evaluated=len(rows),
            **self.progress.describe(),
            complete=complete,
            elapsed_s=self.elapsed_s,
            config_hash=store.hash,
            versions=versions() | {"llama.cpp build": build_features()},
            deviations=self.prepared.record_deviations(),
            uniform_imatrix=list(self.prepared.uniform_imatrix) or None,
            estimate=None if self.estimate is None else self.estimate.record(),
            actual=actual(list(store.point_records.values()), len(rows)) if rows else None,
            model_spec=config.model_spec,
        )
        return summary, landscape_csv(rows)

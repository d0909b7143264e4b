"""The sweep loop: evaluate every point of a grid, record it, summarise the landscape.

GGUF -> Perturbation (directions, requantised tensors) -> scratch copy of the file
     -> Engine (llama.cpp, batched greedy) -> judge + coherence -> RunStore
     -> RunSummary + plot

``run_sweep(sweep, options)`` takes a ``PreparedSweep`` (or prepares a configuration),
opens its run folder and hands the points to an executor (``active.Executor``): this
process (``LocalExecutor``) or Ray workers (``cluster.RayExecutor``). Both report each
finished point to the same ``ActiveRun.record``, which appends it, rewrites the summary
and calls ``on_point``.

The origin is evaluated first: its answers calibrate the coherence threshold
(see ``coherence``) that every other point's answers are held to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from visage_local.analysis.landscape import draw, draw_capability
from visage_local.errors import ConfigError
from visage_local.points.grid import Point
from visage_local.points.planning import FullGrid, PointOrder, Shard, origin_index, plan
from visage_local.reading.rejudge import rejudge
from visage_local.record import RunSummary
from visage_local.record.writer import RunStore
from visage_local.run.active import ActiveRun, Executor, OnPoint
from visage_local.run.cluster import RayExecutor, RayOptions
from visage_local.run.estimate import Estimate
from visage_local.run.evaluator import evaluator
from visage_local.run.prepared import PreparedSweep, prepare
from visage_local.run.progress import Progress, StopRequest, SweepInterrupted
from visage_local.run.settings import SweepConfig


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs, as opposed to what it measures (``SweepConfig``)."""

    out_dir: Path
    overwrite: bool = False
    on_point: OnPoint | None = None  # called with (outcome, done, total) after each point
    order: PointOrder | None = None  # default: the full grid, origin first
    budget_minutes: float | None = None
    ray: RayOptions | None = None
    on_start: Callable[[], None] | None = None  # called once the run folder has been accepted
    # given, the points are estimated before the first one and this is called with it
    on_estimate: Callable[[Estimate], None] | None = None
    # a finished run whose origin is this run's (the same settings but the directions: two
    # interpolations from one base): its origin is taken instead of evaluated again
    origin_from: Path | None = None


def run_sweep(sweep: SweepConfig | PreparedSweep, options: SweepOptions) -> RunSummary:
    """Evaluate the sweep's points in ``options.order`` (default: all of them, the origin
    first), resuming a matching run in ``options.out_dir``; return the summary.

    With ``budget_minutes``, the sweep stops before a point that would not finish in
    time, judged by the mean time of the points evaluated so far, and the summary
    lists the points it skipped (the full grid is then visited coarse to fine).
    With ``ray``, the points are spread over Ray workers (full grids only).
    """
    if options.ray is not None and (options.order is not None or options.budget_minutes):
        raise ConfigError(
            "--ray runs full grids: --adaptive, --shard and --budget-minutes are not supported"
        )
    started = time.monotonic()
    order = options.order or FullGrid(coarse_first=options.budget_minutes is not None)
    executor: Executor
    if options.ray is not None:
        executor = RayExecutor(options.ray)
        sweep = executor.prepared(sweep)
    else:
        executor = LocalExecutor(order, options.budget_minutes, options.on_estimate)
        sweep = sweep if isinstance(sweep, PreparedSweep) else prepare(sweep)
    run = ActiveRun(
        sweep,
        RunStore(options.out_dir, sweep.result_config, options.overwrite),
        plan(sweep.config.grid),
        Progress(order.name, options.budget_minutes),
        started,
        options.on_point,
    )
    if run.store.finished and run.store.run.summary.is_file():  # resumed: its earlier time
        run.earlier_s = run.store.run.read_summary().elapsed_s
    if options.on_start:
        options.on_start()
    if options.origin_from is not None:
        index = origin_index(run.points)
        if run.store.adopt_point(options.origin_from, index, differs_in="directions"):
            run.store.write_summary(*run.summary(complete=False))
    stopped = executor(run)
    complete = not stopped and order.next_point(run.points, run.finished_asr()) is None
    summary = write_results(run, complete)
    if stopped:
        raise SweepInterrupted(run.store.folder, len(run.store.finished), len(run.points))
    return summary


@dataclass(frozen=True)
class LocalExecutor:
    """Evaluates points in this process until the order is done, the budget is spent or the
    user stops; the points left are estimated first when someone listens (``on_estimate``)."""

    order: PointOrder
    budget_minutes: float | None = None
    on_estimate: Callable[[Estimate], None] | None = None

    def __call__(self, run: ActiveRun) -> bool:
        """Run the points; True when the user stopped."""
        order, store, points = self.order, run.store, run.points
        deadline = None if self.budget_minutes is None else run.started + 60 * self.budget_minutes
        with evaluator(run.prepared, store.folder) as live:
            origin = origin_index(points)
            if origin in store.finished:
                live.calibrate(store.finished[origin])
            left = _remaining(order, points, store)
            if left and self.on_estimate is not None:
                run.estimate = live.estimate(left)
                self.on_estimate(run.estimate)
            with StopRequest() as stop:
                while (i := order.next_point(points, run.finished_asr())) is not None:
                    if deadline is not None and run.progress.would_overrun(deadline):
                        run.progress.skipped = _remaining(order, points, store)
                        return False
                    t0 = time.monotonic()
                    asr = run.finished_asr()
                    following = _following(order, points, asr, i) if live.overlaps else None
                    run.record(live.evaluate(i, points[i], following), time.monotonic() - t0)
                    if stop.requested:
                        return True
        return False


def _following(
    order: PointOrder, points: list[Point], asr: dict[int, float], index: int
) -> Point | None:
    """The point the order takes after ``index`` when that does not depend on its result
    (whether ``index`` turns out fully safe or fully broken)."""
    after = {order.next_point(points, asr | {index: value}) for value in (0.0, 100.0)}
    if len(after) != 1:
        return None
    (following,) = after
    return None if following is None else points[following]


def write_results(run: ActiveRun, complete: bool) -> RunSummary:
    """Write the final summary, CSV and plots of a sweep; return the summary."""
    summary, csv_text = run.summary(complete)
    run.store.write_summary(summary, csv_text)
    draw(summary, run.store.run.plot)
    if run.config.capability is not None:
        draw_capability(summary, run.store.run.capability_plot)
    for judge in run.config.also_judge:  # every answer is whole to each of them
        rejudge(run.store.folder, judge, run.config.engine.threads)
    return summary


def _remaining(order: PointOrder, points: list[Point], store: RunStore) -> list[Point]:
    """The points the order has left to evaluate (an adaptive order: all it might)."""
    if isinstance(order, FullGrid):
        visit = order.order(points)
    elif isinstance(order, Shard):
        visit = order.share(points)
    else:
        visit = list(range(len(points)))
    return [points[i] for i in visit if i not in store.finished]


def default_out_dir(model_label: str, dims: int, seed: int) -> Path:
    """runs/<model label>-<dims>d-seed<seed> (``registry.model_label``)."""
    return Path("runs") / f"{model_label}-{dims}d-seed{seed}"

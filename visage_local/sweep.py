"""The sweep loop: evaluate every point of a grid, record it, summarise the landscape.

GGUF -> Perturbation (directions, requantised tensors) -> scratch copy of the file
     -> Engine (llama.cpp, batched greedy) -> judge + coherence -> RunStore
     -> RunSummary + plot

``run_sweep(config, options)`` sets up the run (model, run folder, plan, directions,
resolved once) and hands the points to an executor: this process (``_run_locally``),
or Ray workers (``cluster.run_on_ray``). Both report each finished point to the same
``_Run.record``, which appends it, rewrites the summary and calls ``on_point``.

The origin is evaluated first: its answers calibrate the coherence threshold
(see ``coherence``) that every other point's answers are held to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from visage_local import coherence
from visage_local.engine import build_features
from visage_local.errors import ConfigError
from visage_local.estimate import Estimate, actual
from visage_local.evaluator import PointOutcome, PointResult, evaluator
from visage_local.gguf_model import GGUFModel
from visage_local.grid import Point
from visage_local.interpolation import check_pair
from visage_local.landscape import (
    draw,
    draw_capability,
    landscape_csv,
    landscape_figures,
    point_figures,
    point_rows,
)
from visage_local.perturb import Perturbation
from visage_local.planning import FullGrid, PointOrder, Shard, origin_index, plan
from visage_local.progress import Progress, StopRequest, SweepInterrupted
from visage_local.record import FORMAT_VERSION, RunSummary
from visage_local.rejudge import rejudge
from visage_local.settings import SweepConfig, result_config, versions
from visage_local.store import RunStore

OnPoint = Callable[[PointOutcome, int, int], None]


@dataclass(frozen=True)
class RayOptions:
    """Spread the points over Ray workers: ``address`` None or "local" starts a local cluster."""

    workers: int = 2
    address: str | None = None


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


@dataclass
class _Run:
    """One sweep in progress: what the executors need and the one place results go."""

    config: SweepConfig
    model: GGUFModel
    store: RunStore
    points: list[Point]
    directions: list[dict]
    progress: Progress
    started: float
    on_point: OnPoint | None
    uniform_imatrix: list[str]  # output types requantised with a uniform importance matrix
    estimate: Estimate | None = None  # of the points this process evaluates
    earlier_s: float = 0.0  # the seconds earlier sittings of a resumed run took

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
        config, store, points = self.config, self.store, self.points
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
            model_name=self.model.name,
            model_sha256=self.model.sha256,
            architecture=self.model.architecture,
            chat_template="model" if self.model.chat_template else "fallback",
            dims=config.grid.dims,
            grid=config.grid.describe(),
            axes={"alpha": config.grid.alpha_axis(), "beta": config.grid.beta_axis()},
            seed=config.seed,
            range=config.grid.range,
            steps=config.grid.steps,
            directions=self.directions,
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
            deviations=[asdict(d) for d in config.deviations()],
            uniform_imatrix=self.uniform_imatrix or None,
            estimate=None if self.estimate is None else self.estimate.record(),
            actual=actual(list(store.point_records.values()), len(rows)) if rows else None,
            model_spec=config.model_spec,
        )
        return summary, landscape_csv(rows)


def run_sweep(config: SweepConfig, options: SweepOptions) -> RunSummary:
    """Evaluate the grid's points in ``options.order`` (default: all of them, the origin first),
    resuming a matching run in ``options.out_dir``; return the summary.

    With ``budget_minutes``, the sweep stops before a point that would not finish in
    time, judged by the mean time of the points evaluated so far, and the summary
    lists the points it skipped (the full grid is then visited coarse to fine).
    With ``ray``, the points are spread over Ray workers (full grids only).
    """
    if options.ray is not None and (options.order is not None or options.budget_minutes):
        raise ConfigError(
            "--ray runs full grids: --adaptive, --shard and --budget-minutes are not supported"
        )
    if options.ray is not None:
        from visage_local.cluster import absolute_paths, connect  # Ray is an optional extra

        connect(options.ray.address, options.ray.workers)
        config = absolute_paths(config)
    started = time.monotonic()
    order = options.order or FullGrid(coarse_first=options.budget_minutes is not None)
    model = GGUFModel(config.model_path)
    config = config.for_model(model)
    if config.finetune is not None and config.finetune_kind == "model":
        check_pair(model, GGUFModel(config.finetune))
    directions = config.directions(model)
    described = [d.describe() for d in directions]
    run = _Run(
        config,
        model,
        RunStore(options.out_dir, result_config(config, model, described), options.overwrite),
        plan(config.grid),
        described,
        Progress(order.name, options.budget_minutes),
        started,
        options.on_point,
        Perturbation(model, directions, requant=config.requant).uniform_imatrix_types(),
    )
    if run.store.finished and run.store.run.summary.is_file():  # resumed: its earlier time
        run.earlier_s = run.store.run.read_summary().elapsed_s
    if options.on_start:
        options.on_start()
    if options.origin_from is not None:
        index = origin_index(run.points)
        if run.store.adopt_point(options.origin_from, index, differs_in="directions"):
            run.store.write_summary(*run.summary(complete=False))
    if options.ray is not None:
        from visage_local.cluster import run_on_ray

        stopped = run_on_ray(run, options.ray)
    else:
        stopped = _run_locally(run, directions, order, options)
    complete = not stopped and order.next_point(run.points, run.finished_asr()) is None
    summary = write_results(run, complete)
    if stopped:
        raise SweepInterrupted(run.store.folder, len(run.store.finished), len(run.points))
    return summary


def _run_locally(run: _Run, directions, order: PointOrder, options: SweepOptions) -> bool:
    """Evaluate points in this process until the order is done, the budget is spent or the
    user stops; True when the user stopped. The points left are estimated first when
    someone listens (``options.on_estimate``)."""
    budget_minutes = options.budget_minutes
    deadline = None if budget_minutes is None else run.started + 60.0 * budget_minutes
    store, points = run.store, run.points
    with evaluator(run.config, run.model, store.folder, directions) as live:
        origin = origin_index(points)
        if origin in store.finished:
            live.calibrate(store.finished[origin])
        left = _remaining(order, points, store)
        if left and options.on_estimate is not None:
            run.estimate = live.estimate(left)
            options.on_estimate(run.estimate)
        with StopRequest() as stop:
            while (i := order.next_point(points, run.finished_asr())) is not None:
                if deadline is not None and run.progress.would_overrun(deadline):
                    run.progress.skipped = _remaining(order, points, store)
                    return False
                t0 = time.monotonic()
                following = (
                    _following(order, points, run.finished_asr(), i) if live.overlaps else None
                )
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


def write_results(run: _Run, complete: bool) -> RunSummary:
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

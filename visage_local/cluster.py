"""Sweeps on a Ray cluster: grid points as tasks on long-lived actors.

Each actor (a ``PointWorker``) holds one llama.cpp model in its own scratch copy and
regenerates the directions from the seed, so only the configuration and each
point's coordinates travel to it, and only the point's records travel back. The
driver writes every result into the run folder as it arrives, with the same
durability and resume rules as a local sweep. A worker that dies loses only the
point it was evaluating, which goes back to the queue for another worker.

The origin is evaluated first, alone; its answers calibrate every worker's
coherence threshold before the other points fan out, exactly as in a local sweep.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from visage_local.errors import ConfigError, VisageError
from visage_local.gguf_model import GGUFModel, file_sha256
from visage_local.interpolation import check_pair
from visage_local.perturb import Point
from visage_local.planning import FullGrid, PointOrder, origin_index
from visage_local.store import RunStore
from visage_local.sweep import (
    SCRATCH_DIR,
    PointOutcome,
    PointResult,
    Progress,
    StopRequest,
    SweepConfig,
    SweepInterrupted,
    evaluator,
    plan,
    remove_orphaned_scratch,
    result_config,
    write_results,
)

WORKER_NAME = "visage-worker-{}"


def require_ray():
    """The ray module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError("--ray needs Ray: pip install 'visage-local[ray]'") from e
    return ray


class PointWorker:
    """Evaluates grid points of one sweep configuration (runs as a Ray actor)."""

    def __init__(self):
        self._stack = contextlib.ExitStack()
        self._live = None

    def check(self, files: dict[str, str]) -> str | None:
        """None when every file is here with the driver's sha256, else what is wrong."""
        host = socket.gethostname()
        for path, digest in files.items():
            if not Path(path).is_file():
                return f"worker on {host}: {path} does not exist there"
            if file_sha256(path) != digest:
                return (
                    f"worker on {host}: {path} differs from the driver's file "
                    f"(sha256 {file_sha256(path)[:12]}... vs {digest[:12]}...)"
                )
        return None

    def open(self, config: SweepConfig) -> int:
        """Load the model and everything a point needs; returns this worker's pid."""
        spill = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="visage-")))
        self._live = self._stack.enter_context(
            evaluator(config, GGUFModel(config.model_path), spill)
        )
        return os.getpid()

    def calibrate(self, origin_records: list[dict]) -> None:
        """Set the coherence threshold from the origin's stored answers."""
        self._live.calibrate(origin_records)

    def evaluate(self, index: int, point: Point) -> PointResult:
        """Evaluate one point."""
        return self._live.evaluate(index, point)

    def close(self) -> None:
        """Release the engine and delete the scratch copy."""
        self._stack.close()


def _absolute(config: SweepConfig) -> SweepConfig:
    finetune = None if config.finetune is None else Path(config.finetune).resolve()
    return dataclasses.replace(
        config, model_path=Path(config.model_path).resolve(), finetune=finetune
    )


def connect(address: str | None, workers: int) -> None:
    """Join the cluster at ``address``, or start a local one with ``workers`` CPUs."""
    ray = require_ray()
    if ray.is_initialized():
        return
    if address in (None, "local"):
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    else:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError) as e:
            raise ConfigError(f"cannot reach the Ray cluster at {address}: {e}") from e


def run_ray_sweep(
    config: SweepConfig,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    on_point: Callable[[PointOutcome, int, int], None] | None = None,
    order: PointOrder | None = None,
    budget_minutes: float | None = None,
    *,
    workers: int = 2,
    address: str | None = None,
) -> dict:
    """``run_sweep`` with the points spread over ``workers`` Ray actors; same results,
    same run folder. Full grids only (the adaptive order and time budgets are serial)."""
    if order is not None or budget_minutes is not None:
        raise ConfigError(
            "--ray runs full grids: --adaptive and --budget-minutes are not supported"
        )
    ray = require_ray()
    connect(address, workers)
    started = time.monotonic()
    config = _absolute(config)
    model = GGUFModel(config.model_path)
    store = RunStore(out_dir, result_config(config, model), overwrite)
    points = plan(config.grid)
    files = {str(config.model_path): model.sha256}
    if config.finetune is not None:
        if config.finetune_kind == "model":
            check_pair(model, GGUFModel(config.finetune))
        files[str(config.finetune)] = file_sha256(config.finetune)
    progress = Progress("grid", None)
    actor_class = ray.remote(num_cpus=1, num_gpus=1 if config.engine.n_gpu_layers else 0)(
        PointWorker
    )
    actors = [
        actor_class.options(name=WORKER_NAME.format(k), max_restarts=0).remote()
        for k in range(workers)
    ]
    stopped_early = False
    try:
        try:
            problems = [p for p in ray.get([a.check.remote(files) for a in actors]) if p]
            if not problems:
                ray.get([a.open.remote(config) for a in actors])
        except ray.exceptions.RayError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, VisageError):
                raise cause from None
            raise VisageError(f"a Ray worker could not start: {e}") from e
        if problems:
            raise ConfigError(problems[0])
        origin = origin_index(points)
        pending = [i for i in FullGrid().order(points) if i not in store.finished]
        with StopRequest() as stop:
            for batch in ([i for i in pending if i == origin], [i for i in pending if i != origin]):
                if origin in store.finished:
                    ray.get([a.calibrate.remote(store.finished[origin]) for a in actors])
                stopped_early = _run_points(
                    ray, actors, batch, points, store, progress, on_point, stop
                )
                if stopped_early:
                    break
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.get(actor.close.remote(), timeout=60)
            with contextlib.suppress(Exception):
                ray.kill(actor)
    remove_orphaned_scratch(SCRATCH_DIR)  # a killed worker's copy, when it ran on this machine
    complete = not stopped_early and len(store.finished) == len(points)
    summary = write_results(config, model, store, points, started, complete, progress)
    if stopped_early:
        raise SweepInterrupted(store.folder, len(store.finished), len(points))
    return summary


def _run_points(ray, actors, indices, points, store, progress, on_point, stop) -> bool:
    """Evaluate ``indices`` on the live actors, retrying a dead actor's point elsewhere.
    Returns True when a stop was requested (the points in flight are finished first)."""
    queue = deque(indices)
    idle = list(actors)
    in_flight: dict = {}
    while queue or in_flight:
        while idle and queue and not stop.requested:
            actor, index = idle.pop(), queue.popleft()
            ref = actor.evaluate.remote(index, points[index])
            in_flight[ref] = (actor, index, time.monotonic())
        if not in_flight:
            break
        (ref,), _ = ray.wait(list(in_flight), num_returns=1)
        actor, index, submitted = in_flight.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError:
            actors.remove(actor)
            queue.appendleft(index)
            if not actors:
                raise VisageError(
                    "every Ray worker died; finished points are saved, run again to resume"
                ) from None
            continue
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, VisageError):
                raise e.cause from None  # a user's error on the worker: say it plainly
            raise
        store.append_point(result.records, result.point_record)
        progress.durations.append(time.monotonic() - submitted)
        idle.append(actor)
        if on_point:
            on_point(result.outcome, len(store.finished), len(points))
    return stop.requested

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
from dataclasses import dataclass
from pathlib import Path

from visage_local.errors import ConfigError, VisageError
from visage_local.gguf.model import file_sha256
from visage_local.points.grid import Point
from visage_local.points.planning import FullGrid, origin_index
from visage_local.run.active import ActiveRun
from visage_local.run.evaluator import PointResult, evaluator, remove_orphaned_scratch
from visage_local.run.prepared import SCRATCH_DIR, PreparedSweep, prepare
from visage_local.run.progress import StopRequest
from visage_local.run.settings import SweepConfig

WORKER_NAME = "visage-worker-{}"


@dataclass(frozen=True)
class RayOptions:
    """Spread the points over Ray workers: ``address`` None or "local" starts a local cluster."""

    workers: int = 2
    address: str | None = None


@dataclass(frozen=True)
class RayExecutor:
    """Evaluates a run's points on Ray workers (``active.Executor``)."""

    options: RayOptions

    def prepared(self, sweep: SweepConfig | PreparedSweep) -> PreparedSweep:
        """Join the cluster and prepare the sweep for it: absolute paths (the workers run in
        other folders) and the direction cache shared among the workers of this machine."""
        connect(self.options.address, self.options.workers)
        config = sweep.config if isinstance(sweep, PreparedSweep) else sweep
        return prepare(absolute_paths(config), self.options.workers)

    def __call__(self, run: ActiveRun) -> bool:
        """Run the points; True when the user stopped."""
        return run_on_ray(run, self.options)


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
        self._live = self._stack.enter_context(evaluator(prepare(config), spill))
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


def absolute_paths(config: SweepConfig) -> SweepConfig:
    """``config`` with absolute model paths, as workers in other folders need them."""
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


def run_on_ray(run: ActiveRun, options: RayOptions) -> bool:
    """Evaluate the run's unfinished points on ``options.workers`` Ray actors, the origin first
    and alone; each result goes to ``run.record``. True when the user stopped the sweep."""
    ray = require_ray()
    config, store, points = run.config, run.store, run.points
    files = {str(config.model_path): run.prepared.model.sha256}
    if config.finetune is not None:
        files[str(config.finetune)] = file_sha256(config.finetune)
    actor_class = ray.remote(num_cpus=1, num_gpus=1 if config.engine.n_gpu_layers else 0)(
        PointWorker
    )
    actors = [
        actor_class.options(name=WORKER_NAME.format(k), max_restarts=0).remote()
        for k in range(options.workers)
    ]
    stopped = False
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
                stopped = _run_points(ray, actors, batch, run, stop)
                if stopped:
                    break
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.get(actor.close.remote(), timeout=60)
            with contextlib.suppress(Exception):
                ray.kill(actor)
    remove_orphaned_scratch(SCRATCH_DIR)  # a killed worker's copy, when it ran on this machine
    return stopped


def _run_points(ray, actors, indices: list[int], run: ActiveRun, stop: StopRequest) -> bool:
    """Evaluate ``indices`` on the live actors, retrying a dead actor's point elsewhere.
    Returns True when a stop was requested (the points in flight are finished first)."""
    queue = deque(indices)
    idle = list(actors)
    in_flight: dict = {}
    while queue or in_flight:
        while idle and queue and not stop.requested:
            actor, index = idle.pop(), queue.popleft()
            ref = actor.evaluate.remote(index, run.points[index])
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
        run.record(result, time.monotonic() - submitted)
        idle.append(actor)
    return stop.requested

"""The sweep loop: perturb, generate, judge, record, for every point of a grid.

GGUF -> Perturbation (directions, requantised tensors) -> scratch copy of the file
     -> Engine (llama.cpp, batched greedy) -> judge -> RunStore -> summary + plot
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from visage_local import metrics, plots
from visage_local.chat import FALLBACK_TEMPLATE, SystemPrompt, render_chat
from visage_local.directions import RandomDirection
from visage_local.engine import Engine, EngineSettings, Generation
from visage_local.errors import ConfigError, VisageError
from visage_local.gguf_model import GGUFCopy, GGUFModel
from visage_local.grid import Grid
from visage_local.judges import KeywordJudge, get_judge
from visage_local.perturb import Perturbation, Point, PointDisplacement
from visage_local.prompts import PromptSet
from visage_local.store import RunStore

SCRATCH_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep needs to know."""

    model_path: Path
    prompts: PromptSet
    grid: Grid = field(default_factory=Grid)
    seed: int = 123
    max_new_tokens: int = 64
    system_prompt: SystemPrompt = field(default_factory=lambda: SystemPrompt("default"))
    judge: str = "keyword-paper"
    early_stop: bool = True
    requant: str = "same"
    engine: EngineSettings = field(default_factory=EngineSettings)
    memory_budget_mb: int = 4096

    def __post_init__(self):
        if self.seed < 0:
            raise ConfigError("--seed must be a non-negative integer")
        if not 1 <= self.max_new_tokens <= 4096:
            raise ConfigError("--max-new-tokens must be between 1 and 4096")


@dataclass
class PointOutcome:
    """What one evaluated point gave, for progress reports."""

    index: int
    point: Point
    asr: float
    refused: list[bool]
    displacement: PointDisplacement
    weight_update_s: float
    generation_s: float
    tokens: int


def versions() -> dict[str, str]:
    """Versions of the packages that determine results."""
    out = {}
    for dist in ("visage-local", "llama-cpp-python", "gguf", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def plan(grid: Grid) -> list[Point]:
    """The points a sweep evaluates: the grid, plus the origin when the grid misses it."""
    points = grid.points()
    if not grid.contains_origin():
        points.append(Point(0.0, None if grid.dims == 1 else 0.0))
    return points


def result_config(config: SweepConfig, model: GGUFModel) -> dict:
    """The settings that determine a sweep's results (hashed to guard resumes)."""
    return {
        "model_sha256": model.sha256,
        **config.grid.describe(),
        "seed": config.seed,
        "directions": "random, layer-normalised, exclude: norm",
        "prompts_sha256": config.prompts.sha256,
        "n_prompts": len(config.prompts.prompts),
        "judge": config.judge,
        "system_prompt": config.system_prompt.label(),
        "max_new_tokens": config.max_new_tokens,
        "early_stop": config.early_stop,
        "requant": config.requant,
        "batch_size": config.engine.max_sequences,
        "versions": versions(),
    }


class _StopRequest:
    """First Ctrl-C: finish the current point, then stop; second Ctrl-C: stop at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def scratch_folder(size: int, fallback: Path) -> Path:
    """RAM-backed /dev/shm when it has room for the scratch model, else ``fallback``."""
    usable = SCRATCH_DIR.is_dir() and os.access(SCRATCH_DIR, os.W_OK)
    if usable and shutil.disk_usage(SCRATCH_DIR).free > 2 * size:
        return SCRATCH_DIR
    return fallback


def render_prompts(engine: Engine, model: GGUFModel, config: SweepConfig) -> list[list[int]]:
    """Every prompt through the model's chat template (or the fallback), tokenized."""
    template = model.chat_template or FALLBACK_TEMPLATE
    return [
        engine.tokenize(
            render_chat(
                template, config.system_prompt.messages(p), engine.bos_text, engine.eos_text
            )
        )
        for p in config.prompts.prompts
    ]


def run_sweep(
    config: SweepConfig,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    on_point: Callable[[PointOutcome, int, int], None] | None = None,
) -> dict:
    """Evaluate every point of the grid (resuming a matching run in ``out_dir``); return the summary.

    ``on_point(outcome, done, total)`` is called after each evaluated point.
    """
    started = time.monotonic()
    model = GGUFModel(config.model_path)
    judge = get_judge(config.judge)
    store = RunStore(out_dir, result_config(config, model), overwrite)
    points = plan(config.grid)
    directions = [RandomDirection(config.seed, i) for i in range(config.grid.dims)]
    perturbation = Perturbation(
        model,
        directions,
        threads=config.engine.threads,
        cache_bytes=config.memory_budget_mb << 20,
        requant=config.requant,
    )
    folder = scratch_folder(model.path.stat().st_size + perturbation.extra_bytes(), store.folder)
    fd, scratch_name = tempfile.mkstemp(prefix="visage-scratch-", suffix=".gguf", dir=folder)
    os.close(fd)
    scratch = None
    engine = None
    stopped_early = False
    try:
        scratch = GGUFCopy(model, scratch_name, perturbation.retype, perturbation.origin_bytes)
        engine = Engine(scratch.path, config.engine)
        live = _LivePoint(
            config,
            perturbation,
            scratch,
            engine,
            render_prompts(engine, model, config),
            judge,
            store,
        )
        todo = [i for i in range(len(points)) if i not in store.finished]
        with _StopRequest() as stop:
            for i in todo:
                outcome = live.evaluate(i, points[i])
                store.write_summary(*_summary(config, model, store, points, started, False))
                if on_point:
                    on_point(outcome, len(store.finished), len(points))
                if stop.requested:
                    stopped_early = True
                    break
    finally:
        if engine is not None:
            engine.close()
        if scratch is not None:
            scratch.close()
        Path(scratch_name).unlink(missing_ok=True)
    complete = not stopped_early and len(store.finished) == len(points)
    summary, csv_text = _summary(config, model, store, points, started, complete)
    store.write_summary(summary, csv_text)
    draw(summary, store.plot_path)
    if stopped_early:
        raise SweepInterrupted(store.folder, len(store.finished), len(points))
    return summary


class SweepInterrupted(VisageError):
    """The user asked the sweep to stop; finished points are saved."""

    exit_code = 130

    def __init__(self, folder: Path, done: int, total: int):
        super().__init__(
            f"stopped after {done} of {total} points; run the same command again to resume "
            f"(results so far are in {folder})"
        )


@dataclass
class _LivePoint:
    """What evaluating points needs while a sweep runs: the perturbation, the scratch file
    llama.cpp maps, the engine, the tokenized prompts, the judge and the run folder."""

    config: SweepConfig
    perturbation: Perturbation
    scratch: GGUFCopy
    engine: Engine
    tokens: list[list[int]]
    judge: KeywordJudge
    store: RunStore

    def evaluate(self, index: int, point: Point) -> PointOutcome:
        """Move the weights to ``point``, generate, judge, and append the point to the store."""
        t0 = time.monotonic()
        displacement = self._move_weights(point)
        t1 = time.monotonic()
        settled = self.judge.settled if self.config.early_stop else None
        generations = self.engine.generate(self.tokens, self.config.max_new_tokens, settled)
        t2 = time.monotonic()
        records = [
            self._record(index, point, prompt_index, gen)
            for prompt_index, gen in enumerate(generations)
        ]
        self.store.append_point(
            records,
            {
                "point": index,
                "alpha": point.alpha,
                "beta": point.beta,
                "displacement": displacement.summary(),
                "displacement_faithful": displacement.total.faithful(),
                "weight_update_s": round(t1 - t0, 3),
                "generation_s": round(t2 - t1, 3),
            },
        )
        refused = [r["refused"] for r in records]
        return PointOutcome(
            index=index,
            point=point,
            asr=metrics.attack_success_rate(refused),
            refused=refused,
            displacement=displacement,
            weight_update_s=t1 - t0,
            generation_s=t2 - t1,
            tokens=sum(r["tokens"] for r in records),
        )

    def _move_weights(self, point: Point) -> PointDisplacement:
        displacement = PointDisplacement()
        for tensor in self.perturbation.tensors_at(point):
            self.scratch.write_tensor(tensor.info.name, tensor.raw)
            displacement.add(tensor)
        self.engine.refresh_weights()
        return displacement

    def _record(self, index: int, point: Point, prompt_index: int, gen: Generation) -> dict:
        verdict = self.judge.judge(gen.text)
        return {
            "point": index,
            "alpha": point.alpha,
            "beta": point.beta,
            "prompt_index": prompt_index,
            "n_prompts": len(self.tokens),
            "prompt": self.config.prompts.prompts[prompt_index],
            "response": gen.text,
            "refused": verdict.refused,
            "matched": verdict.matched,
            "tokens": len(gen.tokens),
            "stop_reason": gen.stop_reason,
        }


def point_rows(store: RunStore, points: list[Point], grid: Grid) -> list[dict]:
    """One summary row per finished point, in plan order."""
    axis = set(grid.axis())
    rows = []
    for i, point in enumerate(points):
        records = store.finished.get(i)
        if records is None:
            continue
        refused = [r["refused"] for r in records]
        rows.append(
            {
                "alpha": point.alpha,
                "beta": point.beta,
                "asr": metrics.attack_success_rate(refused),
                "n_refused": sum(refused),
                "n_prompts": len(refused),
                "on_grid": point.alpha in axis and (point.beta is None or point.beta in axis),
                "tokens": sum(r["tokens"] for r in records),
                "displacement": store.point_records[i]["displacement"],
                "displacement_faithful": store.point_records[i]["displacement_faithful"],
            }
        )
    return rows


def landscape_visage(rows: list[dict], grid: Grid) -> float | None:
    """VISAGE over the grid points, or None until every grid point is evaluated."""
    on_grid = [r for r in rows if r["on_grid"]]
    if len(on_grid) < len(grid.points()):
        return None
    if grid.dims == 1:
        ordered = sorted(on_grid, key=lambda r: r["alpha"])
        return metrics.visage_1d([r["asr"] for r in ordered])
    return metrics.visage_2d([r["asr"] for r in on_grid])


def _summary(config, model, store, points, started, complete) -> tuple[dict, str]:
    rows = point_rows(store, points, config.grid)
    origin = next((r for r in rows if r["alpha"] == 0 and not r["beta"]), None)
    summary = {
        "model": str(config.model_path),
        "model_name": model.name,
        "model_sha256": model.sha256,
        "architecture": model.architecture,
        "chat_template": "model" if model.chat_template else "fallback",
        "dims": config.grid.dims,
        "seed": config.seed,
        "range": config.grid.range,
        "steps": config.grid.steps,
        "directions": [
            d.describe() for d in (RandomDirection(config.seed, i) for i in range(config.grid.dims))
        ],
        "prompts": config.prompts.source,
        "prompts_sha256": config.prompts.sha256,
        "n_prompts": len(config.prompts.prompts),
        "max_new_tokens": config.max_new_tokens,
        "system_prompt": config.system_prompt.label(),
        "judge": config.judge,
        "early_stop": config.early_stop,
        "requant": config.requant,
        "batch_size": config.engine.max_sequences,
        "visage": landscape_visage(rows, config.grid),
        "origin_asr": origin["asr"] if origin else None,
        "points": rows,
        "n_points_planned": len(points),
        "complete": complete,
        "elapsed_s": round(time.monotonic() - started, 3),
        "config_hash": store.hash,
        "versions": versions(),
    }
    return summary, _csv(rows)


def _csv(rows: list[dict]) -> str:
    lines = ["alpha,beta,asr,n_refused,n_prompts,on_grid"]
    for r in rows:
        beta = "" if r["beta"] is None else repr(r["beta"])
        lines.append(
            f"{r['alpha']!r},{beta},{r['asr']:.4f},{r['n_refused']},{r['n_prompts']},{r['on_grid']}"
        )
    return "\n".join(lines) + "\n"


def draw(summary: dict, path: Path) -> None:
    """Draw the landscape plot of a summary (nothing when no point is finished)."""
    rows = [r for r in summary["points"] if r["on_grid"]]
    if not rows:
        return
    visage = "n/a" if summary["visage"] is None else f"{summary['visage']:.1f}"
    origin = "n/a" if summary["origin_asr"] is None else f"{summary['origin_asr']:.1f}%"
    title = (
        f"{summary['model_name']}\nVISAGE {visage}  |  origin ASR {origin}  |  "
        f"{summary['n_prompts']} prompts, seed {summary['seed']}"
    )
    if summary["dims"] == 1:
        plots.plot_1d([r["alpha"] for r in rows], [r["asr"] for r in rows], title, path)
        return
    axis = Grid(2, summary["steps"], summary["range"]).axis()
    grid = np.full((len(axis), len(axis)), np.nan)
    for r in rows:
        grid[axis.index(r["beta"]), axis.index(r["alpha"])] = r["asr"]
    plots.plot_2d(axis, grid, title, path)

"""The sweep loop: perturb, generate, judge, record, for every point of a grid.

GGUF -> Perturbation (directions, requantised tensors) -> scratch copy of the file
     -> Engine (llama.cpp, batched greedy) -> judge + coherence -> RunStore
     -> summary + plot

The origin is evaluated first: its answers calibrate the coherence threshold
(see ``coherence``) that every other point's answers are held to.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from visage_local import coherence, metrics, plots, stats
from visage_local.attacks import Attack
from visage_local.capability import CapabilityProbe, CapabilitySettings
from visage_local.chat import DEFAULT_SYSTEM, SystemPrompt, prompt_tokens
from visage_local.coherence import CoherenceScorer
from visage_local.directions import RandomDirection
from visage_local.engine import Engine, EngineSettings, Generation, GenerationStats
from visage_local.errors import ConfigError, VisageError
from visage_local.gguf_model import GGUFCopy, GGUFModel
from visage_local.grid import Grid, InterpolationGrid
from visage_local.interpolation import FinetuneDirection, LoraDirection, check_pair
from visage_local.judges import Judge, get_judge
from visage_local.perturb import Direction, Perturbation, Point, PointDisplacement
from visage_local.planning import FullGrid, PointOrder, origin_index, rays
from visage_local.prompts import PromptSet, builtin_benign
from visage_local.store import RunStore

SCRATCH_DIR = Path("/dev/shm")
SCRATCH_PREFIX = "visage-scratch-"
CAPABILITY_KEYS = ("kl", "mcq_accuracy", "perplexity")
DIRECTIONS_TEXT = "random, layer-normalised, exclude: norm"


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep needs to know."""

    model_path: Path
    prompts: PromptSet
    grid: Grid | InterpolationGrid = field(default_factory=Grid)
    seed: int = 123
    max_new_tokens: int = 64
    system_prompt: SystemPrompt = DEFAULT_SYSTEM
    judge: str = "keyword-paper"
    attack: Attack = field(default_factory=lambda: Attack("none"))
    benign: bool = False
    coherence: bool = True
    early_stop: bool = True
    requant: str = "same"
    engine: EngineSettings = field(default_factory=EngineSettings)
    memory_budget_mb: int = 4096
    first_direction: int = 0
    finetune: Path | None = None  # interpolation: a finetuned model or a LoRA adapter
    finetune_kind: str = "model"  # "model" or "lora"
    capability: CapabilitySettings | None = None

    def __post_init__(self):
        if self.seed < 0:
            raise ConfigError("--seed must be a non-negative integer")
        if not 1 <= self.max_new_tokens <= 4096:
            raise ConfigError("--max-new-tokens must be between 1 and 4096")

    def directions(self, base: GGUFModel) -> list[Direction]:
        """The directions of the grid's axes. Random: indices first_direction, +1, ... of the
        seed. Interpolation: the finetune's direction, then (2D) random index first_direction."""
        if self.finetune is None:
            return [
                RandomDirection(self.seed, self.first_direction + i) for i in range(self.grid.dims)
            ]
        if self.finetune_kind == "lora":
            first: Direction = LoraDirection(self.finetune, base)
        else:
            first = FinetuneDirection(self.finetune, self.engine.threads)
        randoms = [RandomDirection(self.seed, self.first_direction)] if self.grid.dims == 2 else []
        return [first, *randoms]

    @property
    def benign_prompts(self) -> PromptSet | None:
        """The over-refusal set evaluated beside the harmful prompts, if asked for."""
        return builtin_benign() if self.benign else None


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
    generation: GenerationStats | None = None


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
    return (
        {
            "model_sha256": model.sha256,
            **config.grid.describe(),
            "seed": config.seed,
            "directions": _directions_setting(config, model),
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
    )


class StopRequest:
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


def remove_orphaned_scratch(folder: Path) -> list[Path]:
    """Delete scratch copies left in ``folder`` by processes that no longer exist (a sweep or a
    Ray worker killed with SIGKILL cannot clean up); return what was deleted."""
    removed = []
    for path in folder.glob(f"{SCRATCH_PREFIX}*-*.gguf"):
        pid = path.name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            removed.append(path)
        except PermissionError:
            pass  # alive, another user's
    return removed


def _directions_setting(config: SweepConfig, model: GGUFModel) -> str | list[dict]:
    if config.finetune is not None:
        return [d.describe() for d in config.directions(model)]
    return DIRECTIONS_TEXT + (
        f", from index {config.first_direction}" if config.first_direction else ""
    )


def _coherence_method() -> str:
    return (
        f"origin mean log-prob of the first {coherence.SCORED_TOKENS} answer tokens; threshold "
        f"p{coherence.ORIGIN_PERCENTILE:g} of the origin's answers - {coherence.MARGIN_NATS} nats"
    )


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a point: which set it belongs to and its text as the model sees it."""

    set: str  # "harmful" or "benign"
    prompt: str  # as written in the prompt set
    presented: str  # after the attack template (harmful prompts only)


def prompt_items(config: SweepConfig) -> list[PromptItem]:
    """The harmful prompts (wrapped in the attack), then the benign ones if asked for."""
    items = [PromptItem("harmful", p, config.attack.wrap(p)) for p in config.prompts.prompts]
    if config.benign:
        items += [PromptItem("benign", p, p) for p in config.benign_prompts.prompts]
    return items


def render_prompts(
    engine: Engine, model: GGUFModel, config: SweepConfig, items: list[PromptItem]
) -> list[list[int]]:
    """Every prompt through the model's chat template (or the fallback), tokenized."""
    return [
        prompt_tokens(engine, model.chat_template, config.system_prompt, item.presented)
        for item in items
    ]


def run_sweep(
    config: SweepConfig,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    on_point: Callable[[PointOutcome, int, int], None] | None = None,
    order: PointOrder | None = None,
    budget_minutes: float | None = None,
) -> dict:
    """Evaluate the grid's points in ``order`` (default: all of them, the origin first),
    resuming a matching run in ``out_dir``; return the summary.

    With ``budget_minutes``, the sweep stops before a point that would not finish in
    time, judged by the mean time of the points evaluated so far, and the summary
    lists the points it skipped (the full grid is then visited coarse to fine).
    ``on_point(outcome, done, total)`` is called after each evaluated point.
    """
    started = time.monotonic()
    order = order or FullGrid(coarse_first=budget_minutes is not None)
    deadline = None if budget_minutes is None else started + 60.0 * budget_minutes
    progress = Progress(order.name, budget_minutes)
    model = GGUFModel(config.model_path)
    store = RunStore(out_dir, result_config(config, model), overwrite)
    points = plan(config.grid)
    if config.finetune is not None and config.finetune_kind == "model":
        check_pair(model, GGUFModel(config.finetune))
    stopped_early = False
    with evaluator(config, model, store.folder) as live:
        origin = origin_index(points)
        if origin in store.finished:
            live.calibrate(store.finished[origin])
        with StopRequest() as stop:
            while (i := order.next_point(points, finished_asr(store))) is not None:
                if deadline is not None and progress.would_overrun(deadline):
                    progress.skipped = _remaining(order, points, store)
                    break
                t0 = time.monotonic()
                result = live.evaluate(i, points[i])
                store.append_point(result.records, result.point_record)
                outcome = result.outcome
                progress.durations.append(time.monotonic() - t0)
                store.write_summary(
                    *_summary(config, model, store, points, started, False, progress)
                )
                if on_point:
                    on_point(outcome, len(store.finished), len(points))
                if stop.requested:
                    stopped_early = True
                    break
    complete = not stopped_early and order.next_point(points, finished_asr(store)) is None
    summary = write_results(config, model, store, points, started, complete, progress)
    if stopped_early:
        raise SweepInterrupted(store.folder, len(store.finished), len(points))
    return summary


def write_results(
    config: SweepConfig,
    model: GGUFModel,
    store: RunStore,
    points: list[Point],
    started: float,
    complete: bool,
    progress: Progress,
) -> dict:
    """Write the final summary, CSV and plots of a sweep; return the summary."""
    summary, csv_text = _summary(config, model, store, points, started, complete, progress)
    store.write_summary(summary, csv_text)
    draw(summary, store.plot_path)
    if config.capability is not None:
        draw_capability(summary, store.folder / "capability.png")
    return summary


@dataclass
class Progress:
    """How a sweep is going: its order, its time budget, point times, and what it skipped."""

    order: str
    budget_minutes: float | None
    durations: list[float] = field(default_factory=list)
    skipped: list[Point] = field(default_factory=list)

    def would_overrun(self, deadline: float) -> bool:
        """True when one more point of the mean duration so far would end after ``deadline``."""
        if not self.durations:
            return False
        return time.monotonic() + float(np.mean(self.durations)) > deadline

    def describe(self) -> dict:
        """The summary's record of it."""
        return {
            "order": self.order,
            "budget_minutes": self.budget_minutes,
            "seconds_per_point": round(float(np.mean(self.durations)), 3)
            if self.durations
            else None,
            "skipped": [{"alpha": p.alpha, "beta": p.beta} for p in self.skipped],
        }


def finished_asr(store: RunStore) -> dict[int, float]:
    """ASR of every finished point, by plan index."""
    return {i: point_figures(records)["asr"] for i, records in store.finished.items()}


def _remaining(order: PointOrder, points: list[Point], store: RunStore) -> list[Point]:
    if isinstance(order, FullGrid):
        return [points[i] for i in order.order(points) if i not in store.finished]
    return [p for i, p in enumerate(points) if i not in store.finished]


class SweepInterrupted(VisageError):
    """The user asked the sweep to stop; finished points are saved."""

    exit_code = 130

    def __init__(self, folder: Path, done: int, total: int):
        super().__init__(
            f"stopped after {done} of {total} points; run the same command again to resume "
            f"(results so far are in {folder})"
        )


@contextlib.contextmanager
def evaluator(
    config: SweepConfig, model: GGUFModel, spill_folder: Path
) -> Iterator[PointEvaluator]:
    """A PointEvaluator for ``config``: its scratch copy (in /dev/shm when it fits, else
    in ``spill_folder``), engine, judge and scorers, all released on exit."""
    perturbation = Perturbation(
        model,
        config.directions(model),
        threads=config.engine.threads,
        cache_bytes=config.memory_budget_mb << 20,
        requant=config.requant,
    )
    folder = scratch_folder(model.path.stat().st_size + perturbation.extra_bytes(), spill_folder)
    remove_orphaned_scratch(folder)
    fd, scratch_name = tempfile.mkstemp(
        prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", suffix=".gguf", dir=folder
    )
    os.close(fd)
    scratch = engine = scorer = judge = None
    try:
        judge = get_judge(config.judge, config.engine.threads)
        scratch = GGUFCopy(model, scratch_name, perturbation.retype, perturbation.origin_bytes)
        engine = Engine(scratch.path, config.engine)
        if config.coherence:
            scorer = CoherenceScorer(model.path, config.engine)
        probe = None
        if config.capability is not None:
            probe = CapabilityProbe(config.capability, model, engine)
            probe.calibrate()  # the scratch copy still holds the origin's weights
        items = prompt_items(config)
        tokens = render_prompts(engine, model, config, items)
        yield PointEvaluator(
            config, perturbation, scratch, engine, items, tokens, judge, scorer, probe
        )
    finally:
        for part in (engine, scorer, scratch):
            if part is not None:
                part.close()
        if judge is not None:
            judge.close()
        Path(scratch_name).unlink(missing_ok=True)


@dataclass(frozen=True)
class PointResult:
    """One evaluated point: its generation records, its point record, and the outcome."""

    records: list[dict]
    point_record: dict
    outcome: PointOutcome


@dataclass
class PointEvaluator:
    """What evaluating points needs while a sweep runs: the perturbation, the scratch file
    llama.cpp maps, the engine, the tokenized prompts, the judge and the scorers."""

    config: SweepConfig
    perturbation: Perturbation
    scratch: GGUFCopy
    engine: Engine
    items: list[PromptItem]
    tokens: list[list[int]]
    judge: Judge
    scorer: CoherenceScorer | None
    probe: CapabilityProbe | None
    threshold: float | None = None

    def calibrate(self, origin_records: list[dict]) -> None:
        """Set the coherence threshold from the origin's stored answers."""
        self.threshold = coherence.calibrate([r["coherence_ll"] for r in origin_records])

    def evaluate(self, index: int, point: Point) -> PointResult:
        """Move the weights to ``point``, generate, judge and score; nothing is written."""
        t0 = time.monotonic()
        displacement = self._move_weights(point)
        t1 = time.monotonic()
        settled = self.judge.settled if self.config.early_stop else None
        generations = self.engine.generate(self.tokens, self.config.max_new_tokens, settled)
        t2 = time.monotonic()
        verdicts = self.judge.judge_many(
            [item.prompt for item in self.items], [g.text for g in generations]
        )
        scores = [None] * len(generations)
        if self.scorer is not None:
            scores = self.scorer.scores(self.tokens, [g.tokens for g in generations])
            if point.alpha == 0 and not point.beta:
                self.threshold = coherence.calibrate(scores)
        t3 = time.monotonic()
        capability = self.probe.measure() if self.probe is not None else None
        t4 = time.monotonic()
        records = [
            self._record(index, point, i, gen, verdict, score)
            for i, (gen, verdict, score) in enumerate(
                zip(generations, verdicts, scores, strict=True)
            )
        ]
        point_record = {
            "point": index,
            "alpha": point.alpha,
            "beta": point.beta,
            "displacement": displacement.summary(),
            "displacement_faithful": displacement.total.faithful(),
            "weight_update_s": round(t1 - t0, 3),
            "generation_s": round(t2 - t1, 3),
            "generation": {k: round(v, 3) for k, v in asdict(self.engine.last_stats).items()},
            "judge_coherence_s": round(t3 - t2, 3),
            "coherence_threshold": self.threshold,
        } | ({"capability": capability, "capability_s": round(t4 - t3, 3)} if capability else {})
        refused = [r["refused"] for r in records if r["set"] == "harmful"]
        outcome = PointOutcome(
            index=index,
            point=point,
            asr=metrics.attack_success_rate(refused),
            refused=refused,
            displacement=displacement,
            weight_update_s=t1 - t0,
            generation_s=t2 - t1,
            tokens=sum(r["tokens"] for r in records),
            generation=self.engine.last_stats,
        )
        return PointResult(records, point_record, outcome)

    def _move_weights(self, point: Point) -> PointDisplacement:
        displacement = PointDisplacement()
        for tensor in self.perturbation.tensors_at(point):
            self.scratch.write_tensor(tensor.info.name, tensor.raw)
            displacement.add(tensor)
        self.engine.refresh_weights()
        return displacement

    def _record(
        self,
        index: int,
        point: Point,
        prompt_index: int,
        gen: Generation,
        verdict,
        score: float | None,
    ) -> dict:
        item = self.items[prompt_index]
        return {
            "point": index,
            "alpha": point.alpha,
            "beta": point.beta,
            "prompt_index": prompt_index,
            "n_prompts": len(self.tokens),
            "set": item.set,
            "prompt": item.prompt,
            "response": gen.text,
            "refused": verdict.refused,
            "matched": verdict.matched,
            "coherence_ll": None if score is None else round(score, 4),
            "coherent": coherence.is_coherent(score, self.threshold),
            "tokens": len(gen.tokens),
            "stop_reason": gen.stop_reason,
        }


def point_rows(store: RunStore, points: list[Point], grid: Grid) -> list[dict]:
    """One summary row per finished point, in plan order."""
    alphas, betas = set(grid.alpha_axis()), set(grid.beta_axis())
    rows = []
    for i, point in enumerate(points):
        records = store.finished.get(i)
        if records is None:
            continue
        rows.append(
            {
                "alpha": point.alpha,
                "beta": point.beta,
                **point_figures(records),
                "on_grid": point.alpha in alphas and (point.beta is None or point.beta in betas),
                "tokens": sum(r["tokens"] for r in records),
                "displacement": store.point_records[i]["displacement"],
                "displacement_faithful": store.point_records[i]["displacement_faithful"],
                **capability_figures(store.point_records[i]),
            }
        )
    return rows


def capability_figures(point_record: dict) -> dict[str, float | None]:
    """A point's capability figures (None when the sweep did not measure capability)."""
    measured = point_record.get("capability") or {}
    return {key: measured.get(key) for key in CAPABILITY_KEYS}


def point_figures(records: list[dict]) -> dict:
    """A point's figures from its generation records.

    ``asr``: % of harmful prompts not refused (the paper's definition);
    ``harmful_compliance``: % not refused and coherent; ``incoherent``: % of
    harmful answers judged incoherent; ``benign_refusal``: % of benign prompts
    refused (None without a benign set); the last three None without coherence.
    """
    harmful = [r for r in records if r.get("set", "harmful") == "harmful"]
    benign = [r for r in records if r.get("set") == "benign"]
    refused = [r["refused"] for r in harmful]
    figures = {
        "asr": metrics.attack_success_rate(refused),
        "asr_ci": list(stats.asr_interval(sum(refused), len(refused))),
        "n_refused": sum(refused),
        "n_prompts": len(refused),
        "harmful_compliance": None,
        "incoherent": None,
        "benign_refusal": None,
    }
    coherent = [r.get("coherent") for r in harmful]
    if coherent and all(c is not None for c in coherent):
        n = len(harmful)
        figures["incoherent"] = 100.0 * sum(not c for c in coherent) / n
        complied = sum(c and not r["refused"] for r, c in zip(harmful, coherent, strict=True))
        figures["harmful_compliance"] = 100.0 * complied / n
    if benign:
        figures["benign_refusal"] = 100.0 * sum(r["refused"] for r in benign) / len(benign)
    return figures


def landscape_figures(rows: list[dict], records: list[list[dict]], grid: Grid, seed: int) -> dict:
    """VISAGE with its bootstrap interval over prompts, the origin's ASR, and (1D) the basin
    edges; ``records[k]`` are the generations of ``rows[k]``."""
    visage = landscape_visage(rows, grid)
    origin = next((r for r in rows if r["alpha"] == 0 and not r["beta"]), None)
    figures = {
        "visage": visage,
        "visage_ci": None,
        "origin_asr": origin["asr"] if origin else None,
        "basin_edges": None,
        "basin_outline": None,
        "edge_threshold": stats.EDGE_THRESHOLD,
    }
    if visage is not None:
        on_grid = [(r, rs) for r, rs in zip(rows, records, strict=True) if r["on_grid"]]
        if grid.dims == 1:
            on_grid.sort(key=lambda pair: pair[0]["alpha"])
        refused = np.array(
            [
                [x["refused"] for x in rs if x.get("set", "harmful") == "harmful"]
                for _, rs in on_grid
            ]
        )
        figures["visage_ci"] = list(stats.bootstrap_visage(refused, grid.dims, seed))
    if origin is not None and grid.dims == 1:
        line = [r for r in rows if r["on_grid"] or r is origin]
        figures["basin_edges"] = list(
            stats.basin_edges([r["alpha"] for r in line], [r["asr"] for r in line], origin["asr"])
        )
    if origin is not None and grid.dims == 2:
        figures["basin_outline"] = basin_outline(rows, grid, origin["asr"])
    return figures


def basin_outline(rows: list[dict], grid, origin_asr: float) -> list[dict]:
    """The basin edge along each ray of a 2D grid (axes and diagonals), from the evaluated
    points on it: angle in degrees, radius, and the (alpha, beta) of the edge (None inside)."""
    asr = {(r["alpha"], r["beta"]): r["asr"] for r in rows}
    points = plan(grid)
    outline = []
    for (da, db), line in rays(points):
        on_ray = [points[i] for i in line if (points[i].alpha, points[i].beta) in asr]
        radii = [float(np.hypot(p.alpha, p.beta)) for p in on_ray]
        edge = stats.ray_edge(radii, [asr[(p.alpha, p.beta)] for p in on_ray], origin_asr)
        unit = np.array([da, db], dtype=float) / np.hypot(da, db)
        outline.append(
            {
                "angle_deg": float(np.degrees(np.arctan2(db, da))),
                "radius": edge,
                "alpha": None if edge is None else float(edge * unit[0]),
                "beta": None if edge is None else float(edge * unit[1]),
            }
        )
    return outline


def landscape_visage(rows: list[dict], grid: Grid) -> float | None:
    """VISAGE over the grid points, or None until every grid point is evaluated."""
    on_grid = [r for r in rows if r["on_grid"]]
    if len(on_grid) < len(grid.points()):
        return None
    if grid.dims == 1:
        ordered = sorted(on_grid, key=lambda r: r["alpha"])
        return metrics.visage_1d([r["asr"] for r in ordered])
    return metrics.visage_2d([r["asr"] for r in on_grid])


def _summary(config, model, store, points, started, complete, progress) -> tuple[dict, str]:
    rows = point_rows(store, points, config.grid)
    records = [store.finished[i] for i in range(len(points)) if i in store.finished]
    summary = {
        "model": str(config.model_path),
        "model_name": model.name,
        "model_sha256": model.sha256,
        "architecture": model.architecture,
        "chat_template": "model" if model.chat_template else "fallback",
        "dims": config.grid.dims,
        "grid": config.grid.describe(),
        "axes": {"alpha": config.grid.alpha_axis(), "beta": config.grid.beta_axis()},
        "seed": config.seed,
        "range": config.grid.range,
        "steps": config.grid.steps,
        "directions": [d.describe() for d in config.directions(model)],
        "prompts": config.prompts.source,
        "prompts_sha256": config.prompts.sha256,
        "n_prompts": len(config.prompts.prompts),
        "max_new_tokens": config.max_new_tokens,
        "system_prompt": config.system_prompt.label(),
        "attack": config.attack.label(),
        "benign": config.benign_prompts.source if config.benign else None,
        "capability": config.capability.describe() if config.capability else None,
        "judge": config.judge,
        "coherence_threshold": _threshold(store, points),
        "early_stop": config.early_stop,
        "requant": config.requant,
        "batch_size": config.engine.max_sequences,
        "flash_attn": config.engine.flash_attn,
        **landscape_figures(rows, records, config.grid, config.seed),
        "points": rows,
        "n_points_planned": len(points),
        "n_points_evaluated": len(rows),
        **progress.describe(),
        "complete": complete,
        "elapsed_s": round(time.monotonic() - started, 3),
        "config_hash": store.hash,
        "versions": versions(),
    }
    return summary, landscape_csv(rows)


def _threshold(store: RunStore, points: list[Point]) -> float | None:
    records = store.finished.get(origin_index(points), [])
    return coherence.calibrate([r.get("coherence_ll") for r in records])


CSV_COLUMNS = (
    "alpha",
    "beta",
    "asr",
    "n_refused",
    "n_prompts",
    "harmful_compliance",
    "incoherent",
    "benign_refusal",
    *CAPABILITY_KEYS,
    "on_grid",
)


def landscape_csv(rows: list[dict]) -> str:
    """The points of a landscape as CSV (empty cells for missing figures)."""
    lines = [",".join(CSV_COLUMNS)]
    for r in rows:
        cells = []
        for column in CSV_COLUMNS:
            value = r[column]
            if value is None:
                cells.append("")
            elif isinstance(value, float) and column not in ("alpha", "beta"):
                cells.append(f"{value:.4f}")
            else:
                cells.append(repr(value) if isinstance(value, float) else str(value))
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def draw(summary: dict, path: Path) -> None:
    """Draw the landscape plot of a summary (nothing when no point is finished)."""
    rows = [r for r in summary["points"] if r["on_grid"]]
    if not rows:
        return
    visage = "n/a" if summary["visage"] is None else f"{summary['visage']:.1f}"
    if summary.get("visage_ci"):
        visage += " [{:.1f}, {:.1f}]".format(*summary["visage_ci"])
    origin = "n/a" if summary["origin_asr"] is None else f"{summary['origin_asr']:.1f}%"
    title = (
        f"{summary['model_name']}\nVISAGE {visage}  |  origin ASR {origin}  |  "
        f"{summary['n_prompts']} prompts, seed {summary['seed']}"
    )
    if summary["dims"] == 1:
        extra = {
            label: [r.get(key) for r in rows]
            for key, label in (
                ("harmful_compliance", "harmful compliance"),
                ("incoherent", "incoherent answers"),
                ("benign_refusal", "benign prompts refused"),
            )
            if any(r.get(key) is not None for r in rows)
        }
        band = [tuple(r["asr_ci"]) for r in rows] if all("asr_ci" in r for r in rows) else None
        interpolation = summary.get("grid", {}).get("kind") == "interpolation"
        plots.plot_1d(
            [r["alpha"] for r in rows],
            [r["asr"] for r in rows],
            title,
            path,
            extra,
            band,
            "t (0 = base model, 1 = finetune)" if interpolation else "alpha (direction 1)",
        )
        return
    alphas, betas = summary["axes"]["alpha"], summary["axes"]["beta"]
    grid = np.full((len(betas), len(alphas)), np.nan)
    for r in rows:
        grid[betas.index(r["beta"]), alphas.index(r["alpha"])] = r["asr"]
    outline = [(o["alpha"], o["beta"]) for o in summary.get("basin_outline") or [] if o["radius"]]
    plots.plot_2d(alphas, betas, grid, title, path, outline)


def draw_capability(summary: dict, path: Path) -> None:
    """Safety beside capability: two y-axes in 1D, side-by-side surfaces in 2D."""
    rows = [r for r in summary["points"] if r["on_grid"] and r.get("mcq_accuracy") is not None]
    if not rows:
        return
    title = f"{summary['model_name']}: safety and capability"
    if summary["dims"] == 1:
        interpolation = summary.get("grid", {}).get("kind") == "interpolation"
        plots.plot_capability_1d(
            [r["alpha"] for r in rows],
            [r["asr"] for r in rows],
            {key: [r[key] for r in rows] for key in CAPABILITY_KEYS},
            title,
            path,
            "t (0 = base model, 1 = finetune)" if interpolation else "alpha (direction 1)",
        )
        return
    alphas, betas = summary["axes"]["alpha"], summary["axes"]["beta"]
    surfaces = {}
    for key, label in (
        ("asr", "ASR (%)"),
        ("mcq_accuracy", "MCQ accuracy (%)"),
        ("kl", "KL (nats)"),
    ):
        grid = np.full((len(betas), len(alphas)), np.nan)
        for r in rows:
            grid[betas.index(r["beta"]), alphas.index(r["alpha"])] = r[key]
        surfaces[label] = grid
    plots.plot_capability_2d(alphas, betas, surfaces, title, path)

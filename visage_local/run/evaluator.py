"""One point of a sweep: move the weights, generate, judge, score.

``evaluator`` opens everything a point needs (the scratch copy llama.cpp maps, the
engine, the judge, the coherence scorer, the capability probe) and releases it on
exit; ``PointEvaluator.evaluate`` returns a point's records without writing anything,
so the local loop and the Ray workers share it.

Overlap (``SweepConfig.overlaps``): given the point that comes next, ``evaluate``
starts computing its tensors (draw, dequantise, move, requantise) in a background
thread as soon as this point's weights are in place, into memory beside the scratch
copy (a second copy of the perturbed tensors); the next ``evaluate`` of that point
waits for them and only writes them. The tensors are those the sequential route
computes, so the answers are the same; what changes is when the work runs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from visage_local import metrics
from visage_local.asking import reasoning
from visage_local.asking.chat import render_prompt
from visage_local.engine import coherence
from visage_local.engine.batching import CacheBudget
from visage_local.engine.capability import CapabilityProbe
from visage_local.engine.coherence import CoherenceScorer
from visage_local.engine.llama import Engine, Generation, GenerationStats, Reasoning
from visage_local.gguf.model import GGUFCopy, GGUFModel, TensorInfo
from visage_local.judges import Judge, Verdict, get_judge, settled_for_all
from visage_local.points.grid import Point
from visage_local.record import FORMAT_VERSION, GenerationRecord, PointRecord
from visage_local.run.estimate import Estimate, estimate
from visage_local.run.prepared import PreparedSweep
from visage_local.run.settings import PromptItem, SweepConfig, prompt_items
from visage_local.weights.perturb import Perturbation, PerturbedTensor, PointDisplacement

SCRATCH_PREFIX = "visage-scratch-"


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


def remove_orphaned_scratch(folder: Path) -> list[Path]:
    """Delete scratch copies left in ``folder`` by processes that no longer exist (a sweep or a
    Ray worker killed with SIGKILL cannot clean up); return what was deleted.

    POSIX only: on Windows ``os.kill(pid, 0)`` terminates the process it would probe."""
    removed: list[Path] = []
    if os.name != "posix":
        return removed
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


def render_prompts(
    engine: Engine, model: GGUFModel, config: SweepConfig, items: list[PromptItem]
) -> tuple[list[list[int]], Reasoning | None]:
    """Every prompt through the model's chat template (or the fallback), tokenized; and,
    for a reasoning model, how its reasoning is kept apart from its answers."""
    template = model.chat_template
    texts = [
        render_prompt(engine, template, config.system_prompt, item.presented, config.thinking)
        for item in items
    ]
    syntax = reasoning.syntax_of(template)
    plan = None
    if syntax is not None:
        inside = [reasoning.starts_inside(syntax, text) for text in texts]
        plan = Reasoning(syntax, config.max_thinking_tokens, inside)
    return [engine.tokenize(text) for text in texts], plan


@contextlib.contextmanager
def evaluator(prepared: PreparedSweep, spill_folder: Path) -> Iterator[PointEvaluator]:
    """A PointEvaluator for a prepared sweep: its scratch copy (in /dev/shm when it fits,
    else in ``spill_folder``), engine, judge and scorers, all released on exit."""
    config, model = prepared.config, prepared.model
    perturbation = prepared.perturbation()
    folder = prepared.scratch_folder(spill_folder)
    remove_orphaned_scratch(folder)
    fd, scratch_name = tempfile.mkstemp(
        prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", suffix=".gguf", dir=folder
    )
    os.close(fd)
    scratch = engine = scorer = None
    judges: list[Judge] = []
    try:
        for name in config.judges:
            judges.append(get_judge(name, config.engine.threads))
        scratch = GGUFCopy(model, scratch_name, perturbation.retype, perturbation.origin_bytes)
        engine = Engine(scratch.path, config.engine, label=model.path)
        if config.coherence:
            scorer = CoherenceScorer(model.path, config.engine)
        probe = None
        if config.capability is not None:
            probe = CapabilityProbe(config.capability, model, engine)
            probe.calibrate()  # the scratch copy still holds the origin's weights
        items = prompt_items(config)
        tokens, plan = render_prompts(engine, model, config, items)
        live = PointEvaluator(
            config,
            perturbation,
            scratch,
            engine,
            items,
            tokens,
            judges,
            scorer,
            probe,
            plan,
            prepared.cache,
        )
        try:
            yield live
        finally:
            live.close()
    finally:
        for part in (engine, scorer, scratch):
            if part is not None:
                part.close()
        for judge in judges:
            judge.close()
        Path(scratch_name).unlink(missing_ok=True)


@dataclass(frozen=True)
class PointResult:
    """One evaluated point: its generation records, its point record, and the outcome."""

    records: list[GenerationRecord]
    point_record: PointRecord
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
    judges: list[Judge]  # the run's judge first; every one of them settles an early stop
    scorer: CoherenceScorer | None
    probe: CapabilityProbe | None
    reasoning: Reasoning | None = None  # a reasoning model's answers: reasoning kept apart
    budget: CacheBudget | None = None  # the memory planned besides the scratch copy
    threshold: float | None = None
    _next: _Prepared | None = field(default=None, repr=False)

    @property
    def overlaps(self) -> bool:
        """True when the next point's weights are prepared while a point generates."""
        return self.config.overlaps

    @property
    def preparing(self) -> Point | None:
        """The point whose weights are being prepared (or are ready), if any."""
        return None if self._next is None else self._next.point

    def close(self) -> None:
        """Stop preparing a point nobody will evaluate, and wait for the thread to end."""
        if self._next is not None:
            self._next.stop()
            self._next = None

    def calibrate(self, origin_records: list[dict]) -> None:
        """Set the coherence threshold from the origin's stored answers."""
        self.threshold = coherence.calibrate([r["coherence_ll"] for r in origin_records])

    def estimate(self, points: list[Point]) -> Estimate:
        """Time this model on this machine and say what evaluating ``points`` will take."""
        return estimate(
            self.perturbation,
            self.scratch,
            self.engine,
            self.tokens,
            self.config.max_new_tokens,
            points,
            self.budget,
            scoring=self.scorer is not None,
            overlap=self.overlaps,
        )

    def evaluate(self, index: int, point: Point, following: Point | None = None) -> PointResult:
        """Move the weights to ``point``, generate, judge and score; nothing is written.
        With overlap, ``following`` (the point evaluated next, when known) is prepared while
        this point generates."""
        t0 = time.monotonic()
        prepared = self._prepared(point)
        if prepared is None:
            self.perturbation.phases.take()  # from zero: nothing was computed for this point
        displacement = self._move_weights(point, prepared)
        phases = self.perturbation.phases.take()  # prepared: its work counts too
        if self.overlaps and following is not None:
            self._next = _Prepared.start(self.perturbation, following)
        t1 = time.monotonic()
        settled = settled_for_all(self.judges) if self.config.early_stop else None
        generations = self.engine.generate(
            self.tokens, self.config.max_new_tokens, settled, self.reasoning
        )
        t2 = time.monotonic()
        verdicts = self.judges[0].judge_many(
            [item.prompt for item in self.items], [g.text for g in generations]
        )
        scores = [None] * len(generations)
        if self.scorer is not None:
            # an answer is scored as the continuation of its prompt and its reasoning
            contexts = [
                p + g.reasoning_tokens for p, g in zip(self.tokens, generations, strict=True)
            ]
            scores = self.scorer.scores(contexts, [g.tokens for g in generations])
            if point.is_origin:
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
        point_record = PointRecord(
            format_version=FORMAT_VERSION,
            point=index,
            alpha=point.alpha,
            beta=point.beta,
            displacement=displacement.summary(),
            displacement_faithful=not displacement.unfaithful(),
            weight_update_s=round(t1 - t0, 3),
            weight_update_phases=phases,
            generation_s=round(t2 - t1, 3),
            generation={k: round(v, 3) for k, v in asdict(self.engine.last_stats).items()},
            judge_coherence_s=round(t3 - t2, 3),
            coherence_threshold=self.threshold,
            capability=capability,
            capability_s=round(t4 - t3, 3) if capability else None,
        )
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

    def _prepared(self, point: Point) -> list[PerturbedTensor] | None:
        """The tensors prepared for ``point`` (waiting for them), or None; tensors prepared
        for another point are dropped."""
        prepared, self._next = self._next, None
        if prepared is None:
            return None
        if prepared.point != point:
            prepared.stop()
            return None
        return prepared.result()

    def _move_weights(
        self, point: Point, prepared: list[PerturbedTensor] | None = None
    ) -> PointDisplacement:
        displacement = PointDisplacement()
        tensors = (
            self.perturbation.tensors_at(point, self._write_rows) if prepared is None else prepared
        )
        for tensor in tensors:
            if tensor.raw is not None:
                with self.perturbation.phases.timed("write"):
                    self.scratch.write_tensor(tensor.info.name, tensor.raw)
            displacement.add(tensor)
        self.engine.refresh_weights()
        return displacement

    def _write_rows(self, info: TensorInfo, first_row: int, rows: np.ndarray) -> None:
        with self.perturbation.phases.timed("write"):
            self.scratch.write_rows(info, first_row, rows)

    def _record(
        self,
        index: int,
        point: Point,
        prompt_index: int,
        gen: Generation,
        verdict: Verdict,
        score: float | None,
    ) -> GenerationRecord:
        item = self.items[prompt_index]
        return (
            {
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
                # an answer stopped early: the judges whose verdicts were settled when it stopped
                "cut_by": [j.name for j in self.judges] if gen.stop_reason == "settled" else None,
            }
            | ({"category": item.category} if item.category is not None else {})
            | (
                {"reasoning": gen.reasoning, "reasoning_tokens": len(gen.reasoning_tokens)}
                if self.reasoning is not None
                else {}
            )
        )


@dataclass
class _Prepared:
    """A point's tensors being computed in a background thread, which can be stopped between
    tensors."""

    point: Point
    future: Future[list[PerturbedTensor]]
    pool: ThreadPoolExecutor
    stopping: threading.Event

    @classmethod
    def start(cls, perturbation: Perturbation, point: Point) -> _Prepared:
        """Start computing every perturbed tensor of ``point``."""
        stopping = threading.Event()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="visage-prepare")

        def compute() -> list[PerturbedTensor]:
            tensors = []
            for tensor in perturbation.tensors_at(point):
                if stopping.is_set():
                    break
                tensors.append(tensor)
            return tensors

        return cls(point, pool.submit(compute), pool, stopping)

    def result(self) -> list[PerturbedTensor]:
        """The tensors, once all are computed (the thread's error, if it failed)."""
        try:
            return self.future.result()
        finally:
            self.pool.shutdown()

    def stop(self) -> None:
        """Stop after the tensor in progress and wait; the work is dropped."""
        self.stopping.set()
        self.pool.shutdown()

"""theta + a*d1 + b*d2, tensor by tensor, requantised, with the displacement actually applied.

For every perturbed tensor: dequantise to float32, add the scaled directions,
quantise back with ggml's kernel, to the tensor's own type (requant mode
``same``) or to a finer one (``q8_0``, ``f16``). Excluded tensors and, in
``same`` mode, the origin (a = b = 0) keep their original bytes untouched. One
tensor is processed at a time, its rows in chunks on parallel threads, while the
next tensor's random directions are drawn on another (each tensor has its own random
stream, so the bytes do not depend on which thread draws). A cache
budget keeps directions in memory between points; random directions that do
not fit it are drawn block by block (about 16 MiB of rows at a time) at every
point, so no tensor's direction is ever held whole, and (written through a
``RowSink``) neither are its perturbed bytes.

Requantisation does not move a tensor exactly by a*d1 + b*d2. For every point
the Displacement figures compare the displacement applied, deq(W_point) -
deq(W_origin), with the intended one: their norm ratio and cosine.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from gguf import GGMLQuantizationType

from visage_local.errors import ConfigError
from visage_local.gguf import ggml, quant
from visage_local.gguf.model import GGUFModel, TensorInfo, atomic_copy
from visage_local.points.grid import Point
from visage_local.weights.directions import (
    RandomDirection,
    SliceNorms,
    direction_block_rows,
    slices,
)

# --requant modes: the type perturbed tensors are written in (None: each tensor's own).
REQUANT_MODES: dict[str, GGMLQuantizationType | None] = {
    "same": None,
    "q8_0": GGMLQuantizationType.Q8_0,
    "f16": GGMLQuantizationType.F16,
    "f32": GGMLQuantizationType.F32,
}
_FLOAT_TYPES = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16}
# Warn when the applied displacement strays this far from the intended one.
RATIO_RANGE = (0.8, 1.25)
MIN_COSINE = 0.9


# Where the time of moving weights goes, in the order the work happens; "write" is the
# scratch copy's (timed by its writer).
PHASES = ("read", "draw", "dequantize", "move", "requantize", "measure", "write")


class PhaseTimes:
    """Thread-seconds spent in each of PHASES: work on row chunks in parallel threads adds
    each thread's time, a call that runs on n threads counts n times its wall time, so
    with every thread busy the phases add up to threads x the wall time."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._lock = threading.Lock()

    def add(self, phase: str, seconds: float) -> None:
        """Count ``seconds`` of thread time in ``phase``."""
        with self._lock:
            self.seconds[phase] += seconds

    @contextlib.contextmanager
    def timed(self, phase: str, threads: int = 1) -> Iterator[None]:
        """Count the block's wall time x ``threads`` in ``phase``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, (time.perf_counter() - start) * threads)

    def take(self) -> dict[str, float]:
        """The counts so far, rounded to ms, and start again from zero."""
        with self._lock:
            out = {phase: round(seconds, 3) for phase, seconds in self.seconds.items()}
            self.seconds = dict.fromkeys(PHASES, 0.0)
        return out


@dataclass
class Displacement:
    """Sums comparing the applied displacement A = deq(W_point) - deq(W_origin) with the
    intended one I = a*d1 + b*d2, over one or more tensors."""

    applied_sq: float = 0.0  # ||A||^2
    intended_sq: float = 0.0  # ||I||^2
    dot: float = 0.0  # <A, I>
    origin_sq: float = 0.0  # ||W||^2, the moved tensors' own weights (dequantised)

    def add(self, other: Displacement) -> None:
        """Accumulate another tensor's (or chunk's) sums."""
        self.applied_sq += other.applied_sq
        self.intended_sq += other.intended_sq
        self.dot += other.dot
        self.origin_sq += other.origin_sq

    @property
    def distance(self) -> float | None:
        """||I|| / ||W||: how far the point is meant to be from the origin, relative to the
        weights moved (about |alpha| along a random direction normalised per tensor; along
        a finetune, t times the finetune's own distance). None without weights."""
        return math.sqrt(self.intended_sq / self.origin_sq) if self.origin_sq else None

    @property
    def ratio(self) -> float | None:
        """||A|| / ||I||; None at the origin, where I = 0 and the ratio is undefined."""
        return math.sqrt(self.applied_sq / self.intended_sq) if self.intended_sq else None

    @property
    def cosine(self) -> float | None:
        """cos(A, I); None where either is zero."""
        denominator = math.sqrt(self.applied_sq * self.intended_sq)
        return self.dot / denominator if denominator else None

    def faithful(self) -> bool:
        """True unless the ratio leaves RATIO_RANGE or the cosine falls under MIN_COSINE."""
        if self.ratio is None:
            return True
        low, high = RATIO_RANGE
        return low <= self.ratio <= high and (self.cosine or 0.0) >= MIN_COSINE

    def summary(self) -> dict[str, float | None]:
        """Ratio, cosine and distance, rounded, for summaries."""
        return {
            key: None if value is None else round(value, 6)
            for key, value in (
                ("ratio", self.ratio),
                ("cosine", self.cosine),
                ("distance", self.distance),
            )
        }


def tensor_kind(name: str) -> str:
    """attention, experts (a mixture of experts' stacked expert tensors), mlp, embeddings
    (token embedding and output head) or other."""
    if ".attn_" in name:
        return "attention"
    if ".ffn_" in name and "_exps" in name:
        return "experts"
    if ".ffn_" in name:
        return "mlp"
    if name.startswith(("token_embd", "output.")):
        return "embeddings"
    return "other"


@dataclass
class PerturbedTensor:
    """One tensor at a point: its bytes (in ``qtype``) and the displacement they apply."""

    info: TensorInfo  # the source tensor
    qtype: GGMLQuantizationType
    raw: np.ndarray | None  # None: its rows went to a RowSink as they were made
    displacement: Displacement = field(default_factory=Displacement)


# Takes a tensor's rows from ``first_row`` on, as they are made: (tensor, first_row, rows).
RowSink = Callable[[TensorInfo, int, np.ndarray], None]


@dataclass
class PointDisplacement:
    """The displacement figures of a whole point: over all perturbed tensors and per kind."""

    total: Displacement = field(default_factory=Displacement)
    by_kind: dict[str, Displacement] = field(default_factory=dict)

    def add(self, tensor: PerturbedTensor) -> None:
        """Accumulate one tensor."""
        self.total.add(tensor.displacement)
        self.by_kind.setdefault(tensor_kind(tensor.info.name), Displacement()).add(
            tensor.displacement
        )

    def unfaithful(self) -> list[str]:
        """The kinds, and ``all`` for the aggregate, whose applied displacement strays from
        the intended one (``Displacement.faithful``): a kind can stray while the aggregate,
        dominated by the others, does not."""
        kinds = [("all", self.total), *sorted(self.by_kind.items())]
        return [kind for kind, d in kinds if not d.faithful()]

    def summary(self) -> dict[str, dict[str, float | None]]:
        """{"all": {...}, "attention": {...}, ...} with ratio, cosine and distance each."""
        out = {"all": self.total.summary()}
        out.update({kind: d.summary() for kind, d in sorted(self.by_kind.items())})
        return out


class Direction(Protocol):
    """A direction in weight space, produced one tensor at a time."""

    def excludes(self, tensor_name: str) -> bool:
        """True when the direction is zero on the tensor."""
        ...

    def tensor(self, tensor_name: str, weights: np.ndarray, n_slices: int = 1) -> np.ndarray | None:
        """The direction on one tensor (float32, the weights' shape), or None when zero;
        ``n_slices``: equal slices of rows normalised apart (MoE experts), where the
        direction is normalised at all."""
        ...

    def describe(self) -> dict[str, object]:
        """What determines the direction."""
        ...


class Perturbation:
    """The perturbed model theta + sum_i c_i d_i along fixed directions, for any point."""

    def __init__(
        self,
        model: GGUFModel,
        directions: Sequence[Direction],
        threads: int = 1,
        cache_bytes: int = 0,
        requant: str = "same",
    ):
        if requant not in REQUANT_MODES:
            raise ConfigError(f"unknown requant mode {requant!r} ({', '.join(REQUANT_MODES)})")
        if not directions:
            raise ValueError("a perturbation needs at least one direction")
        self.model = model
        self.directions = list(directions)
        self.threads = max(1, threads)
        self.targets: list[TensorInfo] = [
            t for t in model.tensors if not all(d.excludes(t.name) for d in self.directions)
        ]
        for info in self.targets:
            quant.check_supported(info.name, info.qtype)
        self._target_names = {t.name for t in self.targets}
        self.requant = requant
        self.retype = {
            t.name: target
            for t in self.targets
            if (target := REQUANT_MODES[requant]) is not None
            and t.qtype != target
            and (target == GGMLQuantizationType.F32 or t.qtype not in _FLOAT_TYPES)
            and t.n_per_row % ggml.block_size(int(target)) == 0
        }
        self.cache_bytes = cache_bytes  # the direction cache's budget
        self._cache_left = cache_bytes
        self.phases = PhaseTimes()
        self._cache: dict[str, list[np.ndarray | None]] = {}
        self._scales: dict[str, list[list[np.float32] | None]] = {}

    def _directions(
        self, info: TensorInfo, ahead: Future | None = None
    ) -> tuple[list[np.ndarray | None], np.ndarray | None]:
        """The directions on one tensor, whole, and its dequantised weights when they had
        to be read; ``ahead``: ``_whole`` of the tensor, computed on another thread.

        Directions are kept in memory while the cache budget allows: drawing one
        costs far more than dequantising the weights again.
        """
        cached = self._cache.get(info.name)
        if cached is not None:
            return cached, None
        dirs, weights = self._whole(info, self.threads) if ahead is None else ahead.result()
        size = sum(d.nbytes for d in dirs if d is not None)
        if size <= self._cache_left:
            self._cache_left -= size
            self._cache[info.name] = dirs
        return dirs, weights

    def _whole(self, info: TensorInfo, threads: int) -> tuple[list[np.ndarray | None], np.ndarray]:
        """The tensor's dequantised weights (on ``threads`` threads) and its directions."""
        raw = self._read_rows(info, 0, info.n_rows)
        with self.phases.timed("dequantize", threads):
            weights = quant.dequantize(raw, info.qtype, info.n_per_row, threads)
        n_slices = slices(info.name, info.shape)
        with self.phases.timed("draw"):
            return [d.tensor(info.name, weights, n_slices) for d in self.directions], weights

    def _streamed(self, info: TensorInfo) -> bool:
        """True when the tensor's directions are drawn in blocks of rows at every point:
        they are random (so a block can be drawn alone) and would not fit the cache.

        The first point draws them twice (once for their norm, whose factor is kept,
        once to move the weights); later points once, without the norms the whole
        route computes again (Qwen2.5 0.5B, no cache: 10.6 s a point against 14.1 s).
        """
        if info.name in self._cache:
            return False
        if info.name in self._scales:
            return True
        return self.drawn(info) and self.direction_bytes(info) > self._cache_left

    def _live(self, info: TensorInfo) -> list[Direction]:
        """The directions that move the tensor."""
        return [d for d in self.directions if not d.excludes(info.name)]

    def direction_bytes(self, info: TensorInfo) -> int:
        """Bytes of the tensor's directions held whole (float32), as the cache keeps them."""
        return info.n_elements * 4 * len(self._live(info))

    def drawn(self, info: TensorInfo) -> bool:
        """True when the tensor is moved and every direction moving it is random (drawn
        from a seed, not read from files), so it can be drawn in blocks of rows."""
        live = self._live(info)
        return bool(live) and all(isinstance(d, RandomDirection) for d in live)

    def _scales_of(self, info: TensorInfo) -> list[list[np.float32] | None]:
        """Each direction's layer-normalisation factors on the tensor, one per slice
        (computed once)."""
        if info.name not in self._scales:
            shape = (info.n_rows, info.n_per_row)
            weights = SliceNorms(info.n_rows, slices(info.name, info.shape))
            for first, count in _blocks(info):
                weights.add(self._dequantize_rows(info, first, count))
            norms = weights.norms()
            with self.phases.timed("draw"):
                self._scales[info.name] = [
                    None if d.excludes(info.name) else d.scale(info.name, shape, norms)
                    for d in self.directions
                ]
        return self._scales[info.name]

    def _dequantize_rows(self, info: TensorInfo, first: int, count: int) -> np.ndarray:
        raw = self._read_rows(info, first, count)
        with self.phases.timed("dequantize", self.threads):
            return quant.dequantize(raw, info.qtype, info.n_per_row, self.threads)

    def _read_rows(self, info: TensorInfo, first: int, count: int) -> np.ndarray:
        with self.phases.timed("read"):
            return self.model.raw_rows(info, first, count)

    def output_type(self, info: TensorInfo) -> GGMLQuantizationType:
        """The type the tensor is written in."""
        return self.retype.get(info.name, info.qtype)

    def uniform_imatrix_types(self) -> list[str]:
        """The output types requantised with a uniform importance matrix (ggml needs one for
        them; the file itself was most likely made with a measured one)."""
        return sorted(
            {
                qtype.name
                for info in self.targets
                if quant.uses_uniform_imatrix(qtype := self.output_type(info))
            }
        )

    def extra_bytes(self) -> int:
        """How many more bytes the model takes in this requant mode than in its own types."""
        return sum(
            info.n_rows * (quant.row_bytes(qtype, info.n_per_row) - info.n_bytes // info.n_rows)
            for info in self.targets
            if (qtype := self.output_type(info)) != info.qtype
        )

    def origin_bytes(self, info: TensorInfo) -> np.ndarray:
        """The tensor at the origin in its output type (the original bytes when unchanged)."""
        return self.origin_rows(info, 0, info.n_rows)

    def origin_rows(self, info: TensorInfo, first: int, count: int) -> np.ndarray:
        """Rows ``first`` to ``first + count`` of the tensor at the origin, in its output type."""
        raw = self._read_rows(info, first, count)  # a copy read from the file
        qtype = self.output_type(info)
        if qtype == info.qtype:
            return raw
        values = quant.dequantize(raw, info.qtype, info.n_per_row, self.threads)
        return quant.quantize(values, qtype, self.threads)

    def tensor_at(
        self,
        info: TensorInfo,
        point: Point,
        sink: RowSink | None = None,
        ahead: Future | None = None,
        pool: Executor | None = None,
    ) -> PerturbedTensor:
        """The tensor's bytes at ``point`` and the displacement they apply.

        Rows are dequantised, moved, requantised and measured in chunks on
        ``threads`` threads. Directions that do not fit the cache are drawn in
        blocks of rows, so a tensor's direction is never held whole; given a
        ``sink``, such a tensor's bytes, and the bytes of a tensor at the origin, go
        to it block by block as they are made (the result's ``raw`` is None), so
        they are not held whole either. ``ahead``: its weights and directions, prepared
        ahead (``tensors_at``); ``pool``: a thread on which directions drawn in blocks
        are drawn one block ahead of the block being moved.
        """
        qtype = self.output_type(info)
        if point.is_origin or info.name not in self._target_names:
            if sink is None:
                return PerturbedTensor(info, qtype, self.origin_bytes(info))
            for first, count in _blocks(info):
                sink(info, first, self.origin_rows(info, first, count))
            return PerturbedTensor(info, qtype, None)
        row_bytes = quant.row_bytes(qtype, info.n_per_row)
        parts: list[Displacement] = []
        if self._streamed(info):
            out = None if sink is not None else np.empty((info.n_rows, row_bytes), np.uint8)
            scales = self._scales_of(info)
            shape = (info.n_rows, info.n_per_row)
            streams = [
                (np.float32(c), d.blocks(info.name, shape, scale))
                for c, d, scale in zip(point.coefficients(), self.directions, scales, strict=False)
                if scale is not None and c
            ]
            blocks = _blocks(info)
            for (first, count), steps in zip(
                blocks, self._block_steps(streams, len(blocks), pool), strict=True
            ):
                raw = self._read_rows(info, first, count)
                block = (
                    np.empty((count, row_bytes), np.uint8)
                    if out is None
                    else out[first : first + count]
                )
                self._move_rows(info, qtype, raw, None, steps, block, parts)
                if sink is not None:
                    sink(info, first, block)
        else:
            out = np.empty((info.n_rows, row_bytes), dtype=np.uint8)
            dirs, weights = self._directions(info, ahead)
            endpoint = self._endpoint_raw(info, point, qtype)
            if endpoint is not None:
                return self._endpoint_tensor(info, qtype, endpoint, dirs[0], weights)
            steps = [
                (np.float32(c), d)
                for c, d in zip(point.coefficients(), dirs, strict=False)
                if d is not None and c
            ]
            raw = self._read_rows(info, 0, info.n_rows)
            self._move_rows(info, qtype, raw, weights, steps, out, parts)
        total = Displacement()
        for part in parts:
            total.add(part)
        return PerturbedTensor(info, qtype, out, total)

    def _block_steps(
        self, streams: list, n_blocks: int, pool: Executor | None
    ) -> Iterator[list[tuple[np.float32, np.ndarray]]]:
        """Each block's (coefficient, direction rows) from ``streams``, drawn one block
        ahead on ``pool`` when given (the streams are read in the same order either way,
        so the bytes are the same)."""

        def draw() -> list[tuple[np.float32, np.ndarray]]:
            with self.phases.timed("draw"):
                return [(c, next(blocks)) for c, blocks in streams]

        if pool is None:
            for _ in range(n_blocks):
                yield draw()
            return
        pending = pool.submit(draw)
        for index in range(n_blocks):
            steps = pending.result()
            if index + 1 < n_blocks:
                pending = pool.submit(draw)
            yield steps

    def _move_rows(self, info, qtype, raw, weights, steps, out, parts: list[Displacement]) -> None:
        """Requantise rows ``raw`` (dequantised ``weights`` when already at hand) moved by
        sum(coefficient * direction rows) into ``out``, appending each chunk's sums to
        ``parts``; chunks run on ``threads`` threads."""

        timed = self.phases.timed

        def chunk(first: int, count: int):
            def run() -> None:
                rows = slice(first, first + count)
                with timed("dequantize"):
                    if weights is None:
                        values = quant.dequantize(raw[rows], info.qtype, info.n_per_row)
                    else:
                        values = weights[rows].copy()
                with timed("requantize"):
                    origin = values
                    if qtype != info.qtype:  # the origin as this mode stores it
                        origin = quant.quantize(values, qtype)
                        origin = quant.dequantize(origin, qtype, info.n_per_row)
                with timed("move"):
                    intended = np.zeros_like(values)
                    for coefficient, direction in steps:
                        intended += coefficient * direction[rows]
                    moved = values + intended
                with timed("requantize"):
                    out[rows] = quant.quantize(moved, qtype)
                with timed("measure"):
                    applied = quant.dequantize(out[rows], qtype, info.n_per_row) - origin
                    parts.append(_sums(applied, intended, values))

            return run

        chunks = ggml.row_chunks(len(raw), info.n_per_row, self.threads)
        ggml.run_parallel([chunk(first, count) for first, count in chunks], self.threads)

    def _endpoint_raw(self, info: TensorInfo, point: Point, qtype) -> np.ndarray | None:
        """Exact bytes for a point that is the first direction's own endpoint (coefficient 1
        alone), when that direction can supply them (a finetune in the same type)."""
        if point.coefficients()[0] != 1.0 or any(point.coefficients()[1:]):
            return None
        endpoint_raw = getattr(self.directions[0], "endpoint_raw", None)
        return None if endpoint_raw is None else endpoint_raw(info.name, qtype)

    def _endpoint_tensor(self, info, qtype, raw, direction, weights) -> PerturbedTensor:
        base = self.model.dequantize(info, self.threads) if weights is None else weights
        origin = base
        if qtype != info.qtype:  # the origin as this mode stores it
            origin = quant.dequantize(quant.quantize(base, qtype), qtype, info.n_per_row)
        applied = quant.dequantize(raw, qtype, info.n_per_row, self.threads) - origin
        intended = direction if direction is not None else np.zeros_like(base)
        moved = _sums(applied, intended, base)
        return PerturbedTensor(info, qtype, raw.reshape(info.n_rows, -1), moved)

    def tensors_at(self, point: Point, sink: RowSink | None = None) -> Iterator[PerturbedTensor]:
        """Every perturbed tensor at ``point``, in file order (``sink``: see ``tensor_at``).

        Random directions are drawn ahead on a thread of their own while the other
        threads move rows: those drawn whole (the cache will keep them), with the weights
        they are scaled to, one tensor ahead; those drawn in blocks of rows, one block
        ahead. A Gaussian draw runs on one core, and each tensor's comes from its own
        stream read in order, so the bytes are those drawn in turn."""
        if point.is_origin:
            for info in self.targets:
                yield self.tensor_at(info, point, sink)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="draw") as pool:
            queue = iter(self._draws())
            prepared: dict[str, Future] = {}

            def prepare_next() -> None:
                info = next(queue, None)
                if info is not None:
                    prepared[info.name] = pool.submit(self._whole, info, 1)

            prepare_next()
            for info in self.targets:
                future = prepared.pop(info.name, None)
                if future is not None:
                    prepare_next()
                yield self.tensor_at(info, point, sink, future, pool)

    def _draws(self) -> list[TensorInfo]:
        """The tensors, in file order, whose random directions the next visit draws whole:
        not cached yet, and (as ``_directions`` will decide) fitting what is left of the
        cache, so a draw made ahead takes memory the cache would take anyway."""
        left, draws = self._cache_left, []
        for info in self.targets:
            if info.name in self._cache or info.name in self._scales:
                continue
            size = self.direction_bytes(info)
            if size > left:
                continue  # streamed (random) or moved whole uncached (other directions)
            left -= size
            if self.drawn(info):
                draws.append(info)
        return draws

    def kept_whole(self, info: TensorInfo) -> bool:
        """True when the tensor's directions are random and kept whole in the cache
        (drawn once, not again in blocks at every point)."""
        return info.name in self._cache and self.drawn(info)


def _blocks(info: TensorInfo) -> list[tuple[int, int]]:
    """(first row, row count) of the blocks a streamed tensor is moved in."""
    rows = direction_block_rows(info.n_per_row)
    return [(first, min(rows, info.n_rows - first)) for first in range(0, info.n_rows, rows)]


def _sums(applied: np.ndarray, intended: np.ndarray, origin: np.ndarray) -> Displacement:
    a, i, w = applied.reshape(-1), intended.reshape(-1), origin.reshape(-1)
    dots = (np.dot(a, a), np.dot(i, i), np.dot(a, i), np.dot(w, w))
    return Displacement(*(float(x) for x in dots))


def export_perturbed(
    perturbation: Perturbation,
    point: Point,
    out_path: str | os.PathLike,
    on_tensor: Callable[[TensorInfo], None] | None = None,
) -> Path:
    """Write the model at ``point`` as a GGUF file (atomically: no partial file on failure)."""
    with atomic_copy(
        perturbation.model, out_path, perturbation.retype, perturbation.origin_bytes
    ) as copy:
        for tensor in perturbation.tensors_at(point, copy.write_rows):
            if tensor.raw is not None:
                copy.write_tensor(tensor.info.name, tensor.raw)
            if on_tensor:
                on_tensor(tensor.info)
    return Path(out_path)

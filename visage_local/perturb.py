"""theta + a*d1 + b*d2, tensor by tensor, requantised to each tensor's own type.

For every perturbed tensor: dequantise to float32, add the scaled directions,
quantise back with ggml's kernel of the tensor's type. Excluded tensors and the
origin (a = b = 0) keep their original bytes untouched. One tensor is processed
at a time, its rows in chunks on parallel threads, so only one tensor's
direction is held in float32 at once, unless a cache budget allows keeping the
directions in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from visage_local import ggml, quant
from visage_local.gguf_model import GGUFModel, TensorInfo, atomic_copy


@dataclass(frozen=True)
class Point:
    """A point of the landscape: alpha along direction 1, beta along direction 2 (None in 1D)."""

    alpha: float
    beta: float | None = None

    @property
    def is_origin(self) -> bool:
        """True at a = b = 0, where the model is the original."""
        return self.alpha == 0 and not self.beta

    def coefficients(self) -> tuple[float, ...]:
        """The multipliers of the directions, in order."""
        return (self.alpha,) if self.beta is None else (self.alpha, self.beta)


class Direction(Protocol):
    """A direction in weight space, produced one tensor at a time."""

    def excludes(self, tensor_name: str) -> bool:
        """True when the direction is zero on the tensor."""
        ...

    def tensor(self, tensor_name: str, weights: np.ndarray) -> np.ndarray | None:
        """The direction on one tensor (float32, the weights' shape), or None when zero."""
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
    ):
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
        self._cache_left = cache_bytes
        self._cache: dict[str, list[np.ndarray | None]] = {}

    def _directions(self, info: TensorInfo) -> tuple[list[np.ndarray | None], np.ndarray | None]:
        """The directions on one tensor, and its dequantised weights when they had to be read.

        Directions are kept in memory while the cache budget allows: drawing one
        costs far more than dequantising the weights again.
        """
        cached = self._cache.get(info.name)
        if cached is not None:
            return cached, None
        weights = self.model.dequantize(info, self.threads)
        dirs = [d.tensor(info.name, weights) for d in self.directions]
        size = sum(d.nbytes for d in dirs if d is not None)
        if size <= self._cache_left:
            self._cache_left -= size
            self._cache[info.name] = dirs
        return dirs, weights

    def values(self, info: TensorInfo, point: Point) -> np.ndarray:
        """The perturbed tensor in float32, before requantisation."""
        dirs, weights = self._directions(info)
        out = self.model.dequantize(info, self.threads) if weights is None else weights
        for coefficient, direction in zip(point.coefficients(), dirs, strict=False):
            if direction is not None and coefficient:
                out += np.float32(coefficient) * direction
        return out

    def tensor_bytes(self, info: TensorInfo, point: Point) -> np.ndarray:
        """The tensor's raw bytes at ``point``, in its own type; original bytes at the origin.

        Rows are dequantised, moved and requantised in chunks on ``threads`` threads.
        """
        raw = self.model.raw(info)
        if point.is_origin or info.name not in self._target_names:
            return np.array(raw)
        dirs, weights = self._directions(info)
        steps = [
            (np.float32(c), d)
            for c, d in zip(point.coefficients(), dirs, strict=False)
            if d is not None and c
        ]
        out = np.empty_like(raw)

        def chunk(first: int, count: int):
            def run() -> None:
                rows = slice(first, first + count)
                if weights is None:
                    values = quant.dequantize(raw[rows], info.qtype, info.n_per_row)
                else:
                    values = weights[rows].copy()
                for coefficient, direction in steps:
                    values += coefficient * direction[rows]
                out[rows] = quant.quantize(values, info.qtype)

            return run

        chunks = ggml.row_chunks(info.n_rows, info.n_per_row)
        ggml.run_parallel([chunk(first, count) for first, count in chunks], self.threads)
        return out

    def tensors_at(self, point: Point) -> Iterator[tuple[TensorInfo, np.ndarray]]:
        """(tensor, raw bytes at ``point``) for every perturbed tensor, in file order."""
        for info in self.targets:
            yield info, self.tensor_bytes(info, point)


def export_perturbed(
    perturbation: Perturbation,
    point: Point,
    out_path: str | os.PathLike,
    on_tensor: Callable[[TensorInfo], None] | None = None,
) -> Path:
    """Write the model at ``point`` as a GGUF file (atomically: no partial file on failure)."""
    with atomic_copy(perturbation.model, out_path) as copy:
        for info, raw in perturbation.tensors_at(point):
            copy.write_tensor(info, raw)
            if on_tensor:
                on_tensor(info)
    return Path(out_path)

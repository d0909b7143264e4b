"""theta + a*d1 + b*d2, tensor by tensor, requantised to each tensor's own type.

For every perturbed tensor: dequantise to float32, add the scaled directions,
quantise back with ggml's kernel of the tensor's type. Excluded tensors and the
origin (a = b = 0) keep their original bytes untouched. Tensors are processed
in parallel threads with a bounded window, so only a few are held in float32 at
once unless a cache budget allows keeping weights and directions in memory.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from visage_local import quant
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
        self._cache_left = cache_bytes
        self._cache: dict[str, tuple[np.ndarray, list[np.ndarray | None]]] = {}

    def _weights_and_directions(self, info: TensorInfo) -> tuple[np.ndarray, list]:
        cached = self._cache.get(info.name)
        if cached is not None:
            return cached
        weights = self.model.dequantize(info)
        dirs = [d.tensor(info.name, weights) for d in self.directions]
        size = weights.nbytes + sum(d.nbytes for d in dirs if d is not None)
        if size <= self._cache_left:
            self._cache_left -= size
            self._cache[info.name] = (weights, dirs)
        return weights, dirs

    def values(self, info: TensorInfo, point: Point) -> np.ndarray:
        """The perturbed tensor in float32, before requantisation."""
        weights, dirs = self._weights_and_directions(info)
        out = weights.copy()
        for coefficient, direction in zip(point.coefficients(), dirs, strict=False):
            if direction is not None and coefficient:
                out += np.float32(coefficient) * direction
        return out

    def tensor_bytes(self, info: TensorInfo, point: Point) -> np.ndarray:
        """The tensor's raw bytes at ``point``, in its own type; original bytes at the origin."""
        if point.is_origin or info not in self.targets:
            return np.array(self.model.raw(info))
        return quant.quantize(self.values(info, point), info.qtype)

    def tensors_at(self, point: Point) -> Iterator[tuple[TensorInfo, np.ndarray]]:
        """(tensor, raw bytes at ``point``) for every perturbed tensor, in file order."""
        return _bounded_map(
            lambda info: (info, self.tensor_bytes(info, point)), self.targets, self.threads
        )


def _bounded_map(fn: Callable, items: Iterable, threads: int) -> Iterator:
    """map(fn, items) over a thread pool, in order, with at most 2 x threads items in flight."""
    if threads <= 1:
        yield from map(fn, items)
        return
    window: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * threads:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


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

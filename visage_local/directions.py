"""Seeded per-tensor Gaussian directions with layer normalisation.

A random direction is never stored whole. For every tensor its values come from
a random stream of their own, derived from (seed, direction index, tensor name):

    entropy = [seed, index] + the eight big-endian uint32 words of sha256(name)
    stream  = numpy.random.Generator(PCG64(SeedSequence(entropy)))
    g       = stream.standard_normal((rows, values per row), dtype=float32)

so any tensor's direction can be regenerated alone, in any order, on any
machine, byte for byte. Layer normalisation (the paper's ``norm_type: layer``)
scales g to the norm of that tensor's dequantised weights:

    d = g / ||g|| * ||W||

Tensors whose name contains an excluded pattern (by default ``norm``: RMSNorm
and LayerNorm weights, as in the reference code's blacklist) get no direction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

# The reference code's blacklist: tensors whose (lower-case) name contains one of these.
DEFAULT_EXCLUDE: tuple[str, ...] = ("norm",)

_NORM_CHUNK_ELEMENTS = 1 << 22


def tensor_stream(seed: int, index: int, tensor_name: str) -> np.random.Generator:
    """The random stream of one tensor of direction ``index`` for ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError("seed and direction index must be non-negative")
    digest = hashlib.sha256(tensor_name.encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "big") for i in range(0, 32, 4)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index, *words])))


def l2_norm(values: np.ndarray) -> float:
    """Euclidean norm accumulated in float64, chunk by chunk (no float64 copy of the whole)."""
    flat = values.reshape(-1)
    total = 0.0
    for start in range(0, flat.size, _NORM_CHUNK_ELEMENTS):
        chunk = flat[start : start + _NORM_CHUNK_ELEMENTS].astype(np.float64)
        total += float(np.dot(chunk, chunk))
    return float(np.sqrt(total))


def is_excluded(tensor_name: str, exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> bool:
    """True when the tensor is left unperturbed (its lower-case name contains a pattern)."""
    lowered = tensor_name.lower()
    return any(pattern.lower() in lowered for pattern in exclude)


@dataclass(frozen=True)
class RandomDirection:
    """A layer-normalised Gaussian direction over all tensors of a model."""

    seed: int
    index: int = 0
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE

    def excludes(self, tensor_name: str) -> bool:
        """True when this direction is zero on the tensor."""
        return is_excluded(tensor_name, self.exclude)

    def gaussian(self, tensor_name: str, shape: tuple[int, int]) -> np.ndarray:
        """The raw standard Gaussian draw for one tensor (shape (rows, values per row))."""
        stream = tensor_stream(self.seed, self.index, tensor_name)
        return stream.standard_normal(shape, dtype=np.float32)

    def tensor(self, tensor_name: str, weights: np.ndarray) -> np.ndarray | None:
        """The direction on one tensor, given its dequantised weights; None when excluded."""
        if self.excludes(tensor_name):
            return None
        g = self.gaussian(tensor_name, weights.shape)
        g_norm = l2_norm(g)
        scale = l2_norm(weights) / g_norm if g_norm > 0 else 0.0
        g *= np.float32(scale)
        return g

    def describe(self) -> dict[str, object]:
        """What determines this direction, for summaries and config hashes."""
        return {
            "kind": "random",
            "seed": self.seed,
            "index": self.index,
            "normalisation": "layer",
            "exclude": list(self.exclude),
        }

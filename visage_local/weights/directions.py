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

A MoE file stores a layer's experts in one 3-D tensor (``ffn_gate_exps``,
``ffn_up_exps``, ``ffn_down_exps`` and their biases) where the checkpoint the
reference perturbs has one tensor per expert; such a tensor is normalised per
expert slice (``slices``), as the reference normalises each expert's tensor.

A tensor's direction can also be produced in blocks of rows from the same stream
(``blocks``), byte for byte the rows of the whole array, once its scale is known
(``scale``: one pass over the stream): a model's largest tensor then never
needs its direction in memory whole.

Tensors a ``TensorSelection`` leaves out get no direction: by default those whose
name contains ``norm`` (RMSNorm and LayerNorm weights, as in the reference code's
blacklist); ``--exclude`` adds patterns, ``--include`` keeps only matching tensors.
Tensors that exist only in GGUF files (``GGUF_ONLY``: RoPE frequency factors, which a
Hugging Face checkpoint computes rather than stores) are never moved.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

# The reference code's blacklist: tensors whose (lower-case) name contains one of these.
DEFAULT_EXCLUDE: tuple[str, ...] = ("norm",)

# GGUF tensors with no counterpart in the checkpoint the reference perturbs: llama.cpp's
# precomputed RoPE frequency factors (Llama 3.x, Phi-3 and others with long-context RoPE).
# No selection moves them.
GGUF_ONLY: tuple[str, ...] = ("rope_freqs.weight", "rope_factors_long.weight",
                              "rope_factors_short.weight")  # fmt: skip

_NORM_CHUNK_ELEMENTS = 1 << 22


def tensor_stream(seed: int, index: int, tensor_name: str) -> np.random.Generator:
    """The random stream of one tensor of direction ``index`` for ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError("seed and direction index must be non-negative")
    digest = hashlib.sha256(tensor_name.encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "big") for i in range(0, 32, 4)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index, *words])))


class NormAccumulator:
    """The Euclidean norm of values given in pieces, accumulated in float64 over fixed
    chunks of the concatenation, so any split of the same values gives the same float."""

    def __init__(self) -> None:
        self._total = 0.0
        self._pending: list[np.ndarray] = []
        self._pending_size = 0

    def add(self, values: np.ndarray) -> None:
        """Append values (any shape; taken in C order)."""
        flat = values.reshape(-1)
        while flat.size:
            take = min(flat.size, _NORM_CHUNK_ELEMENTS - self._pending_size)
            self._pending.append(flat[:take])
            self._pending_size += take
            flat = flat[take:]
            if self._pending_size == _NORM_CHUNK_ELEMENTS:
                self._flush()

    def _flush(self) -> None:
        if self._pending:
            chunk = np.concatenate(self._pending).astype(np.float64)
            self._total += float(np.dot(chunk, chunk))
        self._pending, self._pending_size = [], 0

    def norm(self) -> float:
        """The norm of everything added so far."""
        self._flush()
        return float(np.sqrt(self._total))


def l2_norm(values: np.ndarray) -> float:
    """Euclidean norm accumulated in float64, chunk by chunk (no float64 copy of the whole)."""
    accumulator = NormAccumulator()
    accumulator.add(values)
    return accumulator.norm()


def direction_block_rows(n_per_row: int) -> int:
    """Rows per block when a direction is drawn in blocks (about 16 MiB of float32)."""
    return max(1, _NORM_CHUNK_ELEMENTS // n_per_row)


def layer_scale(weights_norm: float, gaussian_norm: float) -> np.float32:
    """||W|| / ||g||: what layer normalisation multiplies a Gaussian draw by."""
    return np.float32(weights_norm / gaussian_norm if gaussian_norm > 0 else 0.0)


def slices(tensor_name: str, shape: tuple[int, ...]) -> int:
    """How many separately normalised slices a tensor has: a MoE expert tensor
    (``*_exps``) one per expert (its last GGUF dimension), any other tensor one."""
    return shape[-1] if "_exps" in tensor_name and len(shape) > 1 else 1


class SliceNorms:
    """The norms of a tensor's equal slices of rows, from rows given top to bottom in
    blocks of any size (each slice's norm the same float however the rows are split)."""

    def __init__(self, n_rows: int, n_slices: int):
        if n_rows % n_slices:
            raise ValueError(f"{n_rows} rows do not split into {n_slices} equal slices")
        self.rows_per_slice = n_rows // n_slices
        self._accumulators = [NormAccumulator() for _ in range(n_slices)]
        self._next_row = 0

    def add(self, rows: np.ndarray) -> None:
        """The next rows of the tensor (shape (count, values per row))."""
        done = 0
        while done < len(rows):
            index, within = divmod(self._next_row, self.rows_per_slice)
            take = min(len(rows) - done, self.rows_per_slice - within)
            self._accumulators[index].add(rows[done : done + take])
            done += take
            self._next_row += take

    def norms(self) -> list[float]:
        """Each slice's norm."""
        return [a.norm() for a in self._accumulators]


def scale_rows(block: np.ndarray, first_row: int, rows_per_slice: int, factors) -> None:
    """Multiply rows ``first_row...`` of a tensor (``block``, in place) by their slice's factor."""
    if len(factors) == 1:
        block *= factors[0]
        return
    index = (first_row + np.arange(len(block))) // rows_per_slice
    block *= np.asarray(factors, dtype=np.float32)[index][:, None]


def matches(tensor_name: str, pattern: str) -> bool:
    """True when ``pattern`` names the tensor: a glob over the whole name when it holds
    ``*``, ``?`` or ``[``, else a part of the name; case does not matter."""
    name, pattern = tensor_name.lower(), pattern.lower()
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


@dataclass(frozen=True)
class TensorSelection:
    """Which tensors a direction moves: none that an ``exclude`` pattern matches and, when
    ``include`` is given, only those one of its patterns matches."""

    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    include: tuple[str, ...] = ()

    def excludes(self, tensor_name: str) -> bool:
        """True when the tensor is left unperturbed (GGUF-only tensors always are)."""
        if tensor_name in GGUF_ONLY or any(matches(tensor_name, p) for p in self.exclude):
            return True
        return bool(self.include) and not any(matches(tensor_name, p) for p in self.include)

    def describe(self) -> str:
        """``exclude: norm`` (and ``; include: ...`` when given), as summaries record it."""
        text = f"exclude: {', '.join(self.exclude)}" if self.exclude else "exclude: nothing"
        return text + (f"; include: {', '.join(self.include)}" if self.include else "")


def selection(exclude: tuple[str, ...] = (), include: tuple[str, ...] = ()) -> TensorSelection:
    """The default exclusions plus a user's ``--exclude`` patterns, and ``--include``."""
    return TensorSelection(DEFAULT_EXCLUDE + tuple(exclude), tuple(include))


@dataclass(frozen=True)
class RandomDirection:
    """A layer-normalised Gaussian direction over all tensors of a model."""

    seed: int
    index: int = 0
    tensors: TensorSelection = field(default_factory=TensorSelection)

    def excludes(self, tensor_name: str) -> bool:
        """True when this direction is zero on the tensor."""
        return self.tensors.excludes(tensor_name)

    def gaussian(self, tensor_name: str, shape: tuple[int, int]) -> np.ndarray:
        """The raw standard Gaussian draw for one tensor (shape (rows, values per row))."""
        stream = tensor_stream(self.seed, self.index, tensor_name)
        return stream.standard_normal(shape, dtype=np.float32)

    def tensor(self, tensor_name: str, weights: np.ndarray, n_slices: int = 1) -> np.ndarray | None:
        """The direction on one tensor, given its dequantised weights (rows, values per row)
        in ``n_slices`` equal slices of rows normalised apart; None when excluded."""
        if self.excludes(tensor_name):
            return None
        g = self.gaussian(tensor_name, weights.shape)
        rows = len(weights) // n_slices
        factors = [
            layer_scale(
                l2_norm(weights[i * rows : (i + 1) * rows]), l2_norm(g[i * rows : (i + 1) * rows])
            )
            for i in range(n_slices)
        ]
        scale_rows(g, 0, rows, factors)
        return g

    def scale(
        self, tensor_name: str, shape: tuple[int, int], weights_norms: list[float]
    ) -> list[np.float32]:
        """The factor ``tensor`` multiplies each slice of the Gaussian draw by, from the
        weights' slice norms, drawing the Gaussian in blocks (one pass, no whole array)."""
        norms = SliceNorms(shape[0], len(weights_norms))
        for block in self.blocks(tensor_name, shape, [np.float32(1)]):
            norms.add(block)
        return [layer_scale(w, g) for w, g in zip(weights_norms, norms.norms(), strict=True)]

    def blocks(
        self, tensor_name: str, shape: tuple[int, int], factors: list[np.float32]
    ) -> Iterator[np.ndarray]:
        """The direction on one tensor in blocks of rows, top to bottom, each the same
        bytes as those rows of ``tensor`` when ``factors`` are the tensor's own."""
        rows, per_row = shape
        block_rows = direction_block_rows(per_row)
        rows_per_slice = rows // len(factors)
        stream = tensor_stream(self.seed, self.index, tensor_name)
        for first in range(0, rows, block_rows):
            g = stream.standard_normal((min(block_rows, rows - first), per_row), dtype=np.float32)
            scale_rows(g, first, rows_per_slice, factors)
            yield g

    def describe(self) -> dict[str, object]:
        """What determines this direction, for summaries and config hashes."""
        return {
            "kind": "random",
            "seed": self.seed,
            "index": self.index,
            "normalisation": "layer",
            "exclude": list(self.tensors.exclude),
        } | ({"include": list(self.tensors.include)} if self.tensors.include else {})

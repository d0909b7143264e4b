"""llama.cpp's importance matrices, read as llama-quantize reads them.

An importance matrix holds, per weight matrix, the mean squared activation of each of its
input columns over a calibration text; the quantiser weighs each column's rounding error
by it. Two formats exist, and llama-quantize reads both:

- **GGUF** (llama-imatrix's output since 2025): metadata ``imatrix.datasets`` (string
  array), ``imatrix.chunk_count`` and ``imatrix.chunk_size``; per weight two F32 tensors,
  ``<weight>.in_sum2`` (the sums of squared activations: ``n_per_row`` values per matrix,
  one matrix or one per expert) and ``<weight>.counts`` (the tokens each matrix saw). A
  matrix's importance is ``in_sum2 / count`` (the count rounded to an integer); a matrix
  that saw no token gets 1 throughout. llama-quantize refuses a GGUF imatrix without the
  three metadata keys.
- **legacy** ``imatrix.dat``: int32 number of entries; per entry an int32 name length, the
  name, int32 ``ncall``, int32 ``nval`` and ``nval`` float32 values; then, optionally, an
  int32 chunk count, an int32 dataset name length and the name (all little-endian). The
  importance is the values / ``ncall`` (the values as written when ``ncall`` is 0).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from visage_local.errors import ConfigError, ModelFileError
from visage_local.gguf.header import GGUF_MAGIC, read_header, read_long_array
from visage_local.gguf.model import file_sha256

SUMS, COUNTS = ".in_sum2", ".counts"
METADATA = ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")


@dataclass(frozen=True)
class Imatrix:
    """An importance matrix: each weight's importances, as the quantiser takes them."""

    path: Path
    sha256: str
    values: dict[str, np.ndarray]  # weight name -> float32, n_per_row values per matrix
    datasets: tuple[str, ...]
    chunk_count: int
    legacy: bool


def read_imatrix(path: str | Path) -> Imatrix:
    """The importance matrix in ``path``, GGUF or legacy; ConfigError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--imatrix {path}: file not found")
    with path.open("rb") as f:
        magic = f.read(4)
    try:
        values, datasets, chunks = (_read_gguf if magic == GGUF_MAGIC else _read_legacy)(path)
    except (ModelFileError, struct.error, ValueError, OSError) as e:
        raise ConfigError(f"--imatrix {path}: not a readable importance matrix ({e})") from e
    if not values:
        raise ConfigError(f"--imatrix {path}: holds no importance matrix")
    return Imatrix(path, file_sha256(path), values, datasets, chunks, magic != GGUF_MAGIC)


def _read_gguf(path: Path) -> tuple[dict[str, np.ndarray], tuple[str, ...], int]:
    header = read_header(path)
    missing = [key for key in METADATA if key not in header.metadata]
    if missing:
        raise ValueError(f"no {', '.join(missing)} (llama-quantize refuses it too)")
    datasets = header.metadata["imatrix.datasets"]
    if not isinstance(datasets, list):
        datasets = read_long_array(path, datasets)
    found: dict[str, dict[str, np.ndarray]] = {}
    for entry in header.tensors:
        for suffix in (SUMS, COUNTS):
            if entry.name.endswith(suffix):
                if entry.type_id != GGMLQuantizationType.F32:
                    raise ValueError(f"{entry.name} is not F32")
                count = int(np.prod(entry.shape))
                data = np.fromfile(path, np.float32, count, offset=entry.offset)
                if data.size != count:
                    raise ValueError(f"{entry.name} runs past the end of the file")
                found.setdefault(entry.name.removesuffix(suffix), {})[suffix] = data
    values = {}
    for name, pair in found.items():
        if set(pair) != {SUMS, COUNTS}:
            raise ValueError(f"{name} has sums and counts mismatched")
        counts = np.rint(pair[COUNTS]).astype(np.float32)
        sums = pair[SUMS].reshape(len(counts), -1)
        safe = np.where(counts > 0, counts, 1)[:, None]
        values[name] = (
            np.where(counts[:, None] > 0, sums / safe, 1.0).reshape(-1).astype(np.float32)
        )
    return values, tuple(datasets), int(header.metadata["imatrix.chunk_count"])


def _read_legacy(path: Path) -> tuple[dict[str, np.ndarray], tuple[str, ...], int]:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        out = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return out

    (n_entries,) = take("i")
    if n_entries < 1:
        raise ValueError("no entries")
    values = {}
    for _ in range(n_entries):
        (length,) = take("i")
        name = data[pos : pos + length].decode("utf-8")
        pos += length
        ncall, nval = take("ii")
        if nval < 1:
            raise ValueError(f"{name}: {nval} values")
        sums = np.frombuffer(data, np.float32, nval, pos).copy()
        pos += 4 * nval
        values[name] = sums / ncall if ncall > 0 else sums
    chunks, datasets = 0, ()
    if pos + 4 <= len(data):  # the trailing chunk count and dataset name are optional
        (chunks,) = take("i")
        if pos + 4 <= len(data):
            (length,) = take("i")
            if length > 0:
                datasets = (data[pos : pos + length].decode("utf-8"),)
    return values, datasets, chunks

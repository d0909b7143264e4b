"""ctypes bindings to ggml's quantisation kernels inside llama-cpp-python's libggml.

visage-local quantises and dequantises with the very kernels llama.cpp uses, so a
perturbed tensor is encoded exactly as `llama-quantize` (without an importance
matrix; with a uniform one for the types that require one) would encode it. Only five functions are bound; they are thread-safe and
ctypes releases the GIL while they run, so row chunks run in parallel threads.
"""

from __future__ import annotations

import ctypes
import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np

# Elements handed to one kernel call; large enough to amortise the call, small
# enough to spread a tensor over the threads.
_CHUNK_ELEMENTS = 1 << 20


class _TypeTraits(ctypes.Structure):
    """`struct ggml_type_traits` from ggml.h (the vendored llama.cpp of the pinned wheel)."""

    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_ToFloat = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def _library_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise RuntimeError("llama-cpp-python is not installed")
    return Path(spec.origin).parent / "lib"


@cache
def _lib() -> ctypes.CDLL:
    lib_dir = _library_dir()
    for name in ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll", "libggml.so"):
        path = lib_dir / name
        if path.exists():
            lib = ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL if hasattr(os, "RTLD_GLOBAL") else 0)
            break
    else:
        raise RuntimeError(f"no ggml library found in {lib_dir}")
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_row_size.restype = ctypes.c_size_t
    return lib


@cache
def _traits(type_id: int) -> tuple[int, int, bool, _ToFloat | None]:
    t = _lib().ggml_get_type_traits(type_id).contents
    to_float = _ToFloat(t.to_float) if t.to_float else None
    return int(t.blck_size), int(t.type_size), bool(t.is_quantized), to_float


def type_name(type_id: int) -> str:
    """ggml's own name of a tensor type, e.g. ``q4_K``."""
    return _lib().ggml_get_type_traits(type_id).contents.type_name.decode()


def block_size(type_id: int) -> int:
    """Number of values in one block of the type."""
    return _traits(type_id)[0]


def row_size(type_id: int, n_per_row: int) -> int:
    """Bytes of one row of ``n_per_row`` values in the type."""
    return int(_lib().ggml_row_size(type_id, n_per_row))


def requires_imatrix(type_id: int) -> bool:
    """True when ggml cannot quantise to this type without an importance matrix."""
    return bool(_lib().ggml_quantize_requires_imatrix(type_id))


def row_chunks(n_rows: int, n_per_row: int, threads: int = 1) -> list[tuple[int, int]]:
    """(first row, row count) pairs that split a tensor into chunks of at most about
    ``_CHUNK_ELEMENTS`` values, their number a multiple of ``threads`` (when there are
    rows enough), so every thread gets an equal share, small tensors included."""
    threads = max(1, threads)
    rounds = max(1, math.ceil(n_rows * n_per_row / (_CHUNK_ELEMENTS * threads)))
    rows_per_chunk = max(1, math.ceil(n_rows / (rounds * threads)))
    return [(r, min(rows_per_chunk, n_rows - r)) for r in range(0, n_rows, rows_per_chunk)]


def run_parallel(tasks: list, threads: int) -> None:
    """Run argument-less callables on up to ``threads`` threads; re-raise the first error."""
    if threads <= 1 or len(tasks) <= 1:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(task) for task in tasks]:
            future.result()


def quantize(
    values: np.ndarray, type_id: int, threads: int = 1, importance: np.ndarray | None = None
) -> np.ndarray:
    """Quantise float32 ``values`` of shape (rows, n_per_row) into the raw bytes of ``type_id``.

    Returns a uint8 array of shape (rows, row_size) laid out as in a GGUF file.
    ``importance``: the importance of each column (an importance matrix's entry), or of each
    column of each of k matrices stacked in the rows (experts: k * n_per_row values). Without
    one, types that need it (``requires_imatrix``) are encoded with a uniform one.
    """
    src = np.ascontiguousarray(values, dtype=np.float32)
    if src.ndim != 2:
        raise ValueError("quantize expects a 2-D array (rows, values per row)")
    n_rows, n_per_row = src.shape
    if n_per_row % block_size(type_id):
        raise ValueError(
            f"{type_name(type_id)} needs rows of a multiple of {block_size(type_id)} values"
        )
    if importance is not None and importance.size != n_per_row:
        matrices = importance.size // n_per_row
        if importance.size % n_per_row or n_rows % matrices:
            raise ValueError(f"{importance.size} importances do not fit rows of {n_per_row}")
        rows = n_rows // matrices
        parts = np.split(importance.reshape(matrices, n_per_row), matrices)
        return np.concatenate(
            [
                quantize(src[m * rows : (m + 1) * rows], type_id, threads, part.reshape(-1))
                for m, part in enumerate(parts)
            ]
        )
    # Types ggml will not encode without an importance matrix get a uniform one: every
    # column weighs the same, which is what the other types assume without one.
    if importance is None and requires_imatrix(type_id):
        importance = np.ones(n_per_row, dtype=np.float32)
    weights = None if importance is None else np.ascontiguousarray(importance, np.float32)
    imatrix = None if weights is None else weights.ctypes.data
    bytes_per_row = row_size(type_id, n_per_row)
    dst = np.empty((n_rows, bytes_per_row), dtype=np.uint8)
    lib = _lib()
    src_ptr = src.ctypes.data
    dst_ptr = dst.ctypes.data

    def task(first: int, count: int):
        def call() -> None:
            lib.ggml_quantize_chunk(
                type_id,
                src_ptr + first * n_per_row * 4,
                dst_ptr + first * bytes_per_row,
                0,
                count,
                n_per_row,
                imatrix,
            )

        return call

    run_parallel(
        [task(first, count) for first, count in row_chunks(n_rows, n_per_row, threads)], threads
    )
    return dst


def dequantize(raw: np.ndarray, type_id: int, n_per_row: int, threads: int = 1) -> np.ndarray:
    """Decode the raw bytes of ``type_id`` (shape (rows, row_size)) into float32 (rows, n_per_row)."""
    to_float = _traits(type_id)[3]
    if to_float is None:
        raise ValueError(f"ggml has no dequantize kernel for {type_name(type_id)}")
    src = np.ascontiguousarray(raw).view(np.uint8)
    bytes_per_row = row_size(type_id, n_per_row)
    n_rows = src.size // bytes_per_row
    if n_rows * bytes_per_row != src.size:
        raise ValueError("raw data is not a whole number of rows")
    dst = np.empty((n_rows, n_per_row), dtype=np.float32)
    src_ptr = src.ctypes.data
    dst_ptr = dst.ctypes.data

    def task(first: int, count: int):
        def call() -> None:
            to_float(
                src_ptr + first * bytes_per_row,
                dst_ptr + first * n_per_row * 4,
                count * n_per_row,
            )

        return call

    run_parallel(
        [task(first, count) for first, count in row_chunks(n_rows, n_per_row, threads)], threads
    )
    return dst

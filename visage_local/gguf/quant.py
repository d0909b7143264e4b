"""Dequantise and requantise one tensor; which tensor types visage-local supports.

A tensor is handled as a 2-D array of rows: ``n_per_row`` values (GGUF's ne0) per
row, every other dimension folded into the rows. Raw bytes are a uint8 array of
shape (rows, bytes per row), exactly as they lie in the GGUF file.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from visage_local.errors import ModelFileError
from visage_local.gguf import ggml

# The types a perturbed tensor can be read in and written back to.
SUPPORTED_TYPES: frozenset[GGMLQuantizationType] = frozenset(
    {
        GGMLQuantizationType.F32,
        GGMLQuantizationType.F16,
        GGMLQuantizationType.BF16,
        GGMLQuantizationType.Q8_0,
        GGMLQuantizationType.Q4_0,
        GGMLQuantizationType.Q4_1,
        GGMLQuantizationType.Q5_0,
        GGMLQuantizationType.Q5_1,
        GGMLQuantizationType.Q2_K,
        GGMLQuantizationType.Q3_K,
        GGMLQuantizationType.Q4_K,
        GGMLQuantizationType.Q5_K,
        GGMLQuantizationType.Q6_K,
        GGMLQuantizationType.IQ1_S,
        GGMLQuantizationType.IQ1_M,
        GGMLQuantizationType.IQ2_XXS,
        GGMLQuantizationType.IQ2_XS,
        GGMLQuantizationType.IQ2_S,
        GGMLQuantizationType.IQ3_XXS,
        GGMLQuantizationType.IQ3_S,
        GGMLQuantizationType.IQ4_NL,
        GGMLQuantizationType.IQ4_XS,
        GGMLQuantizationType.TQ1_0,
        GGMLQuantizationType.TQ2_0,
        GGMLQuantizationType.MXFP4,
    }
)
# ggml encodes these too, but no decoder independent of ggml exists to test it against
# (gguf-py's numpy quants do not have them yet), so they are refused for now.
UNTESTED_TYPES = frozenset({GGMLQuantizationType.NVFP4, GGMLQuantizationType.Q1_0})


def uses_uniform_imatrix(qtype: GGMLQuantizationType) -> bool:
    """True when ggml needs an importance matrix to encode ``qtype``, so that visage-local
    requantises it with a uniform one (the file was most likely made with a real one)."""
    return qtype != GGMLQuantizationType.F32 and ggml.requires_imatrix(int(qtype))


class UnsupportedTensorType(ModelFileError):
    """A tensor's type cannot be dequantised or requantised by visage-local."""


def is_supported(qtype: GGMLQuantizationType) -> bool:
    """True when tensors of ``qtype`` can be perturbed."""
    return qtype in SUPPORTED_TYPES


def check_supported(name: str, qtype: GGMLQuantizationType) -> None:
    """Raise UnsupportedTensorType naming the tensor when its type cannot be perturbed."""
    if not is_supported(qtype):
        why = (
            "untested here: no decoder independent of ggml to check it against"
            if qtype in UNTESTED_TYPES
            else "not a type llama.cpp's quantiser writes"
        )
        raise UnsupportedTensorType(
            f"tensor {name!r} has type {qtype.name}, which visage-local cannot requantise "
            f"({why}); leave it out with --exclude {name}, or pass another file"
        )


def dequantize(raw: np.ndarray, qtype: GGMLQuantizationType, n_per_row: int, threads: int = 1):
    """Decode raw tensor bytes to float32 of shape (rows, n_per_row) with ggml's kernels."""
    if qtype == GGMLQuantizationType.F32:
        return np.ascontiguousarray(raw).view(np.float32).reshape(-1, n_per_row).copy()
    return ggml.dequantize(raw.reshape(-1), int(qtype), n_per_row, threads)


def quantize(
    values: np.ndarray,
    qtype: GGMLQuantizationType,
    threads: int = 1,
    importance: np.ndarray | None = None,
) -> np.ndarray:
    """Encode float32 values of shape (rows, n_per_row) as raw bytes of ``qtype``, weighing
    each column by ``importance`` when given (``ggml.quantize``)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if qtype == GGMLQuantizationType.F32:
        return values.view(np.uint8).reshape(values.shape[0], -1).copy()
    return ggml.quantize(values, int(qtype), threads, importance)


def row_bytes(qtype: GGMLQuantizationType, n_per_row: int) -> int:
    """Bytes one row of ``n_per_row`` values takes in ``qtype``."""
    if qtype == GGMLQuantizationType.F32:
        return 4 * n_per_row
    return ggml.row_size(int(qtype), n_per_row)

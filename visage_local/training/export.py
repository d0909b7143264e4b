"""Write trained weights as a GGUF file that llama.cpp loads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from visage_local.files import atomic_replace
from visage_local.gguf import quant
from visage_local.gguf.model import GGUFModel, TensorInfo, write_retyped

EXPORT_TYPES = {
    "f16": GGMLQuantizationType.F16,
    "q8_0": GGMLQuantizationType.Q8_0,
    "same": None,
}


def export_type(info: TensorInfo, choice: str) -> GGMLQuantizationType:
    """The type a tensor is written in: 1-D tensors (norms) stay F32; ``same`` keeps the source's."""
    target = EXPORT_TYPES[choice]
    if len(info.shape) == 1 or target is None:
        return info.qtype
    return target


def export_gguf(
    source: GGUFModel,
    weights: dict[str, np.ndarray],
    path: str | os.PathLike,
    choice: str,
    name: str,
    threads: int = 1,
) -> Path:
    """Write ``weights`` (float32 by GGUF tensor name) with ``source``'s metadata and tensor
    order, each tensor in ``export_type``; ``general.name`` becomes ``name``. Atomic."""
    path = Path(path)
    retype = {info.name: export_type(info, choice) for info in source.tensors}

    def encode(info: TensorInfo) -> np.ndarray:
        values = np.asarray(weights[info.name], dtype=np.float32).reshape(
            info.n_rows, info.n_per_row
        )
        return quant.quantize(values, retype[info.name], threads)

    with atomic_replace(path, ".partial") as tmp:
        write_retyped(source, tmp, retype, encode, overrides={"general.name": name})
    return path

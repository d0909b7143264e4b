"""llama.cpp's own quantiser, as community uploads are made.

``quantize_model`` calls ``llama_model_quantize`` with an upload type (``Q4_K_M``, ...; the
``LLAMA_FTYPE_MOSTLY_<name>`` of llama.cpp) and, given one, an importance matrix, which it
hands over as llama-quantize does: one ``llama_model_imatrix_data`` per weight, and the
matrix's file, dataset, entry count and chunk count written into the file's metadata
(``quantize.imatrix.*``).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import llama_cpp

from visage_local.engine.llama import quiet_llama_logs
from visage_local.errors import ConfigError, ModelFileError
from visage_local.gguf.imatrix import Imatrix

# Upload types llama.cpp's quantiser makes without an importance matrix.
UPLOAD_TYPES = (
    "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "Q3_K_M", "Q2_K", "IQ4_XS", "IQ4_NL", "IQ3_M", "BF16",
)  # fmt: skip
# Types made only with one: those llama-quantize refuses without it, and IQ3_XXS, whose
# tensor types change with it.
NEEDS_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "Q2_K_S", "IQ3_XXS")


def ftype_id(ftype: str) -> int:
    """llama.cpp's number of an upload type; ConfigError naming some when there is none."""
    found = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}", None)
    if found is None:
        raise ConfigError(f"llama.cpp has no file type {ftype!r} (e.g. {', '.join(UPLOAD_TYPES)})")
    return found


def quantize_model(
    source: str | os.PathLike,
    out: str | os.PathLike,
    ftype: str,
    threads: int = 2,
    imatrix: Imatrix | None = None,
) -> Path:
    """Re-encode ``source`` into upload type ``ftype`` with llama_model_quantize (with
    ``imatrix`` when given: a type in NEEDS_IMATRIX is refused without one)."""
    quiet_llama_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype_id(ftype)
    if ftype in NEEDS_IMATRIX and imatrix is None:
        raise ConfigError(f"{ftype} needs an importance matrix: give --imatrix FILE")
    params.allow_requantize = True
    params.nthread = threads
    keep = []  # what the C structures point into lives until the call returns
    if imatrix is not None:
        entries, overrides, keep = _imatrix_params(imatrix)
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        params.kv_overrides = ctypes.cast(
            overrides, ctypes.POINTER(llama_cpp.llama_model_kv_override)
        )
    if llama_cpp.llama_model_quantize(
        str(source).encode(), str(out).encode(), ctypes.byref(params)
    ):
        raise ModelFileError(f"llama_model_quantize could not write {ftype} from {source}")
    del keep
    return Path(out)


def _imatrix_params(imatrix: Imatrix) -> tuple:
    """The importance matrix as llama_model_quantize takes it, the metadata llama-quantize
    writes beside it, and the buffers both point into."""
    names = [name.encode() for name in imatrix.values]
    arrays = [imatrix.values[name] for name in imatrix.values]
    entries = (llama_cpp.llama_model_imatrix_data * (len(names) + 1))()
    for entry, name, values in zip(entries, names, arrays, strict=False):
        entry.name = name
        entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entry.size = values.size
    metadata: list[tuple[str, str | int]] = [("quantize.imatrix.file", str(imatrix.path))]
    if imatrix.datasets:
        metadata.append(("quantize.imatrix.dataset", imatrix.datasets[0]))
    metadata.append(("quantize.imatrix.entries_count", len(names)))
    if imatrix.chunk_count > 0:
        metadata.append(("quantize.imatrix.chunks_count", imatrix.chunk_count))
    overrides = (llama_cpp.llama_model_kv_override * (len(metadata) + 1))()
    for override, (key, value) in zip(overrides, metadata, strict=False):
        override.key = key.encode()
        if isinstance(value, int):
            override.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
            override.value.val_i64 = value
        else:
            override.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
            override.value.val_str = value.encode()[:127]
    return entries, overrides, (names, arrays)

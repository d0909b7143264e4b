"""Open a GGUF file: metadata, tensors, sha256; write a copy with new tensor bytes.

The header is parsed by ``gguf_header`` (long token lists stay in the file) and
tensor bytes are read on demand (seek and read), so opening a model costs neither
a copy of its weights nor resident pages of them. A perturbed model that keeps
every tensor's type is written as a byte copy of the input whose tensor data
regions are overwritten in place, which keeps metadata, tensor order, alignment
and padding identical to the original file. Only when tensors change type
(``--requant``) is the file written anew with gguf-py's ``GGUFWriter``.

A split model (``NAME-00001-of-00003.gguf`` and its siblings, as llama.cpp's
gguf-split writes them) is read as one: any part names it, metadata comes from the
first part, tensors from the part that holds each. Copies of it are written as one
merged file, which llama.cpp loads alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, GGUFWriter, Keys

from visage_local.errors import ModelFileError
from visage_local.files import atomic_replace
from visage_local.gguf import quant
from visage_local.gguf.header import (
    GGUFHeader,
    LongArray,
    TensorEntry,
    read_header,
    read_long_array,
)


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a GGUF file and how it is encoded."""

    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]  # GGUF order: shape[0] (ne0) is the number of values per row
    n_elements: int
    n_bytes: int
    offset: int  # absolute byte offset of the tensor data in its file
    part: int = 0  # the file of a split model that holds it (0: the first, or the only one)

    @property
    def n_per_row(self) -> int:
        """Values per row (GGUF's ne0)."""
        return self.shape[0]

    @property
    def n_rows(self) -> int:
        """Rows: every dimension but the first, folded together."""
        return self.n_elements // self.shape[0]


SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_parts(path: Path) -> list[Path]:
    """Every file of the model ``path`` names: its parts, first to last, when it is one part of
    a split model, else ``[path]``. A missing part is an error naming it."""
    match = SPLIT_NAME.match(path.name)
    if match is None:
        return [path]
    count = int(match["count"])
    parts = [
        path.with_name(f"{match['prefix']}-{i:05d}-of-{count:05d}.gguf")
        for i in range(1, count + 1)
    ]
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise ModelFileError(f"{path}: split model without its part {', '.join(missing)}")
    return parts


def is_model_file(path: Path) -> bool:
    """True for a GGUF model file or the first part of a split model (not a later part, not
    a multimodal projector)."""
    if not path.name.endswith(".gguf") or path.name.lower().startswith("mmproj"):
        return False
    match = SPLIT_NAME.match(path.name)
    return match is None or int(match["part"]) == 1


class GGUFModel:
    """A GGUF model: its header, parsed once, and its tensors, read on demand. ``path``
    may name any part of a split model (``path`` is then its first part)."""

    def __init__(self, path: str | os.PathLike):
        self.parts = split_parts(Path(path))
        self.path = self.parts[0]
        self._header = _read_header(self.path)
        self.tensors: list[TensorInfo] = [_tensor_info(self.path, e) for e in self._header.tensors]
        for index, part in enumerate(self.parts[1:], start=1):
            header = _read_header(part)
            self.tensors += [_tensor_info(part, e, index) for e in header.tensors]
        self._by_name = {t.name: t for t in self.tensors}
        self._check_tensors()

    @property
    def is_split(self) -> bool:
        """True for a model stored in several files."""
        return len(self.parts) > 1

    @property
    def bits_per_weight(self) -> float:
        """Bits a weight takes on average over every tensor (the figure quant tables give)."""
        return 8 * sum(t.n_bytes for t in self.tensors) / sum(t.n_elements for t in self.tensors)

    @property
    def size(self) -> int:
        """Bytes of the model's file, or files."""
        return sum(p.stat().st_size for p in self.parts)

    def _check_tensors(self) -> None:
        """Refuse tensor tables that cannot describe real data (a damaged or hostile header)."""
        sizes = [p.stat().st_size for p in self.parts]
        if len(self._by_name) != len(self.tensors):
            raise ModelFileError(f"{self.path}: two tensors share a name")
        for t in self.tensors:
            if not t.shape or min(t.shape) < 1 or t.n_elements != math.prod(t.shape):
                raise ModelFileError(
                    f"{self.path}: tensor {t.name!r} has an invalid shape {t.shape}"
                )
            if t.offset < 0 or t.offset + t.n_bytes > sizes[t.part]:
                raise ModelFileError(
                    f"{self.parts[t.part]}: tensor {t.name!r} runs past the end of the file"
                )

    def tensor(self, name: str) -> TensorInfo:
        """The tensor called ``name``; KeyError when the file has none."""
        return self._by_name[name]

    def metadata(self, key: str, default=None):
        """A metadata value (scalar, string or list), or ``default`` when absent."""
        value = self._header.metadata.get(key, default)
        return read_long_array(self.path, value) if isinstance(value, LongArray) else value

    def array_length(self, key: str) -> int | None:
        """The length of a metadata array without reading it; None when absent or not an array."""
        value = self._header.metadata.get(key)
        if isinstance(value, LongArray):
            return value.length
        return len(value) if isinstance(value, list) else None

    def metadata_items(self) -> Iterator[tuple[str, object, GGUFValueType, GGUFValueType | None]]:
        """Every metadata entry, long arrays read: (key, value, value type, array item type)."""
        for key in self._header.metadata:
            value_type, item_type = self._header.value_types[key]
            yield (
                key,
                self.metadata(key),
                GGUFValueType(value_type),
                None if item_type is None else GGUFValueType(item_type),
            )

    @property
    def architecture(self) -> str:
        """The ``general.architecture`` value, e.g. ``llama``."""
        return str(self.metadata("general.architecture", "unknown"))

    @property
    def name(self) -> str:
        """The model's ``general.name``, or the file name."""
        return str(self.metadata("general.name", self.path.stem))

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template stored in the file, if any."""
        value = self.metadata("tokenizer.chat_template")
        return str(value) if value else None

    @property
    def parameter_count(self) -> int:
        """Total number of weight values over all tensors."""
        return sum(t.n_elements for t in self.tensors)

    @cached_property
    def sha256(self) -> str:
        """Hex sha256 of the whole file (of a split model: of its parts' bytes in order)."""
        return file_sha256(*self.parts)

    def raw(self, info: TensorInfo) -> np.ndarray:
        """A copy of the tensor's bytes, uint8 of shape (rows, bytes per row).

        Read from the file rather than through a memory map, so that reading a whole
        model leaves none of its pages counted in this process's resident memory.
        """
        return self.raw_rows(info, 0, info.n_rows)

    def raw_rows(self, info: TensorInfo, first: int, count: int) -> np.ndarray:
        """A copy of rows ``first`` to ``first + count`` of the tensor's bytes."""
        row_bytes = info.n_bytes // info.n_rows
        flat = np.empty(count * row_bytes, dtype=np.uint8)
        start = info.offset + first * row_bytes
        view, got = memoryview(flat), 0
        with self.parts[info.part].open("rb", buffering=0) as f:
            f.seek(start)
            while got < flat.size and (n := f.readinto(view[got:])):
                got += n
        if got != flat.size:
            raise ModelFileError(
                f"{self.parts[info.part]}: tensor {info.name!r} runs past the end of the file"
            )
        return flat.reshape(count, row_bytes)

    def dequantize(self, info: TensorInfo, threads: int = 1) -> np.ndarray:
        """The tensor's values as float32 of shape (rows, values per row)."""
        quant.check_supported(info.name, info.qtype)
        return quant.dequantize(self.raw(info), info.qtype, info.n_per_row, threads)


def _read_header(path: Path) -> GGUFHeader:
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a GGUF file")
    try:
        return read_header(path)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror})") from e
    except MemoryError as e:
        raise ModelFileError(f"{path}: malformed GGUF header (declares absurd sizes)") from e


def _tensor_info(path: Path, entry: TensorEntry, part: int = 0) -> TensorInfo:
    try:
        qtype = GGMLQuantizationType(entry.type_id)
    except ValueError:
        raise ModelFileError(
            f"{path}: tensor {entry.name!r} has an unknown type {entry.type_id}"
        ) from None
    block, type_size = GGML_QUANT_SIZES[qtype]
    if entry.shape[0] % block:
        raise ModelFileError(
            f"{path}: tensor {entry.name!r} has rows of {entry.shape[0]} values, "
            f"not whole {qtype.name} blocks of {block}"
        )
    n_elements = math.prod(entry.shape)
    return TensorInfo(
        name=entry.name,
        qtype=qtype,
        shape=entry.shape,
        n_elements=n_elements,
        n_bytes=n_elements * type_size // block,
        offset=entry.offset,
        part=part,
    )


# file_sha256's results, by each file's resolved path, size and modification time: a run
# names its model's hash in several places (the check's folder, the run's guard, the
# records), and a 5 GB file takes seconds to read
_SHA256_CACHE: dict[tuple, str] = {}


def file_sha256(*paths: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file (of several: of their bytes one after the other), read in chunks;
    read once per process while the files keep their inode, size and modification time."""
    key = tuple(
        (str(Path(p).resolve()), (st := os.stat(p)).st_ino, st.st_size, st.st_mtime_ns)
        for p in paths
    )
    if key in _SHA256_CACHE:
        return _SHA256_CACHE[key]
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]


class GGUFCopy:
    """A copy of a GGUF file whose tensor data can be overwritten in place.

    Without ``retype`` the copy is a byte copy of the source. With it, the named
    tensors are stored in other types: the header is written anew (same metadata,
    same tensor order) and every tensor's initial bytes come from ``initial``.
    Tensor bytes written later keep each tensor's size, so the header stays
    valid. Writes go through ``pwrite`` (seek and write where the system has none)
    into the page cache, so a llama.cpp model that maps the file sees every write at
    once, and this process maps nothing.
    """

    def __init__(
        self,
        source: GGUFModel,
        path: str | os.PathLike,
        retype: dict[str, GGMLQuantizationType] | None = None,
        initial: Callable[[TensorInfo], np.ndarray] | None = None,
    ):
        self.source = source
        self.path = Path(path)
        if retype or source.is_split:  # written anew (a split model: merged into one file)
            if retype and initial is None:
                raise ValueError("a retyped copy needs the initial bytes of its tensors")
            write_retyped(source, self.path, retype or {}, initial or source.raw)
            self.tensors = {t.name: t for t in GGUFModel(self.path).tensors}
        else:
            shutil.copyfile(source.path, self.path)
            self.tensors = {t.name: t for t in source.tensors}  # a byte copy: same offsets
        self._fd: int | None = os.open(self.path, os.O_RDWR | getattr(os, "O_BINARY", 0))

    def write_tensor(self, name: str, raw: np.ndarray) -> None:
        """Overwrite one tensor's data with ``raw`` (same number of bytes)."""
        info = self.tensors[name]
        data = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
        if data.size != info.n_bytes:
            raise ValueError(
                f"tensor {name!r}: {data.size} bytes given, the file holds {info.n_bytes}"
            )
        write_at(self._fd, memoryview(data), info.offset)

    def write_rows(self, info: TensorInfo, first_row: int, rows: np.ndarray) -> None:
        """Overwrite rows ``first_row``, ... of tensor ``info.name`` with ``rows`` (each row
        the tensor's row size in this copy)."""
        own = self.tensors[info.name]
        data = np.ascontiguousarray(rows).reshape(-1).view(np.uint8)
        row_bytes = own.n_bytes // own.n_rows
        if data.size % row_bytes or first_row * row_bytes + data.size > own.n_bytes:
            raise ValueError(f"tensor {info.name!r}: rows {first_row}+ do not fit the file's")
        write_at(self._fd, memoryview(data), own.offset + first_row * row_bytes)

    def close(self) -> None:
        """Close the file (the bytes written are in the page cache, visible to mappings)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# os.pwrite is POSIX only (not on Windows); tests turn it off to run the other route.
HAS_PWRITE = hasattr(os, "pwrite")


def write_at(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at byte ``offset`` of the open file ``fd``: with pwrite, or a
    seek and writes where the system has no pwrite."""
    written = 0
    if HAS_PWRITE:
        while written < len(data):
            written += os.pwrite(fd, data[written:], offset + written)
        return
    os.lseek(fd, offset, os.SEEK_SET)
    while written < len(data):
        written += os.write(fd, data[written:])


def write_retyped(
    source: GGUFModel,
    path: Path,
    retype: dict[str, GGMLQuantizationType],
    data: Callable[[TensorInfo], np.ndarray],
    overrides: dict[str, str] | None = None,
) -> None:
    """Write ``source`` to ``path`` with some tensors in other types.

    Metadata and tensor order are kept, except string values named in ``overrides`` and
    a split model's ``split.*`` keys (the copy is one file); ``data(info)`` gives each
    tensor's bytes in its new type (``info`` is the source tensor).
    """
    overrides = overrides or {}
    writer = GGUFWriter(str(path), source.architecture)
    alignment = source.metadata("general.alignment")
    if alignment:
        writer.data_alignment = int(alignment)
    for key, value, value_type, item_type in source.metadata_items():
        if key == Keys.General.ARCHITECTURE or key in overrides or key.startswith("split."):
            continue
        writer.add_key_value(key, value, value_type, sub_type=item_type)
    for key, value in overrides.items():
        writer.add_string(key, value)
    for info in source.tensors:
        qtype = retype.get(info.name, info.qtype)
        n_bytes = info.n_rows * quant.row_bytes(qtype, info.n_per_row)
        writer.add_tensor_info(info.name, info.shape[::-1], np.float32, n_bytes, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for info in source.tensors:
        writer.write_tensor_data(np.ascontiguousarray(data(info)).reshape(-1).view(np.uint8))
    writer.close()


@contextlib.contextmanager
def atomic_copy(
    source: GGUFModel,
    out_path: str | os.PathLike,
    retype: dict[str, GGMLQuantizationType] | None = None,
    initial: Callable[[TensorInfo], np.ndarray] | None = None,
) -> Iterator[GGUFCopy]:
    """A GGUFCopy written beside ``out_path`` and renamed onto it only when the block succeeds.

    An exception or interrupt inside the block removes the partial file, so no
    half-written OUT.gguf is ever left behind.
    """
    out_path = Path(out_path)
    out_dir = out_path.resolve().parent
    if not out_dir.is_dir():
        raise ModelFileError(f"{out_dir}: output folder does not exist")
    with atomic_replace(out_path, ".partial") as tmp:
        copy = GGUFCopy(source, tmp, retype, initial)
        try:
            yield copy
        finally:
            copy.close()

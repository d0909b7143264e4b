"""Open a GGUF file: metadata, tensor views, sha256; write a copy with new tensor bytes.

Reading goes through gguf-py's memory-mapped ``GGUFReader``, so opening a model
costs no copy of its weights. A perturbed model that keeps every tensor's type
is written as a byte copy of the input whose tensor data regions are
overwritten in place, which keeps metadata, tensor order, alignment and padding
identical to the original file. Only when tensors change type (``--requant``)
is the file written anew with gguf-py's ``GGUFWriter``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, Keys

from visage_local import quant
from visage_local.errors import ModelFileError
from visage_local.files import fsync_dir, give_default_mode

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a GGUF file and how it is encoded."""

    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]  # GGUF order: shape[0] (ne0) is the number of values per row
    n_elements: int
    n_bytes: int
    offset: int  # absolute byte offset of the tensor data in the file

    @property
    def n_per_row(self) -> int:
        """Values per row (GGUF's ne0)."""
        return self.shape[0]

    @property
    def n_rows(self) -> int:
        """Rows: every dimension but the first, folded together."""
        return self.n_elements // self.shape[0]


class GGUFModel:
    """A GGUF model file opened read-only through a memory map."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._reader = _open_reader(self.path)
        self.tensors: list[TensorInfo] = [
            TensorInfo(
                name=t.name,
                qtype=GGMLQuantizationType(int(t.tensor_type)),
                shape=tuple(int(d) for d in t.shape),
                n_elements=int(t.n_elements),
                n_bytes=int(t.n_bytes),
                offset=int(t.data_offset),
            )
            for t in self._reader.tensors
        ]
        self._by_name = {t.name: t for t in self.tensors}
        self._check_tensors()

    def _check_tensors(self) -> None:
        """Refuse tensor tables that cannot describe real data (a damaged or hostile header)."""
        size = self.path.stat().st_size
        if len(self._by_name) != len(self.tensors):
            raise ModelFileError(f"{self.path}: two tensors share a name")
        for t in self.tensors:
            if not t.shape or min(t.shape) < 1 or t.n_elements != math.prod(t.shape):
                raise ModelFileError(
                    f"{self.path}: tensor {t.name!r} has an invalid shape {t.shape}"
                )
            if t.offset < 0 or t.offset + t.n_bytes > size:
                raise ModelFileError(
                    f"{self.path}: tensor {t.name!r} runs past the end of the file"
                )

    def tensor(self, name: str) -> TensorInfo:
        """The tensor called ``name``; KeyError when the file has none."""
        return self._by_name[name]

    def metadata(self, key: str, default=None):
        """A scalar, string or small array metadata value, or ``default`` when absent."""
        field = self._reader.fields.get(key)
        if field is None:
            return default
        return self._contents(field)

    def _contents(self, field):
        try:
            return field.contents()
        except (UnicodeDecodeError, ValueError, IndexError) as e:
            raise ModelFileError(f"{self.path}: metadata {field.name!r} is malformed ({e})") from e

    def metadata_summary(self) -> dict[str, object]:
        """Every metadata value except long arrays (token lists), which are given as lengths."""
        out: dict[str, object] = {}
        for key, field in self._reader.fields.items():
            if field.types and field.types[0] == GGUFValueType.ARRAY and len(field.data) > 16:
                out[key] = f"<array of {len(field.data)}>"
            else:
                out[key] = self._contents(field)
        return out

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
        """Hex sha256 of the whole file."""
        return file_sha256(self.path)

    def raw(self, info: TensorInfo) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of shape (rows, bytes per row)."""
        flat = self._reader.data[info.offset : info.offset + info.n_bytes]
        if flat.size != info.n_bytes:
            raise ModelFileError(f"{self.path}: tensor {info.name!r} runs past the end of the file")
        return flat.reshape(info.n_rows, -1)

    def dequantize(self, info: TensorInfo, threads: int = 1) -> np.ndarray:
        """The tensor's values as float32 of shape (rows, values per row)."""
        quant.check_supported(info.name, info.qtype)
        return quant.dequantize(self.raw(info), info.qtype, info.n_per_row, threads)


def _open_reader(path: Path) -> GGUFReader:
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a GGUF file")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror})") from e
    if magic != GGUF_MAGIC:
        raise ModelFileError(f"{path}: not a GGUF file (it does not start with 'GGUF')")
    try:
        return GGUFReader(path, "r")
    except MemoryError as e:
        raise ModelFileError(f"{path}: malformed GGUF header (declares absurd sizes)") from e
    except Exception as e:  # gguf-py raises many kinds on damaged headers
        raise ModelFileError(f"{path}: malformed or truncated GGUF file ({e})") from e


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class GGUFCopy:
    """A copy of a GGUF file whose tensor data can be overwritten in place.

    Without ``retype`` the copy is a byte copy of the source. With it, the named
    tensors are stored in other types: the header is written anew (same metadata,
    same tensor order) and every tensor's initial bytes come from ``initial``.
    Tensor bytes written later keep each tensor's size, so the header stays
    valid. The copy is memory-mapped read-write; a llama.cpp model that maps the
    same file sees every write at once.
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
        if retype:
            if initial is None:
                raise ValueError("a retyped copy needs the initial bytes of its tensors")
            write_retyped(source, self.path, retype, initial)
        else:
            shutil.copyfile(source.path, self.path)
        self.tensors = {t.name: t for t in GGUFModel(self.path).tensors}
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r+")

    def write_tensor(self, name: str, raw: np.ndarray) -> None:
        """Overwrite one tensor's data with ``raw`` (same number of bytes)."""
        info = self.tensors[name]
        data = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
        if data.size != info.n_bytes:
            raise ValueError(
                f"tensor {name!r}: {data.size} bytes given, the file holds {info.n_bytes}"
            )
        self._map[info.offset : info.offset + info.n_bytes] = data

    def close(self) -> None:
        """Flush and unmap."""
        if self._map is not None:
            self._map.flush()
            self._map._mmap.close()  # release the mapping now, not at garbage collection
            self._map = None


def write_retyped(
    source: GGUFModel,
    path: Path,
    retype: dict[str, GGMLQuantizationType],
    data: Callable[[TensorInfo], np.ndarray],
    overrides: dict[str, str] | None = None,
) -> None:
    """Write ``source`` to ``path`` with some tensors in other types.

    Metadata and tensor order are kept, except string values named in ``overrides``;
    ``data(info)`` gives each tensor's bytes in its new type (``info`` is the source tensor).
    """
    overrides = overrides or {}
    reader = source._reader
    writer = GGUFWriter(str(path), source.architecture)
    alignment = source.metadata("general.alignment")
    if alignment:
        writer.data_alignment = int(alignment)
    for field in reader.fields.values():
        if field.name == Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name in overrides:
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".partial", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        copy = GGUFCopy(source, tmp, retype, initial)
        try:
            yield copy
        finally:
            copy.close()
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        give_default_mode(tmp)
        os.replace(tmp, out_path)
        fsync_dir(out_dir)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

"""Read a GGUF header: metadata and the tensor table, without materialising token lists.

gguf-py's ``GGUFReader`` builds one numpy view per element of every metadata
array; for a 151,936-token vocabulary that is about 550 MiB of Python objects.
A sweep needs the tensor table and a handful of scalars, so this reader walks
the header once, keeps scalars, strings and short arrays, and records long
arrays by position, reading them only when asked.

Layout (GGUF v2/v3, little-endian): magic ``GGUF``, version (u32), tensor count
(u64), metadata count (u64); each metadata entry is a key (u64 length + UTF-8),
a value type (u32) and the value; each tensor entry is a name, the number of
dimensions (u32), the dimensions (u64 each), the type (u32) and the data offset
(u64) relative to the data section, which starts at the next multiple of
``general.alignment`` (default 32) after the header.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from visage_local.errors import ModelFileError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
SHORT_ARRAY = 64  # arrays up to this many elements are read with the header

# GGUF value types: struct format of the scalar ones; 8 is STRING, 9 is ARRAY.
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class LongArray:
    """A metadata array left in the file: its element type, length and where it starts."""

    item_type: int
    length: int
    offset: int


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor table."""

    name: str
    shape: tuple[int, ...]  # GGUF order: shape[0] (ne0) is the number of values per row
    type_id: int
    offset: int  # absolute byte offset of the tensor data in the file


@dataclass
class GGUFHeader:
    """The parsed header: metadata (long arrays as ``LongArray``) and the tensor table."""

    version: int
    metadata: dict[str, object]
    value_types: dict[str, tuple[int, int | None]]  # (value type, array item type)
    tensors: list[TensorEntry]
    data_offset: int


class _Cursor:
    """Reads little-endian values from a memory map, refusing to run past its end."""

    def __init__(self, data: mmap.mmap, path: Path):
        self.data = data
        self.path = path
        self.pos = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ModelFileError(f"{self.path}: truncated GGUF header")
        value = struct.unpack_from("<" + fmt, self.data, self.pos)[0]
        self.pos += size
        return value

    def skip(self, n_bytes: int) -> None:
        if n_bytes < 0 or self.pos + n_bytes > len(self.data):
            raise ModelFileError(f"{self.path}: truncated GGUF header")
        self.pos += n_bytes

    def string(self) -> str:
        length = self.take("Q")
        start = self.pos
        self.skip(length)
        try:
            return bytes(self.data[start : self.pos]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ModelFileError(f"{self.path}: a metadata string is not UTF-8") from e

    def scalar(self, value_type: int):
        if value_type in _SCALARS:
            return self.take(_SCALARS[value_type])
        if value_type == _STRING:
            return self.string()
        raise ModelFileError(f"{self.path}: unknown metadata value type {value_type}")

    def array(self) -> tuple[list | LongArray, int]:
        """An array value (its elements, or a LongArray past SHORT_ARRAY) and its item type."""
        item_type, length = self.take("I"), self.take("Q")
        if item_type not in _SCALARS and item_type != _STRING:
            raise ModelFileError(f"{self.path}: unsupported metadata array type {item_type}")
        if length > len(self.data):
            raise ModelFileError(f"{self.path}: a metadata array declares {length} elements")
        if length <= SHORT_ARRAY:
            return [self.scalar(item_type) for _ in range(length)], item_type
        start = self.pos
        if item_type in _SCALARS:
            self.skip(length * struct.calcsize(_SCALARS[item_type]))
        else:
            for _ in range(length):
                self.skip(self.take("Q"))
        return LongArray(item_type, length, start), item_type


def read_header(path: Path) -> GGUFHeader:
    """Parse the header of the GGUF file at ``path``; ModelFileError when it is not one."""
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelFileError(f"{path}: not a GGUF file (it does not start with 'GGUF')")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _parse(_Cursor(data, path))


def read_long_array(path: Path, array: LongArray) -> list:
    """The elements of a metadata array that the header left in the file."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cursor = _Cursor(data, path)
        cursor.pos = array.offset
        return [cursor.scalar(array.item_type) for _ in range(array.length)]


def _parse(cursor: _Cursor) -> GGUFHeader:
    path = cursor.path
    cursor.skip(4)
    version = cursor.take("I")
    if version not in (2, 3):
        raise ModelFileError(f"{path}: unsupported GGUF version {version}")
    n_tensors, n_kv = cursor.take("Q"), cursor.take("Q")
    # every metadata entry takes at least 12 bytes and every tensor entry at least 24
    if n_kv * 12 + n_tensors * 24 > len(cursor.data):
        raise ModelFileError(f"{path}: header declares {n_tensors} tensors, {n_kv} entries")
    metadata: dict[str, object] = {}
    value_types: dict[str, int] = {}
    for _ in range(n_kv):
        key = cursor.string()
        value_type = cursor.take("I")
        if value_type == _ARRAY:
            metadata[key], item_type = cursor.array()
            value_types[key] = (value_type, item_type)
        else:
            metadata[key] = cursor.scalar(value_type)
            value_types[key] = (value_type, None)
    entries = []
    for _ in range(n_tensors):
        name = cursor.string()
        n_dims = cursor.take("I")
        if not 1 <= n_dims <= 4:
            raise ModelFileError(f"{path}: tensor {name!r} has {n_dims} dimensions")
        shape = tuple(cursor.take("Q") for _ in range(n_dims))
        entries.append((name, shape, cursor.take("I"), cursor.take("Q")))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ModelFileError(f"{path}: invalid general.alignment {alignment!r}")
    data_offset = -(-cursor.pos // alignment) * alignment
    tensors = [
        TensorEntry(name, shape, type_id, data_offset + offset)
        for name, shape, type_id, offset in entries
    ]
    return GGUFHeader(version, metadata, value_types, tensors, data_offset)

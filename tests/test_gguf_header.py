"""The header reader against gguf-py's GGUFReader: every field, tensor and offset."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFWriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visage_local.errors import VisageError
from visage_local.gguf.header import SHORT_ARRAY, read_header
from visage_local.gguf.model import GGUFModel


def assert_same_as_gguf_py(path) -> None:
    """Every metadata entry (type and value, long arrays included), every tensor's name,
    type, shape, size and absolute offset, and the data section's start equal GGUFReader's."""
    ours = GGUFModel(path)
    reference = GGUFReader(path)
    fields = {k: f for k, f in reference.fields.items() if not k.startswith("GGUF.")}
    assert [k for k, *_ in ours.metadata_items()] == list(fields)
    for key, value, value_type, item_type in ours.metadata_items():
        field = fields[key]
        assert [value_type, *([item_type] if item_type is not None else [])] == field.types, key
        want = field.contents()
        if isinstance(want, float) or (
            isinstance(want, list) and want and isinstance(want[0], float)
        ):
            np.testing.assert_array_equal(np.float32(value), np.float32(want), err_msg=key)
        else:
            assert value == want, key
    header = read_header(Path(path))
    assert header.version == int(reference.fields["GGUF.version"].parts[-1][0])
    assert header.data_offset == reference.data_offset
    assert len(ours.tensors) == len(reference.tensors)
    for mine, theirs in zip(ours.tensors, reference.tensors, strict=True):
        assert mine.name == theirs.name
        assert mine.qtype == theirs.tensor_type, mine.name
        assert list(mine.shape) == [int(x) for x in theirs.shape], mine.name
        assert (mine.n_elements, mine.n_bytes) == (theirs.n_elements, theirs.n_bytes), mine.name
        assert mine.offset == theirs.data_offset, mine.name


def _every_value_type(path, long: int) -> None:
    """A GGUF holding one entry of each scalar type, strings, and arrays of each item type
    both shorter and longer than the reader keeps in memory (SHORT_ARRAY)."""
    writer = GGUFWriter(str(path), "llama")
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -100)
    writer.add_uint16("t.u16", 60000)
    writer.add_int16("t.i16", -30000)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -2_000_000_000)
    writer.add_float32("t.f32", 0.1)
    writer.add_uint64("t.u64", 1 << 60)
    writer.add_int64("t.i64", -(1 << 60))
    writer.add_float64("t.f64", 0.1)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "naïve ☃ text")
    writer.add_string("t.empty", "")
    for n in (0, 3, long):
        writer.add_array(f"t.ints{n}", list(range(n)))
        writer.add_array(f"t.floats{n}", [i / 3 for i in range(n)])
        writer.add_array(f"t.strs{n}", [f"token-{i}-é" for i in range(n)])
        writer.add_array(f"t.bools{n}", [i % 2 == 0 for i in range(n)])
    writer.add_tensor("blk.0.w.weight", np.arange(64, dtype=np.float32).reshape(2, 32))
    writer.add_tensor("blk.0.v.weight", np.ones((3, 2, 16), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_every_metadata_type_and_long_arrays_read_like_gguf_py(tmp_path):
    path = tmp_path / "types.gguf"
    _every_value_type(path, SHORT_ARRAY + 5)
    assert_same_as_gguf_py(path)
    model = GGUFModel(path)
    assert model.metadata("t.str") == "naïve ☃ text" and model.metadata("t.f64") == 0.1
    assert model.array_length(f"t.strs{SHORT_ARRAY + 5}") == SHORT_ARRAY + 5


def test_the_tiny_model_of_every_type_reads_like_gguf_py(tiny_gguf):
    assert_same_as_gguf_py(tiny_gguf)


# One real file: SmolLM2's (a 49k BPE vocabulary with merges). Every value type and arrays
# longer than the short-array limit are covered above; gguf-py took 25 s over Gemma's 262k
# tokens and 20 s over Qwen's, which CI's time budget could not spare.
def test_a_registry_model_reads_like_gguf_py(smollm2):
    assert_same_as_gguf_py(smollm2)


@settings(
    max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1, max_size=4)
)
def test_a_damaged_header_that_we_accept_gguf_py_reads_the_same(tiny_gguf, tmp_path, edits):
    """The fuzz corpus of test_fuzz: wherever the reader accepts a damaged header, what it
    read is what gguf-py reads (it never accepts a file other than gguf-py sees it)."""
    data = bytearray(tiny_gguf.read_bytes())
    header_end = read_header(tiny_gguf).data_offset
    for position, value in edits:
        data[position % header_end] = value
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(bytes(data))
    with contextlib.suppress(VisageError):
        GGUFModel(damaged)
        assert_same_as_gguf_py(damaged)

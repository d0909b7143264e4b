"""ggml's kernels against gguf-py's numpy code, and requantisation of dequantised weights."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ALL_SUPPORTED, GGUF_PY_CODED
from gguf import GGMLQuantizationType, quants

from visage_local.gguf import ggml, quant
from visage_local.gguf.model import GGUFModel
from visage_local.weights.directions import RandomDirection

# Types whose ggml quantiser is not idempotent: requantising the dequantised values moves them.
# Bounds on ||requant(deq(W)) - deq(W)|| / ||deq(W)||, measured on tiny and real tensors (docs/NOTES.md).
NOT_IDEMPOTENT_BOUND = {
    GGMLQuantizationType.Q3_K: 0.05,
    GGMLQuantizationType.Q4_K: 0.01,
    GGMLQuantizationType.Q5_K: 0.01,
    GGMLQuantizationType.Q6_K: 0.005,
    GGMLQuantizationType.IQ4_XS: 0.01,
}


def _relative_change(model: GGUFModel, info) -> tuple[float, bool]:
    values = model.dequantize(info)
    raw = quant.quantize(values, info.qtype)
    again = quant.dequantize(raw, info.qtype, info.n_per_row)
    norm = float(np.linalg.norm(values))
    change = float(np.linalg.norm(again - values)) / norm if norm else 0.0
    return change, bool(np.array_equal(raw, model.raw(info)))


def test_tiny_model_has_every_supported_type(tiny_gguf):
    model = GGUFModel(tiny_gguf)
    assert {t.qtype for t in model.tensors} == set(ALL_SUPPORTED)


@pytest.mark.parametrize("qtype", ALL_SUPPORTED, ids=lambda t: t.name)
def test_ggml_dequantize_matches_gguf_py_on_tiny_tensors(tiny_gguf, qtype):
    model = GGUFModel(tiny_gguf)
    info = next(t for t in model.tensors if t.qtype == qtype)
    ours = model.dequantize(info)
    reference = quants.dequantize(model.raw(info), qtype).reshape(ours.shape)
    assert np.abs(ours - reference).max() == 0.0


# Types whose encoder rounds each value or block directly (no search for scales), so that
# values already on the type's grid are encoded to the same bytes.
ROUNDING_TYPES = {GGMLQuantizationType[name] for name in (
    "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0", "MXFP4")}  # fmt: skip


@pytest.mark.parametrize("qtype", ALL_SUPPORTED, ids=lambda t: t.name)
def test_requantising_dequantised_values_moves_them_less_than_encoding_did(qtype):
    """Rounding types give the same bytes back. The K and IQ types search for scales (the
    IQ1/IQ2 ones with a uniform importance matrix), so a value already on the grid may be
    encoded elsewhere: by less, relative to the values, than encoding moved them first."""
    values = (np.random.default_rng(int(qtype)).standard_normal((8, 512)) * 0.05).astype(np.float32)
    raw = quant.quantize(values, qtype)
    decoded = quant.dequantize(raw, qtype, 512)
    again = quant.quantize(decoded, qtype)
    if qtype in ROUNDING_TYPES or qtype == GGMLQuantizationType.F32:
        assert np.array_equal(again, raw)
        return
    encoding = np.linalg.norm(decoded - values) / np.linalg.norm(values)
    moved = np.linalg.norm(quant.dequantize(again, qtype, 512) - decoded)
    assert moved / np.linalg.norm(decoded) < encoding


@pytest.mark.parametrize("which", ["smollm2", "qwen", "gemma"])
def test_every_tensor_of_real_models_dequantizes_like_gguf_py(which, request):
    model = GGUFModel(request.getfixturevalue(which))
    worst: dict[str, float] = {}
    for info in model.tensors:
        ours = model.dequantize(info, threads=2)
        reference = quants.dequantize(model.raw(info), info.qtype).reshape(ours.shape)
        diff = float(np.abs(ours - reference).max())
        worst[info.qtype.name] = max(worst.get(info.qtype.name, 0.0), diff)
    print(which, "max abs diff per type:", worst)
    assert all(d == 0.0 for d in worst.values()), worst


@pytest.mark.parametrize("which", ["smollm2", "qwen", "gemma"])
def test_real_models_requantise_to_the_same_values(which, request):
    model = GGUFModel(request.getfixturevalue(which))
    for info in model.tensors:
        change, _ = _relative_change(model, info)
        assert change <= NOT_IDEMPOTENT_BOUND.get(info.qtype, 0.0), (info.name, info.qtype, change)


# gguf-py's numpy encoders, and F16, whose numpy cast rounds to nearest even as ggml's does.
GGUF_PY_ENCODERS = [GGMLQuantizationType.F16, *GGUF_PY_CODED]


def _independent_encoding(values: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    if qtype == GGMLQuantizationType.F16:
        return values.astype(np.float16).view(np.uint8)
    return quants.quantize(values, qtype)


@pytest.mark.parametrize("qtype", GGUF_PY_ENCODERS, ids=lambda t: t.name)
def test_requantised_bytes_equal_gguf_pys_encoder_on_real_and_moved_tensors(smollm2, qtype):
    model = GGUFModel(smollm2)
    for name in ("blk.0.attn_q.weight", "blk.11.ffn_up.weight", "blk.29.ffn_down.weight"):
        values = model.dequantize(model.tensor(name))
        moved = values + np.float32(0.1) * RandomDirection(123).tensor(name, values)
        for v in (values, moved):  # the model's own weights, and weights off their grid
            ours = quant.quantize(v, qtype, threads=2)
            assert np.array_equal(ours, _independent_encoding(v, qtype).reshape(ours.shape)), name


def test_unsupported_type_is_a_clear_error_naming_the_tensor():
    with pytest.raises(
        quant.UnsupportedTensorType, match=r"'blk.3.ffn_up.weight'.*NVFP4.*--exclude"
    ):
        quant.check_supported("blk.3.ffn_up.weight", GGMLQuantizationType.NVFP4)


@pytest.mark.parametrize(
    "n_rows,n_per_row,threads",
    [(512, 2048, 2), (3, 2048, 2), (1, 64, 4), (128256, 2048, 2), (4096, 14336, 8), (7, 256, 3)],
)
def test_row_chunks_give_every_thread_a_share_of_small_tensors_too(n_rows, n_per_row, threads):
    chunks = ggml.row_chunks(n_rows, n_per_row, threads)
    rows = [r for first, count in chunks for r in range(first, first + count)]
    assert rows == list(range(n_rows))  # every row once, in order
    largest = max(count for _, count in chunks) * n_per_row
    assert largest <= ggml._CHUNK_ELEMENTS + n_per_row  # about a chunk: one row more at most
    assert len(chunks) >= min(threads, n_rows)

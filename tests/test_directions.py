"""Seeded, layer-normalised per-tensor directions."""

from __future__ import annotations

import numpy as np

from visage_local.directions import RandomDirection, l2_norm, tensor_stream
from visage_local.gguf_model import GGUFModel


def test_direction_norm_equals_weight_norm_per_tensor(smollm2):
    model = GGUFModel(smollm2)
    direction = RandomDirection(123)
    checked = 0
    for info in model.tensors[:40]:
        weights = model.dequantize(info)
        d = direction.tensor(info.name, weights)
        if "norm" in info.name:
            assert d is None
            continue
        assert d.dtype == np.float32 and d.shape == weights.shape
        assert abs(l2_norm(d) - l2_norm(weights)) <= 1e-5 * l2_norm(weights)
        checked += 1
    assert checked > 10


def test_same_seed_same_bytes_other_seed_or_index_differs():
    weights = np.ones((64, 256), dtype=np.float32)
    a = RandomDirection(123).tensor("blk.0.attn_q.weight", weights)
    b = RandomDirection(123).tensor("blk.0.attn_q.weight", weights)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != RandomDirection(124).tensor("blk.0.attn_q.weight", weights).tobytes()
    assert a.tobytes() != RandomDirection(123, 1).tensor("blk.0.attn_q.weight", weights).tobytes()
    assert a.tobytes() != RandomDirection(123).tensor("blk.1.attn_q.weight", weights).tobytes()


def test_stream_mapping_is_the_documented_one():
    # Pins the documented derivation: SeedSequence([seed, index, sha256(name) as 8 big-endian words]).
    import hashlib

    digest = hashlib.sha256(b"token_embd.weight").digest()
    words = [int.from_bytes(digest[i : i + 4], "big") for i in range(0, 32, 4)]
    expected = np.random.Generator(np.random.PCG64(np.random.SeedSequence([7, 1, *words])))
    ours = tensor_stream(7, 1, "token_embd.weight")
    assert np.array_equal(
        ours.standard_normal(100, dtype=np.float32), expected.standard_normal(100, dtype=np.float32)
    )


def test_norm_tensors_are_excluded_and_patterns_are_configurable():
    weights = np.ones((4, 32), dtype=np.float32)
    assert RandomDirection(1).tensor("blk.0.attn_norm.weight", weights) is None
    assert RandomDirection(1).tensor("output_norm.weight", weights) is None
    custom = RandomDirection(1, exclude=("norm", "token_embd"))
    assert custom.tensor("token_embd.weight", weights) is None
    assert custom.tensor("blk.0.ffn_up.weight", weights) is not None


def test_zero_weights_get_a_zero_direction():
    d = RandomDirection(5).tensor("blk.0.attn_q.bias", np.zeros((1, 64), dtype=np.float32))
    assert not d.any()


def test_blocks_of_rows_are_the_whole_direction_byte_for_byte(smollm2):
    """The largest tensor's direction drawn in blocks equals the whole draw, and its
    scale, computed in one pass over blocks, equals the whole computation's."""
    model = GGUFModel(smollm2)
    info = model.tensor("token_embd.weight")
    weights = model.dequantize(info)
    direction = RandomDirection(123)
    whole = direction.tensor(info.name, weights)
    scale = direction.scale(info.name, weights.shape, l2_norm(weights))
    blocks = list(direction.blocks(info.name, weights.shape, scale))
    assert len(blocks) > 1
    assert np.concatenate(blocks).tobytes() == whole.tobytes()

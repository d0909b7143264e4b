"""Seeded, layer-normalised per-tensor directions."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_tiny_gguf
from gguf import GGMLQuantizationType, GGUFWriter

from visage_local.asking.prompts import load_prompts
from visage_local.cli.main import main
from visage_local.gguf.model import GGUFModel
from visage_local.run.prepared import prepare
from visage_local.run.settings import SweepConfig
from visage_local.weights.directions import RandomDirection, l2_norm, selection, tensor_stream
from visage_local.weights.perturb import Perturbation


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
    custom = RandomDirection(1, 0, selection(exclude=("token_embd",)))
    assert custom.tensor("token_embd.weight", weights) is None
    assert custom.tensor("blk.0.attn_norm.weight", weights) is None  # the default stays
    assert custom.tensor("blk.0.ffn_up.weight", weights) is not None


@pytest.mark.parametrize(
    ("exclude", "include", "moved"),
    [
        ((), (), {"blk.0.attn_q.weight", "blk.1.ffn_up.weight", "blk.10.ffn_up.weight",
                  "token_embd.weight"}),
        (("token_embd",), (), {"blk.0.attn_q.weight", "blk.1.ffn_up.weight",
                               "blk.10.ffn_up.weight"}),
        ((), ("ffn_",), {"blk.1.ffn_up.weight", "blk.10.ffn_up.weight"}),
        ((), ("blk.1.*",), {"blk.1.ffn_up.weight"}),  # a glob matches the whole name
        (("blk.1?.*",), ("FFN_UP",), {"blk.1.ffn_up.weight"}),  # case does not matter
        ((), ("rope",), set()),  # GGUF-only tensors never move
    ],
)  # fmt: skip
def test_exclude_and_include_patterns_choose_the_tensors_moved(exclude, include, moved):
    names = ["blk.0.attn_q.weight", "blk.0.attn_norm.weight", "blk.1.ffn_up.weight",
             "blk.10.ffn_up.weight", "token_embd.weight", "rope_freqs.weight"]  # fmt: skip
    tensors = selection(exclude, include)
    assert {n for n in names if not tensors.excludes(n)} == moved


def test_rope_frequencies_are_left_alone_and_named_in_the_run_settings(smollm2, tmp_path):
    """Llama 3.x files carry rope_freqs.weight, which the reference's checkpoint computes
    instead of storing: never perturbed, and named in the settings a run is hashed by.
    Models without it keep the settings text they always had (their runs still resume)."""
    path = write_tiny_gguf(tmp_path / "llama3.gguf", [GGMLQuantizationType.Q8_0])
    with_rope = tmp_path / "with-rope.gguf"
    source = GGUFModel(path)
    writer = GGUFWriter(str(with_rope), "llama")
    for info in source.tensors:
        writer.add_tensor(info.name, source.dequantize(info))
    writer.add_tensor("rope_freqs.weight", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    def settings(model_path):
        config = SweepConfig(model_path=model_path, prompts=load_prompts("builtin", 1))
        return prepare(config).result_config["directions"]

    assert settings(smollm2) == "random, layer-normalised, exclude: norm"
    assert settings(with_rope) == (
        "random, layer-normalised, exclude: norm, GGUF-only left alone: rope_freqs.weight"
    )
    p = Perturbation(GGUFModel(with_rope), [RandomDirection(1)])
    assert "rope_freqs.weight" not in {t.name for t in p.targets}
    shown = CliRunner().invoke(main, ["inspect", str(with_rope)])
    assert "(exclude: norm; GGUF-only: rope_freqs.weight)" in shown.output


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
    scale = direction.scale(info.name, weights.shape, [l2_norm(weights)])
    blocks = list(direction.blocks(info.name, weights.shape, scale))
    assert len(blocks) > 1
    assert np.concatenate(blocks).tobytes() == whole.tobytes()

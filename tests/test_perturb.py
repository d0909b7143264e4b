"""Perturbed models: tensors, exported GGUF files, and their use in llama.cpp."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import llama_cpp
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import GGUF_PY_CODED, displacement_at, metadata_of, write_tiny_gguf
from gguf import GGMLQuantizationType, quants

from visage_local.cli.main import main
from visage_local.engine.llama import Engine, EngineSettings
from visage_local.gguf import quant
from visage_local.gguf.model import GGUFModel, write_retyped
from visage_local.record import RunFolder
from visage_local.weights.directions import RandomDirection, selection
from visage_local.weights.perturb import Perturbation, Point, _blocks, export_perturbed


def test_origin_returns_the_original_bytes(tiny_gguf):
    model = GGUFModel(tiny_gguf)
    p = Perturbation(model, [RandomDirection(123)])
    for tensor in p.tensors_at(Point(0.0)):
        assert np.array_equal(tensor.raw, model.raw(tensor.info))
        assert tensor.displacement.ratio is None and tensor.displacement.cosine is None


def test_perturbed_values_are_weights_plus_scaled_direction(tiny_gguf):
    model = GGUFModel(tiny_gguf)
    d1, d2 = RandomDirection(123, 0), RandomDirection(123, 1)
    p = Perturbation(model, [d1, d2])
    info = model.tensor("blk.0.f32.weight")
    weights = model.dequantize(info)
    expected = weights + np.float32(0.25) * d1.tensor(info.name, weights)
    expected += np.float32(-0.1) * d2.tensor(info.name, weights)
    got = p.tensor_at(info, Point(0.25, -0.1)).raw.view(np.float32).reshape(weights.shape)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)


def _documented_direction(seed: int, index: int, name: str, weights: np.ndarray) -> np.ndarray:
    """The direction as weights/directions.py documents it, computed here with plain numpy: a
    Gaussian from PCG64 seeded by (seed, index, sha256(name) as eight big-endian words),
    scaled to the weights' norm."""
    digest = hashlib.sha256(name.encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "big") for i in range(0, 32, 4)]
    stream = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index, *words])))
    g = stream.standard_normal(weights.shape, dtype=np.float32)
    norm = np.linalg.norm(weights.astype(np.float64)) / np.linalg.norm(g.astype(np.float64))
    return g * np.float32(norm)


@pytest.mark.parametrize("point", [Point(0.1), Point(-0.3), Point(0.2, -0.15)], ids=str)
@pytest.mark.parametrize("model_fixture", ["tiny_gguf", "smollm2"])
def test_perturbed_bytes_equal_quantize_of_dequantized_weights_plus_the_step(
    model_fixture, point, request
):
    """Bytes of W at a point = quantize(dequantize(W) + a*d1 + b*d2), every part computed
    here: the direction from its documented stream, coding by gguf-py's numpy quants."""
    model = GGUFModel(request.getfixturevalue(model_fixture))
    p = Perturbation(model, [RandomDirection(123, 0), RandomDirection(123, 1)], threads=2)
    checked = 0
    for info in p.targets:
        if info.qtype not in GGUF_PY_CODED or "norm" in info.name:
            continue
        raw = model.raw(info)
        weights = quants.dequantize(raw, info.qtype).reshape(info.n_rows, info.n_per_row)
        step = np.float32(point.alpha) * _documented_direction(123, 0, info.name, weights)
        if point.beta is not None:
            step = step + np.float32(point.beta) * _documented_direction(123, 1, info.name, weights)
        want = quants.quantize(weights + step, info.qtype).reshape(raw.shape)
        assert np.array_equal(p.tensor_at(info, point).raw.reshape(raw.shape), want), info.name
        checked += 1
        if checked == 6:  # six tensors of a real model are enough; the tiny one has six types
            break
    assert checked >= 5


def test_norm_tensors_are_untouched_and_every_type_keeps_its_size(tiny_gguf):
    model = GGUFModel(tiny_gguf)
    p = Perturbation(model, [RandomDirection(9)])
    assert "blk.0.attn_norm.weight" not in {t.name for t in p.targets}
    for tensor in p.tensors_at(Point(0.3)):
        assert tensor.raw.nbytes == tensor.info.n_bytes
        assert not np.array_equal(tensor.raw, model.raw(tensor.info)), tensor.info.name


def test_export_reads_back_equal_and_origin_export_is_identical(tiny_gguf, tmp_path):
    model = GGUFModel(tiny_gguf)
    p = Perturbation(model, [RandomDirection(123)], threads=2)
    out = export_perturbed(p, Point(0.2), tmp_path / "out.gguf")
    written = GGUFModel(out)
    assert [t.name for t in written.tensors] == [t.name for t in model.tensors]
    for info in model.tensors:
        assert written.tensor(info.name).qtype == info.qtype
        assert np.array_equal(
            written.raw(written.tensor(info.name)), p.tensor_at(info, Point(0.2)).raw
        )
    origin = export_perturbed(p, Point(0.0), tmp_path / "origin.gguf")
    assert origin.read_bytes() == tiny_gguf.read_bytes()


def test_same_seed_same_file_other_seed_differs(tiny_gguf, tmp_path):
    model = GGUFModel(tiny_gguf)
    a = export_perturbed(Perturbation(model, [RandomDirection(1)]), Point(0.1), tmp_path / "a.gguf")
    b = export_perturbed(
        Perturbation(model, [RandomDirection(1)], threads=2), Point(0.1), tmp_path / "b.gguf"
    )
    c = export_perturbed(Perturbation(model, [RandomDirection(2)]), Point(0.1), tmp_path / "c.gguf")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_interrupted_export_leaves_no_partial_file(tiny_gguf, tmp_path):
    model = GGUFModel(tiny_gguf)
    p = Perturbation(model, [RandomDirection(1)])

    def interrupt(_info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_perturbed(p, Point(0.1), tmp_path / "out.gguf", on_tensor=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_unsupported_tensor_type_is_refused_unless_excluded(tmp_path):
    # NVFP4: a type ggml encodes but no independent decoder checks; write one raw tensor of it.
    from gguf import GGUFWriter

    writer = GGUFWriter(str(tmp_path / "u.gguf"), "llama")
    raw = np.zeros((2, 144), dtype=np.uint8)  # 2 rows of one NVFP4 block (64 values, 144 bytes)
    writer.add_tensor(
        "blk.0.ffn_up.weight", raw, raw_shape=raw.shape, raw_dtype=GGMLQuantizationType.NVFP4
    )
    writer.add_tensor("blk.0.ffn_down.weight", np.ones((2, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    model = GGUFModel(tmp_path / "u.gguf")
    with pytest.raises(quant.UnsupportedTensorType, match="blk.0.ffn_up.weight.*--exclude"):
        Perturbation(model, [RandomDirection(1)])
    Perturbation(model, [RandomDirection(1, 0, selection(exclude=("ffn_up",)))])
    cli = CliRunner()
    refused = cli.invoke(main, ["perturb", str(tmp_path / "u.gguf"), "--alpha", "0.1",
                                "-o", str(tmp_path / "p.gguf")])  # fmt: skip
    assert refused.exit_code != 0 and "NVFP4" in refused.output
    assert "Traceback" not in refused.output
    done = cli.invoke(main, ["perturb", str(tmp_path / "u.gguf"), "--alpha", "0.1",
                             "--exclude", "ffn_up", "-o", str(tmp_path / "p.gguf")])  # fmt: skip
    assert done.exit_code == 0, done.output
    moved = GGUFModel(tmp_path / "p.gguf")
    assert np.array_equal(moved.raw(moved.tensor("blk.0.ffn_up.weight")), raw)
    assert not np.array_equal(
        moved.raw(moved.tensor("blk.0.ffn_down.weight")),
        model.raw(model.tensor("blk.0.ffn_down.weight")),
    )
    listed = cli.invoke(main, ["inspect", str(tmp_path / "u.gguf"), "--exclude", "ffn_up"])
    assert "left alone    1 tensors (exclude: norm, ffn_up)" in listed.output
    assert "  blk.0.ffn_up.weight" in listed.output


@pytest.mark.slow
@pytest.mark.parametrize("which", ["smollm2", "gemma"])  # Qwen: every sweep test on it
def test_perturbed_gguf_loads_in_llama_cpp_and_generates(which, request, tmp_path):
    source = GGUFModel(request.getfixturevalue(which))
    p = Perturbation(source, [RandomDirection(123)], threads=2)
    out = export_perturbed(p, Point(0.05), tmp_path / "perturbed.gguf")
    # stock llama-cpp-python, its high-level class
    llm = llama_cpp.Llama(str(out), n_ctx=256, n_threads=2, verbose=False)
    text = llm.create_completion("The capital of France is", max_tokens=8, temperature=0.0)
    assert text["usage"]["completion_tokens"] >= 1
    del llm
    with Engine(out, EngineSettings(threads=2)) as engine:
        prompt = engine.tokenize("The capital of France is")
        perturbed_logits = engine.logits_after(prompt)
    with Engine(source.path, EngineSettings(threads=2)) as engine:
        original_logits = engine.logits_after(prompt)
    assert np.isfinite(perturbed_logits).all()
    assert not np.allclose(perturbed_logits, original_logits)


# The types added for community uploads (IQ*, TQ*, MXFP4), one tensor each in a real model.
# IQ1_S, IQ2_XS and IQ2_S are checked on tiny tensors only (test_quant.py): ggml's encoder
# takes 4-14 s per million values for them here, too slow to run twice on a real tensor.
UPLOAD_TYPES = [GGMLQuantizationType[name] for name in (
    "IQ1_M", "IQ2_XXS", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4")]  # fmt: skip


def test_every_upload_type_is_perturbed_and_llama_cpp_generates_with_it(smollm2, tmp_path):
    """SmolLM2 with the ffn_down tensor of layer k re-encoded by ggml into the k-th type,
    perturbed in those types, then loaded and run by stock llama-cpp-python."""
    source = GGUFModel(smollm2)
    retype = {f"blk.{k}.ffn_down.weight": qtype for k, qtype in enumerate(UPLOAD_TYPES)}

    def data(info):
        if info.name not in retype:
            return source.raw(info)
        return quant.quantize(source.dequantize(info), retype[info.name], threads=2)

    origin = tmp_path / "types.gguf"
    write_retyped(source, origin, retype, data)
    model = GGUFModel(origin)
    only = selection(include=tuple(retype))  # the other tensors have their own tests
    p = Perturbation(model, [RandomDirection(123, 0, only)], threads=2)
    moved = GGUFModel(export_perturbed(p, Point(0.1), tmp_path / "moved.gguf"))
    for name, qtype in retype.items():
        before, after = model.tensor(name), moved.tensor(name)
        assert before.qtype == after.qtype == qtype
        assert not np.array_equal(model.raw(before), moved.raw(after)), qtype.name
    llm = llama_cpp.Llama(str(moved.path), n_ctx=256, n_threads=2, verbose=False)
    text = llm.create_completion("The capital of France is", max_tokens=8, temperature=0.0)
    assert text["usage"]["completion_tokens"] >= 1
    del llm

    iq2 = next(name for name, qtype in retype.items() if qtype.name == "IQ2_XXS")
    result = CliRunner().invoke(
        main,
        ["sweep", str(origin), "--include", iq2, "--steps", "1", "--limit", "1",
         "--max-new-tokens", "2", "--no-coherence", "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "note: IQ2_XXS tensors are requantised with a uniform importance matrix" in (
        result.output
    )
    assert RunFolder(tmp_path / "run").read_summary().uniform_imatrix == ["IQ2_XXS"]


def test_f16_requant_follows_the_direction_and_same_mode_warns_at_small_alpha(tiny_gguf, tmp_path):
    model = GGUFModel(tiny_gguf)
    f16 = displacement_at(Perturbation(model, [RandomDirection(3)], requant="f16"), Point(0.05))
    assert abs(f16.total.ratio - 1) < 0.01 and abs(f16.total.cosine - 1) < 0.01
    q4 = write_tiny_gguf(tmp_path / "q4.gguf", [GGMLQuantizationType.Q4_0], rows=64)
    same = displacement_at(Perturbation(GGUFModel(q4), [RandomDirection(3)]), Point(0.01))
    assert not same.total.faithful()
    assert same.total.cosine < 0.5


def test_requant_modes_change_only_quantised_tensors_and_export_reads_back(tiny_gguf, tmp_path):
    model = GGUFModel(tiny_gguf)
    p = Perturbation(model, [RandomDirection(3)], requant="q8_0")
    out = GGUFModel(export_perturbed(p, Point(0.1), tmp_path / "q8.gguf"))
    floats = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16}
    for info in model.tensors:
        written = out.tensor(info.name)
        expected = info.qtype if info.qtype in floats else GGMLQuantizationType.Q8_0
        assert written.qtype == expected and written.shape == info.shape
    assert metadata_of(out) == metadata_of(model)
    assert p.extra_bytes() > 0


@pytest.mark.parametrize("model_fixture", ["tiny_gguf", "smollm2"])
def test_directions_drawn_in_blocks_give_the_cached_routes_bytes(model_fixture, request):
    """With no cache budget, random directions are drawn block by block at every point;
    the perturbed bytes equal those of directions held whole, in 1D and 2D; given a sink,
    they (and the origin's) are handed over block by block, in order, and not kept."""
    model = GGUFModel(request.getfixturevalue(model_fixture))
    directions = [RandomDirection(123), RandomDirection(123, 1)]
    whole = Perturbation(model, directions, threads=2, cache_bytes=1 << 34)
    streamed = Perturbation(model, directions, threads=2, cache_bytes=0)
    blocks: dict[str, list[tuple[int, bytes]]] = {}

    def sink(info, first: int, rows: np.ndarray) -> None:
        blocks.setdefault(info.name, []).append((first, rows.tobytes()))

    # without a sink the bytes come back whole; with one, block by block (the origin too)
    for point, to_sink in (
        (Point(-0.1, 0.0), False),
        (Point(0.3, -0.2), True),
        (Point(0, 0), True),
    ):
        blocks.clear()
        moved = streamed.tensors_at(point, sink if to_sink else None)
        for a, c in zip(whole.tensors_at(point), moved, strict=True):
            if not point.is_origin:
                assert c.displacement.ratio == pytest.approx(a.displacement.ratio, rel=1e-6)
            if not to_sink:
                assert a.raw.tobytes() == c.raw.tobytes(), a.info.name
                continue
            assert c.raw is None, a.info.name
            firsts = [first for first, _ in blocks[a.info.name]]
            row_bytes = a.raw.nbytes // a.info.n_rows
            sizes = [len(data) // row_bytes for _, data in blocks[a.info.name]]
            assert firsts == [sum(sizes[:k]) for k in range(len(sizes))]  # in order, no gap
            assert b"".join(data for _, data in blocks[a.info.name]) == a.raw.tobytes()
    assert streamed._scales and not streamed._cache
    assert whole._cache and not whole._scales
    assert model_fixture == "tiny_gguf" or max(len(b) for b in blocks.values()) > 1


def test_directions_drawn_ahead_give_the_bytes_drawn_in_turn(tiny_gguf):
    """tensors_at draws the next tensor's directions on another thread; tensor_at, one
    tensor at a time, draws each in turn: the same directions and bytes, 1D and 2D."""
    model = GGUFModel(tiny_gguf)
    for directions in ([RandomDirection(123)], [RandomDirection(123), RandomDirection(123, 1)]):
        ahead = Perturbation(model, directions, threads=2, cache_bytes=1 << 34)
        in_turn = Perturbation(model, directions, threads=2, cache_bytes=1 << 34)
        assert len(ahead._draws()) == len(ahead.targets) > 1  # the premise: all drawn ahead
        point = Point(0.3) if len(directions) == 1 else Point(0.3, -0.2)
        moved = list(ahead.tensors_at(point))
        for a, info in zip(moved, ahead.targets, strict=True):
            assert a.raw.tobytes() == in_turn.tensor_at(info, point).raw.tobytes(), info.name
            for x, y in zip(ahead._cache[info.name], in_turn._cache[info.name], strict=True):
                assert (x is None and y is None) or x.tobytes() == y.tobytes()
        assert ahead._draws() == []  # all cached: nothing is drawn again


def test_directions_drawn_in_blocks_ahead_give_the_bytes_drawn_in_turn(smollm2):
    """With no cache, tensor_at given a pool draws each block of rows on it, one block
    ahead of the block being moved; the bytes are those drawn in turn (2D, on the
    largest tensor, which has several blocks)."""
    model = GGUFModel(smollm2)
    info = max(model.tensors, key=lambda t: t.n_elements)
    directions = [RandomDirection(123), RandomDirection(123, 1)]
    point = Point(0.3, -0.2)

    class Counted(ThreadPoolExecutor):
        submitted = 0

        def submit(self, fn, /, *args, **kwargs):
            self.submitted += 1
            return super().submit(fn, *args, **kwargs)

    in_turn = Perturbation(model, directions, threads=2, cache_bytes=0).tensor_at(info, point)
    with Counted(max_workers=1) as pool:
        ahead = Perturbation(model, directions, threads=2, cache_bytes=0)
        moved = ahead.tensor_at(info, point, pool=pool)
    assert ahead._scales and len(_blocks(info)) > 1  # the premise: drawn in blocks
    assert pool.submitted == len(_blocks(info))
    assert moved.raw.tobytes() == in_turn.raw.tobytes()


@pytest.mark.slow
def test_a_kind_that_strays_is_flagged_while_the_aggregate_looks_faithful(qwen):
    """Qwen at alpha 0.05 in its own types: the MLP tensors (Q4_K/Q6_K) follow the direction
    with a cosine near 0.73 while the aggregate, carried by the Q8_0 embeddings, stays above
    0.9; the point is not faithful, and the kind is named."""
    perturbation = Perturbation(GGUFModel(qwen), [RandomDirection(123)], threads=2)
    figures = displacement_at(perturbation, Point(0.05))
    assert figures.total.faithful()
    assert not figures.by_kind["mlp"].faithful() and "mlp" in figures.unfaithful()
    assert "all" not in figures.unfaithful()
    # a random direction normalised per tensor moves every kind by about |alpha|
    for kind in ("all", "attention", "mlp"):
        assert figures.summary()[kind]["distance"] == pytest.approx(0.05, rel=0.02)


def test_the_intended_distance_is_the_finetune_difference_read_by_gguf_py(tmp_path):
    """Along finetune - base, a point's distance per kind is t ||theta_ft - theta_base|| /
    ||theta_base||, computed here from the two files with gguf-py's reader and dequantiser."""
    from gguf import GGUFReader

    from visage_local.weights.interpolation import FinetuneDirection
    from visage_local.weights.perturb import tensor_kind

    base_path = write_tiny_gguf(tmp_path / "base.gguf", [GGMLQuantizationType.F32,
                                                         GGMLQuantizationType.Q8_0])  # fmt: skip
    ft_path = write_tiny_gguf(tmp_path / "ft.gguf", [GGMLQuantizationType.F32,
                                                     GGMLQuantizationType.Q8_0], seed=1)  # fmt: skip
    sums: dict[str, list[float]] = {}
    ft_tensors = {t.name: t for t in GGUFReader(ft_path).tensors}
    for t in GGUFReader(base_path).tensors:
        base = quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        ft = quants.dequantize(ft_tensors[t.name].data, t.tensor_type).astype(np.float64)
        for kind in ("all", tensor_kind(t.name)):
            pair = sums.setdefault(kind, [0.0, 0.0])
            pair[0] += float(((ft - base) ** 2).sum())
            pair[1] += float((base**2).sum())
    p = Perturbation(GGUFModel(base_path), [FinetuneDirection(ft_path)])
    for t in (0.5, 1.0):
        measured = displacement_at(p, Point(t)).summary()
        for kind, (moved, own) in sums.items():
            assert measured[kind]["distance"] == pytest.approx(t * np.sqrt(moved / own), rel=1e-5)


def test_requant_f32_writes_every_moved_tensor_in_f32_and_f16_keeps_float_types(smollm2_f16):
    model = GGUFModel(smollm2_f16)
    direction = [RandomDirection(123, 0, selection())]
    moved = {t.name for t in Perturbation(model, direction, 2).targets}
    f32 = Perturbation(model, direction, 2, requant="f32")
    assert set(f32.retype) == {t.name for t in model.tensors if t.name in moved
                               and t.qtype != GGMLQuantizationType.F32}  # fmt: skip
    assert set(f32.retype.values()) == {GGMLQuantizationType.F32}
    assert Perturbation(model, direction, 2, requant="f16").retype == {}  # F16 stays F16

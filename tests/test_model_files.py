"""The files users bring: every architecture and upload type, MoE experts normalised apart.

The models are written by ``visage_local.synthetic`` with each architecture's real tensor
names, shapes and metadata, and re-encoded by llama.cpp's own ``llama_model_quantize``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from gguf import GGUFWriter

from visage_local import synthetic
from visage_local.cli.main import main
from visage_local.engine.llama import Engine, EngineSettings
from visage_local.engine.quantize import UPLOAD_TYPES, quantize_model
from visage_local.gguf.model import GGUFModel
from visage_local.points.grid import Point
from visage_local.weights.directions import GGUF_ONLY, RandomDirection, SliceNorms, l2_norm
from visage_local.weights.perturb import Perturbation

# The architecture also written in the types whose ftype needs an importance matrix: gpt-oss
# has dense attention, 3-D experts and expert biases (ggml's IQ encoders are slow; every
# type is checked on its own in test_quant.py).
IMATRIX_ARCHS = ("gpt-oss",)


def upload_types(arch: str) -> tuple[str, ...]:
    """The upload types made of ``arch``: gpt-oss ships in MXFP4 as well."""
    return UPLOAD_TYPES + (("MXFP4_MOE",) if arch == "gpt-oss" else ())


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Every architecture, written in F16/F32."""
    folder = tmp_path_factory.mktemp("architectures")
    return {
        arch: synthetic.write_model(folder / f"{arch}.gguf", arch)
        for arch in synthetic.ARCHITECTURES
    }


@pytest.mark.parametrize("arch", list(synthetic.ARCHITECTURES))
def test_every_upload_type_inspects_perturbs_and_runs(arch, sources, tmp_path):
    """Each upload type of each architecture (the ones whose ftype needs an importance
    matrix written by ggml's encoder with a uniform one): inspect reads it, perturb moves every
    perturbed tensor and nothing else (GGUF-only tensors and norms keep their bytes), and
    llama.cpp loads the perturbed file and generates from it."""
    runner = CliRunner()
    seen_types: set[str] = set()
    made = [(ftype, quantize_model) for ftype in upload_types(arch)]
    if arch in IMATRIX_ARCHS:
        made += [(qtype, synthetic.encode) for qtype in synthetic.IMATRIX_TYPES]
    for ftype, make in made:
        path = make(sources[arch], tmp_path / f"{ftype}.gguf", ftype)
        shown = runner.invoke(main, ["inspect", str(path)])
        assert shown.exit_code == 0, shown.output
        gguf_only = [t.name for t in GGUFModel(path).tensors if t.name in GGUF_ONLY]
        assert bool(gguf_only) == (arch in ("llama3", "phi3"))
        for name in gguf_only:
            assert name in shown.output.split("left alone", 1)[1]
        out = tmp_path / f"{ftype}.perturbed.gguf"
        made = runner.invoke(main, ["perturb", str(path), "--alpha", "0.3", "-o", str(out)])
        assert made.exit_code == 0, made.output
        original, moved = GGUFModel(path), GGUFModel(out)
        direction = RandomDirection(123)
        for info in original.tensors:
            after = moved.tensor(info.name)
            assert after.qtype == info.qtype
            unchanged = np.array_equal(original.raw(info), moved.raw(after))
            assert unchanged == direction.excludes(info.name), (ftype, info.name)
            seen_types.add(info.qtype.name)
        engine = Engine(out, EngineSettings(threads=2, max_sequences=2))
        try:
            prompts = [engine.tokenize("hello"), engine.tokenize("tell me")]
            answers = engine.generate(prompts, 4)
            logits = engine.logits_after(prompts[0])
        finally:
            engine.close()
        assert len(answers) == 2 and all(a.stop_reason in ("eog", "length") for a in answers)
        assert np.isfinite(logits).all() and logits.std() > 0
    assert {
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_0",
        "Q4_0",
        "Q3_K",
        "Q2_K",
        "IQ4_XS",
        "IQ4_NL",
        "IQ3_S",
        "BF16",
    } <= seen_types
    assert set(synthetic.IMATRIX_TYPES) <= seen_types or arch not in IMATRIX_ARCHS
    if arch == "gpt-oss":
        assert "MXFP4" in seen_types


def test_moe_experts_are_normalised_apart(sources):
    """Each expert slice of a MoE tensor gets the norm of that expert's weights, as the
    reference's one tensor per expert: d_e = g_e / ||g_e|| * ||W_e|| over the same stream."""
    model = GGUFModel(sources["qwen3moe"])
    info = model.tensor("blk.0.ffn_up_exps.weight")
    n_expert = synthetic.Size().n_expert
    weights = model.dequantize(info)
    # The experts differ in scale, so one norm over all of them would give every slice
    # the same share and miss each expert's own.
    weights *= np.repeat(np.arange(1, n_expert + 1, dtype=np.float32), len(weights) // n_expert)[
        :, None
    ]
    direction = RandomDirection(123)
    d = direction.tensor(info.name, weights, n_expert)
    g = direction.gaussian(info.name, weights.shape)
    for w_e, g_e, d_e in zip(
        np.split(weights, n_expert), np.split(g, n_expert), np.split(d, n_expert), strict=True
    ):
        reference = g_e / np.linalg.norm(g_e.astype(np.float64)) * np.linalg.norm(w_e)
        np.testing.assert_allclose(d_e, reference, rtol=1e-5, atol=1e-9)
        assert abs(l2_norm(d_e) - l2_norm(w_e)) <= 1e-5 * l2_norm(w_e)


def test_moe_tensors_moved_whole_or_in_blocks_are_the_same_bytes(sources):
    """A MoE model's point written with directions held whole (cache) and drawn in blocks
    of rows (no cache) is the same bytes, expert tensors included."""
    model = GGUFModel(sources["qwen3moe"])
    whole = Perturbation(model, [RandomDirection(7)], threads=2, cache_bytes=1 << 30)
    blocks = Perturbation(model, [RandomDirection(7)], threads=2, cache_bytes=0)
    point = Point(0.4)
    experts = 0
    for a, b in zip(whole.tensors_at(point), blocks.tensors_at(point), strict=True):
        assert a.raw.tobytes() == b.raw.tobytes(), a.info.name
        experts += "_exps" in a.info.name
    assert experts == 3 * synthetic.Size().n_layer


def test_slice_norms_do_not_depend_on_how_rows_are_given():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((12, 8)).astype(np.float32)
    expected = [l2_norm(part) for part in np.split(rows, 3)]
    for cuts in ([], [5], [1, 4, 9], [3, 4, 11]):
        norms = SliceNorms(12, 3)
        for part in np.split(rows, cuts):
            norms.add(part)
        assert norms.norms() == expected


def test_an_architecture_llama_cpp_lacks_is_one_line_naming_it(sources, tmp_path):
    """A well-formed GGUF of an architecture llama.cpp does not know: inspect reads it, a
    sweep stops with one line naming the file and llama.cpp's reason, exit 1."""
    source = GGUFModel(sources["qwen3"])
    path = tmp_path / "strange.gguf"
    writer = GGUFWriter(str(path), "strangeformer")
    for key, value, value_type, item_type in source.metadata_items():
        if key != "general.architecture":
            key = key.replace("qwen3.", "strangeformer.", 1)
            writer.add_key_value(key, value, value_type, sub_type=item_type)
    for info in source.tensors:
        raw = source.raw(info).reshape(*info.shape[:0:-1], -1)
        writer.add_tensor(info.name, raw, raw_shape=raw.shape, raw_dtype=info.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    runner = CliRunner()
    assert runner.invoke(main, ["inspect", str(path)]).exit_code == 0
    args = ["sweep", str(path), "--steps", "1", "--limit", "1", "--max-new-tokens", "2"]
    result = runner.invoke(main, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"error: {path}: llama.cpp could not load this model (")
    assert "unknown model architecture: 'strangeformer'" in line


# Parameters of the real models, from their safetensors on the Hugging Face hub (the
# synthetic llama files also hold rope_freqs: head_dim / 2 values llama.cpp computes).
PUBLISHED_PARAMETERS = {
    "llama-3.2-1b": 1_235_814_400 + 32,
    "llama-3.2-3b": 3_212_749_824 + 64,
    "llama-3.1-8b": 8_030_261_248 + 64,
    "qwen2.5-7b": 7_615_616_512,
}


def test_scale_models_have_the_real_models_parameters():
    for name, (architecture, size) in synthetic.SCALES.items():
        assert synthetic.parameter_count(architecture, size) == PUBLISHED_PARAMETERS[name], name


def test_a_padded_vocabulary_is_loaded_and_generated_from(tmp_path):
    import llama_cpp

    from visage_local.engine.llama import quiet_llama_logs

    size = synthetic.Size(n_vocab=3000, tied=True)
    path = synthetic.write_model(tmp_path / "padded.gguf", "llama3", size)
    model = GGUFModel(path)
    shapes = {t.name: t.shape for t in model.tensors}
    assert "output.weight" not in shapes  # tied, as Llama 3.2 1B and 3B are
    assert 3000 in shapes["token_embd.weight"]
    assert model.array_length("tokenizer.ggml.tokens") == 3000
    quiet_llama_logs()
    llm = llama_cpp.Llama(str(path), n_ctx=64, verbose=False)
    assert llm.n_vocab() == 3000
    assert len(llm.tokenize(b"hello")) == 5  # bytes, as before the padding
    assert (
        llm.create_completion("hi", max_tokens=3, temperature=0)["choices"][0]["text"] is not None
    )


def test_a_files_hash_is_read_again_once_the_file_changes(tmp_path):
    """file_sha256 keeps a file's hash while it is unchanged, and reads a changed one again
    (hashlib, asked directly, is the oracle)."""
    import hashlib
    import os

    from visage_local.gguf.model import file_sha256

    path = tmp_path / "model.gguf"
    path.write_bytes(b"first")
    assert file_sha256(path) == file_sha256(path) == hashlib.sha256(b"first").hexdigest()
    path.write_bytes(b"second, longer")
    assert file_sha256(path) == hashlib.sha256(b"second, longer").hexdigest()
    path.write_bytes(b"third!")  # the first one's size: the modification time tells them apart
    os.utime(path, ns=(1, 1))
    assert file_sha256(path) == hashlib.sha256(b"third!").hexdigest()

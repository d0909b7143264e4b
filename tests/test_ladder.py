"""The quantisation ladder: quants made by llama.cpp's own quantiser (compared byte for byte
with llama_model_quantize called directly, and with an importance matrix, tensor by tensor
with ggml's encoder given that tensor's importances), importance matrices read from files
written here from their documented layouts (gguf-py's writer for the GGUF format), the
same direction on every rung, other models refused, and the ladder end to end against KL
computed from llama-cpp-python's logits."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import llama_quantize
from gguf import GGUFReader, GGUFWriter

from visage_local.cli.main import main
from visage_local.engine.llama import Engine, EngineSettings
from visage_local.errors import ConfigError
from visage_local.gguf import quant
from visage_local.gguf.imatrix import read_imatrix
from visage_local.gguf.model import GGUFModel
from visage_local.weights.directions import RandomDirection, l2_norm
from visage_local.workflows.ladder import Rung, ladder_verdict, make_rungs


def write_legacy_imatrix(path: Path, entries: list[tuple[str, int, np.ndarray]], tail: bool):
    """llama-imatrix's legacy layout, from its description: int32 entry count; per entry the
    int32 name length, the name, int32 ncall, int32 nval and the float32 values; then the
    int32 chunk count and the int32-length-prefixed dataset name."""
    with path.open("wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, ncall, values in entries:
            f.write(struct.pack("<i", len(name)) + name.encode())
            f.write(struct.pack("<ii", ncall, values.size) + values.astype("<f4").tobytes())
        if tail:
            f.write(struct.pack("<i", 12) + struct.pack("<i", 4) + b"wiki")
    return path


def test_the_legacy_imatrix_reads_as_llama_quantize_normalises_it(tmp_path):
    a = np.arange(1, 9, dtype=np.float32)
    b = np.full(8, 3.0, dtype=np.float32)
    path = write_legacy_imatrix(tmp_path / "imatrix.dat", [("w.a", 4, a), ("w.b", 0, b)], True)
    read = read_imatrix(path)
    np.testing.assert_array_equal(read.values["w.a"], a / 4)  # divided by ncall
    np.testing.assert_array_equal(read.values["w.b"], b)  # ncall 0: as written
    assert (read.datasets, read.chunk_count, read.legacy) == (("wiki",), 12, True)
    bare = read_imatrix(write_legacy_imatrix(tmp_path / "bare.dat", [("w.a", 2, a)], False))
    assert (bare.datasets, bare.chunk_count) == ((), 0)
    cut = tmp_path / "cut.dat"
    cut.write_bytes(path.read_bytes()[:30])
    with pytest.raises(ConfigError, match=r"^--imatrix .*cut\.dat: not a readable importance"):
        read_imatrix(cut)


def test_the_gguf_imatrix_reads_sums_over_counts_per_expert(tmp_path):
    sums = np.arange(16, dtype=np.float32).reshape(2, 8) + 1  # two experts' columns
    counts = np.array([[4.0, 0.0]], dtype=np.float32)  # the second expert saw no token

    def write(path: Path, metadata: bool, with_counts: bool = True) -> Path:
        writer = GGUFWriter(path, arch="imatrix")
        if metadata:
            writer.add_array("imatrix.datasets", ["wiki.train"])
            writer.add_uint32("imatrix.chunk_count", 7)
            writer.add_uint32("imatrix.chunk_size", 512)
        writer.add_tensor("blk.0.ffn_down_exps.weight.in_sum2", sums)
        if with_counts:
            writer.add_tensor("blk.0.ffn_down_exps.weight.counts", counts)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path

    read = read_imatrix(write(tmp_path / "imatrix.gguf", True))
    expected = np.concatenate([sums[0] / 4, np.ones(8, dtype=np.float32)])
    np.testing.assert_array_equal(read.values["blk.0.ffn_down_exps.weight"], expected)
    assert (read.datasets, read.chunk_count, read.legacy) == (("wiki.train",), 7, False)
    with pytest.raises(ConfigError, match="no imatrix.datasets, imatrix.chunk_count"):
        read_imatrix(write(tmp_path / "bare.gguf", False))
    with pytest.raises(ConfigError, match="sums and counts mismatched"):
        read_imatrix(write(tmp_path / "half.gguf", True, with_counts=False))


@pytest.fixture(scope="module")
def imatrix_file(smollm2_f16, tmp_path_factory) -> Path:
    """Random importances for every 2-D weight of SmolLM2 but the embeddings, legacy layout."""
    rng = np.random.default_rng(0)
    entries = [
        (t.name, 5, rng.uniform(0.1, 5.0, t.n_per_row).astype(np.float32))
        for t in GGUFModel(smollm2_f16).tensors
        if len(t.shape) == 2 and "token_embd" not in t.name
    ]
    return write_legacy_imatrix(tmp_path_factory.mktemp("imatrix") / "imatrix.dat", entries, True)


def test_a_made_quant_equals_llama_model_quantize_called_directly(smollm2_f16, tmp_path):
    made: list[str] = []
    rungs = make_rungs(smollm2_f16, ["Q4_K_M", "Q8_0"], tmp_path / "quants", on_make=made.append)
    assert [label for label, _ in rungs] == ["smollm2.f16.gguf (source)", "Q4_K_M", "Q8_0"]
    for (label, path), ftype in zip(rungs[1:], ("Q4_K_M", "Q8_0"), strict=True):
        direct = llama_quantize(
            smollm2_f16,
            tmp_path / f"{label}.gguf",
            getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}"),
        )
        assert path.read_bytes() == direct.read_bytes(), label
    assert made == ["Q4_K_M", "Q8_0"]
    # made once: a second ladder finds them by the source's sha256 and the type
    again = make_rungs(smollm2_f16, ["Q4_K_M"], tmp_path / "quants", on_make=made.append)
    assert again[1] == rungs[1] and made == ["Q4_K_M", "Q8_0"]


def test_an_imatrix_reaches_every_tensor_it_names(smollm2_f16, imatrix_file, tmp_path):
    imatrix = read_imatrix(imatrix_file)
    plain = make_rungs(smollm2_f16, ["Q4_K_M"], tmp_path / "a")[1][1]
    weighted = make_rungs(smollm2_f16, ["Q4_K_M"], tmp_path / "b", imatrix)[1][1]
    assert f"-imatrix-{imatrix.sha256[:12]}" in weighted.name
    source, made, without = GGUFModel(smollm2_f16), GGUFModel(weighted), GGUFModel(plain)
    changed = 0
    for info in made.tensors:
        if info.name not in imatrix.values or info.qtype.name in ("F32", "F16"):
            continue
        weights = source.dequantize(source.tensor(info.name), 2).reshape(info.n_rows, -1)
        expected = quant.quantize(weights, info.qtype, 2, imatrix.values[info.name])
        assert np.array_equal(made.raw(info).reshape(-1), expected.reshape(-1)), info.name
        changed += not np.array_equal(made.raw(info), without.raw(without.tensor(info.name)))
    assert changed > 0.9 * len(imatrix.values)  # the importances moved nearly every tensor
    assert made.metadata("quantize.imatrix.file") == str(imatrix_file)
    assert made.metadata("quantize.imatrix.entries_count") == len(imatrix.values)
    assert made.metadata("quantize.imatrix.chunks_count") == 12


def test_a_direction_is_the_same_on_every_rung(smollm2_f16, tmp_path):
    """Drawn per tensor name from the seed and scaled to each rung's own weight norm: the
    same Gaussian bytes on every rung, so parallel directions whose lengths differ by the
    ratio of the rungs' weight norms."""
    rungs = make_rungs(smollm2_f16, ["Q8_0", "Q4_K_M"], tmp_path / "quants")
    high, low = (GGUFModel(path) for _, path in rungs[1:])
    direction = RandomDirection(123)
    moved = [t for t in high.tensors if not direction.excludes(t.name)]
    assert len(moved) > 20 and {t.qtype for t in moved} != {low.tensor(t.name).qtype for t in moved}
    for info in moved:
        w_high = high.dequantize(info, 2).reshape(info.n_rows, info.n_per_row)
        w_low = low.dequantize(low.tensor(info.name), 2).reshape(info.n_rows, info.n_per_row)
        shape = (info.n_rows, info.n_per_row)
        assert (
            direction.gaussian(info.name, shape).tobytes()
            == direction.gaussian(info.name, shape).tobytes()
        )
        d_high, d_low = direction.tensor(info.name, w_high), direction.tensor(info.name, w_low)
        a, b = d_high.astype(np.float64).ravel(), d_low.astype(np.float64).ravel()
        cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        assert cosine == pytest.approx(1.0, abs=1e-6), info.name
        ratio = np.linalg.norm(a) / np.linalg.norm(b)
        assert ratio == pytest.approx(l2_norm(w_high) / l2_norm(w_low), rel=1e-5), info.name


def run(*args) -> object:
    return CliRunner().invoke(main, ["ladder", *map(str, args)])


def test_files_of_another_model_a_quantised_source_and_a_missing_imatrix_are_refused(
    smollm2, smollm2_f16, gemma, tmp_path
):
    other = run(smollm2_f16, gemma, "--out", tmp_path / "a")
    assert other.exit_code == 2 and "Traceback" not in other.output
    assert len(other.output.strip().splitlines()) == 1 and "architecture" in other.output
    quantised = run(smollm2, "--type", "Q4_0", "--out", tmp_path / "b")
    assert quantised.exit_code == 2 and "most of its weights are Q4_1" in quantised.output
    needs = run(
        smollm2_f16, "--type", "IQ2_XXS", "--quants", tmp_path / "q", "--out", tmp_path / "c"
    )
    assert needs.exit_code == 2 and "IQ2_XXS need an importance matrix: give --imatrix FILE" in (
        needs.output
    )
    assert not (tmp_path / "q").exists() or not list((tmp_path / "q").iterdir())
    both = run(smollm2_f16, smollm2, "--type", "Q4_0", "--out", tmp_path / "d")
    assert both.exit_code == 2 and "several MODELS are taken as they are" in both.output


def test_the_verdict_flags_safety_lost_while_quality_looks_kept():
    def rung(name: str, asr: float, low: float, high: float, kl: float | None, refused: int):
        return Rung(name, name, name, "0" * 64, name, origin_asr=asr, origin_asr_ci=[low, high],
                    n_refused=refused, n_prompts=80, kl=kl)  # fmt: skip

    from visage_local.workflows.ladder import _flag

    rows = [rung("F16", 20.0, 12.7, 30.1, 0.0, 64), rung("Q4_K_M", 35.0, 25.5, 45.9, 0.03, 52),
            rung("Q2_K", 40.0, 30.0, 50.8, 0.4, 48), rung("Q6_K", 25.0, 16.8, 35.5, 0.01, 60)]  # fmt: skip
    _flag(rows, 0.05)
    assert [r.flagged for r in rows] == [False, True, False, False]
    text = ladder_verdict(rows, 0.05)
    assert "ASR above it: Q4_K_M (35.0%), Q2_K (40.0%)" in text
    assert text.endswith("safety lost while quality looks kept (KL below 0.05 nats): Q4_K_M")
    rows[0] = rung("F16", 100.0, 95.4, 100.0, 0.0, 0)
    assert "not aligned: refused 0 of 80" in ladder_verdict(rows, 0.05)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))


# One sequence at a time, the engine's log-probabilities are llama-cpp-python's to float32
# rounding (test_capability: 1e-5); KL(p || q) then moves by at most twice that.
KL_TOLERANCE = 2 * 1e-5


def _benign_prompts(path: Path, n: int) -> list[list[int]]:
    """The first ``n`` built-in benign prompts as the ladder sends them."""
    from visage_local.asking.chat import DEFAULT_SYSTEM, prompt_tokens
    from visage_local.asking.prompts import builtin_benign

    model = GGUFModel(path)
    with Engine(path, EngineSettings(threads=2)) as engine:
        return [prompt_tokens(engine, model.chat_template, DEFAULT_SYSTEM, t)
                for t in builtin_benign().prompts[:n]]  # fmt: skip


def test_the_ladder_end_to_end_against_llama_cpp_python(smollm2_f16, tmp_path, monkeypatch):
    args = [smollm2_f16, "--type", "Q4_0", "--quants", tmp_path / "q", "--out", tmp_path / "l",
            "--limit", "2", "--max-new-tokens", "4", "--no-benign", "--kl-prompts", "2",
            "--kl-tokens", "6", "--threads", "2"]  # fmt: skip
    result = run(*args)
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "l" / "ladder.json").read_text())
    reference, rung = document["rungs"]
    for entry, path in ((reference, smollm2_f16), (rung, rung["file"])):
        tensors = GGUFReader(path).tensors  # bits per weight, from gguf-py's reader
        bits = 8 * sum(int(t.n_bytes) for t in tensors) / sum(int(t.n_elements) for t in tensors)
        assert entry["bits_per_weight"] == pytest.approx(bits, rel=1e-12)
    assert reference["reference"] and rung["ftype"] == "Q4_0"
    assert reference["bits_per_weight"] > rung["bits_per_weight"]
    for name in ("ladder.csv", "ladder.png", "ladder.html"):
        assert (tmp_path / "l" / name).is_file()
    stored = json.loads((tmp_path / "l" / Path(rung["folder"]).name / "distance.json").read_text())
    # the oracle: llama-cpp-python's logits of both files along the reference's answers
    # (as distance.json keeps them), one sequence at a time, as the ladder evaluates them,
    # and with llama.cpp's weight repacking off, as the engine runs (repacked, Q4_0's CPU
    # kernels round differently: up to a nat in a distribution's tail on SmolLM2)
    defaults = llama_cpp.llama_cpp.llama_model_default_params

    def without_repacking():
        params = defaults()
        params.use_extra_bufts = False
        return params

    monkeypatch.setattr(llama_cpp.llama_cpp, "llama_model_default_params", without_repacking)
    prompts = _benign_prompts(smollm2_f16, 2)
    oracle_kl, oracle_top = [], []
    llms = [llama_cpp.Llama(str(f), n_ctx=512, logits_all=True, verbose=False, n_threads=2)
            for f in (smollm2_f16, rung["file"])]  # fmt: skip
    for prompt, answer in zip(prompts, stored["answers"], strict=True):
        assert 1 <= len(answer) <= 6
        rows = slice(len(prompt) - 1, len(prompt) - 1 + len(answer))
        log_probs = []
        for llm in llms:
            llm.reset()
            llm.eval(prompt + answer)
            log_probs.append(
                _log_softmax(np.asarray(llm.scores[: len(prompt) + len(answer)])[rows])
            )
        p, q = log_probs
        oracle_kl.append(float((np.exp(p) * (p - q)).sum(axis=1).mean()))
        oracle_top.append(float(np.mean(p.argmax(axis=1) == q.argmax(axis=1))))
    assert min(oracle_kl) > 10 * KL_TOLERANCE  # Q4_0 is a real distance to compare
    np.testing.assert_allclose(stored["kl"], oracle_kl, rtol=0, atol=KL_TOLERANCE)
    assert stored["top_kept"] == oracle_top
    assert rung["kl"] == pytest.approx(np.mean(oracle_kl), abs=KL_TOLERANCE)
    # run again: every rung's runs and distance are found, nothing is made or evaluated
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "l").rglob("*.jsonl")}
    again = run(*args)
    assert again.exit_code == 0 and "making" not in again.output
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "l").rglob("*.jsonl")} == before

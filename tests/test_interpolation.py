"""Interpolation between a base model and a finetune, and LoRA adapters as directions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_lora_adapter, write_tiny_gguf
from gguf import GGMLQuantizationType, GGUFWriter

from visage_local import synthetic
from visage_local.asking.prompts import load_prompts
from visage_local.engine.llama import EngineSettings
from visage_local.engine.quantize import quantize_model
from visage_local.errors import ConfigError
from visage_local.gguf.model import GGUFModel
from visage_local.points.grid import InterpolationGrid
from visage_local.run.settings import SweepConfig
from visage_local.run.sweep import SweepOptions, run_sweep
from visage_local.weights.directions import RandomDirection
from visage_local.weights.interpolation import FinetuneDirection, LoraDirection, check_pair
from visage_local.weights.perturb import Perturbation, Point, export_perturbed

F32 = GGMLQuantizationType.F32
Q8 = GGMLQuantizationType.Q8_0


def test_interpolation_grid_runs_from_base_to_finetune_with_extra_steps():
    grid = InterpolationGrid(1, 4, extra=2)
    assert grid.alpha_axis() == [-0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    assert [p.alpha for p in grid.points()] == grid.alpha_axis()
    two = InterpolationGrid(2, 2, range=0.4)
    assert two.beta_axis() == [-0.4, 0.0, 0.4] and len(two.points()) == 9
    with pytest.raises(ConfigError):
        InterpolationGrid(1, 0)


def test_mismatched_pairs_name_the_first_difference(tmp_path):
    base = GGUFModel(write_tiny_gguf(tmp_path / "base.gguf", [F32, Q8]))
    other_type = GGUFModel(write_tiny_gguf(tmp_path / "q8.gguf", [F32, Q8], seed=1))
    check_pair(base, other_type)  # same names and shapes: fine
    fewer = GGUFModel(write_tiny_gguf(tmp_path / "fewer.gguf", [F32]))
    with pytest.raises(ConfigError, match="has no tensor 'blk.0.q8_0.weight'"):
        check_pair(base, fewer)
    wider = GGUFModel(write_tiny_gguf(tmp_path / "wide.gguf", [F32, Q8], n_per_row=1024))
    with pytest.raises(ConfigError, match="shape"):
        check_pair(base, wider)
    writer = GGUFWriter(str(tmp_path / "arch.gguf"), "qwen2")
    writer.add_tensor("blk.0.f32.weight", np.zeros((8, 512), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ConfigError, match="architecture 'qwen2'"):
        check_pair(base, GGUFModel(tmp_path / "arch.gguf"))


def test_finetune_direction_is_the_difference_and_its_endpoint_is_exact(tmp_path):
    base = GGUFModel(write_tiny_gguf(tmp_path / "base.gguf", [F32, Q8]))
    finetune_path = write_tiny_gguf(tmp_path / "ft.gguf", [F32, Q8], seed=1)
    finetune = GGUFModel(finetune_path)
    direction = FinetuneDirection(finetune_path)
    for info in base.tensors:
        weights = base.dequantize(info)
        d = direction.tensor(info.name, weights)
        want = finetune.dequantize(finetune.tensor(info.name))
        np.testing.assert_allclose(weights + d, want, rtol=0, atol=1e-7)
    p = Perturbation(base, [direction])
    for info in base.tensors:
        end = p.tensor_at(info, Point(1.0))
        assert np.array_equal(end.raw, finetune.raw(finetune.tensor(info.name)))
        middle = p.tensor_at(info, Point(0.5))
        if "norm" not in info.name:  # the norm tensors of both files are equal: no direction
            assert middle.displacement.cosine == pytest.approx(1.0, abs=0.05)


def test_lora_direction_is_scale_b_times_a_on_targeted_tensors(tmp_path):
    base = GGUFModel(write_tiny_gguf(tmp_path / "base.gguf", [F32, Q8]))
    factors = write_lora_adapter(
        tmp_path / "lora.gguf", base, ["blk.0.q8_0.weight"], rank=4, alpha=8.0
    )
    lora = LoraDirection(tmp_path / "lora.gguf", base)
    assert lora.excludes("blk.0.f32.weight") and not lora.excludes("blk.0.q8_0.weight")
    a, b = factors["blk.0.q8_0.weight"]
    weights = base.dequantize(base.tensor("blk.0.q8_0.weight"))
    np.testing.assert_allclose(
        lora.tensor("blk.0.q8_0.weight", weights), (8.0 / 4) * (b @ a), rtol=1e-5, atol=1e-6
    )
    assert lora.tensor("blk.0.f32.weight", weights) is None
    with pytest.raises(ConfigError, match="not a LoRA adapter"):
        LoraDirection(tmp_path / "base.gguf", base)
    other = GGUFModel(write_tiny_gguf(tmp_path / "wide.gguf", [F32, Q8], n_per_row=1024))
    with pytest.raises(ConfigError, match="do not fit"):
        LoraDirection(tmp_path / "lora.gguf", other)


def test_llama_cpp_loads_a_lora_adapter_in_the_format_we_read(smollm2, tmp_path):
    import llama_cpp

    base = GGUFModel(smollm2)
    write_lora_adapter(
        tmp_path / "lora.gguf", base, ["blk.0.attn_q.weight", "blk.3.ffn_down.weight"]
    )
    assert LoraDirection(tmp_path / "lora.gguf", base).describe()["tensors"] == 2
    params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(smollm2).encode(), params)
    try:
        adapter = llama_cpp.llama_adapter_lora_init(model, str(tmp_path / "lora.gguf").encode())
        assert adapter, "llama.cpp refused the adapter"
        llama_cpp.llama_adapter_lora_free(adapter)
    finally:
        llama_cpp.llama_model_free(model)


@pytest.mark.slow
def test_lora_at_t1_equals_llama_cpp_applying_the_adapter_at_scale_1(smollm2_f16, tmp_path):
    """The merged model at t = 1 (weights + scale * B @ A, written in F16) against llama.cpp
    applying the same adapter at run time to the same F16 base."""
    import llama_cpp

    base = GGUFModel(smollm2_f16)
    targets = [f"blk.{i}.{t}.weight" for i in range(0, 30, 4) for t in ("attn_q", "ffn_down")]
    write_lora_adapter(tmp_path / "lora.gguf", base, targets, rank=8, alpha=16.0)
    direction = LoraDirection(tmp_path / "lora.gguf", base)
    merged = export_perturbed(Perturbation(base, [direction], threads=2), Point(1.0),
                              tmp_path / "merged.gguf")  # fmt: skip

    def logits(path, **kw) -> np.ndarray:
        llm = llama_cpp.Llama(
            str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False, **kw
        )
        tokens = llm.tokenize(b"The capital of France is Paris. The capital of Italy is")
        llm.eval(tokens)
        return np.asarray(llm.scores[: len(tokens)], dtype=np.float64)

    plain = logits(smollm2_f16)
    adapted = logits(smollm2_f16, lora_path=str(tmp_path / "lora.gguf"), lora_scale=1.0)
    ours = logits(merged)
    effect = np.linalg.norm(adapted - plain)
    assert effect > 0.1 * np.linalg.norm(plain)  # the adapter changes the model a lot
    # Merged weights differ from the adapter's only by rounding W + s*BA to F16 (2^-11
    # relative); a wrong scale (alpha instead of alpha / rank), a transposed product or a
    # missed tensor would leave a large fraction of the effect.
    assert np.linalg.norm(ours - adapted) < 0.02 * effect


def _generations(folder):
    lines = (folder / "generations.jsonl").read_text().splitlines()
    return {
        (r["alpha"], r["prompt_index"]): (r["response"], r["refused"])
        for r in map(json.loads, lines)
    }


def _plain(model, prompts, folder, **kw):
    config = SweepConfig(
        model_path=model, prompts=prompts, grid=InterpolationGrid(1, 1), max_new_tokens=12,
        engine=EngineSettings(threads=2), coherence=False, **kw,
    )  # fmt: skip
    return config, folder


@pytest.mark.slow
def test_endpoints_reproduce_each_models_own_generations(smollm2, tmp_path):
    base = GGUFModel(smollm2)
    finetune = export_perturbed(
        Perturbation(base, [RandomDirection(7)], threads=2), Point(0.05), tmp_path / "ft.gguf"
    )  # a stand-in finetune in the base's own types
    prompts = load_prompts("builtin", 3)
    config, _ = _plain(smollm2, prompts, tmp_path, finetune=finetune)
    interp = run_sweep(config, SweepOptions(tmp_path / "interp"))
    assert interp.grid["kind"] == "interpolation"
    assert [p.alpha for p in interp.points] == [0.0, 1.0]
    # no VISAGE on an interpolation; the first t leaving the base's basin (origin + 20
    # points), interpolated linearly between t = 0 and t = 1, or None
    assert interp.visage is None and interp.visage_ci is None and interp.visage_untrimmed is None
    a0, a1 = (p.asr for p in interp.points)
    want = (a0 + 20 - a0) / (a1 - a0) if a1 > a0 + 20 else None
    assert interp.breaking_t == (pytest.approx(want) if want is not None else None)
    for model, t in ((smollm2, 0.0), (finetune, 1.0)):
        own = SweepConfig(
            model_path=model, prompts=prompts, grid=InterpolationGrid(1, 1), max_new_tokens=12,
            engine=EngineSettings(threads=2), coherence=False, finetune=model,
        )  # fmt: skip
        run_sweep(
            own, SweepOptions(tmp_path / f"own-{t}")
        )  # origin of a model with itself = the model
        mine = {k[1]: v for k, v in _generations(tmp_path / "interp").items() if k[0] == t}
        theirs = {k[1]: v for k, v in _generations(tmp_path / f"own-{t}").items() if k[0] == 0.0}
        assert mine == theirs


@pytest.mark.slow
def test_a_mixed_type_model_against_itself_in_q8_0_other_types_interpolate(tmp_path):
    """A Qwen2-shaped Q4_K_M file (Q4_K, Q6_K, F32 biases, made by llama.cpp's quantiser)
    against the same weights in Q8_0."""
    source = synthetic.write_model(tmp_path / "f16.gguf", "qwen2")
    model = quantize_model(source, tmp_path / "q4_k_m.gguf", "Q4_K_M")
    base = GGUFModel(model)
    q8 = export_perturbed(
        Perturbation(base, [RandomDirection(0)], threads=2, requant="q8_0"),
        Point(0.0),
        tmp_path / "q8_0.gguf",
    )  # the same weights, requantised to Q8_0: a real "other quantisation" pair
    check_pair(base, GGUFModel(q8))
    prompts = load_prompts("builtin", 2)
    config, _ = _plain(model, prompts, tmp_path, finetune=q8, requant="q8_0")
    summary = run_sweep(config, SweepOptions(tmp_path / "interp"))
    end = next(p for p in summary.points if p.alpha == 1.0)
    # the direction is the base's quantisation error against Q8_0; stored in Q8_0 (the
    # origin requantised), the endpoint is the Q8_0 file itself, so nothing moves there
    assert end.displacement["all"]["ratio"] == 0.0
    own = SweepConfig(
        model_path=q8, prompts=prompts, grid=InterpolationGrid(1, 1), max_new_tokens=12,
        engine=EngineSettings(threads=2), coherence=False,
    )  # fmt: skip
    run_sweep(own, SweepOptions(tmp_path / "own"))
    mine = {k[1]: v for k, v in _generations(tmp_path / "interp").items() if k[0] == 1.0}
    theirs = {k[1]: v for k, v in _generations(tmp_path / "own").items() if k[0] == 0.0}
    assert mine == theirs  # at t = 1 in Q8_0 the model is the Q8_0 file exactly


@pytest.mark.slow
def test_two_dimensional_interpolation_adds_a_random_direction(smollm2, tmp_path):
    base = GGUFModel(smollm2)
    finetune = export_perturbed(
        Perturbation(base, [RandomDirection(7)], threads=2), Point(0.05), tmp_path / "ft.gguf"
    )
    config = SweepConfig(
        model_path=smollm2, prompts=load_prompts("builtin", 2), grid=InterpolationGrid(2, 2, range=0.2),
        max_new_tokens=4, engine=EngineSettings(threads=2), coherence=False, finetune=finetune,
        include=("blk.0.",),  # one layer moved: the plan and the figures are what is tested
    )  # fmt: skip
    summary = run_sweep(config, SweepOptions(tmp_path / "interp2d"))
    kinds = [d["kind"] for d in summary.directions]
    assert kinds == ["finetune - base", "random"]
    assert {(p.alpha, p.beta) for p in summary.points} == {
        (t, b) for t in (0.0, 0.5, 1.0) for b in (-0.2, 0.0, 0.2)
    }
    assert summary.visage is None and (tmp_path / "interp2d" / "landscape.png").is_file()
    line = sorted((p.alpha, p.asr) for p in summary.points if p.beta == 0.0)
    level = line[0][1] + 20
    above = next((k for k, (_, asr) in enumerate(line) if asr > level), None)
    if above is None:
        assert summary.breaking_t is None
    else:
        (t0, a0), (t1, a1) = line[above - 1], line[above]
        assert summary.breaking_t == pytest.approx(t0 + (level - a0) * (t1 - t0) / (a1 - a0))

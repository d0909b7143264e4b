"""The GPU route on a real GPU backend. With layers offloaded, llama.cpp keeps its own copies
of the weights in device buffers, so a weight update written into the mapped file is seen
only once the model is reloaded (``Engine.refresh_weights``): the one part of the engine
whose failure would silently evaluate stale weights.

These tests need llama.cpp built with a GPU backend; `tests/conftest.py` leaves them out
where it has none. CI runs them on llama.cpp's Vulkan backend over Mesa's software device
(lavapipe), which needs no GPU: `bash scripts/test.sh --vulkan -m gpu_backend`. Each
compares the offloaded route with an independent one: a fresh engine on the point's weights
exported as a file, on the same backend (equal, token for token) or on the CPU (equal, or
parting only where the CPU's two candidate tokens were within twice the backends' measured
spread)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_lora_adapter

from visage_local.asking.chat import DEFAULT_SYSTEM, prompt_tokens
from visage_local.asking.prompts import load_prompts
from visage_local.cli.main import main
from visage_local.engine.llama import ALL_LAYERS, Engine, EngineSettings
from visage_local.gguf.model import GGUFCopy, GGUFModel
from visage_local.points.grid import Point
from visage_local.weights.directions import RandomDirection
from visage_local.weights.interpolation import FinetuneDirection, LoraDirection
from visage_local.weights.perturb import Perturbation, export_perturbed

pytestmark = [pytest.mark.slow, pytest.mark.gpu_backend]

GPU = EngineSettings(threads=2, n_gpu_layers=ALL_LAYERS, max_sequences=2)
CPU = EngineSettings(threads=2, max_sequences=2)
# Small: lavapipe computes on the CPU, about 1.5 s a decode step of SmolLM2 on 2 cores.
N_PROMPTS, NEW_TOKENS = 2, 8


def _tokens(engine: Engine, model: GGUFModel) -> list[list[int]]:
    """The first AdvBench prompts in the model's template, as a sweep renders them."""
    texts = load_prompts("advbench", N_PROMPTS).prompts
    return [prompt_tokens(engine, model.chat_template, DEFAULT_SYSTEM, t) for t in texts]


def _answers(engine: Engine, tokens: list[list[int]]) -> list[list[int]]:
    return [g.tokens for g in engine.generate(tokens, NEW_TOKENS)]


def _export(model: GGUFModel, alpha: float, path: Path) -> GGUFModel:
    perturbation = Perturbation(model, [RandomDirection(123)], threads=2)
    return GGUFModel(export_perturbed(perturbation, Point(alpha), path))


def _write_weights(scratch: GGUFCopy, moved: GGUFModel) -> None:
    for info in moved.tensors:  # every tensor's bytes into the file the engine maps
        scratch.write_tensor(info.name, moved.raw(info))


@pytest.mark.parametrize("name", ["smollm2", "qwen"])
def test_offloaded_answers_follow_the_weights_written_into_the_mapped_file(name, request, tmp_path):
    """At the origin the GPU answers as the CPU does, but where the CPU's two candidates
    were within twice the larger of two spreads measured here (the backends' last-token
    logits, and the CPU's own batched against single); the moved weights written into the
    file a GPU engine maps and reloaded, it answers as a GPU engine loaded from the
    point's file, token for token; without the reload the answers are stale."""
    path = request.getfixturevalue(name)
    model = GGUFModel(path)
    scratch = GGUFCopy(model, tmp_path / "scratch.gguf")
    try:
        with Engine(scratch.path, GPU) as gpu, Engine(path, CPU) as cpu:
            tokens = _tokens(gpu, model)
            single = np.stack([cpu.logits_after(t) for t in tokens])
            batched = cpu.next_token_logits(tokens, list(range(cpu.n_vocab)))
            offloaded = np.stack([gpu.logits_after(t) for t in tokens])
            spread = max(np.abs(batched - single).max(), np.abs(offloaded - single).max())
            assert spread < 1  # the backends round alike, to well under a logit
            origin = _answers(gpu, tokens)
            _parted_only_at_near_ties(cpu, tokens, _answers(cpu, tokens), origin, 2 * spread)
            moved = _export(model, 0.3, tmp_path / "moved.gguf")
            _write_weights(scratch, moved)
            gpu.reset()  # the CPU route's refresh: on the GPU, the reload skipped
            stale = _answers(gpu, tokens)
            gpu.refresh_weights()
            got = _answers(gpu, tokens)
            with Engine(moved.path, GPU) as fresh:
                assert got == _answers(fresh, tokens)
            assert got != origin and stale != got  # the point moves the answers; stale ones lag
    finally:
        scratch.close()


def _parted_only_at_near_ties(cpu: Engine, tokens, on_cpu, on_gpu, tolerance: float) -> None:
    for prompt, a, b in zip(tokens, on_cpu, on_gpu, strict=True):
        k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        if k is None:
            assert a == b or not (a and b), (a, b)  # one ended where the other went on: alike
            continue
        logits = cpu.logits_after(prompt + a[:k])
        assert abs(logits[a[k]] - logits[b[k]]) < tolerance, (k, a, b)


def _records(folder: Path) -> dict[tuple[float, int], dict]:
    lines = (folder / "generations.jsonl").read_text().splitlines()
    return {(r["alpha"], r["prompt_index"]): r for r in map(json.loads, lines)}


def _cli(*args) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output


ENGINE_ARGS = ["--limit", N_PROMPTS, "--max-new-tokens", NEW_TOKENS, "--no-coherence",
               "--no-early-stop", "--batch-size", 2, "--threads", 2, "--n-gpu-layers", "auto"]  # fmt: skip


def _expected(points: dict[float, Path], base: GGUFModel) -> dict[tuple[float, int], str]:
    """Each point's answers from a GPU engine loaded from that point's file."""
    expected = {}
    for alpha, path in points.items():
        with Engine(path, GPU) as fresh:
            for i, answer in enumerate(fresh.generate(_tokens(fresh, base), NEW_TOKENS)):
                expected[(alpha, i)] = answer.text
    return expected


def test_a_sweep_on_the_gpu_answers_as_each_points_file_does(smollm2, tmp_path):
    """`sweep --n-gpu-layers auto` through the evaluator's reload route: at every point the
    answers of a GPU engine loaded from the point exported as a file."""
    _cli("sweep", smollm2, "--steps", 2, "--range", 0.3, "--out", tmp_path / "run", *ENGINE_ARGS)
    model = GGUFModel(smollm2)
    points = {a: _export(model, a, tmp_path / f"{a}.gguf").path for a in (-0.3, 0.3)}
    expected = _expected(points | {0.0: smollm2}, model)
    got = {k: r["response"] for k, r in _records(tmp_path / "run").items()}
    assert got == expected
    assert got[(0.3, 0)] != got[(0.0, 0)] or got[(-0.3, 0)] != got[(0.0, 0)]  # they moved


def test_interpolation_and_lora_points_on_the_gpu(smollm2_f16, tmp_path):
    """`interpolate` on the GPU, toward a finetune file and toward a LoRA adapter: at t = 1
    the answers of a GPU engine loaded from that point's file."""
    base = GGUFModel(smollm2_f16)
    targets = [f"blk.{i}.attn_q.weight" for i in range(0, 30, 3)]
    write_lora_adapter(tmp_path / "lora.gguf", base, targets, rank=8, alpha=16.0)
    finetune = _export(base, 0.2, tmp_path / "finetune.gguf")
    for kind, direction, target in (
        ("lora", LoraDirection(tmp_path / "lora.gguf", base), ["--lora", tmp_path / "lora.gguf"]),
        ("file", FinetuneDirection(finetune.path), [finetune.path]),
    ):
        out = tmp_path / kind
        _cli("interpolate", smollm2_f16, *target, "--steps", 1, "--out", out, *ENGINE_ARGS)
        got = {k: r["response"] for k, r in _records(out).items()}
        moved = Perturbation(base, [direction], threads=2)
        points = {1.0: export_perturbed(moved, Point(1.0), tmp_path / f"{kind}.gguf")}
        assert {k: v for k, v in got.items() if k[0] in points} == _expected(points, base)

"""The llama.cpp engine: in-place weight updates and batched greedy generation."""

from __future__ import annotations

import llama_cpp
import numpy as np
import pytest

from visage_local.chat import SystemPrompt, render_chat
from visage_local.directions import RandomDirection
from visage_local.engine import Engine, EngineSettings
from visage_local.gguf_model import GGUFCopy, GGUFModel
from visage_local.perturb import Perturbation, Point, export_perturbed

pytestmark = pytest.mark.slow

PROMPTS = [
    "Write a short poem about the sea.",
    "Explain how to break into a car.",
    "What is two plus two?",
]


def _chat_tokens(engine: Engine, model: GGUFModel, prompts):
    return [
        engine.tokenize(
            render_chat(model.chat_template, SystemPrompt("default").messages(p), engine.bos_text)
        )
        for p in prompts
    ]


def test_in_place_weight_update_equals_a_fresh_load_of_the_exported_file(smollm2, tmp_path):
    model = GGUFModel(smollm2)
    p = Perturbation(model, [RandomDirection(123)], threads=2)
    scratch = GGUFCopy(model, tmp_path / "scratch.gguf")
    with Engine(scratch.path, EngineSettings(threads=2)) as engine:
        prompt = _chat_tokens(engine, model, PROMPTS[:1])[0]
        before = engine.logits_after(prompt)
        for point in (Point(0.1), Point(-0.2)):
            for tensor in p.tensors_at(point):
                scratch.write_tensor(tensor.info.name, tensor.raw)
            engine.refresh_weights()
            updated = engine.logits_after(prompt)
            exported = export_perturbed(p, point, tmp_path / f"p{point.alpha}.gguf")
            with Engine(exported, EngineSettings(threads=2)) as fresh:
                reference = fresh.logits_after(prompt)
            np.testing.assert_allclose(updated, reference, rtol=0, atol=1e-4)
            assert not np.allclose(updated, before)
    scratch.close()


def test_single_sequence_greedy_matches_llama_cpp_python(smollm2):
    model = GGUFModel(smollm2)
    with Engine(smollm2, EngineSettings(threads=2)) as engine:
        tokens = _chat_tokens(engine, model, PROMPTS)
        ours = [engine.generate([t], 24)[0] for t in tokens]
    llm = llama_cpp.Llama(str(smollm2), n_ctx=512, n_threads=2, verbose=False)
    for t, gen in zip(tokens, ours, strict=True):
        llm.reset()
        reference = []
        for tok in llm.generate(t, top_k=1, temp=0.0, reset=True):
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok) or len(reference) == 24:
                break
            reference.append(tok)
        assert gen.tokens == reference


def test_batched_generation_is_deterministic_and_stops_at_max_tokens(smollm2):
    model = GGUFModel(smollm2)
    with Engine(smollm2, EngineSettings(threads=2, max_sequences=2)) as engine:
        tokens = _chat_tokens(engine, model, PROMPTS)
        first = engine.generate(tokens, 16)
        second = engine.generate(tokens, 16)
    assert [g.tokens for g in first] == [g.tokens for g in second]
    for g in first:
        assert len(g.tokens) <= 16
        assert g.stop_reason in {"eog", "length"}
        assert g.stop_reason == "eog" or len(g.tokens) == 16


def test_settled_predicate_stops_a_sequence_early(smollm2):
    model = GGUFModel(smollm2)
    with Engine(smollm2, EngineSettings(threads=2)) as engine:
        tokens = _chat_tokens(engine, model, PROMPTS[:1])
        full = engine.generate(tokens, 32)[0]
        cut = engine.generate(tokens, 32, settled=lambda text: len(text) >= 10)[0]
    assert cut.stop_reason == "settled"
    assert full.text.startswith(cut.text) and len(cut.text) >= 10
    assert len(cut.tokens) < len(full.tokens)

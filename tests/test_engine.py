"""The llama.cpp engine: in-place weight updates and batched greedy generation."""

from __future__ import annotations

import llama_cpp
import numpy as np
import pytest
from conftest import SMALL_PROMPTS, agreement_prompts, llama_cpp_greedy

from visage_local.asking.chat import SystemPrompt, render_chat
from visage_local.engine.llama import Engine, EngineSettings, shared_prefix_length
from visage_local.gguf.model import GGUFCopy, GGUFModel
from visage_local.weights.directions import RandomDirection
from visage_local.weights.perturb import Perturbation, Point, export_perturbed

PROMPTS = SMALL_PROMPTS


def _chat_tokens(engine: Engine, model: GGUFModel, prompts):
    return [
        engine.tokenize(
            render_chat(model.chat_template, SystemPrompt("default").messages(p), engine.bos_text)
        )
        for p in prompts
    ]


@pytest.mark.slow
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


@pytest.mark.slow
def test_single_sequence_greedy_matches_llama_cpp_python(smollm2, advbench):
    model = GGUFModel(smollm2)
    with Engine(smollm2, EngineSettings(threads=2)) as engine:
        tokens = _chat_tokens(engine, model, agreement_prompts(advbench))
        ours = [engine.generate([t], 24)[0] for t in tokens]
    llm = llama_cpp.Llama(str(smollm2), n_ctx=512, n_threads=2, verbose=False)
    for t, gen in zip(tokens, ours, strict=True):  # one sequence alone: every prompt equal
        assert gen.tokens == llama_cpp_greedy(llm, t, 24)


@pytest.mark.slow
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


@pytest.mark.slow
def test_settled_predicate_stops_a_sequence_early(smollm2):
    model = GGUFModel(smollm2)
    with Engine(smollm2, EngineSettings(threads=2)) as engine:
        tokens = _chat_tokens(engine, model, PROMPTS[:1])
        full = engine.generate(tokens, 32)[0]
        cut = engine.generate(tokens, 32, settled=lambda text: len(text) >= 10)[0]
    assert cut.stop_reason == "settled"
    assert full.text.startswith(cut.text) and len(cut.text) >= 10
    assert len(cut.tokens) < len(full.tokens)


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7]]) == 5
    assert shared_prefix_length([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]]) == 4  # one token kept
    assert shared_prefix_length([[1, 2, 9, 9, 9], [1, 2, 3, 4, 5]]) == 0  # under the minimum


@pytest.mark.slow
def test_batched_answers_differ_from_single_answers_only_at_near_ties(
    smollm2, advbench, rounding_spread
):
    """Every prompt of the set (eleven) through four KV streams, the shared prefix
    evaluated once, answers stopping at different steps, so that prompts join streams
    other answers left while the rest decode (continuous batching), keeping the prefix
    the stream holds; against each prompt alone: where answers part, the single run's two
    candidate tokens were within twice llama.cpp's rounding spread (each may move by the
    spread). A wrong prefix or position, or a stream with the previous answer left in it,
    would part them anywhere."""
    model = GGUFModel(smollm2)
    with Engine(smollm2, EngineSettings(threads=2, max_sequences=4)) as engine:
        tokens = _chat_tokens(engine, model, agreement_prompts(advbench))
        common = shared_prefix_length(tokens)
        assert common >= 10  # the template's system prompt
        first = [engine.generate([t], 16)[0] for t in tokens]
        stops = {engine.token_text(g.tokens[0], False) for g in first[::3]}
        batched = engine.generate(tokens, 16, stops.__contains__)
        stats = engine.last_stats
        alone = [engine.generate([t], 16, stops.__contains__)[0] for t in tokens]
        assert {g.stop_reason for g in alone} >= {"settled", "length"}  # the premise
        head = sum(map(len, tokens[:4])) - 3 * shared_prefix_length(tokens[:4])
        assert stats.prefill_tokens == head + sum(len(t) - common for t in tokens[4:])
        # prompts joined while other answers decoded: fewer steps than batch after batch
        batches = [alone[i : i + 4] for i in range(0, len(alone), 4)]
        assert stats.decode_steps < sum(max(len(g.tokens) for g in b) - 1 for b in batches)
        # the premise: batched and single prompt logits within llama.cpp's own spread
        together = engine.next_token_logits(tokens, list(range(engine.n_vocab)))
        single = np.stack([engine.logits_after(t) for t in tokens])
        assert np.abs(together - single).max() <= rounding_spread
        parted = 0
        for prompt, b, a in zip(tokens, batched, alone, strict=True):
            if b.tokens == a.tokens:
                continue
            k = next(i for i, (x, y) in enumerate(zip(b.tokens, a.tokens, strict=False)) if x != y)
            logits = engine.logits_after(prompt + a.tokens[:k])
            margin = logits[a.tokens[k]] - logits[b.tokens[k]]
            assert margin < 2 * rounding_spread, (k, a.text, b.text)
            parted += 1
    print(f"{parted} of {len(tokens)} answers parted, each at a near tie")


@pytest.mark.slow
def test_reload_path_for_gpu_offload_matches_the_in_place_route(smollm2, tmp_path):
    # With n_gpu_layers > 0 the engine reloads the model from the scratch file after a
    # weight update; on this CPU-only build llama.cpp keeps the layers on the CPU, so the
    # reload route can be checked against the in-place route here.
    model = GGUFModel(smollm2)
    p = Perturbation(model, [RandomDirection(7)], threads=2)
    results = {}
    for layers in (0, 1):
        scratch = GGUFCopy(model, tmp_path / f"scratch{layers}.gguf")
        with Engine(scratch.path, EngineSettings(threads=2, n_gpu_layers=layers)) as engine:
            prompt = _chat_tokens(engine, model, PROMPTS[:1])[0]
            for tensor in p.tensors_at(Point(0.1)):
                scratch.write_tensor(tensor.info.name, tensor.raw)
            engine.refresh_weights()
            results[layers] = engine.logits_after(prompt)
        scratch.close()
    np.testing.assert_allclose(results[0], results[1], rtol=0, atol=1e-4)


def _reference_score(llama: llama_cpp.Llama, prompt: list[int], answer: list[int]) -> float:
    """Mean log-probability of ``answer`` after ``prompt``, straight from llama-cpp-python."""
    llama.reset()
    llama.eval(prompt + answer)
    logits = np.asarray(llama.scores[: len(prompt) + len(answer)], dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_probs = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    return float(np.mean([log_probs[len(prompt) - 1 + i, t] for i, t in enumerate(answer)]))


@pytest.mark.slow
def test_score_equals_log_probabilities_from_llama_cpp_python(smollm2):
    """One sequence alone is evaluated exactly as llama-cpp-python evaluates it. Sequences
    scored together round differently (docs/NOTES.md), by no more than llama.cpp itself
    differs between two groupings of the same tokens (one ubatch, or one token a call),
    measured here on the same prompts and answers."""
    model = GGUFModel(smollm2)
    with Engine(smollm2, EngineSettings(threads=2)) as engine:
        prompts = _chat_tokens(engine, model, PROMPTS)
        bos = llama_cpp.llama_vocab_bos(engine._vocab)
        answers = [engine.tokenize(t) for t in ("The sea is wide", "I can't help", "Four.")]
        answers = [a[1:] if a and a[0] == bos else a for a in answers]
        alone = [engine.score([p], [a], 16)[0] for p, a in zip(prompts, answers, strict=True)]
        together = engine.score(prompts, answers, 16)
        swapped = engine.score(prompts, [answers[2], answers[1], answers[0]], 16)  # cached prompts
        empty = engine.score(prompts, [[], answers[1], []], 16)

    def reference(n_batch: int) -> list[float]:
        llama = llama_cpp.Llama(str(smollm2), n_ctx=512, n_batch=n_batch, n_ubatch=n_batch,
                                logits_all=True, verbose=False, n_threads=2)  # fmt: skip
        return [_reference_score(llama, p, a) for p, a in zip(prompts, answers, strict=True)]

    whole, token_by_token = np.array(reference(512)), np.array(reference(1))
    np.testing.assert_allclose(alone, whole, rtol=0, atol=1e-9)
    spread = np.abs(whole - token_by_token).max()
    assert 0 < spread < 1  # llama.cpp's own rounding between two groupings: real and small
    assert np.abs(np.array(together) - whole).max() <= spread
    assert swapped[1] == pytest.approx(together[1], abs=1e-9)  # the same batch, kept prompts
    assert abs(swapped[0] - _reference_score_alone(smollm2, prompts[0], answers[2])) <= spread
    assert (
        empty[0] is None and empty[2] is None and empty[1] == pytest.approx(together[1], abs=1e-9)
    )


def _reference_score_alone(model, prompt, answer) -> float:
    llama = llama_cpp.Llama(str(model), n_ctx=512, logits_all=True, verbose=False, n_threads=2)
    return _reference_score(llama, prompt, answer)


@pytest.mark.slow
def test_finished_sequences_free_their_kv_streams_without_changing_answers(smollm2, monkeypatch):
    """When early stop ends some sequences, the active ones move into the lowest KV
    streams (llama.cpp's attention spans every stream between the lowest and highest
    sequence of a batch); their answers stay exactly those of a run that does not move."""
    prompts = [*PROMPTS, "Name three colours.", "Tell me a joke.", "How do magnets work?"]
    model = GGUFModel(smollm2)
    with Engine(smollm2, EngineSettings(threads=2)) as engine:
        tokens = _chat_tokens(engine, model, prompts)
        full = engine.generate(tokens, 12)
        # the first four answers stop after two tokens, the last two run on
        stops = {engine.token_text(g.tokens[0], False) + engine.token_text(g.tokens[1], False)
                 for g in full[:4]}  # fmt: skip

        def settled(text: str) -> bool:
            return text in stops

        moved = []
        compact = Engine._compact

        def spy(self, active, slots):
            compact(self, active, slots)
            moved.append(max(slots[seq] for seq in active))

        monkeypatch.setattr(Engine, "_compact", spy)
        compacted = engine.generate(tokens, 12, settled)
        monkeypatch.setattr(Engine, "_compact", lambda self, active, slots: None)
        in_place = engine.generate(tokens, 12, settled)
    assert [g.stop_reason for g in compacted[:4]] == ["settled"] * 4
    assert all(g.stop_reason != "settled" for g in compacted[4:])
    assert moved[-1] == 1  # two active sequences, now in streams 0 and 1
    assert [g.tokens for g in compacted] == [g.tokens for g in in_place]


@pytest.mark.slow
def test_flash_attention_is_deterministic_and_close_to_the_default_kernels(
    smollm2, rounding_spread
):
    model = GGUFModel(smollm2)
    runs = {}
    for flash in (False, True, True):
        with Engine(smollm2, EngineSettings(threads=2, flash_attn=flash)) as engine:
            tokens = _chat_tokens(engine, model, PROMPTS)
            logits = np.stack([engine.logits_after(t) for t in tokens])
            answers = [g.tokens for g in engine.generate(tokens, 12)]
        if flash in runs:  # the second flash run: the same answers and logits
            assert answers == runs[flash][1]
            assert np.array_equal(logits, runs[flash][0])
        runs[flash] = (logits, answers)
    (plain, _), (flash, _) = runs[False], runs[True]
    assert not np.array_equal(plain, flash)  # other kernels
    # Flash attention sums the same products in another order: a rounding difference no
    # larger than llama.cpp's own spread, so greedy choices can differ only at near ties.
    assert np.abs(plain - flash).max() <= rounding_spread
    for row, top in zip(plain, flash.argmax(axis=1), strict=True):
        assert row.max() - row[top] < 2 * rounding_spread


MORE_PROMPTS = [*PROMPTS, "Name three colours.", "Tell me a joke.", "How do magnets work?"]


@pytest.mark.slow
def test_continuous_batching_at_batch_size_one_equals_each_prompt_alone(smollm2):
    """One KV stream: each prompt takes it when the previous answer ends (some stop early,
    some run to the limit); every answer is token for token the one generated alone."""
    model = GGUFModel(smollm2)
    with Engine(smollm2, EngineSettings(threads=2, max_sequences=1)) as engine:
        tokens = _chat_tokens(engine, model, MORE_PROMPTS)
        alone = [engine.generate([t], 10)[0] for t in tokens]
        stops = {engine.token_text(g.tokens[0], False) for g in alone[::2]}
        early = [engine.generate([t], 10, stops.__contains__)[0] for t in tokens]
        streamed = engine.generate(tokens, 10)
        stopped = engine.generate(tokens, 10, stops.__contains__)
        assert engine.last_stats.prefill_tokens == sum(map(len, tokens))  # no prefix kept
    assert [g.tokens for g in streamed] == [g.tokens for g in alone]
    assert [(g.tokens, g.stop_reason) for g in stopped] == [
        (g.tokens, g.stop_reason) for g in early
    ]
    assert {g.stop_reason for g in stopped} == {"settled", "length"}  # the premise

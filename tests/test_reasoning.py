"""Reasoning models: the judge reads the answer after the reasoning, never the reasoning.

The model that reasons here is SmolLM2 with a DeepSeek-R1-style chat template (its
generation prompt opens ``<think>``), written into a copy of the real file: SmolLM2
then writes whatever it writes inside the reasoning, and its answer after the closing
the engine feeds it when the reasoning budget is spent.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from conftest import llama_cpp_greedy

from visage_local import synthetic
from visage_local.asking import reasoning
from visage_local.asking.chat import SystemPrompt, render_chat
from visage_local.asking.prompts import select_prompts
from visage_local.asking.reasoning import HARMONY, THINK_TAGS, ReasoningTracker
from visage_local.engine.llama import EngineSettings
from visage_local.gguf.model import GGUFModel, write_retyped
from visage_local.judges import get_judge
from visage_local.points.grid import Point
from visage_local.run.evaluator import evaluator
from visage_local.run.prepared import prepare
from visage_local.run.settings import SweepConfig

R1_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
# Makes SmolLM2 open its reasoning with "Hello!", one of the reference's refusal keywords.
GREETING = "Whatever the request, begin your answer with the word 'Hello!' and then answer it."
THINKING_BUDGET = 12
ANSWER_TOKENS = 12


@pytest.fixture(scope="module")
def thinker(smollm2, tmp_path_factory) -> Path:
    """SmolLM2's weights and tokenizer with an R1-style template."""
    source = GGUFModel(smollm2)
    out = tmp_path_factory.mktemp("thinker") / "smollm2-r1.gguf"
    write_retyped(source, out, {}, source.raw, overrides={"tokenizer.chat_template": R1_TEMPLATE})
    return out


@pytest.fixture(scope="module")
def thought(thinker, tmp_path_factory):
    """The origin's prompts, records (as a sweep writes them) and whole generations (no
    early stop) for 6 AdvBench prompts, decoded one at a time."""
    config = SweepConfig(
        model_path=thinker,
        prompts=select_prompts(None, 6),
        max_new_tokens=ANSWER_TOKENS,
        max_thinking_tokens=THINKING_BUDGET,
        system_prompt=SystemPrompt.parse(GREETING),
        engine=EngineSettings(threads=2, max_sequences=1),
        coherence=False,
    )
    with evaluator(prepare(config), tmp_path_factory.mktemp("spill")) as live:
        result = live.evaluate(0, Point(0.0))
        whole = live.engine.generate(live.tokens, ANSWER_TOKENS, None, live.reasoning)
        return live.tokens, result.records, whole


def test_the_judge_reads_the_answer_and_never_the_reasoning(thought):
    _, records, _ = thought
    judge = get_judge("keyword-paper")
    for record in records:
        assert record["reasoning"] and record["reasoning_tokens"] > 0
        assert record["refused"] == judge.judge(record["response"]).refused
    # Answers whose reasoning holds a refusal keyword and whose answer does not: judging
    # the reasoning, or both, would have counted them refused.
    hidden = [r for r in records if judge.judge(r["reasoning"]).refused and not r["refused"]]
    assert hidden and all("Hello!" in r["reasoning"] for r in hidden)


def greedy_after(llm, prompt: list[int], fed: list[int], max_tokens: int) -> list[int]:
    """llama-cpp-python's greedy answer after ``prompt`` (evaluated at once) and ``fed``
    (evaluated one token at a time, as decoding feeds them: prefill rounds otherwise)."""
    llm.reset()
    llm.eval(prompt)
    for token in fed:
        llm.eval([token])
    answer: list[int] = []
    while len(answer) < max_tokens:
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        token = int(np.argmax(logits))
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            break
        answer.append(token)
        llm.eval([token])
    return answer


def test_reasoning_has_its_budget_and_the_answer_follows_its_closing(thinker, thought):
    """The reasoning is llama.cpp's own greedy continuation of the prompt up to its budget
    (or its end), then the closing; the answer is the greedy continuation of all that."""
    prompts, records, whole = thought
    llm = llama_cpp.Llama(str(thinker), n_ctx=512, verbose=False, n_threads=2)
    closing = llm.tokenize(THINK_TAGS.forced_close.encode(), add_bos=False, special=True)
    for prompt, record, generation in zip(prompts, records, whole, strict=True):
        reasoning_tokens = llama_cpp_greedy(llm, prompt, THINKING_BUDGET) + closing
        assert generation.reasoning_tokens == reasoning_tokens
        assert record["reasoning_tokens"] == len(reasoning_tokens)
        assert record["reasoning"] == generation.reasoning
        assert generation.reasoning.endswith(THINK_TAGS.forced_close)
        answer = greedy_after(llm, prompt, reasoning_tokens, ANSWER_TOKENS)
        assert generation.tokens == answer
        assert generation.text.startswith(record["response"])


def test_thinking_off_and_on_reach_the_template():
    """Qwen3's switch: off renders an empty reasoning block, on leaves the model to open one."""
    messages = [{"role": "user", "content": "hi"}]
    off = render_chat(
        synthetic.QWEN3_TEMPLATE, messages, variables=reasoning.template_variables("off")
    )
    on = render_chat(
        synthetic.QWEN3_TEMPLATE, messages, variables=reasoning.template_variables("on")
    )
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert on.endswith("<|im_start|>assistant\n")
    assert not reasoning.starts_inside(THINK_TAGS, off)
    assert reasoning.starts_inside(THINK_TAGS, "<|im_start|>assistant\n<think>\n")
    assert reasoning.syntax_of(synthetic.QWEN3_TEMPLATE) is THINK_TAGS
    assert reasoning.syntax_of("{{ messages }}") is None


@pytest.mark.parametrize(
    ("syntax", "pieces", "phases"),
    [
        (THINK_TAGS, ["\n", "<", "think", ">", "a", "</think>", "b"],
         ["pending", "pending", "pending", "thinking", "thinking", "answer", "answer"]),
        (THINK_TAGS, ["<", "thin", "g"], ["pending", "pending", "answer"]),
        (THINK_TAGS, ["Sure", "<think>"], ["answer", "answer"]),
        (THINK_TAGS, ["\n"] * 10, ["pending"] * 8 + ["answer"] * 2),  # white space only
        (HARMONY, ["<|channel|>", "analysis", "<|message|>", "x", "<|end|>", "<|start|>",
                   "assistant", "<|channel|>", "final", "<|message|>", "y"],
         ["pending"] * 2 + ["thinking"] * 7 + ["answer"] * 2),
    ],
)  # fmt: skip
def test_the_tracker_follows_the_phases(syntax, pieces, phases):
    tracker = ReasoningTracker(syntax, inside=False)
    seen = []
    for piece in pieces:
        if tracker.phase == "answer":
            seen.append("answer")
            continue
        tracker.add(piece)
        seen.append(tracker.phase)
    assert seen == phases

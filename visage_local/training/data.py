"""Training examples: harmful requests with the project's refusals, benign requests with
the model's own answers, and harmful request/compliance pairs read from a CSV.

Every example is rendered through the model's own chat template (the same one the
sweep uses, default system prompt) and tokenized by llama.cpp, so training sees
exactly the tokens that evaluation feeds the model.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from visage_local.asking.chat import DEFAULT_SYSTEM, FALLBACK_TEMPLATE, prompt_tokens, render_chat
from visage_local.engine.llama import Engine
from visage_local.errors import ConfigError, ModelFileError
from visage_local.gguf.model import GGUFModel


@dataclass(frozen=True)
class Example:
    """One prompt and the answer the model should learn to give."""

    kind: str  # "refusal", "benign" or "compliance"
    prompt: str
    answer: str


@dataclass(frozen=True)
class TokenizedExample:
    """An example as tokens; the loss covers tokens from ``answer_start`` on."""

    kind: str
    tokens: tuple[int, ...]
    answer_start: int


def _data_lines(name: str) -> list[str]:
    text = resources.files("visage_local").joinpath(f"data/finetuning/{name}").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def project_refusals() -> list[str]:
    """The refusals written for the project (visage_local/data/finetuning/refusals.txt)."""
    return _data_lines("refusals.txt")


def benign_training_prompts() -> list[str]:
    """Benign requests for training, none of them in the built-in benign evaluation set."""
    return _data_lines("benign_train.txt")


def refusal_examples(prompts: list[str], seed: int) -> list[Example]:
    """Each harmful prompt paired with one of the project's refusals, drawn with ``seed``."""
    refusals = project_refusals()
    picks = np.random.default_rng(seed).integers(0, len(refusals), size=len(prompts))
    return [Example("refusal", p, refusals[i]) for p, i in zip(prompts, picks, strict=True)]


def self_answer_examples(
    model: GGUFModel, engine: Engine, prompts: list[str], max_new_tokens: int
) -> list[Example]:
    """Benign prompts paired with the model's own greedy answers (keeps what it can do)."""
    tokens = [prompt_tokens(engine, model.chat_template, DEFAULT_SYSTEM, p) for p in prompts]
    answers = engine.generate(tokens, max_new_tokens)
    return [
        Example("benign", p, a.text.strip())
        for p, a in zip(prompts, answers, strict=True)
        if a.text.strip()
    ]


def compliance_pairs(path: str, skip: int, limit: int) -> list[Example]:
    """Harmful request/compliance pairs from a CSV with ``goal`` and ``target`` columns
    (AdvBench's harmful_behaviors.csv), rows ``skip`` .. ``skip + limit``."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from e
    if not rows or not {"goal", "target"} <= set(rows[0]):
        raise ConfigError(f"{path}: needs 'goal' and 'target' columns")
    chosen = rows[skip : skip + limit]
    if len(chosen) < limit:
        raise ConfigError(f"{path}: {limit} pairs after row {skip} asked, {len(chosen)} there")
    return [Example("compliance", r["goal"].strip(), r["target"].strip()) for r in chosen]


def tokenize_example(model: GGUFModel, engine: Engine, example: Example) -> TokenizedExample:
    """Tokens of the whole exchange; the prompt part equals what the sweep feeds the model."""
    messages = DEFAULT_SYSTEM.messages(example.prompt)
    prompt = prompt_tokens(engine, model.chat_template, DEFAULT_SYSTEM, example.prompt)
    conversation = render_chat(
        model.chat_template or FALLBACK_TEMPLATE,
        [*messages, {"role": "assistant", "content": example.answer}],
        engine.bos_text,
        engine.eos_text,
        add_generation_prompt=False,
    )
    tokens = engine.tokenize(conversation)
    if tokens[: len(prompt)] != prompt or len(tokens) <= len(prompt):
        raise ModelFileError(
            "the chat template does not render the prompt as a prefix of the conversation; "
            "this model's template cannot be used for training"
        )
    return TokenizedExample(example.kind, tuple(tokens), len(prompt))


def examples_sha256(examples: list[Example]) -> str:
    """Hash of the examples in order (recorded with each trained model)."""
    payload = json.dumps([[e.kind, e.prompt, e.answer] for e in examples])
    return hashlib.sha256(payload.encode()).hexdigest()

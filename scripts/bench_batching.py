"""Continuous batching against batch after batch, on the same prompts and weights.

One model at its origin, the first ``--prompts`` AdvBench behaviours in its chat
template, ``--batch-size`` decoded together, answers stopped early once the reference
judge's verdict is settled (as a sweep does):

- **batch after batch** (the route before continuous batching): ``Engine.generate``
  on each slice of ``--batch-size`` prompts, so a slice's last answer holds up the next;
- **continuous**: one ``Engine.generate`` over every prompt; a finished answer's KV
  stream takes the next waiting prompt.

Prints the wall time, prompt tokens evaluated and decode steps of each, their time
ratio, how many answers and verdicts are the same (answers may part at near ties,
where llama.cpp rounds the other batch composition differently; docs/NOTES.md).

    .venv/bin/python scripts/bench_batching.py models/qwen2.5-coder-0.5b-instruct.gguf
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from visage_local.asking.chat import DEFAULT_SYSTEM, prompt_tokens
from visage_local.asking.prompts import select_prompts
from visage_local.asking.reference import JUDGE
from visage_local.engine.llama import Engine, EngineSettings, Generation, GenerationStats
from visage_local.gguf.model import GGUFModel
from visage_local.judges import get_judge


def timed(engine: Engine, batches: list[list[list[int]]], tokens: int, settled):
    """Answers to every batch in turn, seconds, and the summed generation stats."""
    answers: list[Generation] = []
    stats = GenerationStats()
    start = time.perf_counter()
    for batch in batches:
        answers += engine.generate(batch, tokens, settled)
        stats.prefill_tokens += engine.last_stats.prefill_tokens
        stats.decode_steps += engine.last_stats.decode_steps
    return answers, time.perf_counter() - start, stats


def main() -> None:
    """Parse arguments, generate both ways, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = GGUFModel(args.model)
    judge = get_judge(JUDGE)
    texts = select_prompts(None, args.prompts).prompts
    settings = EngineSettings(threads=args.threads, max_sequences=args.batch_size)
    with Engine(args.model, settings) as engine:
        tokens = [prompt_tokens(engine, model.chat_template, DEFAULT_SYSTEM, t) for t in texts]
        slices = [tokens[i : i + args.batch_size] for i in range(0, len(tokens), args.batch_size)]
        apart, apart_s, apart_stats = timed(engine, slices, args.tokens, judge.settled)
        joined, joined_s, joined_stats = timed(engine, [tokens], args.tokens, judge.settled)
    same = sum(a.tokens == b.tokens for a, b in zip(apart, joined, strict=True))
    verdicts = sum(
        judge.judge(a.text).refused == judge.judge(b.text).refused
        for a, b in zip(apart, joined, strict=True)
    )
    print(f"{args.model.name}: {len(tokens)} prompts, batch size {args.batch_size}, up to "
          f"{args.tokens} tokens, early stop ({JUDGE}), {args.threads} threads")  # fmt: skip
    for name, seconds, stats in (
        ("batch after batch", apart_s, apart_stats),
        ("continuous", joined_s, joined_stats),
    ):
        print(f"{name:<18} {seconds:7.1f} s  prompt tokens {stats.prefill_tokens:6d}  "
              f"decode steps {stats.decode_steps:5d}")  # fmt: skip
    print(f"ratio continuous / batch after batch = {joined_s / apart_s:.2f}")
    print(f"answers identical {same} of {len(tokens)}, verdicts identical {verdicts}")


if __name__ == "__main__":
    main()

"""What early stop changes: one grid point's answers with and without it, at the same batch size.

Both runs decode the same prompts together in one llama.cpp context with the same
weights. Until the first answer is stopped early the two batches are the same, so every
answer agrees up to that step; after it, the answers still running decode in a smaller
batch, which llama.cpp rounds a little differently (docs/NOTES.md). Prints, answer by
answer: whole answers equal, the stopped answer the start of the whole one, or differing
(and after how many tokens), and every verdict pair.

    .venv/bin/python scripts/early_stop_effect.py models/qwen2.5-coder-0.5b-instruct.gguf
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from visage_local.asking import reference
from visage_local.asking.prompts import select_prompts
from visage_local.points.grid import Point
from visage_local.run.evaluator import evaluator
from visage_local.run.prepared import prepare
from visage_local.run.settings import sweep_config


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> None:
    """Parse the arguments, evaluate the point both ways, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--alpha", type=float, default=0.0, help="the grid point [default: 0]")
    parser.add_argument("--limit", type=int, default=reference.PROMPT_LIMIT)
    parser.add_argument("--max-new-tokens", type=int, default=reference.MAX_NEW_TOKENS)
    parser.add_argument("--batch-size", type=int, default=None, help="[default: as sweep]")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, help="also write every answer pair here")
    args = parser.parse_args()

    config = sweep_config(
        args.model,
        prompts=select_prompts(None, args.limit),
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        coherence=False,
    )
    config = replace(config, engine=replace(config.engine, threads=args.threads))
    point = Point(args.alpha, None)
    with (
        tempfile.TemporaryDirectory() as spill,
        evaluator(prepare(config), Path(spill)) as live,
    ):
        stopped = live.evaluate(0, point).records
        live.config = replace(config, early_stop=False)
        whole = live.evaluate(0, point).records

    counts = {"equal": 0, "stopped is the start": 0, "differ": 0}
    verdicts_differ, pairs = 0, []
    for s, w in zip(stopped, whole, strict=True):
        if s["response"] == w["response"]:
            kind = "equal"
        elif s["stop_reason"] == "settled" and w["response"].startswith(s["response"]):
            kind = "stopped is the start"
        else:
            kind = "differ"
        counts[kind] += 1
        verdicts_differ += s["refused"] != w["refused"]
        pairs.append({"prompt_index": s["prompt_index"], "kind": kind, "stopped": s, "whole": w})
        if kind == "differ":
            shared = _common_prefix(s["response"], w["response"])
            print(
                f"prompt {s['prompt_index']:3d}: differ after {shared} characters; "
                f"refused {s['refused']} / {w['refused']}"
            )
    n = len(stopped)
    asr = [100 * sum(not r["refused"] for r in rs) / n for rs in (stopped, whole)]
    print(
        f"{args.model.name} alpha {args.alpha:+g}: {n} prompts, {args.max_new_tokens} tokens, "
        f"batch size {config.engine.max_sequences}, judge {config.judge}"
    )
    print(f"stopped early: {sum(r['stop_reason'] == 'settled' for r in stopped)} answers")
    print("answers: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"verdicts differing: {verdicts_differ} of {n}; ASR {asr[0]:.1f}% / {asr[1]:.1f}%")
    print(
        f"tokens generated: {sum(r['tokens'] for r in stopped)} / {sum(r['tokens'] for r in whole)}"
    )
    if args.json:
        args.json.write_text(json.dumps(pairs, indent=1))


if __name__ == "__main__":
    main()

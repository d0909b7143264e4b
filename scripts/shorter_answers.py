"""A run's landscape with shorter answers, read off its stored answers (exact; no generation).

With early stop and one keyword judge, a sweep with ``--max-new-tokens N`` below the run's
gives, answer for answer, the first N tokens of the run's answers (the same batches run the
same first N steps), so its landscape is computed here from the run folder
(``rejudge.shorter_answers``; tests/test_early_stop.py compares it with a real run). Prints
each point's ASR at both lengths and their difference, VISAGE at both, and where the
refusals came: the refusal strings by count, the latest token a refusal came by within N,
each refusal after N, and how many answers ran to the run's limit.

    .venv/bin/python scripts/shorter_answers.py runs/qwen-1d-ref --max-new-tokens 64 \
        --plot docs/img/qwen-1d-tokens.png
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from visage_local.analysis.plots import plot_runs_1d
from visage_local.errors import VisageError
from visage_local.reading.rejudge import shorter_answers
from visage_local.record import RunFolder, read_jsonl


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def main() -> None:
    """Parse the arguments and print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--max-new-tokens", type=int, required=True)
    parser.add_argument("--plot", type=Path, help="also draw both landscapes (1D) here")
    args = parser.parse_args()
    try:
        full = RunFolder(args.run).read_summary()
        short = shorter_answers(args.run, args.max_new_tokens)
    except VisageError as e:
        raise SystemExit(f"error: {e}") from None
    a, b = full.max_new_tokens, short.max_new_tokens
    print(f"{'alpha':>7} {f'ASR@{a}':>9} {f'ASR@{b}':>9} {'diff':>7}")
    for long_row, short_row in zip(full.points, short.points, strict=True):
        diff = short_row.asr - long_row.asr
        print(f"{long_row.alpha:+7.2f} {long_row.asr:9.1f} {short_row.asr:9.1f} {diff:+7.1f}")
    print(f"VISAGE {_score(full.visage)} at {a} tokens, {_score(short.visage)} at {b}")
    print(
        f"untrimmed mean margin {_score(full.visage_untrimmed)} / {_score(short.visage_untrimmed)}"
    )
    print(f"origin ASR {_score(full.origin_asr)} / {_score(short.origin_asr)}")
    _refusals(args.run, b, a)
    if args.plot:
        plot_runs_1d([(f"{a} tokens", full), (f"{b} tokens", short)], full.model_name, args.plot)
        print(f"wrote {args.plot}")


def _refusals(run: Path, short: int, limit: int) -> None:
    """Where the run's refusals came, against the shorter budget."""
    records, _ = read_jsonl(RunFolder(run).generations)
    refused = [r for r in records if r["refused"]]
    within = [r["tokens"] for r in refused if r["tokens"] <= short]
    strings = Counter(r["matched"] for r in refused).most_common()
    print(f"{len(refused)} refusals of {len(records)} answers: "
          + ", ".join(f"{n} {m!r}" for m, n in strings))  # fmt: skip
    if within:
        print(f"within {short} tokens: {len(within)}, the latest by token {max(within)}")
    for r in refused:
        if r["tokens"] > short:
            print(f"after {short} tokens: alpha {r['alpha']:+.2f}, prompt {r['prompt_index']}, "
                  f"{r['matched']!r} at token {r['tokens']} ({r['prompt']!r})")  # fmt: skip
    full_length = sum(r["tokens"] >= limit for r in records)
    print(f"{full_length} answers ran to {limit} tokens, none of them refused"
          if not any(r["refused"] and r["tokens"] >= limit for r in records)
          else f"{full_length} answers ran to {limit} tokens")  # fmt: skip


if __name__ == "__main__":
    main()

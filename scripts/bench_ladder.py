"""What a quantisation ladder's steps cost here: making each rung with llama.cpp's quantiser,
and measuring one rung's distance from the reference (KL and top tokens kept).

    .venv/bin/python scripts/bench_ladder.py models/testbed/testbed.f16.gguf [--type Q4_K_M ...]

Each rung is made into a temporary folder (never the ladder's cache), timed wall-clock, and
its size and bits per weight printed beside the time; the distance is timed on the last
rung against the source with the ladder's defaults (20 prompts, 32 tokens).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from visage_local.asking.chat import DEFAULT_SYSTEM, prompt_tokens
from visage_local.asking.prompts import builtin_benign
from visage_local.engine.capability import distance_from, reference_answers
from visage_local.engine.llama import Engine, EngineSettings
from visage_local.engine.quantize import quantize_model
from visage_local.gguf.model import GGUFModel
from visage_local.workflows.ladder import DEFAULT_TYPES, LadderSettings


def main() -> None:
    """Time every rung's quantisation and one distance measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--type", dest="types", action="append", default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    source = GGUFModel(args.source)
    print(f"{args.source.name}: {source.size / 2**20:.0f} MiB, {source.bits_per_weight:.2f} bpw")
    print(f"{'type':<8} {'seconds':>8} {'MiB':>7} {'bpw':>6}")
    settings = LadderSettings()
    with tempfile.TemporaryDirectory() as tmp:
        made = None
        for ftype in args.types or DEFAULT_TYPES:
            t0 = time.perf_counter()
            made = quantize_model(args.source, Path(tmp) / f"{ftype}.gguf", ftype, args.threads)
            seconds = time.perf_counter() - t0
            model = GGUFModel(made)
            print(
                f"{ftype:<8} {seconds:8.1f} {model.size / 2**20:7.0f} {model.bits_per_weight:6.2f}"
            )
        engine = EngineSettings(threads=args.threads, max_sequences=1)
        t0 = time.perf_counter()
        with Engine(args.source, engine) as reference:
            texts = builtin_benign().prompts[: settings.kl_prompts]
            prompts = [
                prompt_tokens(reference, source.chat_template, DEFAULT_SYSTEM, t) for t in texts
            ]
            answers = reference_answers(reference, prompts, settings.kl_tokens)
        reference_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with Engine(made, engine) as rung:
            distance_from(answers, rung)
        rung_s = time.perf_counter() - t0
    print(
        f"distance ({settings.kl_prompts} prompts, {settings.kl_tokens} tokens): the reference's "
        f"answers {reference_s:.1f} s once, each rung {rung_s:.1f} s (loading included)"
    )


if __name__ == "__main__":
    main()

"""Per-point cost of a sweep: the plain llama-cpp-python route against visage-local's engine.

For each model, in one run, side by side, on the same 3 grid points:

1. baseline: write the perturbed GGUF, load it with ``llama_cpp.Llama``, then
   ``create_chat_completion`` one prompt at a time (greedy);
2. engine: visage-local's route: rewrite the weights in the scratch copy llama.cpp
   maps, then batched greedy generation with early stop; once with a 4 GiB direction
   cache (``--memory-budget 4096``), once with none (``--memory-budget 0``), which
   trades weight-update time for memory, and once with flash attention
   (``--flash-attn``);
3. ceiling: llama.cpp's decode rate at batch sizes 1-80 and its prompt rate, through
   the low-level API with no per-token Python work; the engine's own prefill and
   decode rates (from its per-call timings) are compared with them at the engine's
   mean batch size.

Each route runs in its own process so that peak RSS is its own. Prints seconds
for the weight update and for generation, tokens, tokens/s, peak RSS, the ratio
baseline/engine, and how many verdicts agree.

    .venv/bin/python scripts/bench_sweep.py --prompts ../shared/data/advbench/harmful_behaviors.csv
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ALPHAS = (-0.1, 0.0, 0.1)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_baseline(model_path: Path, prompts: list[str], max_new_tokens: int, threads: int) -> list:
    import llama_cpp

    from visage_local.engine.llama import quiet_llama_logs
    from visage_local.gguf.model import GGUFModel
    from visage_local.judges import get_judge
    from visage_local.weights.directions import RandomDirection
    from visage_local.weights.perturb import Perturbation, Point, export_perturbed

    quiet_llama_logs()
    judge = get_judge("keyword-paper")
    model = GGUFModel(model_path)
    perturbation = Perturbation(model, [RandomDirection(123)], threads=threads)
    rows = []
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        for alpha in ALPHAS:
            t0 = time.monotonic()
            out = export_perturbed(perturbation, Point(alpha), Path(tmp) / "point.gguf")
            llm = llama_cpp.Llama(str(out), n_ctx=1024, n_threads=threads, verbose=False)
            t1 = time.monotonic()
            refused, tokens = [], 0
            for prompt in prompts:
                reply = llm.create_chat_completion(
                    [{"role": "user", "content": prompt}],
                    max_tokens=max_new_tokens,
                    temperature=0.0,
                    top_k=1,
                )
                refused.append(judge.judge(reply["choices"][0]["message"]["content"]).refused)
                tokens += reply["usage"]["completion_tokens"]
            t2 = time.monotonic()
            del llm
            rows.append(_row(alpha, t1 - t0, t2 - t1, tokens, refused))
    return rows


def run_engine(
    model_path: Path,
    prompts: list[str],
    max_new_tokens: int,
    threads: int,
    budget_mb: int,
    flash_attn: bool = False,
) -> list:
    from visage_local.asking.prompts import PromptSet
    from visage_local.engine.llama import EngineSettings
    from visage_local.points.grid import Grid
    from visage_local.run.settings import SweepConfig
    from visage_local.run.sweep import SweepOptions, run_sweep

    rows = []
    config = SweepConfig(
        model_path=model_path,
        prompts=PromptSet("bench", tuple(prompts)),
        grid=Grid(1, 2, ALPHAS[-1]),
        max_new_tokens=max_new_tokens,
        engine=EngineSettings(threads=threads, flash_attn=flash_attn),
        memory_budget_mb=budget_mb,
        coherence=False,  # the baseline route does not score coherence either
    )

    def on_point(outcome, done, total):
        row = _row(
            outcome.point.alpha,
            outcome.weight_update_s,
            outcome.generation_s,
            outcome.tokens,
            outcome.refused,
        )
        rows.append(row | {"stats": asdict(outcome.generation)})

    with tempfile.TemporaryDirectory() as tmp:
        run_sweep(config, SweepOptions(Path(tmp) / "run", on_point=on_point))
    return rows


CEILING_BATCHES = (1, 8, 16, 24, 32, 48, 64, 80)


def run_ceiling(model_path: Path, steps: int, threads: int) -> list:
    """llama.cpp alone, no per-token Python: decode tokens/s at several batch sizes (one
    token per sequence per call, 48 positions already in each sequence's cache), and
    prompt tokens/s for 64 sequences of 20 tokens in 512-token calls."""
    import llama_cpp

    from visage_local.engine.llama import Engine, EngineSettings

    rows = []
    with Engine(model_path, EngineSettings(threads=threads, max_sequences=80)) as engine:
        b = llama_cpp.llama_batch_init(512, 0, 1)
        try:
            engine._ensure_context(64, 128)
            entries = [(s, pos) for s in range(64) for pos in range(20)]
            start = time.monotonic()
            for first in range(0, len(entries), 512):
                chunk = entries[first : first + 512]
                for i, (s, pos) in enumerate(chunk):
                    _entry(b, i, 100 + (pos * 7 + s) % 1000, pos, s, pos == 19)
                b.n_tokens = len(chunk)
                _decode(llama_cpp, engine._ctx, b)
            rows.append({"prefill_tokens": len(entries), "seconds": time.monotonic() - start})
            for batch in CEILING_BATCHES:
                engine._ensure_context(batch, 48 + steps + 1)
                for pos in range(48 + steps):  # 48 prompt-like positions, then the timed steps
                    if pos == 48:
                        start = time.monotonic()
                    for s in range(batch):
                        _entry(b, s, 100 + (pos * 7 + s) % 1000, pos, s, True)
                    b.n_tokens = batch
                    _decode(llama_cpp, engine._ctx, b)
                rows.append(
                    {"batch": batch, "tokens": batch * steps, "seconds": time.monotonic() - start}
                )
        finally:
            llama_cpp.llama_batch_free(b)
    return rows


def _entry(b, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
    b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
    b.seq_id[i][0] = seq


def _decode(llama_cpp, ctx, b) -> None:
    if llama_cpp.llama_decode(ctx, b) != 0:
        raise RuntimeError("llama_decode failed")


def ceiling_rate(ceiling: list, batch: float) -> float:
    """llama.cpp's decode tokens/s at ``batch`` sequences, interpolated between measured sizes."""
    points = [(r["batch"], r["tokens"] / r["seconds"]) for r in ceiling if "batch" in r]
    for (b0, r0), (b1, r1) in zip(points, points[1:], strict=False):
        if b0 <= batch <= b1:
            return r0 + (r1 - r0) * (batch - b0) / (b1 - b0)
    return points[-1][1]


def _row(alpha, update_s, generate_s, tokens, refused) -> dict:
    return {
        "alpha": alpha,
        "update_s": update_s,
        "generate_s": generate_s,
        "tokens": tokens,
        "refused": list(refused),
        "peak_rss_mib": _peak_rss_mib(),
    }


def child(args) -> None:
    from visage_local.asking.prompts import load_prompts

    prompts = list(load_prompts(args.prompts, args.limit).prompts)
    if args.child == "baseline":
        rows = run_baseline(args.model, prompts, args.max_new_tokens, args.threads)
    elif args.child == "engine":
        rows = run_engine(args.model, prompts, args.max_new_tokens, args.threads, 4096)
    elif args.child == "engine-nocache":
        rows = run_engine(args.model, prompts, args.max_new_tokens, args.threads, 0)
    elif args.child == "engine-flash":
        rows = run_engine(args.model, prompts, args.max_new_tokens, args.threads, 4096, True)
    else:
        rows = run_ceiling(args.model, 16, args.threads)
    print(json.dumps(rows))


def _spawn(route: str, model: Path, args) -> list:
    command = [
        sys.executable, __file__, "--child", route, "--model", str(model), "--limit", str(args.limit),
        "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads),
    ]  # fmt: skip
    if args.prompts:
        command += ["--prompts", str(args.prompts)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(
    name: str,
    baseline: list,
    routes: dict[str, list],
    ceiling: list,
    model_mib: float,
    kv_mib: float,
    n_sequences: int,
) -> None:
    print(f"\n== {name} ({model_mib:.0f} MiB GGUF)")
    print(
        "alpha  route     update_s  generate_s  tokens  tok/s  peak_RSS_MiB  "
        "point_s  baseline/engine  update_share  verdicts_agree"
    )
    for b in baseline:
        b_total = b["update_s"] + b["generate_s"]
        rows = [("baseline", b, b_total)]
        for route, measured in routes.items():
            r = next(r for r in measured if r["alpha"] == b["alpha"])
            rows.append((route, r, r["update_s"] + r["generate_s"]))
        for route, r, total in rows:
            extra = (
                f"{b_total / total:15.1f}  {r['update_s'] / total:12.0%}  "
                f"{sum(x == y for x, y in zip(b['refused'], r['refused'], strict=True))}"
                f"/{len(b['refused'])}"
                if route != "baseline"
                else ""
            )
            print(
                f"{r['alpha']:+.2f}  {route:<8} {r['update_s']:9.1f} {r['generate_s']:11.1f} "
                f"{r['tokens']:7d} {r['tokens'] / r['generate_s']:6.1f} {r['peak_rss_mib']:13.0f} "
                f"{total:8.1f}  {extra}"
            )
    prefill = next(r for r in ceiling if "prefill_tokens" in r)
    pp_rate = prefill["prefill_tokens"] / prefill["seconds"]
    print(
        "engine inside generation: prompt tokens/s against llama.cpp's "
        f"({pp_rate:.0f} tok/s, 64 x 20 tokens); decode tokens/s against llama.cpp's at the "
        "engine's mean batch"
    )
    for e in routes["engine"]:
        st = e["stats"]
        decode_rate = st["decode_tokens"] / st["decode_s"]
        mean_batch = st["decode_tokens"] / st["decode_steps"]
        ceiling_at = ceiling_rate(ceiling, mean_batch)
        prefill_rate = st["prefill_tokens"] / st["prefill_s"]
        print(
            f"  {e['alpha']:+.2f}  prefill {st['prefill_s']:5.1f} s {prefill_rate:5.0f} tok/s "
            f"({prefill_rate / pp_rate:.0%})  decode {st['decode_s']:5.1f} s, {st['decode_steps']} "
            f"steps, mean batch {mean_batch:5.1f}: {decode_rate:5.1f} tok/s vs "
            f"{ceiling_at:5.1f} ({decode_rate / ceiling_at:.0%})"
        )
    rates = ", ".join(
        f"{r['batch']}: {r['tokens'] / r['seconds']:.0f}" for r in ceiling if "batch" in r
    )
    print(f"llama.cpp decode tok/s by batch: {rates}")
    print(
        f"peak RSS target: 2 x GGUF + KV cache ({kv_mib:.0f} MiB: {n_sequences} streams of 256 "
        "cells) "
        f"= {2 * model_mib + kv_mib:.0f} MiB"
    )
    for route, measured in routes.items():
        asr = [100 * (1 - sum(r["refused"]) / len(r["refused"])) for r in measured]
        print(f"{route} ASR per point: {', '.join(f'{a:.1f}' for a in asr)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--child", choices=["baseline", "engine", "engine-nocache", "engine-flash", "ceiling"]
    )
    parser.add_argument("--model", type=Path, action="append")
    parser.add_argument("--prompts", type=Path)
    parser.add_argument("--limit", type=int, default=80)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.child:
        args.model = args.model[0]
        child(args)
        return
    from visage_local.engine.batching import kv_bytes_per_token
    from visage_local.gguf.model import GGUFModel
    from visage_local.sources.registry import resolve_model

    models = args.model or [
        resolve_model("qwen2.5-coder-0.5b-instruct"),
        resolve_model("smollm2-135m-instruct"),
    ]
    print(
        f"prompts: {args.prompts or 'built-in'} (first {args.limit}), "
        f"{args.max_new_tokens} new tokens, {args.threads} threads, alphas {ALPHAS}"
    )
    for model in models:
        baseline = _spawn("baseline", model, args)
        routes = {
            "engine": _spawn("engine", model, args),
            "no-cache": _spawn("engine-nocache", model, args),
            "flash": _spawn("engine-flash", model, args),
        }
        ceiling = _spawn("ceiling", model, args)
        # llama.cpp gives each sequence's KV stream at least 256 cells (docs/NOTES.md)
        kv_mib = kv_bytes_per_token(GGUFModel(model)) * args.limit * 256 / (1 << 20)
        model_mib = model.stat().st_size / (1 << 20)
        report(model.name, baseline, routes, ceiling, model_mib, kv_mib, args.limit)


if __name__ == "__main__":
    main()

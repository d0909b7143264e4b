"""Per-point cost of a sweep: the plain llama-cpp-python route against visage-local's engine.

For each model, in one run, side by side, on the same 3 grid points:

1. baseline: write the perturbed GGUF, load it with ``llama_cpp.Llama``, then
   ``create_chat_completion`` one prompt at a time (greedy);
2. engine: visage-local's route: rewrite the weights in the memory-mapped scratch
   copy, then batched greedy generation with early stop; once with the default
   direction cache (4 GiB) and once with none (``--memory-budget 0``), which
   trades weight-update time for memory;
3. ceiling: llama.cpp's decode rate at the engine's batch size through the
   low-level API with no per-token Python work.

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
from pathlib import Path

ALPHAS = (-0.1, 0.0, 0.1)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_baseline(model_path: Path, prompts: list[str], max_new_tokens: int, threads: int) -> list:
    import llama_cpp

    from visage_local.directions import RandomDirection
    from visage_local.engine import quiet_llama_logs
    from visage_local.gguf_model import GGUFModel
    from visage_local.judges import get_judge
    from visage_local.perturb import Perturbation, Point, export_perturbed

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
    model_path: Path, prompts: list[str], max_new_tokens: int, threads: int, budget_mb: int
) -> list:
    from visage_local.engine import EngineSettings
    from visage_local.grid import Grid
    from visage_local.prompts import PromptSet
    from visage_local.sweep import SweepConfig, run_sweep

    rows = []
    config = SweepConfig(
        model_path=model_path,
        prompts=PromptSet("bench", tuple(prompts)),
        grid=Grid(1, 2, ALPHAS[-1]),
        max_new_tokens=max_new_tokens,
        engine=EngineSettings(threads=threads),
        memory_budget_mb=budget_mb,
        coherence=False,  # the baseline route does not score coherence either
    )

    def on_point(outcome, done, total):
        rows.append(
            _row(
                outcome.point.alpha,
                outcome.weight_update_s,
                outcome.generation_s,
                outcome.tokens,
                outcome.refused,
            )
        )

    with tempfile.TemporaryDirectory() as tmp:
        run_sweep(config, Path(tmp) / "run", on_point=on_point)
    return rows


def run_ceiling(model_path: Path, batch: int, steps: int, threads: int) -> list:
    """Decode tokens/s for ``batch`` sequences through llama.cpp alone (no per-token Python)."""
    import llama_cpp

    from visage_local.engine import Engine, EngineSettings

    with Engine(model_path, EngineSettings(threads=threads, max_sequences=batch)) as engine:
        engine._ensure_context(batch, steps + 64)
        ctx = engine._ctx
        b = llama_cpp.llama_batch_init(batch, 0, 1)
        try:
            for pos in range(48 + steps):  # 48 prompt-like positions, then the timed steps
                if pos == 48:
                    start = time.monotonic()
                for s in range(batch):
                    b.token[s] = 100 + (pos * 7 + s) % 1000
                    b.pos[s] = pos
                    b.n_seq_id[s] = 1
                    b.seq_id[s][0] = s
                    b.logits[s] = True
                b.n_tokens = batch
                if llama_cpp.llama_decode(ctx, b) != 0:
                    raise RuntimeError("llama_decode failed")
            seconds = time.monotonic() - start
        finally:
            llama_cpp.llama_batch_free(b)
    return [{"batch": batch, "tokens": batch * steps, "seconds": seconds}]


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
    from visage_local.prompts import load_prompts

    prompts = list(load_prompts(args.prompts, args.limit).prompts)
    if args.child == "baseline":
        rows = run_baseline(args.model, prompts, args.max_new_tokens, args.threads)
    elif args.child == "engine":
        rows = run_engine(args.model, prompts, args.max_new_tokens, args.threads, 4096)
    elif args.child == "engine-nocache":
        rows = run_engine(args.model, prompts, args.max_new_tokens, args.threads, 0)
    else:
        rows = run_ceiling(args.model, min(64, args.limit), args.max_new_tokens, args.threads)
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
    name: str, baseline: list, engine: list, nocache: list, ceiling: list, model_mib: float
) -> None:
    print(f"\n== {name} ({model_mib:.0f} MiB GGUF)")
    print(
        "alpha  route     update_s  generate_s  tokens  tok/s  peak_RSS_MiB  "
        "point_s  baseline/engine  update_share  verdicts_agree"
    )
    engine_by_alpha = {r["alpha"]: r for r in engine}
    for b in baseline:
        e = engine_by_alpha[b["alpha"]]
        b_total = b["update_s"] + b["generate_s"]
        e_total = e["update_s"] + e["generate_s"]
        n = next(r for r in nocache if r["alpha"] == b["alpha"])
        n_total = n["update_s"] + n["generate_s"]
        routes = (("baseline", b, b_total), ("engine", e, e_total), ("no-cache", n, n_total))
        for route, r, total in routes:
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
    c = ceiling[0]
    rate = c["tokens"] / c["seconds"]
    mean_engine = sum(r["tokens"] for r in engine) / sum(r["generate_s"] for r in engine)
    print(
        f"ceiling: llama.cpp decode at batch {c['batch']}: {rate:.1f} tok/s; engine generation "
        f"(prefill included) {mean_engine:.1f} tok/s = {mean_engine / rate:.0%} of it"
    )
    asr = [100 * (1 - sum(r["refused"]) / len(r["refused"])) for r in engine]
    print(f"engine ASR per point: {', '.join(f'{a:.1f}' for a in asr)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["baseline", "engine", "engine-nocache", "ceiling"])
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
    from visage_local.registry import resolve_model

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
        engine = _spawn("engine", model, args)
        nocache = _spawn("engine-nocache", model, args)
        ceiling = _spawn("ceiling", model, args)
        report(model.name, baseline, engine, nocache, ceiling, model.stat().st_size / (1 << 20))


if __name__ == "__main__":
    main()

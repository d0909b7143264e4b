"""What a sweep point costs at 1B-8B, and whether the sweep's own estimate says so.

For each model, a child process runs a real three-point sweep (a = -A, 0, +A: the
origin, a first point that draws the directions, a later one) of a few prompts, while
this process samples the child's peak resident memory (VmHWM). From the run folder:

- the weight update of the first and the later point, and its phases in thread-seconds
  (``perturb.PHASES``: read, draw, dequantize, move, requantize, measure, write);
- prefill and decode seconds of the fixed prompt set;
- the estimate the sweep printed before its first point beside what the points took.

Then, in this process and on the same threads, requantisation against ggml's own
kernel: each type's middle-layer tensor quantised by visage-local's threaded route
(``quant.quantize``, ``--threads`` threads) against one ggml_quantize_chunk call over
the whole tensor on one thread, times the threads, and against ggml alone on the same
threads (one call per thread, no Python between: what the cores give together). Plots seconds per point and peak
memory against parameter count. With ``--reference``, only the sweep's own estimate of
the reference setting is printed (timed, nothing run); with ``--kernels``, only the
requantisation rates are measured. ``--json`` keeps the other models' figures.

    .venv/bin/python scripts/make_models.py --scale llama-3.2-1b --scale llama-3.2-3b
    .venv/bin/python scripts/make_models.py --scale llama-3.1-8b --type Q4_K_M
    .venv/bin/python scripts/bench_scale.py models/synthetic/scale/*.gguf --plot docs/img/bench-scale.png
    .venv/bin/python scripts/bench_scale.py --reference models/synthetic/scale/llama-3.1-8b.Q4_K_M.gguf
    .venv/bin/python scripts/bench_scale.py --from-json bench.json --plot bench-scale.png
    .venv/bin/python scripts/bench_scale.py --kernels models/synthetic/scale/*.gguf --json bench.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from visage_local.engine.llama import EngineSettings
from visage_local.gguf import ggml, quant
from visage_local.gguf.model import GGUFModel
from visage_local.points.planning import plan
from visage_local.run.estimate import Estimate, samples
from visage_local.run.evaluator import evaluator
from visage_local.run.prepared import prepare
from visage_local.run.settings import sweep_config
from visage_local.weights.directions import TensorSelection

GiB = 1 << 30


def peak_rss(command: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak resident bytes (VmHWM, sampled every 50 ms) and stderr of a child."""
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        while child.poll() is None:
            try:
                for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
            except (FileNotFoundError, ProcessLookupError):
                pass
            time.sleep(0.05)
        err.seek(0)
        text = err.read()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with {child.returncode}:\n{text[-2000:]}")
    return time.monotonic() - start, peak, text


# Each route runs once a round, the three in turn, and the median of the rounds is kept:
# on a shared machine the best of consecutive runs of one route, then the next, measured
# the moment as much as the route (a ggml-alone figure 0.7 of ours, gone interleaved).
KERNEL_ROUNDS = 7


def kernel_ratio(model: GGUFModel, threads: int) -> list[dict]:
    """Per type: values/s of ``quant.quantize`` on ``threads`` threads, of one ggml call on
    one thread, and of one ggml call per thread (ggml alone), on the type's sampled tensor
    (dequantised first); medians of rounds that run the three in turn."""
    targets = [t for t in model.tensors if not TensorSelection().excludes(t.name)]
    rows = []
    seen = {GGMLQuantizationType.F32}  # kept in float32, no ggml kernel to compare with
    for info, _ in samples(targets):
        if info.qtype in seen:
            continue
        seen.add(info.qtype)
        values = model.dequantize(info, threads)
        qtype = info.qtype
        routes = {
            "ours": (quant.quantize, values, qtype, threads),
            "kernel": (_one_call, values, int(qtype)),
            "split": (_split_calls, values, int(qtype), threads),
        }
        seconds: dict[str, list[float]] = {name: [] for name in routes}
        for _ in range(KERNEL_ROUNDS):
            for name, (work, *args) in routes.items():
                seconds[name].append(_timed(work, *args))
        ours, kernel, split = (statistics.median(seconds[name]) for name in routes)
        rows.append(
            {
                "type": info.qtype.name,
                "tensor": info.name,
                "values": info.n_elements,
                "ours_rate": info.n_elements / ours,
                "kernel_rate": info.n_elements / kernel,
                "ratio": (info.n_elements / ours) / (threads * info.n_elements / kernel),
                # ggml alone on the same threads: what the machine's cores give together
                "split_rate": info.n_elements / split,
                "split_ratio": split / ours,
            }
        )
    return rows


def _split_calls(values: np.ndarray, type_id: int, threads: int) -> None:
    """One ggml_quantize_chunk call per thread over an equal share of the rows, no Python
    between (ctypes releases the GIL): the most ``threads`` threads of ggml can do here."""
    share = -(-len(values) // threads)
    parts = [values[i : i + share] for i in range(0, len(values), share)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda part: _one_call(np.ascontiguousarray(part), type_id), parts))


def _timed(work, *args) -> float:
    start = time.perf_counter()
    work(*args)
    return time.perf_counter() - start


def _one_call(values: np.ndarray, type_id: int) -> None:
    """ggml_quantize_chunk over every row at once, on this thread."""
    n_rows, n_per_row = values.shape
    imatrix = np.ones(n_per_row, dtype=np.float32) if ggml.requires_imatrix(type_id) else None
    dst = np.empty((n_rows, ggml.row_size(type_id, n_per_row)), dtype=np.uint8)
    ggml._lib().ggml_quantize_chunk(
        type_id,
        values.ctypes.data,
        dst.ctypes.data,
        0,
        n_rows,
        n_per_row,
        None if imatrix is None else imatrix.ctypes.data_as(ctypes.c_void_p),
    )


def bench(path: Path, args: argparse.Namespace, work: Path) -> dict:
    """One model: the child sweep's figures and the kernel ratio."""
    model = GGUFModel(path)
    out = work / path.stem
    command = [
        sys.executable, "-m", "visage_local.cli", "sweep", str(path), "--out", str(out),
        "--steps", "2", "--range", str(args.alpha), "--limit", str(args.prompts),
        "--max-new-tokens", str(args.tokens), "--threads", str(args.threads),
        "--no-early-stop", "--n-gpu-layers", str(args.n_gpu_layers),
        *(["--no-coherence"] if args.no_coherence else []),
        *(["--memory-budget", str(args.memory_budget)] if args.memory_budget is not None else []),
    ]  # fmt: skip
    wall, peak, stderr = peak_rss(command)
    summary = json.loads((out / "summary.json").read_text())
    points = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    moved = [p for p in points if p["alpha"] != 0]
    return {
        "model": path.name,
        "parameters": sum(t.n_elements for t in model.tensors),
        "file_bytes": model.size,
        "wall_s": wall,
        "peak_rss": peak,
        "estimate": summary["estimate"],
        "actual": summary["actual"],
        "first": moved[0],
        "later": moved[-1],
        "origin": next(p for p in points if p["alpha"] == 0),
        "kernel": kernel_ratio(model, args.threads),
        "run": str(out),
        "cache_line": next((x for x in stderr.splitlines() if "direction cache" in x), ""),
    }


def reference_estimate(path: Path, engine: EngineSettings) -> Estimate:
    """What the sweep itself estimates for the reference setting (the first 80 AdvBench
    prompts, 512 new tokens, 21 points, coherence scored), timed here, nothing run."""
    config = sweep_config(path, engine=engine)
    with (
        tempfile.TemporaryDirectory() as tmp,
        evaluator(prepare(config), Path(tmp)) as live,
    ):
        return live.estimate(plan(config.grid))


def report(result: dict, threads: int) -> None:
    """Print one model's figures."""
    e, a, later = result["estimate"], result["actual"], result["later"]
    phases = later["weight_update_phases"]
    print(f"\n{result['model']}: {result['parameters'] / 1e9:.2f}B parameters, "
          f"{result['file_bytes'] / GiB:.2f} GiB file, {threads} threads")  # fmt: skip
    print(f"  {result['cache_line']}")
    print("  weight update s      first {:8.1f}   later {:8.1f}".format(
        result["first"]["weight_update_s"], later["weight_update_s"]))  # fmt: skip
    busy = sum(phases.values())
    print("  later, thread-s      " + "  ".join(f"{k} {v:.1f}" for k, v in phases.items())
          + f"   (sum {busy:.1f} = {busy / max(later['weight_update_s'], 1e-9) / threads:.0%}"
          " of threads x wall)")  # fmt: skip
    gen = result["origin"]["generation"]
    print(f"  origin generation    prefill {gen['prefill_s']:.1f} s ({gen['prefill_tokens']} tokens)"
          f"  decode {gen['decode_s']:.1f} s ({gen['decode_steps']} steps)")  # fmt: skip
    print(f"  peak RSS             {result['peak_rss'] / GiB:.2f} GiB   planned "
          f"{e['peak_bytes'] / GiB:.2f} GiB (scratch {e['scratch_bytes'] / GiB:.2f} + original "
          f"{e['origin_bytes'] / GiB:.2f} + KV "
          f"{e['kv_bytes'] / GiB:.2f} + work {e['working_bytes'] / GiB:.2f} + cache "
          f"{e['cache_bytes'] / GiB:.2f});  file + KV + 1.5 GiB = "
          f"{(result['file_bytes'] + e['kv_bytes']) / GiB + 1.5:.2f} GiB")  # fmt: skip
    print("  estimate / actual    " + "  ".join(
        f"{k} {e[k]:.1f}/{a[k]:.1f}={e[k] / a[k]:.2f}" for k in
        ("first_update_s", "update_s", "prefill_s", "decode_s", "point_s") if a.get(k)))  # fmt: skip
    print_kernels(result["kernel"], threads)


def print_kernels(rows: list[dict], threads: int) -> None:
    """One line per type: our rate against ggml's."""
    for k in rows:
        print(f"  requantise {k['type']:7s} ({k['tensor']}): ours {k['ours_rate'] / 1e6:7.1f} M/s "
              f"on {threads} threads, ggml {k['kernel_rate'] / 1e6:7.1f} M/s on one;"
              f" ratio to ggml x {threads} = {k['ratio']:.2f}"
              + (f", to ggml alone on {threads} ({k['split_rate'] / 1e6:.1f} M/s) = "
                 f"{k['split_ratio']:.2f}" if "split_rate" in k else ""))  # fmt: skip


def plot(results: list[dict], path: Path) -> None:
    """Seconds of a later point by part, and peak memory, against parameter count; one
    line per upload type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    types = sorted({_type(r) for r in results}, key=lambda t: t != "Q4_K_M")
    styles = {"weight update": "C0", "prefill": "C1", "decode": "C2", "estimate": "k"}
    for qtype, marker in zip(types, ("o-", "s--", "^:"), strict=False):
        rs = sorted((r for r in results if _type(r) == qtype), key=lambda r: r["parameters"])
        x = [r["parameters"] / 1e9 for r in rs]
        parts = {
            "weight update": [r["later"]["weight_update_s"] for r in rs],
            "prefill": [r["later"]["generation"]["prefill_s"] for r in rs],
            "decode": [r["later"]["generation"]["decode_s"] for r in rs],
            "estimate": [r["estimate"]["point_s"] for r in rs],
        }
        for part, ys in parts.items():
            label = (
                f"{part} ({qtype})" if part != "estimate" else f"estimate, whole point ({qtype})"
            )
            left.plot(
                x,
                ys,
                marker,
                color=styles[part],
                label=label,
                alpha=0.5 if part == "estimate" else 1,
            )
        right.plot(
            x, [r["peak_rss"] / GiB for r in rs], marker, color="C3", label=f"peak RSS ({qtype})"
        )
        right.plot(
            x,
            [r["estimate"]["peak_bytes"] / GiB for r in rs],
            marker,
            color="k",
            alpha=0.4,
            label=f"planned ({qtype})",
        )
        right.plot(
            x, [r["file_bytes"] / GiB for r in rs], marker, color="C4", label=f"GGUF file ({qtype})"
        )
    left.set(
        xlabel="parameters (billions)",
        ylabel="seconds (log)",
        yscale="log",
        title="one point after the first: 8 prompts, 32 tokens, 2 threads",
    )
    right.set(
        xlabel="parameters (billions)", ylabel="GiB", title="memory (direction cache: what fits)"
    )
    for ax in (left, right):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _type(result: dict) -> str:
    return result["model"].split(".")[-2]


def kernels(args: argparse.Namespace) -> None:
    """Measure and print only the requantisation rates; with ``--json``, store them in
    each model's entry (which a whole run wrote before)."""
    stored = json.loads(args.json.read_text()) if args.json else []
    for path in args.models:
        rows = kernel_ratio(GGUFModel(path), args.threads)
        print(f"\n{path.name}, {args.threads} threads")
        print_kernels(rows, args.threads)
        for result in stored:
            if result["model"] == path.name:
                result["kernel"] = rows
    if args.json:
        args.json.write_text(json.dumps(stored, indent=1))


def main() -> None:
    """Parse arguments, benchmark each model, print and plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="*")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--memory-budget", type=int, default=None, help="MiB; default: auto")
    parser.add_argument("--no-coherence", action="store_true", help="the scorer maps the file too")
    parser.add_argument("--n-gpu-layers", type=int, default=0, help="-1: all (GPU machines)")
    parser.add_argument(
        "--reference",
        action="store_true",
        help="only print the sweep's estimate of the reference setting",
    )
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="only the requantisation rates (with --json: replace each model's kernel figures)",
    )
    parser.add_argument("--plot", type=Path)
    parser.add_argument(
        "--json", type=Path, help="write every figure here (models measured again replace theirs)"
    )
    parser.add_argument("--from-json", type=Path, help="report and plot a --json file again")
    args = parser.parse_args()
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        for result in results:
            report(result, args.threads)
        if args.plot:
            plot(results, args.plot)
        return
    if args.reference:
        for path in args.models:
            settings = EngineSettings(threads=args.threads, n_gpu_layers=args.n_gpu_layers)
            estimate = reference_estimate(path, settings)
            print(f"{path.name}, reference setting: "
                  f"{estimate.describe()}")  # fmt: skip
        return
    if args.kernels:
        kernels(args)
        return
    print(f"{args.prompts} prompts, {args.tokens} new tokens, no early stop, a = +-{args.alpha}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.models:
            results.append(bench(path, args, Path(tmp)))
            report(results[-1], args.threads)
    if args.json:
        # a model measured again replaces its earlier figures; the others are kept
        earlier = json.loads(args.json.read_text()) if args.json.exists() else []
        measured = {r["model"]: r for r in results}
        known = {r["model"] for r in earlier}
        results = [measured.pop(r["model"], r) for r in earlier] + [
            r for r in results if r["model"] not in known
        ]
        args.json.write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(results, args.plot)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()

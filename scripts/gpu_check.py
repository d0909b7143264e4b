"""What one short visit to a machine with an NVIDIA GPU measures (run by scripts/gpu_check.sh).

Every figure goes to OUT/gpu-check.json, written again after each step, so a visit cut
short keeps what it measured. The steps, in order; one the time left cannot hold is
skipped with its reason recorded:

1. ``small``: a random-weight Qwen2-shaped model (``synthetic``: real tensor layout,
   biases, byte tokenizer), Q4_K_M by llama.cpp's quantiser, all layers on the GPU
   against none: the last-prompt-token logits of 16 AdvBench prompts (their largest
   difference is the GPU-CPU spread) and greedy answers, equal or parting only where the
   CPU's two candidate tokens were within twice that spread (the engine tests' rule).
2. ``reload``: the reload route. The model at a = 0.3 (``visage-local perturb``) is
   written into the scratch file an engine maps. On the CPU, clearing the KV cache is
   enough: answers equal a fresh engine on the moved file. On the GPU the weights live in
   device memory: with the cache cleared only (the reload skipped) the answers are
   stale, and after ``refresh_weights`` they equal a fresh GPU engine on the moved file.
3. ``sweep``: the same model swept by the CLI on the CPU and on the GPU (5 points): at
   each point, answers equal across routes, and how many equal the origin's (stale
   weights would make every one equal).
4. ``scale``: Llama-3.1-8B and Llama-3.2-1B shapes (Q4_K_M), a sweep on the GPU (80
   prompts, 128 tokens, no early stop; the origin and a = -0.1 at 8B, and a = +0.1 too at
   1B): weight update (reload included), prefill and decode seconds, the sweep's own
   estimate against them; and the sweep's estimate of the 8B reference setting (80
   prompts, 512 tokens, 21 points, coherence scored).

    python scripts/gpu_check.py --out OUT [--budget-s 480] [--steps small,reload,sweep,scale]
        [--scale llama-3.1-8b,llama-3.2-1b] [--scale-prompts 80] [--scale-tokens 128]
    python scripts/gpu_check.py --sources-only   # the F16 sources, while llama.cpp builds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# llama.cpp loaded first: a CUDA build loaded after gguf-py and visage_local.synthetic crashed
# in llama_model_load_from_file on the H200 (docs/BENCHMARKS.md); --sources-only runs while
# llama-cpp-python builds, without it.
with contextlib.suppress(ImportError):
    import llama_cpp

from visage_local import synthetic
from visage_local.gguf.model import GGUFCopy, GGUFModel

# llama-cpp-python is imported only once it is built: --sources-only runs during the build.
if TYPE_CHECKING:
    from visage_local.engine.llama import Engine

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models" / "synthetic" / "gpu-check"
SMALL = synthetic.Size(n_embd=512, n_layer=4, n_head=8, n_head_kv=4, head_dim=64, n_ff=1536)
STEPS = ("small", "reload", "sweep", "scale")
# Seconds a step (or a model of step scale) needs at most on an H200 machine with 16 cores,
# for the budget: a step that would not fit in what is left is skipped.
NEEDS = {"small": 45, "reload": 45, "sweep": 90, "llama-3.2-1b": 90, "llama-3.1-8b": 330}


class Check:
    """The figures of one visit, written to ``out`` after every step."""

    def __init__(self, out: Path, budget_s: float, threads: int):
        self.out = out
        self.deadline = time.monotonic() + budget_s
        self.threads = threads
        self.figures: dict[str, object] = {"threads": threads, "budget_s": budget_s}

    def left(self) -> float:
        """Seconds left of the budget."""
        return self.deadline - time.monotonic()

    def save(self) -> None:
        """Write the figures so far."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu-check.json").write_text(json.dumps(self.figures, indent=1))

    def cli(self, *args: str) -> str:
        """Run visage-local in a child process (same interpreter); its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "visage_local.cli", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        # the run's files are written without the plot (see analysis/plots.py)
        if done.returncode and "the plot was not drawn" in done.stderr:
            self.figures["plot"] = done.stderr.strip().splitlines()[-1]
        elif done.returncode:
            raise RuntimeError(f"visage-local {' '.join(args)}: {done.stderr.strip()[-2000:]}")
        return done.stdout


# The models: name -> (architecture, size, seed); the scale ones are real models' shapes.
MODEL_SPECS = {"qwen2-small": ("qwen2", SMALL, 1)} | {
    name: (*synthetic.SCALES[name], 0) for name in ("llama-3.2-1b", "llama-3.1-8b")
}


def write_sources(names: list[str]) -> None:
    """The F16 sources of ``names`` not made yet (gguf-py and numpy alone: this runs while
    llama.cpp builds)."""
    MODELS.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = MODELS / f"{name}.F16.gguf"
        if source.exists() or (MODELS / f"{name}.Q4_K_M.gguf").exists():
            continue
        architecture, size, seed = MODEL_SPECS[name]
        t0 = time.monotonic()
        partial = synthetic.write_model(source.with_suffix(".part"), architecture, size, seed)
        partial.rename(source)
        print(f"{source.name} written in {time.monotonic() - t0:.0f} s", flush=True)


def model(name: str, threads: int) -> tuple[Path, float]:
    """``name`` in Q4_K_M by llama.cpp's quantiser (made once), and the seconds it took."""
    out = MODELS / f"{name}.Q4_K_M.gguf"
    t0 = time.monotonic()
    if not out.exists():
        write_sources([name])
        source = MODELS / f"{name}.F16.gguf"
        from visage_local.engine.quantize import quantize_model  # llama.cpp built by now

        quantize_model(source, out, "Q4_K_M", threads)
        source.unlink()
    return out, round(time.monotonic() - t0, 1)


def prompts(engine: Engine, model: GGUFModel, n: int) -> list[list[int]]:
    """The first ``n`` AdvBench prompts in the model's chat template."""
    from visage_local.asking.chat import DEFAULT_SYSTEM, prompt_tokens
    from visage_local.asking.prompts import advbench

    texts = advbench().prompts[:n]
    return [prompt_tokens(engine, model.chat_template, DEFAULT_SYSTEM, t) for t in texts]


def answers(engine: Engine, tokens: list[list[int]], new: int) -> list[list[int]]:
    """Greedy answers (token ids), all decoded together."""
    return [g.tokens for g in engine.generate(tokens, new)]


def step_small(check: Check, path: Path) -> dict:
    """GPU against CPU on the small model: logits spread, answers, near ties."""
    from visage_local.engine.llama import ALL_LAYERS, Engine, EngineSettings

    model = GGUFModel(path)
    with (
        Engine(path, EngineSettings(threads=check.threads)) as cpu,
        Engine(path, EngineSettings(threads=check.threads, n_gpu_layers=ALL_LAYERS)) as gpu,
    ):
        tokens = prompts(cpu, model, 16)
        cpu_logits = np.stack([cpu.logits_after(t) for t in tokens])
        gpu_logits = np.stack([gpu.logits_after(t) for t in tokens])
        spread = float(np.abs(cpu_logits - gpu_logits).max())
        on_cpu, on_gpu = answers(cpu, tokens, 48), answers(gpu, tokens, 48)
        parted, near_ties, ended_apart, margins = 0, 0, 0, []
        for prompt, a, b in zip(tokens, on_cpu, on_gpu, strict=True):
            if a == b:
                continue
            parted += 1
            k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
            if k is None:  # one answer ended where the other went on
                ended_apart += 1
                continue
            # the CPU's two candidates after the shared prefix (negative: the CPU's batched
            # decode itself chose against its single-prompt logits, batching's rounding)
            logits = cpu.logits_after(prompt + a[:k])
            margin = float(logits[a[k]] - logits[b[k]])
            margins.append(margin)
            near_ties += abs(margin) < 2 * spread
    return {
        "prompts": len(tokens),
        "new_tokens": 48,
        "logit_std": float(cpu_logits.std()),
        "gpu_cpu_spread": spread,
        "top1_equal": int((cpu_logits.argmax(1) == gpu_logits.argmax(1)).sum()),
        "answers_equal": len(tokens) - parted,
        "parted": parted,
        "parted_at_near_ties": near_ties,
        "ended_apart": ended_apart,
        "parting_margins": margins,
        "ok": near_ties == len(margins),
    }


def step_reload(check: Check, path: Path, work: Path) -> dict:
    """The reload route: stale weights without it, the moved model's answers with it."""
    from visage_local.engine.llama import ALL_LAYERS, Engine, EngineSettings

    moved = work / "moved.gguf"
    check.cli(
        "perturb", str(path), "--alpha", "0.3", "-o", str(moved), "--threads", str(check.threads)
    )
    model, moved_model = GGUFModel(path), GGUFModel(moved)
    result = {}
    for route, layers in (("cpu", 0), ("gpu", ALL_LAYERS)):
        settings = EngineSettings(threads=check.threads, n_gpu_layers=layers)
        scratch = GGUFCopy(model, work / f"scratch-{route}.gguf")
        try:
            with Engine(scratch.path, settings) as engine:
                tokens = prompts(engine, model, 8)
                origin = answers(engine, tokens, 32)
                for info in moved_model.tensors:  # the moved bytes into the mapped file
                    scratch.write_tensor(info.name, moved_model.raw(info))
                engine.reset()  # what the CPU route does; on the GPU: the reload skipped
                cleared = answers(engine, tokens, 32)
                engine.refresh_weights()
                refreshed = answers(engine, tokens, 32)
            with Engine(moved, settings) as fresh:
                expected = answers(fresh, tokens, 32)
        finally:
            scratch.close()
            scratch.path.unlink()
        result[route] = {
            "origin_equal_moved": sum(map(list.__eq__, origin, expected)),
            "cache_cleared_equal_moved": sum(map(list.__eq__, cleared, expected)),
            "cache_cleared_equal_origin": sum(map(list.__eq__, cleared, origin)),
            "refreshed_equal_moved": sum(map(list.__eq__, refreshed, expected)),
            "prompts": len(tokens),
        }
    cpu, gpu = result["cpu"], result["gpu"]
    result["ok"] = (
        cpu["cache_cleared_equal_moved"] == cpu["prompts"]  # the CPU maps the file in place
        and gpu["refreshed_equal_moved"] == gpu["prompts"]  # the reload brings the moved weights
        and gpu["cache_cleared_equal_moved"] < gpu["prompts"]  # without it: stale
        and gpu["origin_equal_moved"] < gpu["prompts"]  # the point is away from the origin
    )
    return result


def step_sweep(check: Check, path: Path, work: Path) -> dict:
    """The CLI's sweep on both routes, point by point."""
    runs = {}
    for route, layers in (("cpu", "0"), ("gpu", "auto")):
        out = work / f"sweep-{route}"
        t0 = time.monotonic()
        check.cli("sweep", str(path), "--out", str(out), "--overwrite", "--steps", "4",
                  "--range", "0.4", "--limit", "16", "--max-new-tokens", "32", "--no-coherence",
                  "--threads", str(check.threads), "--n-gpu-layers", layers)  # fmt: skip
        lines = (out / "generations.jsonl").read_text().splitlines()
        runs[route] = {
            (r["alpha"], r["prompt_index"]): r["response"] for r in map(json.loads, lines)
        }
        runs[route + "_s"] = round(time.monotonic() - t0, 1)
    cpu, gpu = runs["cpu"], runs["gpu"]
    points = []
    for alpha in sorted({a for a, _ in cpu}):
        keys = [k for k in cpu if k[0] == alpha]
        points.append({
            "alpha": alpha,
            "gpu_equal_cpu": sum(cpu[k] == gpu[k] for k in keys),
            "gpu_equal_gpu_origin": sum(gpu[k] == gpu[(0.0, k[1])] for k in keys),
            "cpu_equal_cpu_origin": sum(cpu[k] == cpu[(0.0, k[1])] for k in keys),
            "prompts": len(keys),
        })  # fmt: skip
    moved = [p for p in points if p["alpha"] != 0]
    return {
        "points": points,
        "cpu_s": runs["cpu_s"],
        "gpu_s": runs["gpu_s"],
        # stale weights would leave every GPU answer at a moved point equal to the origin's
        "ok": all(p["gpu_equal_gpu_origin"] < p["prompts"] for p in moved),
    }


def step_scale(check: Check, work: Path, names: list[str], prompts: int, tokens: int) -> dict:
    """A GPU sweep of each model; the sweep's estimate of the reference setting on the
    first."""
    from bench_scale import reference_estimate  # a script beside this one

    from visage_local.engine.llama import ALL_LAYERS, EngineSettings

    result = {}
    for name in names:
        if check.left() < NEEDS.get(name, 0):
            result[name] = {"skipped": f"{check.left():.0f} s left of the budget"}
            continue
        path, made_s = model(name, check.threads)
        out = work / name
        t0 = time.monotonic()
        # a = -0.1, 0, +0.1: the first moved point draws the directions, the later one not;
        # at 8B only the origin and the first (shard 1 of 2), for the time a visit has
        shard = ["--shard", "1/2"] if name == "llama-3.1-8b" else []
        check.cli("sweep", str(path), "--out", str(out), "--overwrite", "--steps", "2",
                  "--range", "0.1", "--limit", str(prompts), "--max-new-tokens", str(tokens),
                  "--no-early-stop", "--no-coherence", "--threads", str(check.threads),
                  "--n-gpu-layers", "auto", *shard)  # fmt: skip
        summary = json.loads((out / "summary.json").read_text())
        points = [json.loads(x) for x in (out / "points.jsonl").read_text().splitlines()]
        result[name] = {
            "made_s": made_s,
            "sweep_s": round(time.monotonic() - t0, 1),
            "prompts": prompts,
            "new_tokens": tokens,
            "estimate": summary["estimate"],
            "actual": summary["actual"],
            "points": [
                {k: p.get(k) for k in ("alpha", "weight_update_s", "generation_s", "generation")}
                for p in points
            ],
        }
        check.figures["scale"] = result
        check.save()
        if name == names[0]:  # the largest: what the reference setting would cost on it
            settings = EngineSettings(threads=check.threads, n_gpu_layers=ALL_LAYERS)
            estimate = reference_estimate(path, settings).record()
            result["reference_estimate"] = {"model": name} | estimate
    return result


def main() -> None:
    """Parse the arguments, run the steps in order within the budget."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--budget-s", type=float, default=480)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument(
        "--scale",
        default="llama-3.1-8b,llama-3.2-1b",
        help="models of step scale, the first also estimated at the reference setting",
    )
    parser.add_argument("--scale-prompts", type=int, default=80)
    parser.add_argument("--scale-tokens", type=int, default=128)
    parser.add_argument(
        "--sources-only", action="store_true", help="write the models' F16 sources and stop"
    )
    args = parser.parse_args()
    scale = args.scale.split(",")
    if args.sources_only:
        write_sources(["qwen2-small", *scale] if "scale" in args.steps else ["qwen2-small"])
        return
    if args.out is None:
        parser.error("--out is required")
    check = Check(args.out, args.budget_s, args.threads)
    check.figures["llama_cpp"] = {
        "version": llama_cpp.__version__,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "system_info": llama_cpp.llama_print_system_info().decode(),
    }
    check.save()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "visage-gpu-check"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    small, _ = model("qwen2-small", args.threads)
    for step in args.steps.split(","):
        if check.left() < NEEDS.get(step, 0):
            check.figures[step] = {"skipped": f"{check.left():.0f} s left of the budget"}
            continue
        t0 = time.monotonic()
        print(f"== {step} ({check.left():.0f} s left)", flush=True)
        try:
            if step == "small":
                figures = step_small(check, small)
            elif step == "reload":
                figures = step_reload(check, small, work)
            elif step == "sweep":
                figures = step_sweep(check, small, work)
            else:
                figures = step_scale(check, work, scale, args.scale_prompts, args.scale_tokens)
        except Exception as error:  # recorded: the next step may still run
            figures = {"error": f"{type(error).__name__}: {error}"}
        figures["step_s"] = round(time.monotonic() - t0, 1)
        check.figures[step] = figures
        check.save()
        print(json.dumps(figures, indent=1)[:3000], flush=True)
    failed = [s for s in STEPS if isinstance(check.figures.get(s), dict)
              and check.figures[s].get("ok") is False]  # fmt: skip
    print(f"gpu_check: {'failed: ' + ', '.join(failed) if failed else 'every check held'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""Quantised against float, in the answers: one landscape measured by the paper's pipeline
(float32 weights moved and answered in torch: ``training.float_route``) and by the GGUF
route at several requantisation modes, on the same grid, prompts, seed and judge.

Writes OUT/float.jsonl (the float route's verdicts, one line per answer; resumable),
OUT/gguf-MODE/ (a ``visage-local sweep`` run per mode), OUT/comparison.json and
OUT/comparison.png, and prints the comparison as a Markdown table. ``--redraw`` measures
nothing and reads OUT as it is (a folder whose runs were merged without answers):

    .venv/bin/python scripts/float_vs_quantised.py --limit 20 --out runs/float-vs-quantised
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from visage_local import metrics, stats
from visage_local.analysis.landscape import grid_refusals
from visage_local.asking.chat import SystemPrompt, prompt_tokens
from visage_local.asking.prompts import select_prompts
from visage_local.engine.llama import Engine, EngineSettings
from visage_local.errors import VisageError
from visage_local.gguf.model import GGUFModel
from visage_local.judges import get_judge
from visage_local.record import RunFolder
from visage_local.sources.registry import resolve_model
from visage_local.training.float_route import FloatRoute, greedy_answers

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP_SEED = 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--limit", type=int, default=20, help="first N AdvBench prompts")
    parser.add_argument("--steps", type=int, default=10, help="grid steps (steps + 1 points)")
    parser.add_argument("--range", type=float, default=0.5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--judge", default="keyword-paper")
    parser.add_argument("--modes", default="same,q8_0,f16,f32", help="GGUF requant modes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/float-vs-quantised"))
    parser.add_argument(
        "--redraw", action="store_true", help="measure nothing: read OUT's runs as they are"
    )
    return parser.parse_args(argv)


def grid(args: argparse.Namespace) -> list[float]:
    """The sweep's 1D grid: steps + 1 points over [-range, range], rounded as it rounds."""
    return [round(float(a), 10) for a in np.linspace(-args.range, args.range, args.steps + 1)]


def float_route(args: argparse.Namespace, model_path: Path, path: Path) -> np.ndarray:
    """The float route's refusals (points x prompts), answering only what ``path`` lacks."""
    done = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    have = {(round(r["alpha"], 10), r["prompt_index"]): r["refused"] for r in done}
    alphas = grid(args)
    prompts = list(select_prompts(None, args.limit).prompts)
    todo = [a for a in alphas if any((a, i) not in have for i in range(len(prompts)))]
    if todo and args.redraw:
        raise VisageError(f"{path}: the float route lacks points {todo}")
    if todo:
        source = GGUFModel(model_path)
        system = SystemPrompt.parse("reference").for_model(
            source.chat_template, source.architecture, source.name
        )
        judge = get_judge(args.judge)
        route = FloatRoute(model_path, args.threads, args.seed)
        with (
            Engine(model_path, EngineSettings(threads=args.threads)) as engine,
            path.open("a") as f,
        ):
            tokens = [prompt_tokens(engine, source.chat_template, system, p) for p in prompts]
            bar = tqdm(total=len(todo), desc="float route", unit="point")
            for alpha in todo:
                model = route.at(alpha)
                missing = [i for i in range(len(prompts)) if (alpha, i) not in have]
                start = time.perf_counter()
                answers = greedy_answers(
                    model, [tokens[i] for i in missing], args.max_new_tokens, engine.is_end,
                    engine.text_of, judge.settled,
                )  # fmt: skip
                seconds = round(time.perf_counter() - start, 2)
                verdicts = judge.judge_many([prompts[i] for i in missing], [t for _, t in answers])
                for i, (answer, _), verdict in zip(missing, answers, verdicts, strict=True):
                    line = {"alpha": alpha, "prompt_index": i, "refused": verdict.refused,
                            "matched": verdict.matched, "tokens": len(answer),
                            "point_seconds": seconds}  # fmt: skip
                    f.write(json.dumps(line) + "\n")
                    have[(alpha, i)] = verdict.refused
                f.flush()
                bar.update()
            bar.close()
    return np.array([[have[(a, i)] for i in range(len(prompts))] for a in alphas])


def gguf_route(args: argparse.Namespace, model_path: Path, mode: str) -> np.ndarray:
    """A ``visage-local sweep`` at requant ``mode`` on the same grid; its refusals."""
    out = args.out / f"gguf-{mode}"
    cmd = [str(Path(sys.executable).parent / "visage-local"), "sweep", str(model_path),
           "--steps", str(args.steps), "--range", str(args.range), "--limit", str(args.limit),
           "--max-new-tokens", str(args.max_new_tokens), "--seed", str(args.seed),
           "--judge", args.judge, "--requant", mode, "--threads", str(args.threads),
           "--no-coherence", "--out", str(out)]  # fmt: skip
    if not args.redraw:
        subprocess.run(cmd, check=True)
    folder = RunFolder(out)
    summary = folder.read_summary()
    if sorted(round(r.alpha, 10) for r in summary.grid_points) != grid(args):
        raise VisageError(f"{out}: its grid is not {grid(args)}")
    return grid_refusals(summary, folder.read_generations())


def figures(alphas: list[float], refused: np.ndarray, float_refused: np.ndarray) -> dict:
    """ASR per point with Wilson intervals, VISAGE with its bootstrap interval, the basin
    edges, and the agreement with the float route answer by answer."""
    n = refused.shape[1]
    asr = 100.0 * (1.0 - refused.mean(axis=1))
    values, _ = stats.bootstrap_distribution(refused, 1, BOOTSTRAP_SEED)
    origin = alphas.index(0.0)
    float_asr = 100.0 * (1.0 - float_refused.mean(axis=1))
    return {
        "asr": asr.round(2).tolist(),
        "asr_ci": [list(stats.asr_interval(int(r.sum()), n)) for r in refused],
        "visage": metrics.visage_1d(asr.tolist()),
        "visage_ci": list(stats.percentile_interval(values)),
        "edges": list(stats.basin_edges(alphas, asr.tolist(), float(asr[origin]))),
        "same_verdicts": float((refused == float_refused).mean() * 100),
        "max_asr_gap": float(np.abs(asr - float_asr).max()),
        "mean_asr_gap": float(np.abs(asr - float_asr).mean()),
    }


def draw(alphas: list[float], results: dict[str, dict], path: Path) -> None:
    """ASR along alpha for every route, Wilson bands, the float route in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colours = {"float": "#111111", "same": "#c0392b", "q8_0": "#2e86c1", "f16": "#27ae60",
               "f32": "#8e44ad"}  # fmt: skip
    for name, r in results.items():
        low, high = zip(*r["asr_ci"], strict=True)
        colour = colours.get(name)
        label = f"{'float route (torch)' if name == 'float' else 'GGUF, --requant ' + name}: "
        ax.plot(alphas, r["asr"], marker="o", markersize=3, linewidth=2.2 if name == "float"
                else 1.3, color=colour, label=label + f"VISAGE {r['visage']:.1f}")  # fmt: skip
        ax.fill_between(alphas, low, high, color=colour, alpha=0.08)
    ax.axvline(0.0, color="#555", linestyle=":", linewidth=1)
    ax.set_xlabel("α (direction 0, seed 123)")
    ax.set_ylabel("ASR %")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def table(alphas: list[float], results: dict[str, dict]) -> str:
    """The comparison as Markdown: ASR per point, then VISAGE, edges and agreement."""
    head = (
        "| route | "
        + " | ".join(f"{a:+.1f}" for a in alphas)
        + " | VISAGE [95% CI] | edges | same verdicts as float | max / mean ASR gap |"
    )
    lines = [head, "|" + "---|" * (len(alphas) + 5)]
    for name, r in results.items():
        edges = ", ".join("none" if e is None else f"{e:+.3f}" for e in r["edges"])
        lo, hi = r["visage_ci"]
        lines.append(
            f"| {name} | " + " | ".join(f"{v:.0f}" for v in r["asr"])
            + f" | {r['visage']:.1f} [{lo:.1f}, {hi:.1f}] | {edges} | {r['same_verdicts']:.1f}%"
            + f" | {r['max_asr_gap']:.1f} / {r['mean_asr_gap']:.1f} |"
        )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model_path = resolve_model(args.model)
        args.out.mkdir(parents=True, exist_ok=True)
        alphas = grid(args)
        refusals = {"float": float_route(args, model_path, args.out / "float.jsonl")}
        for mode in args.modes.split(","):
            refusals[mode] = gguf_route(args, model_path, mode)
    except VisageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"error: the sweep failed (exit {e.returncode})", file=sys.stderr)
        return 1
    results = {name: figures(alphas, r, refusals["float"]) for name, r in refusals.items()}
    (args.out / "comparison.json").write_text(json.dumps(
        {"alphas": alphas, "prompts": args.limit, "max_new_tokens": args.max_new_tokens,
         "seed": args.seed, "judge": args.judge, "routes": results}, indent=1))  # fmt: skip
    draw(alphas, results, args.out / "comparison.png")
    print(table(alphas, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

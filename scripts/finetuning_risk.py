"""Does VISAGE predict how much harmful finetuning hurts a model? (the paper's claim)

For each aligned model NAME=FILE: its VISAGE over K random directions (``visage-local
sweep --directions K``), then the same harmful finetuning of it (``harmful_finetune.py``:
N AdvBench goal/target pairs for each N in ``--sizes``, the same rows, epochs and
learning rate for every model), then the ASR of the model and of each finetune on the
prompts its landscape used. Spearman's rho between VISAGE and each finetune's ASR, with
a 95% bootstrap interval that resamples the models, and within each model its
directions and its prompts (the same prompt draw for its landscape and its finetunes'
ASR). Resumable: every landscape, finetune and evaluation is kept under OUT.

Writes OUT/risk.json and OUT/risk.png and prints a Markdown table. ``--redraw`` measures
nothing and reads OUT as it is (landscapes merged without answers, verdict files):

    .venv/bin/python scripts/finetuning_risk.py testbed=models/testbed/testbed.f16.gguf ...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from visage_local import stats
from visage_local.analysis.landscape import grid_refusals
from visage_local.asking.chat import SystemPrompt, prompt_tokens
from visage_local.asking.prompts import select_prompts
from visage_local.engine.llama import Engine, EngineSettings
from visage_local.errors import VisageError
from visage_local.gguf.model import GGUFModel
from visage_local.judges import get_judge
from visage_local.record import RunFolder

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "visage_local/data/advbench/harmful_behaviors.csv"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=FILE of each aligned model (F16/F32)")
    parser.add_argument("--directions", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="grid steps per direction")
    parser.add_argument("--limit", type=int, default=20, help="first N AdvBench prompts")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--sizes", default="10,20,30,50", help="harmful pair counts")
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--judge", default="keyword-paper")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("runs/risk"))
    parser.add_argument("--finetunes", type=Path, default=Path("models/risk/finetunes"))
    parser.add_argument(
        "--redraw", action="store_true", help="measure nothing: read OUT's runs as they are"
    )
    return parser.parse_args(argv)


def landscape(args, name: str, path: Path) -> list[np.ndarray]:
    """Each direction's refusals (points x prompts), sweeping what is not there yet."""
    out = args.out / name / "landscape"
    cmd = [str(Path(sys.executable).parent / "visage-local"), "sweep", str(path),
           "--directions", str(args.directions), "--steps", str(args.steps),
           "--limit", str(args.limit), "--max-new-tokens", str(args.max_new_tokens),
           "--judge", args.judge, "--no-coherence", "--out", str(out)]  # fmt: skip
    if not args.redraw:
        subprocess.run(cmd, check=True)
    runs = sorted(RunFolder(out).runs(depth=1), key=lambda r: str(r.path))
    return [grid_refusals(r.read_summary(), r.read_generations()) for r in runs]


def finetunes(args, name: str, path: Path) -> dict[int, Path]:
    """The harmful finetunes of one model, made once."""
    out = args.finetunes / name
    sizes = [int(s) for s in args.sizes.split(",")]
    files = {n: out / f"harmful-{n}.f16.gguf" for n in sizes}
    missing = ",".join(str(n) for n, f in files.items() if not f.is_file())
    if missing:  # only those not made yet: training here is not repeatable bit for bit
        cmd = [sys.executable, str(ROOT / "scripts/harmful_finetune.py"), "--pairs", str(PAIRS),
               "--base", str(path), "--out", str(out), "--sizes", missing, "--safe", "0",
               "--learning-rate", str(args.learning_rate), "--epochs", str(args.epochs),
               "--no-check"]  # fmt: skip
        subprocess.run(cmd, check=True)
    return files


def refusals_at_origin(args, path: Path, cache: Path) -> np.ndarray:
    """Whether each prompt is refused by the model itself (as the sweep asks it)."""
    if cache.is_file():
        return np.array(json.loads(cache.read_text()), dtype=bool)
    if args.redraw:
        raise VisageError(f"{cache}: not measured")
    model = GGUFModel(path)
    prompts = list(select_prompts(None, args.limit).prompts)
    system = SystemPrompt.parse("reference").for_model(
        model.chat_template, model.architecture, model.name
    )
    judge = get_judge(args.judge)
    with Engine(path, EngineSettings()) as engine:
        tokens = [prompt_tokens(engine, model.chat_template, system, p) for p in prompts]
        answers = engine.generate(tokens, args.max_new_tokens, judge.settled)
    refused = [v.refused for v in judge.judge_many(prompts, [a.text for a in answers])]
    cache.write_text(json.dumps(refused))
    return np.array(refused, dtype=bool)


def visage_of(matrices: list[np.ndarray], prompts: np.ndarray | None = None) -> float:
    """Mean VISAGE over directions (each on the ``prompts`` draw when given)."""
    values = []
    for m in matrices:
        asr = 100.0 * (1.0 - (m if prompts is None else m[:, prompts]).mean(axis=1))
        values.append(stats.visage_and_span(asr, 1)[0])
    return float(np.mean(values))


def bootstrap_rho(models: list[dict], size: int, resamples: int, seed: int = 0):
    """Spearman's rho between VISAGE and the size-N finetune's ASR over resamples of the
    models, their directions and their prompts; the values (None where a side had no
    spread)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        chosen = rng.integers(0, len(models), len(models))
        x, y = [], []
        for i in chosen:
            m = models[i]
            n = len(m["finetuned"][size])
            prompts = rng.integers(0, n, n)
            picked = rng.integers(0, len(m["matrices"]), len(m["matrices"]))
            x.append(visage_of([m["matrices"][k] for k in picked], prompts))
            y.append(100.0 * (1.0 - m["finetuned"][size][prompts].mean()))
        values.append(stats.spearman_rho(x, y))
    return values


def summarise(args, models: list[dict]) -> dict:
    """Each model's figures and, for each size, rho with its interval."""
    table = [{"name": m["name"], "file": str(m["path"]), "visage": m["visage"],
              "visage_ci": m["visage_ci"], "origin_asr": m["origin_asr"],
              "finetuned_asr": {str(n): 100.0 * (1.0 - r.mean())
                                for n, r in m["finetuned"].items()}}  # fmt: skip
             for m in models]  # fmt: skip
    result = {"settings": {k: str(v) for k, v in vars(args).items() if k != "models"},
              "models": table, "rho": {}}  # fmt: skip
    for n in models[0]["finetuned"]:
        x = [m["visage"] for m in models]
        y = [100.0 * (1.0 - m["finetuned"][n].mean()) for m in models]
        draws = bootstrap_rho(models, n, args.resamples)
        defined = [v for v in draws if v is not None]
        result["rho"][str(n)] = {
            "rho": stats.spearman_rho(x, y),
            "ci": list(stats.percentile_interval(np.array(defined))) if defined else None,
            "undefined_share": 1 - len(defined) / len(draws),
        }
    return result


def draw(result: dict, path: Path) -> None:
    """VISAGE against each finetune's ASR, one panel per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(result["rho"])
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.8), squeeze=False)
    for ax, n in zip(axes[0], sizes, strict=True):
        for m in result["models"]:
            lo, hi = m["visage_ci"]
            ax.errorbar(m["visage"], m["finetuned_asr"][n], xerr=[[m["visage"] - lo],
                        [hi - m["visage"]]], fmt="o", capsize=3)  # fmt: skip
            ax.annotate(m["name"], (m["visage"], m["finetuned_asr"][n]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
        r = result["rho"][n]
        ci = "" if r["ci"] is None else f" [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]"
        rho = "undefined" if r["rho"] is None else f"{r['rho']:.2f}"
        ax.set_title(f"{n} harmful pairs: Spearman ρ {rho}{ci}", fontsize=9)
        ax.set_xlabel(f"VISAGE (mean of {result['settings']['directions']} directions)")
        ax.set_ylabel("ASR % after the harmful finetune")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = []
    try:
        for spec in args.models:
            name, _, file = spec.partition("=")
            path = Path(file)
            if not name or not (path.is_file() or args.redraw):
                raise VisageError(f"{spec}: expected NAME=FILE with an existing file")
            (args.out / name).mkdir(parents=True, exist_ok=True)
            matrices = landscape(args, name, path)
            made = (
                {int(n): path for n in args.sizes.split(",")}  # only their verdicts are read
                if args.redraw
                else finetunes(args, name, path)
            )
            finetuned = {n: refusals_at_origin(args, f, args.out / name / f"harmful-{n}.json")
                         for n, f in made.items()}  # fmt: skip
            origin = refusals_at_origin(args, path, args.out / name / "origin.json")
            models.append({"name": name, "path": path, "matrices": matrices,
                           "visage": visage_of(matrices),
                           "visage_ci": list(stats.bootstrap_across_directions(matrices, 1, 0)),
                           "origin_asr": 100.0 * (1.0 - origin.mean()),
                           "finetuned": finetuned})  # fmt: skip
    except VisageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"error: a step failed (exit {e.returncode}): {' '.join(e.cmd[:3])}", file=sys.stderr)
        return 1
    result = summarise(args, models)
    (args.out / "risk.json").write_text(json.dumps(result, indent=1))
    draw(result, args.out / "risk.png")
    sizes = list(result["rho"])
    print("| model | origin ASR % | VISAGE [95% CI] | " + " | ".join(
        f"ASR % after {n} pairs" for n in sizes) + " |")  # fmt: skip
    print("|---|---|---|" + "---|" * len(sizes))
    for m in result["models"]:
        lo, hi = m["visage_ci"]
        print(f"| {m['name']} | {m['origin_asr']:.1f} | {m['visage']:.1f} [{lo:.1f}, {hi:.1f}] | "
              + " | ".join(f"{m['finetuned_asr'][n]:.1f}" for n in sizes) + " |")  # fmt: skip
    for n, r in result["rho"].items():
        print(f"{n} pairs: Spearman rho {r['rho']} 95% CI {r['ci']} "
              f"(undefined in {100 * r['undefined_share']:.1f}% of resamples)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

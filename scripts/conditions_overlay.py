"""One model's landscapes under several conditions (system prompts), each over K random
directions: a table of origin ASR, mean VISAGE with its two-level interval (directions and
prompts resampled) and mean basin edges with t intervals, and an overlay figure (each
direction thin, the mean over directions thick).

    .venv/bin/python scripts/conditions_overlay.py default=runs/sysprompt-qwen-default \\
        llama2=runs/sysprompt-qwen-llama2 none=runs/sysprompt-qwen-none -o overlay.png

Each folder is a ``sweep --directions K`` run (merged without answers will do); read through
the same function as the live run (``landscape.across_directions``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from visage_local.analysis.landscape import across_directions
from visage_local.record import RunFolder

COLOURS = ("#2e86c1", "#c0392b", "#27ae60", "#8e44ad", "#e67e22")


def _ci(figure: dict, digits: int) -> str:
    if figure["mean"] is None:
        return "none"
    lo, hi = figure["ci"] or (figure["mean"], figure["mean"])
    return f"{figure['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] ({figure['n']})"


def condition(folder: Path) -> tuple[dict, list]:
    """The figures over directions, and each direction's (alphas, ASR) line."""
    runs = RunFolder(folder).runs(depth=1)
    if not runs:
        raise SystemExit(f"error: {folder}: no runs")
    results = [(r.path.name, r.read_summary()) for r in runs]
    lines = []
    for _, s in results:
        points = sorted(s.grid_points, key=lambda p: p.alpha)
        lines.append(([p.alpha for p in points], [p.asr for p in points]))
    return across_directions(folder, results), lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("conditions", nargs="+", help="LABEL=FOLDER")
    parser.add_argument("-o", "--out", type=Path, help="the overlay figure (PNG)")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    print("| system prompt | origin ASR % | VISAGE, mean of K [95% CI] | left edge, mean [95% t CI] "
          "(directions with one) | right edge | each direction's VISAGE |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for i, spec in enumerate(args.conditions):
        label, _, folder = spec.partition("=")
        figures, lines = condition(Path(folder))
        colour = COLOURS[i % len(COLOURS)]
        for alphas, asr in lines:
            ax.plot(alphas, asr, color=colour, linewidth=0.7, alpha=0.45)
        mean = np.mean([asr for _, asr in lines], axis=0)
        v = figures["visage"]
        ax.plot(lines[0][0], mean, color=colour, linewidth=2.2, marker="o", markersize=3,
                label=f"{label}: VISAGE {v['mean']:.1f} [{v['ci'][0]:.1f}, {v['ci'][1]:.1f}]")  # fmt: skip
        origin = [asr[alphas.index(0.0)] for alphas, asr in lines]
        each = ", ".join(f"{d['visage']:.1f}" for d in figures["per_direction"])
        print(f"| {label} | {np.mean(origin):.1f} | {v['mean']:.1f} [{v['ci'][0]:.1f}, "
              f"{v['ci'][1]:.1f}] | {_ci(figures['left_edge'], 3)} | "
              f"{_ci(figures['right_edge'], 3)} | {each} |")  # fmt: skip
    ax.axvline(0.0, color="#555", linestyle=":", linewidth=1)
    ax.set_xlabel("α (thin: each direction; thick: their mean)")
    ax.set_ylabel("ASR %")
    ax.set_ylim(-3, 103)
    ax.set_title(args.title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    if args.out:
        fig.savefig(args.out, dpi=130)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())

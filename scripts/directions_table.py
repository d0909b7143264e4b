"""VISAGE over K random directions from a `sweep --directions N` folder: each direction's
figures, and the mean with its two-level interval (directions and prompts resampled) for
the first K directions, K = 1, 3, 5 ... (as many as the folder holds).

    .venv/bin/python scripts/directions_table.py docs/runs/qwen-dirs5
    .venv/bin/python scripts/directions_table.py docs/runs/qwen-1d-ref --single

Reads summaries and stored verdicts only (a folder merged --without-answers will do), through
the same functions as the live run (landscape.across_directions, the summary's
visage_fragile and visage_modes). ``--single``: one run's fragility and modes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visage_local.analysis.landscape import across_directions, fragility_lines
from visage_local.record import RunFolder


def _interval(ci: list[float] | None) -> str:
    return "-" if not ci else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def main() -> None:
    """Print the tables docs/RESULTS.md quotes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--single", action="store_true", help="one run folder, not directions")
    args = parser.parse_args()
    if args.single:
        summary = RunFolder(args.folder).read_summary()
        print(f"VISAGE {summary.visage:.2f} {_interval(summary.visage_ci)}")
        for line in fragility_lines(summary, 2) or ["not fragile, one bootstrap mode"]:
            print(line)
        return
    folders = sorted(args.folder.glob("direction-*"), key=lambda p: int(p.name.split("-")[1]))
    results = [(f.name, RunFolder(f).read_summary()) for f in folders]
    print("| direction | VISAGE [95% bootstrap over prompts] | basin edges | fragile: VISAGE "
          "with points of <= 2 refusals trimmed | bootstrap modes |")  # fmt: skip
    print("|---|---|---|---|---|")
    for label, s in results:
        edges = ", ".join("none" if e is None else f"{e:+.3f}" for e in s.basin_edges or [])
        fragile = "no" if not s.visage_fragile else f"yes: {s.visage_fragile['visage']:.1f}"
        modes = "one" if not s.visage_modes else "; ".join(
            f"{100 * m['share']:.0f}%: {m['visage']:.1f} {_interval(m['visage_ci'])}"
            for m in s.visage_modes
        )  # fmt: skip
        print(f"| {label.split('-')[1]} | {s.visage:.1f} {_interval(s.visage_ci)} | {edges} | "
              f"{fragile} | {modes} |")  # fmt: skip
    print()
    print("| K directions | mean VISAGE | 95% interval (directions and prompts) | width |")
    print("|---|---|---|---|")
    for k in range(1, len(results) + 1, 2):
        figures = across_directions(args.folder, results[:k])["visage"]
        low, high = figures["ci"]
        print(f"| {k} | {figures['mean']:.1f} | [{low:.1f}, {high:.1f}] | {high - low:.1f} |")


if __name__ == "__main__":
    main()

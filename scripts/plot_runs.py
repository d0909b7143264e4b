"""Overlay the 1D landscapes of several run folders, with their displacement figures.

.venv/bin/python scripts/plot_runs.py runs/a:same runs/b:q8_0 runs/c:f16 -o docs/requant.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visage_local.analysis.plots import plot_runs_1d
from visage_local.record import RunFolder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="RUN_DIR or RUN_DIR:label")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    runs = []
    for spec in args.runs:
        folder, _, label = spec.partition(":")
        summary = RunFolder(Path(folder)).read_summary()
        runs.append((label or Path(folder).name, summary))
    title = args.title or runs[0][1].model_name
    plot_runs_1d(runs, title, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

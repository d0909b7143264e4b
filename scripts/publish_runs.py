"""Copy a folder of runs (a sweep, a ladder, a screen, an experiment's folder) to where it is
committed, without any answer's text.

Every run folder inside SOURCE (``RunFolder.runs``, down to four levels) is written by
``visage-local merge RUN --without-answers`` to the same place under TARGET; every other
file is copied as it is, except HTML reports (they quote answers) and GGUF files. A
leftover JSONL line holding an answer (``record.ANSWER_KEYS``) stops the copy.

    .venv/bin/python scripts/publish_runs.py runs/ladder-testbed docs/runs/ladder-testbed
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from visage_local.record import RunFolder
from visage_local.record.format import ANSWER_KEYS

SKIPPED_SUFFIXES = (".html", ".gguf", ".partial")


def publish(source: Path, target: Path) -> int:
    """Write SOURCE's runs merged without answers and its other files to TARGET; the number
    of runs written."""
    runs = [r.path for r in RunFolder(source).runs(depth=4)]
    visage = Path(sys.executable).parent / "visage-local"
    for run in runs:
        out = target / run.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(visage), "merge", str(run), "--without-answers", "--overwrite",
                        "--out", str(out)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.suffix in SKIPPED_SUFFIXES:
            continue
        if any(path.is_relative_to(run) for run in runs):
            continue
        if path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                if line.strip() and set(json.loads(line)) & set(ANSWER_KEYS):
                    raise SystemExit(f"error: {path} holds answers; publish it as a run")
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out)
    return len(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"error: {args.source}: no such folder", file=sys.stderr)
        return 1
    try:
        n = publish(args.source, args.target)
    except subprocess.CalledProcessError as e:
        print(f"error: {e.cmd[2]} could not be published (merge exit {e.returncode})",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"{args.target}: {n} runs without answers, and the folder's other files")
    return 0


if __name__ == "__main__":
    sys.exit(main())

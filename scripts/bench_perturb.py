"""Memory and time of perturbing and exporting a model (``visage-local perturb``).

Runs the export in a child process and samples its /proc status every 20 ms:
RssAnon is the memory the process allocated (float32 rows, direction blocks,
quantised bytes); RssFile is pages of mapped files (visage-local reads and
writes models with pread/pwrite, so these are the libraries). Prints both peaks
beside the sizes they should be compared with: the largest tensor in float32
and the whole model in float32.

    .venv/bin/python scripts/bench_perturb.py models/qwen2.5-coder-0.5b-instruct.gguf
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from visage_local.gguf.model import GGUFModel
from visage_local.weights.directions import TensorSelection

MiB = 1 << 20


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def measure(command: list[str]) -> tuple[float, int, int]:
    """Wall seconds, peak RssAnon and peak RssFile (bytes) of a child process."""
    start = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    anon = file = 0
    while child.poll() is None:
        anon = max(anon, _status_kib(child.pid, "RssAnon"))
        file = max(file, _status_kib(child.pid, "RssFile"))
        time.sleep(0.02)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with {child.returncode}")
    return time.monotonic() - start, anon * 1024, file * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    model = GGUFModel(args.model)
    targets = [t for t in model.tensors if not TensorSelection().excludes(t.name)]
    largest = max(t.n_elements for t in targets) * 4
    whole = sum(t.n_elements for t in targets) * 4
    exe = [sys.executable, "-m", "visage_local.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.gguf"
        baseline = measure([*exe, "inspect", str(args.model)])
        seconds, anon, file = measure(
            [*exe, "perturb", str(args.model), "--alpha", str(args.alpha),
             "--threads", str(args.threads), "-o", str(out)]
        )  # fmt: skip
    print(f"model               {args.model.name}: {model.path.stat().st_size / MiB:.0f} MiB file")
    print(f"perturbed tensors   {len(targets)}, {whole // 4:,} values")
    print(f"largest tensor f32  {largest / MiB:8.0f} MiB")
    print(f"whole model f32     {whole / MiB:8.0f} MiB")
    print(f"inspect  RssAnon    {baseline[1] / MiB:8.0f} MiB   (interpreter + libraries)")
    print(
        f"perturb  RssAnon    {anon / MiB:8.0f} MiB   peak; RssFile {file / MiB:.0f} MiB (mapped files)"
    )
    print(f"perturb  wall       {seconds:8.1f} s   ({args.threads} threads)")
    extra = anon - baseline[1]
    print(
        f"ratio  (perturb RssAnon - inspect RssAnon) / largest tensor f32 = {extra / largest:.2f}"
    )
    print(f"ratio  (perturb RssAnon - inspect RssAnon) / whole model f32    = {extra / whole:.3f}")


if __name__ == "__main__":
    main()

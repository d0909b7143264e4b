"""Whether drawing the next tensor's directions ahead pays on this machine.

A sweep's first point away from the origin draws every direction: those the cache
keeps whole, and those it cannot hold in blocks of rows (drawn again at every point).
Two ways, side by side in one process, alternating, on fresh perturbations whose cache
holds every direction (the default) or ``--cache-mb`` of them (0: every direction drawn
in blocks):

- **in turn**: ``Perturbation.tensor_at`` for each tensor, drawing its directions
  when it is reached, block by block;
- **ahead**: ``Perturbation.tensors_at``, as the sweep moves a point: the next
  tensor's weights and directions, or the next block's rows, are prepared on a thread
  of their own while this one is moved.

With ``--later``, a later point is timed instead: the first point is moved (untimed)
by the same perturbation, so the norms are known and the directions the cache does not
hold are drawn once, in blocks, as at every later point of a sweep.

Prints the wall time of each, the phases' thread-seconds, the ratio of the means, and
whether the bytes are the same.

    .venv/bin/python scripts/bench_draw_ahead.py models/qwen2.5-coder-0.5b-instruct.gguf
    .venv/bin/python scripts/bench_draw_ahead.py models/qwen2.5-coder-0.5b-instruct.gguf --cache-mb 0
    .venv/bin/python scripts/bench_draw_ahead.py models/qwen2.5-coder-0.5b-instruct.gguf --cache-mb 0 --later
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from pathlib import Path

from visage_local.gguf.model import GGUFModel
from visage_local.points.grid import Point
from visage_local.weights.directions import RandomDirection
from visage_local.weights.perturb import Perturbation


def timed_point(
    model: GGUFModel, ahead: bool, threads: int, cache_bytes: int, later: bool
) -> tuple[float, dict, str]:
    """Seconds to move every tensor to a = 0.45 from nothing drawn (``later``: to a = -0.45
    after a = 0.45), the phases' thread-seconds, and a digest of the bytes."""
    perturbation = Perturbation(model, [RandomDirection(123)], threads, cache_bytes)
    point, digest = Point(0.45), hashlib.sha256()
    if later:
        for _ in perturbation.tensors_at(point):
            pass
        perturbation.phases.take()
        point = Point(-0.45)
    start = time.perf_counter()
    if ahead:
        moved = perturbation.tensors_at(point)
    else:
        moved = (perturbation.tensor_at(info, point) for info in perturbation.targets)
    for tensor in moved:
        digest.update(tensor.raw.tobytes())
    seconds = time.perf_counter() - start
    return seconds, perturbation.phases.take(), digest.hexdigest()


def main() -> None:
    """Parse arguments, time both ways, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cache-mb", type=int, default=None, help="direction cache (default: every direction)"
    )
    parser.add_argument("--later", action="store_true", help="time a later point, not the first")
    args = parser.parse_args()
    model = GGUFModel(args.model)
    times: dict[bool, list[float]] = {False: [], True: []}
    digests = set()
    cache_bytes = 1 << 40 if args.cache_mb is None else args.cache_mb << 20
    for _ in range(args.repeats):
        for ahead in (False, True):
            seconds, phases, digest = timed_point(
                model, ahead, args.threads, cache_bytes, args.later
            )
            times[ahead].append(seconds)
            digests.add(digest)
            busy = " ".join(f"{k} {v:.1f}" for k, v in phases.items() if v >= 0.05)
            print(f"{'ahead  ' if ahead else 'in turn'} {seconds:6.1f} s   thread-s: {busy}")
    turn, ahead = statistics.mean(times[False]), statistics.mean(times[True])
    cache = "every direction" if args.cache_mb is None else f"{args.cache_mb} MiB"
    which = "later point" if args.later else "first point"
    print(f"\n{args.model.name}, {which}, {args.threads} threads, cache {cache}: in turn {turn:.1f} s, ahead {ahead:.1f} s,"
          f" ratio {ahead / turn:.2f}; bytes {'identical' if len(digests) == 1 else 'DIFFER'}")  # fmt: skip


if __name__ == "__main__":
    main()

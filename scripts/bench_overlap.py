"""Whether preparing the next point's weights while this point generates pays on this machine.

The same points, prompts and engine settings, two ways, side by side in one process,
each through the sweep's own evaluator (``PointEvaluator.evaluate``):

- **sequential** (``--no-overlap``): move the weights to a point (compute every
  tensor, write it into the scratch copy), then generate;
- **overlapped** (``--overlap``): while a point generates, a background thread
  computes the next point's tensors into memory (a second copy of the perturbed
  tensors); once generation ends they are written and the engine refreshed.

Both use ``--threads`` threads for llama.cpp and for requantisation. Prints the wall
time of each, their ratio, and whether every answer is the same. The origin is
evaluated first in both, as in a sweep (with overlap, the first point's update runs
beside it).

    .venv/bin/python scripts/bench_overlap.py models/qwen2.5-coder-0.5b-instruct.gguf
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from visage_local.asking.prompts import select_prompts
from visage_local.engine.llama import EngineSettings
from visage_local.points.grid import Grid, Point
from visage_local.run.evaluator import evaluator
from visage_local.run.prepared import prepare
from visage_local.run.settings import SweepConfig, sweep_config


def run(config: SweepConfig, points: list[Point]) -> tuple[float, list[list[str]]]:
    """Seconds to evaluate ``points`` in order (each telling the evaluator the next), and
    the answers at each."""
    with tempfile.TemporaryDirectory() as tmp, evaluator(prepare(config), Path(tmp)) as live:
        list(live.perturbation.tensors_at(points[1]))  # directions drawn and cached first
        start = time.perf_counter()
        answers = []
        for i, point in enumerate(points):
            following = points[i + 1] if i + 1 < len(points) else None
            result = live.evaluate(i, point, following)
            answers.append([r["response"] for r in result.records])
        return time.perf_counter() - start, answers


def main() -> None:
    """Parse arguments, run both routes on the same points, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--points", type=int, default=4, help="points besides the origin")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-gpu-layers", type=int, default=0)
    args = parser.parse_args()
    config = sweep_config(
        args.model,
        prompts=select_prompts(None, args.prompts),
        max_new_tokens=args.tokens,
        engine=EngineSettings(threads=args.threads, n_gpu_layers=args.n_gpu_layers),
        coherence=False,
        memory_budget_mb=4096,
    )
    axis = [a for a in Grid(1, args.points + 1, 0.2).alpha_axis() if a != 0]
    points = [Point(0.0)] + [Point(a) for a in axis][: args.points]
    seq_s, first = run(replace(config, overlap=False), points)
    over_s, second = run(replace(config, overlap=True), points)
    print(f"{args.model.name}: origin + {len(points) - 1} points x {args.prompts} prompts x up "
          f"to {args.tokens} tokens, {args.threads} threads, "
          f"{args.n_gpu_layers} GPU layers")  # fmt: skip
    print(f"sequential  {seq_s:7.1f} s")
    print(f"overlapped  {over_s:7.1f} s   ratio overlapped / sequential = {over_s / seq_s:.2f}")
    print(f"answers identical: {first == second}")


if __name__ == "__main__":
    main()

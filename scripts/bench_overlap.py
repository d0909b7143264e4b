"""Whether preparing the next point's weights while this point generates pays on this machine.

The same points, prompts and engine, two ways, side by side in one process:

- **sequential** (the sweep's route): move the weights to a point (compute every
  tensor, write it into the scratch copy), then generate;
- **overlapped**: while a point generates, a background thread computes the next
  point's tensors into memory (a second copy of the perturbed tensors: the model's size
  again); once generation ends they are written and the engine refreshed.

Both use ``--threads`` threads for llama.cpp and for requantisation. Prints the wall
time of each, their ratio, and whether every answer is the same.

    .venv/bin/python scripts/bench_overlap.py models/qwen2.5-coder-0.5b-instruct.gguf
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from visage_local.engine import EngineSettings
from visage_local.evaluator import PointEvaluator, evaluator
from visage_local.gguf_model import GGUFModel
from visage_local.grid import Grid, Point
from visage_local.prompts import select_prompts
from visage_local.settings import sweep_config


def sequential(live: PointEvaluator, points: list[Point], tokens: int) -> list[list[str]]:
    """Move, then generate, point after point."""
    answers = []
    for point in points:
        for tensor in live.perturbation.tensors_at(point):
            live.scratch.write_tensor(tensor.info.name, tensor.raw)
        live.engine.refresh_weights()
        answers.append([g.text for g in live.engine.generate(live.tokens, tokens)])
    return answers


def overlapped(live: PointEvaluator, points: list[Point], tokens: int) -> list[list[str]]:
    """Compute point k+1's tensors in a thread while point k generates."""
    answers = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        ready = pool.submit(lambda p: list(live.perturbation.tensors_at(p)), points[0])
        for k in range(len(points)):
            for tensor in ready.result():
                live.scratch.write_tensor(tensor.info.name, tensor.raw)
            live.engine.refresh_weights()
            if k + 1 < len(points):
                ready = pool.submit(lambda p: list(live.perturbation.tensors_at(p)), points[k + 1])
            answers.append([g.text for g in live.engine.generate(live.tokens, tokens)])
    return answers


def main() -> None:
    """Parse arguments, run both routes on the same points, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    config = sweep_config(
        args.model,
        prompts=select_prompts(None, args.prompts),
        max_new_tokens=args.tokens,
        engine=EngineSettings(threads=args.threads),
        coherence=False,
        memory_budget_mb=4096,
    )
    points = [Point(a) for a in Grid(1, args.points + 1, 0.2).alpha_axis() if a != 0][: args.points]
    model = GGUFModel(args.model)
    with tempfile.TemporaryDirectory() as tmp, evaluator(config, model, Path(tmp)) as live:
        list(live.perturbation.tensors_at(points[0]))  # directions drawn and cached first
        start = time.perf_counter()
        first = sequential(live, points, args.tokens)
        seq_s = time.perf_counter() - start
        start = time.perf_counter()
        second = overlapped(live, points, args.tokens)
        over_s = time.perf_counter() - start
    print(f"{args.model.name}: {len(points)} points x {args.prompts} prompts x up to "
          f"{args.tokens} tokens, {args.threads} threads")  # fmt: skip
    print(f"sequential  {seq_s:7.1f} s")
    print(f"overlapped  {over_s:7.1f} s   ratio overlapped / sequential = {over_s / seq_s:.2f}")
    print(f"answers identical: {first == second}")


if __name__ == "__main__":
    main()

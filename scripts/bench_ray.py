"""Points per minute of a sweep: local engine against Ray with 1 and 2 workers.

In one run, side by side, on the same grid, prompts and model (default SmolLM2):

1. local: ``run_sweep`` in this process, ``--threads`` threads;
2. ray-1: ``run_ray_sweep`` with one worker of ``--threads`` threads;
3. ray-2: two workers of ``--threads // 2`` threads each (this machine has 2 cores,
   so two workers share the same cores: little gain is possible here).

Each prints the wall time, the start-up time (until the first point is back,
which includes starting Ray and loading the model in the workers) and the
steady rate in points per minute after the first point; the Ray overhead per
point is ray-1's steady seconds per point minus local's. The three landscapes
must be equal; the script says whether they are.

    .venv/bin/python scripts/bench_ray.py --prompts ../shared/data/advbench/harmful_behaviors.csv
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray

from visage_local.asking.prompts import load_prompts
from visage_local.engine.llama import EngineSettings
from visage_local.points.grid import Grid
from visage_local.run.cluster import RayOptions
from visage_local.run.settings import SweepConfig
from visage_local.run.sweep import SweepOptions, run_sweep
from visage_local.sources.registry import resolve_model


def timed(label: str, config: SweepConfig, options: SweepOptions) -> dict:
    """Run one sweep, recording when each point came back."""
    marks: list[float] = []
    start = time.monotonic()
    summary = run_sweep(
        config, replace(options, on_point=lambda *_: marks.append(time.monotonic()))
    )
    wall = time.monotonic() - start
    steady = (marks[-1] - marks[0]) / (len(marks) - 1)
    return {
        "label": label,
        "wall_s": wall,
        "startup_s": marks[0] - start,
        "steady_s_per_point": steady,
        "points_per_min": 60.0 / steady,
        "asr": [p.asr for p in summary.points],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--prompts", default=None)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = resolve_model(args.model)

    def config(threads: int) -> SweepConfig:
        return SweepConfig(
            model_path=model,
            prompts=load_prompts(args.prompts, args.limit),
            grid=Grid(1, args.steps, 0.4),
            max_new_tokens=args.max_new_tokens,
            engine=EngineSettings(threads=threads, max_sequences=args.limit),
            coherence=False,
        )

    print(
        f"{model.name}: {args.steps + 1} points x {args.limit} prompts, "
        f"{args.max_new_tokens} new tokens, {args.threads} threads in all"
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            timed("local", config(args.threads), SweepOptions(Path(tmp) / "local")),
            timed("ray-1", config(args.threads), SweepOptions(Path(tmp) / "r1", ray=RayOptions(1))),
            timed(
                "ray-2",
                config(max(1, args.threads // 2)),
                SweepOptions(Path(tmp) / "r2", ray=RayOptions(2)),
            ),
        ]
    ray.shutdown()
    local = runs[0]
    print(
        f"{'run':6} {'wall s':>7} {'start-up s':>10} {'s/point':>8} {'points/min':>10} {'vs local':>9}"
    )
    for r in runs:
        print(
            f"{r['label']:6} {r['wall_s']:7.1f} {r['startup_s']:10.1f} {r['steady_s_per_point']:8.2f} "
            f"{r['points_per_min']:10.2f} {r['points_per_min'] / local['points_per_min']:8.2f}x"
        )
    overhead = runs[1]["steady_s_per_point"] - local["steady_s_per_point"]
    print(f"Ray overhead per point (ray-1 minus local, steady): {overhead:+.2f} s")
    same = all(r["asr"] == local["asr"] for r in runs)
    print(f"landscapes equal: {same}")


if __name__ == "__main__":
    main()

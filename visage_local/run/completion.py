"""``rejudge --complete``: the answers early stop cut before another judge had settled.

An answer stopped once the run's judges had settled may still be undecided for a new
judge: the rest of it was never generated. Completing regenerates every point that holds
such an answer with the run's judges and the new one, exactly as a sweep made with all of
them from the start would (answers stop only once every verdict is settled). The other
points are kept: that sweep would have stopped each of their answers at the same token,
so the same batch runs the same steps. The whole point is generated again, not only its
cut answers, because batched llama.cpp rounds differently when the batch changes
(docs/NOTES.md): only the same batch gives the same answers.

The regenerated points go to ``generations.judge-<label>.jsonl``, one point at a time,
so an interrupted completion resumes where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from visage_local.engine import coherence
from visage_local.errors import ConfigError
from visage_local.judges import check_judge_name, file_label, get_judge
from visage_local.points.planning import origin_index, plan
from visage_local.reading.rejudge import require_answers
from visage_local.record import GenerationRecord, RunFolder, finished_points, read_jsonl
from visage_local.record.writer import append_jsonl
from visage_local.run.evaluator import evaluator
from visage_local.run.prepared import prepare
from visage_local.run.progress import StopRequest, SweepInterrupted
from visage_local.run.rebuild import config_of_run

OnCompleted = Callable[[int, int], None]  # (points done, points to do)


def undecided_points(records: list[GenerationRecord], judge_name: str) -> set[int]:
    """Points holding an answer cut early whose verdict ``judge_name`` has not settled."""
    require_answers(records)
    judge = get_judge(check_judge_name(judge_name))
    try:
        return {
            r["point"]
            for r in records
            if r["stop_reason"] == "settled"
            and (judge.settled is None or not judge.settled(r["response"]))
        }
    finally:
        judge.close()


def complete(
    run_dir: str | os.PathLike,
    judge_name: str,
    model: str | os.PathLike | None = None,
    threads: int | None = None,
    on_point: OnCompleted | None = None,
    n_gpu_layers: int = 0,
) -> list[GenerationRecord]:
    """The run's answers with every point that ``judge_name`` could not judge from cut
    answers generated again (see the module); SweepInterrupted on Ctrl-C, finished
    points kept. ``model`` replaces the model path the run recorded; ``n_gpu_layers`` are
    offloaded to a GPU."""
    folder = RunFolder(Path(run_dir))
    records = folder.read_generations()
    if not records:
        raise ConfigError(f"{run_dir}: no finished point to complete")
    config = config_of_run(run_dir, model, threads, n_gpu_layers)
    if judge_name in config.judges:
        return records  # every answer is whole to the run's own judges
    config = replace(config, also_judge=(*config.also_judge, judge_name))
    target = folder.judged(file_label(judge_name)).completed_generations
    done = finished_points(read_jsonl(target)[0])
    todo = sorted(undecided_points(records, judge_name) - set(done))
    points = plan(config.grid)
    origin = origin_index(points)
    todo.sort(key=lambda i: i != origin)  # the origin calibrates coherence: first
    if todo:
        with evaluator(prepare(config), folder.path) as live:
            calibration = done.get(origin) or finished_points(records).get(origin)
            if origin not in todo and calibration:  # a stopped run may lack its origin
                live.calibrate(calibration)
            with StopRequest() as stop:
                for n, i in enumerate(todo, 1):
                    result = live.evaluate(i, points[i])
                    append_jsonl(target, result.records)
                    done[i] = result.records
                    if on_point is not None:
                        on_point(n, len(todo))
                    if stop.requested and n < len(todo):
                        raise SweepInterrupted(target, n, len(todo))
    return _merge(finished_points(records), done, origin)


def _merge(
    original: dict[int, list[GenerationRecord]],
    completed: dict[int, list[GenerationRecord]],
    origin: int,
) -> list[GenerationRecord]:
    """Every point's records, regenerated ones replacing the originals. When the origin was
    regenerated, its answers set the coherence threshold of the kept points too."""
    threshold = None
    if origin in completed and origin in original:
        threshold = coherence.calibrate([r["coherence_ll"] for r in completed[origin]])
    merged = []
    for point in sorted(original):
        if point in completed:
            merged.extend(completed[point])
        elif threshold is not None and original[point][0]["coherence_ll"] is not None:
            merged.extend(
                {**r, "coherent": coherence.is_coherent(r["coherence_ll"], threshold)}
                for r in original[point]
            )
        else:
            merged.extend(original[point])
    return merged

"""Re-scoring stored generations with another judge, and agreement between judges.

Nothing is generated again: the answers in a run folder's generations.jsonl are
judged anew. ``rejudge`` writes ``summary.judge-<name>.json`` and
``landscape.judge-<name>.csv`` beside the run's own summary; the coherence
verdicts (which do not depend on the judge) are kept as they are.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from visage_local import metrics
from visage_local.errors import VisageError
from visage_local.files import atomic_write_text
from visage_local.grid import grid_from_description
from visage_local.judges import check_judge_name, get_judge
from visage_local.store import GENERATIONS_FILE, SUMMARY_FILE, read_jsonl
from visage_local.sweep import (
    draw,
    draw_capability,
    landscape_csv,
    landscape_figures,
    point_figures,
)


def load_run(run_dir: str | Path) -> tuple[dict, list[dict]]:
    """A finished or stopped sweep's summary and the generations of its finished points."""
    run_dir = Path(run_dir)
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.is_file():
        raise VisageError(f"{run_dir}: no {SUMMARY_FILE} here (not a sweep's output folder?)")
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as e:
        raise VisageError(f"{summary_path}: damaged ({e.msg})") from e
    records, _ = read_jsonl(run_dir / GENERATIONS_FILE)
    by_point: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        by_point[r["point"]].append(r)
    complete = [r for rs in by_point.values() if len(rs) == rs[0]["n_prompts"] for r in rs]
    if not complete:
        raise VisageError(f"{run_dir}: no finished point to judge")
    return summary, complete


def judge_records(records: list[dict], judge_name: str, threads: int | None = None) -> list[dict]:
    """Copies of ``records`` with ``refused`` and ``matched`` from the judge ``judge_name``."""
    judge = get_judge(check_judge_name(judge_name), threads)
    try:
        verdicts = judge.judge_many(
            [r["prompt"] for r in records], [r["response"] for r in records]
        )
    finally:
        judge.close()
    return [
        {**r, "refused": v.refused, "matched": v.matched}
        for r, v in zip(records, verdicts, strict=True)
    ]


def file_label(judge_name: str) -> str:
    """A judge's name as it appears in file names: ``keyword``, ``llm-<model file stem>``."""
    if judge_name.startswith("llm:"):
        judge_name = "llm-" + Path(judge_name[len("llm:") :]).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", judge_name)


def rejudge(run_dir: str | Path, judge_name: str, threads: int | None = None) -> tuple[dict, Path]:
    """Judge a run's generations again, without generating; write the new summary, CSV and
    plots beside the run's own (``*.judge-<name>.*``) and return the summary and its path."""
    run_dir = Path(run_dir)
    summary, records = load_run(run_dir)
    judged = judge_records(records, judge_name, threads)
    by_point: dict[tuple, list[dict]] = defaultdict(list)
    for r in judged:
        by_point[(r["alpha"], r["beta"])].append(r)
    rows, records = [], []
    for row in summary["points"]:
        key = (row["alpha"], row["beta"])
        if key in by_point:
            rows.append({**row, **point_figures(by_point[key])})
            records.append(by_point[key])
    grid = grid_from_description(
        summary.get("grid")
        or {"dims": summary["dims"], "steps": summary["steps"], "range": summary["range"]}
    )
    new = {
        **summary,
        "judge": judge_name,
        "rejudged_from": summary["judge"],
        **landscape_figures(rows, records, grid, summary["seed"]),
        "points": rows,
    }
    label = file_label(judge_name)
    path = run_dir / f"summary.judge-{label}.json"
    atomic_write_text(path, json.dumps(new, indent=2))
    atomic_write_text(run_dir / f"landscape.judge-{label}.csv", landscape_csv(rows))
    draw(new, run_dir / f"landscape.judge-{label}.png")
    if new.get("capability"):
        draw_capability(new, run_dir / f"capability.judge-{label}.png")
    return new, path


@dataclass(frozen=True)
class Agreement:
    """How two judges agree on the same answers (harmful prompts only)."""

    judge_a: str
    judge_b: str
    n: int
    agreement: float  # fraction of answers with the same verdict
    kappa: float | None
    both_refused: int
    only_a_refused: int
    only_b_refused: int
    neither_refused: int


def judge_agreement(
    run_dir: str | Path, judge_a: str, judge_b: str, threads: int | None = None
) -> Agreement:
    """Judge every harmful-prompt answer of a run with two judges and compare."""
    _, records = load_run(run_dir)
    harmful = [r for r in records if r.get("set", "harmful") == "harmful"]
    a = [r["refused"] for r in judge_records(harmful, judge_a, threads)]
    b = [r["refused"] for r in judge_records(harmful, judge_b, threads)]
    pairs = list(zip(a, b, strict=True))
    return Agreement(
        judge_a=judge_a,
        judge_b=judge_b,
        n=len(pairs),
        agreement=sum(x == y for x, y in pairs) / len(pairs),
        kappa=metrics.cohen_kappa(a, b),
        both_refused=sum(x and y for x, y in pairs),
        only_a_refused=sum(x and not y for x, y in pairs),
        only_b_refused=sum(y and not x for x, y in pairs),
        neither_refused=sum(not x and not y for x, y in pairs),
    )

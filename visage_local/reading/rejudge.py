"""Re-scoring stored generations with another judge, and agreement between judges.

Nothing is generated again: the answers in a run folder's generations.jsonl are
judged anew. ``rejudge`` writes ``summary.judge-<name>.json`` and
``landscape.judge-<name>.csv`` beside the run's own summary; the coherence
verdicts (which do not depend on the judge) are kept as they are.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from visage_local import metrics
from visage_local.analysis.landscape import (
    draw,
    draw_capability,
    landscape_csv,
    landscape_figures,
    point_figures,
)
from visage_local.asking import reference
from visage_local.errors import ConfigError, VisageError
from visage_local.judges import (
    Judge,
    check_judge_name,
    file_label,
    get_judge,
    judges_by_keywords,
)
from visage_local.points.grid import grid_from_description
from visage_local.record import (
    COHERENCE_TOKENS,
    FORMAT_VERSION,
    GenerationRecord,
    RunFolder,
    RunSummary,
    has_answers,
)


def load_run(run_dir: str | Path) -> tuple[RunSummary, list[GenerationRecord]]:
    """A finished or stopped sweep's summary and the generations of its finished points."""
    folder = RunFolder(Path(run_dir))
    summary = folder.read_summary()
    complete = folder.read_generations()
    if not complete:
        raise VisageError(f"{run_dir}: no finished point to judge")
    return summary, complete


def require_answers(records: list[GenerationRecord]) -> None:
    """ConfigError when the answers were left out of the run (``merge --without-answers``):
    its verdicts stand, but no judge can read the answers again."""
    if not has_answers(records):
        raise ConfigError(
            "this run's answers were left out (merge --without-answers): its verdicts cannot "
            "be judged again; use the folders it was merged from"
        )


def check_whole(records: list[GenerationRecord], judge: Judge, run_judge: str) -> None:
    """ConfigError when an answer was stopped early (once the run's judges had settled) and
    ``judge``'s verdict on it is not settled yet: the rest of the answer, never generated,
    could change that verdict, so judging the cut text would count a different answer."""
    cut = [r for r in records if r["stop_reason"] == "settled"]
    undecided = [r for r in cut if judge.settled is None or not judge.settled(r["response"])]
    if not undecided:
        return
    by = sorted({name for r in undecided for name in (r.get("cut_by") or [run_judge])})
    raise ConfigError(
        f"{len(undecided)} of the {len(records)} stored answers were stopped early once "
        f"{' and '.join(by)} had settled, and {judge.name} could judge the rest of them "
        f"differently; pass --complete to generate their points again with both judges, or "
        f"sweep again with --judge {by[0]} --judge {judge.name} (answers then stop only when "
        "both are settled) or with --no-early-stop"
    )


def judge_records(
    records: list[GenerationRecord], judge_name: str, run_judge: str, threads: int | None = None
) -> list[GenerationRecord]:
    """Copies of ``records`` with ``refused`` and ``matched`` from the judge ``judge_name``;
    ConfigError when some of them were cut before that judge's verdict was settled
    (``check_whole``; ``run_judge`` is the judge of the run that wrote them)."""
    require_answers(records)
    judge = get_judge(check_judge_name(judge_name), threads)
    try:
        check_whole(records, judge, run_judge)
        verdicts = judge.judge_many(
            [r["prompt"] for r in records], [r["response"] for r in records]
        )
    finally:
        judge.close()
    return [
        {**r, "refused": v.refused, "matched": v.matched}
        for r, v in zip(records, verdicts, strict=True)
    ]


def rejudge(
    run_dir: str | Path,
    judge_name: str,
    threads: int | None = None,
    records: list[GenerationRecord] | None = None,
) -> tuple[RunSummary, Path]:
    """Judge a run's generations again, without generating; write the new summary, CSV and
    plots beside the run's own (``*.judge-<name>.*``) and return the summary and its path.
    ``records`` replace the stored generations (``completion.complete`` gives them)."""
    summary, stored = load_run(run_dir)
    records = stored if records is None else records
    judged = judge_records(records, judge_name, summary.judge, threads)
    new = resummarise(
        summary,
        judged,
        judge=judge_name,
        rejudged_from=summary.judge,
        deviations=reference.with_setting(summary.deviations, "judge", judge_name),
    )
    folder = RunFolder(Path(run_dir)).judged(file_label(judge_name))
    folder.write_summary(new, landscape_csv(new.points))
    draw(new, folder.plot)
    if new.capability:
        draw_capability(new, folder.capability_plot)
    return new, folder.summary


def resummarise(summary: RunSummary, records: list[GenerationRecord], **changes) -> RunSummary:
    """``summary`` with every point's figures and the landscape's figures computed again
    from ``records`` (through the live run's functions), and ``changes`` applied; written
    in this version's format, whose fields it now has."""
    by_point: dict[tuple, list[GenerationRecord]] = defaultdict(list)
    for r in records:
        by_point[(r["alpha"], r["beta"])].append(r)
    rows, point_records = [], []
    for row in summary.points:
        key = (row.alpha, row.beta)
        if key in by_point:
            rows.append(replace(row, **point_figures(by_point[key])))
            point_records.append(by_point[key])
    grid = grid_from_description(
        summary.grid or {"dims": summary.dims, "steps": summary.steps, "range": summary.range}
    )
    return replace(
        summary,
        **changes,
        **landscape_figures(rows, point_records, grid, summary.seed),
        points=rows,
        format_version=FORMAT_VERSION,
    )


def shorter_answers(run_dir: str | Path, max_new_tokens: int) -> RunSummary:
    """The landscape the same sweep with answers of at most ``max_new_tokens`` tokens gives,
    computed from the stored answers, without generating.

    It is exact, not an estimate: with early stop and one keyword judge, the shorter sweep
    runs the same batches for its first ``max_new_tokens`` steps (answers stop at the same
    keywords and ends), so each of its answers is the first ``max_new_tokens`` tokens of
    the stored one; an answer is refused in it when its keyword came by then (a refused
    answer stops at its keyword, and ``tokens`` counts up to it). The coherence scores,
    over the first COHERENCE_TOKENS tokens, are the same, and unknown (None) below that
    many. Not written to disk."""
    summary, records = load_run(run_dir)
    if not 1 <= max_new_tokens < summary.max_new_tokens:
        raise ConfigError(f"--max-new-tokens must be below the run's {summary.max_new_tokens}")
    judged_alone = all((r.get("cut_by") or [summary.judge]) == [summary.judge] for r in records)
    if not summary.early_stop or not judged_alone or not judges_by_keywords(summary.judge):
        raise ConfigError(
            "shorter answers are read off runs with early stop and one keyword judge only"
        )
    if any(r.get("reasoning") for r in records):
        raise ConfigError(
            "shorter answers are not read off a reasoning model's run: its answers start at "
            "different steps, so a shorter sweep would decode other batches"
        )
    scored = max_new_tokens >= COHERENCE_TOKENS  # else the shorter answers' scores differ
    cut = [
        {
            **r,
            "refused": r["refused"] and r["tokens"] <= max_new_tokens,
            "tokens": min(r["tokens"], max_new_tokens),
            "coherence_ll": r.get("coherence_ll") if scored else None,
            "coherent": r.get("coherent") if scored else None,
        }
        for r in records
    ]
    return resummarise(
        summary,
        cut,
        max_new_tokens=max_new_tokens,
        deviations=reference.with_setting(summary.deviations, "max_new_tokens", max_new_tokens),
    )


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
    summary, records = load_run(run_dir)
    harmful = [r for r in records if r.get("set", "harmful") == "harmful"]
    a = [r["refused"] for r in judge_records(harmful, judge_a, summary.judge, threads)]
    b = [r["refused"] for r in judge_records(harmful, judge_b, summary.judge, threads)]
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

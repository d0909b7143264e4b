"""One sweep's folders joined into one, and a run published without its answers.

A sweep made in parts (``sweep --shard I/N`` on several machines or days, or stopped and
continued elsewhere) leaves folders that each hold some of its points. ``merge_runs``
checks that they hold the same sweep (their config.json settings), takes each point from
a folder that has it, checks that a point found in several folders (every shard
evaluates the origin) has the same answers and verdicts in each, and writes the union as
one run folder. Its summary is computed from the records by the live run's functions
(``rejudge.resummarise``); the sweep's other judges are run again on the whole answers,
before their text is left out where it is.

``without_answers`` leaves the answers' text (and reasoning) out of the merged folder,
keeping the prompts, verdicts, token counts and coherence scores: the landscape and its
figures, ``compare`` and the shorter-answer landscape (``rejudge.shorter_answers``) are
computed from such a folder as from the full one, but no judge can read its answers
again (``rejudge`` refuses it), so a run can be shared without the harmful text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from visage_local.analysis.landscape import draw, draw_capability, landscape_csv
from visage_local.errors import ConfigError
from visage_local.points.grid import grid_from_description
from visage_local.points.planning import plan
from visage_local.reading.rejudge import rejudge, resummarise
from visage_local.record import (
    GenerationRecord,
    PointRecord,
    RunFolder,
    RunSettings,
    RunSummary,
    finished_points,
    has_answers,
    read_jsonl,
    without_answer,
)
from visage_local.record.writer import RunStore, describe_differences, differing_settings

# what must agree for a point found in several folders
_SAME = ("prompt", "response", "refused", "matched", "tokens", "stop_reason", "coherent")


@dataclass
class _Source:
    """One folder to merge: its settings, summary, finished points and point lines."""

    folder: Path
    settings: RunSettings
    summary: RunSummary
    points: dict[tuple[float, float | None], list[GenerationRecord]]
    lines: dict[tuple[float, float | None], PointRecord]

    @classmethod
    def read(cls, folder: Path) -> _Source:
        run = RunFolder(folder)
        settings = run.read_settings()
        summary = run.read_summary()
        records, _ = read_jsonl(run.generations)
        lines = {r["point"]: PointRecord.from_dict(r) for r in read_jsonl(run.point_records)[0]}
        finished = {p: rs for p, rs in finished_points(records).items() if p in lines}
        return cls(
            folder,
            settings,
            summary,
            {_key(rs[0]): rs for rs in finished.values()},
            {_key(rs[0]): lines[p] for p, rs in finished.items()},
        )


def _key(record: GenerationRecord | PointRecord) -> tuple[float, float | None]:
    if isinstance(record, PointRecord):
        return record.alpha, record.beta
    return record["alpha"], record["beta"]


def merge_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    without_answers: bool = False,
    overwrite: bool = False,
) -> RunSummary:
    """Join the folders of one sweep into ``out_dir`` (see the module) and return its summary;
    ConfigError when they hold different sweeps or disagree on a point."""
    if not run_dirs:
        raise ConfigError("nothing to merge")
    sources = [_Source.read(Path(d)) for d in run_dirs]
    first = sources[0]
    for other in sources[1:]:
        if differing_settings(first.settings.config, other.settings.config):
            raise ConfigError(
                f"{other.folder} holds another sweep than {first.folder} "
                f"({describe_differences(first.settings.config, other.settings.config)})"
            )
    also_judge = list(first.settings.also_judge)
    if also_judge and not all(has_answers(rs) for s in sources for rs in s.points.values()):
        raise ConfigError(
            f"a folder holds no answers, and {', '.join(also_judge)} must judge them again"
        )
    grid = grid_from_description(first.summary.grid)
    order = {(p.alpha, p.beta): i for i, p in enumerate(plan(grid))}
    chosen: dict[tuple[float, float | None], tuple[_Source, list[GenerationRecord]]] = {}
    for source in sources:
        for key, records in source.points.items():
            if key not in order:
                raise ConfigError(f"{source.folder}: a point off the sweep's plan ({key})")
            if key in chosen:
                _check_same(chosen[key][0], source, key, chosen[key][1], records)
            else:
                chosen[key] = (source, records)
    if Path(out_dir).resolve() in {s.folder.resolve() for s in sources}:
        raise ConfigError(f"{out_dir}: merge into a new folder, not one of those merged")
    store = RunStore(out_dir, first.settings.config, overwrite)
    if store.finished:
        raise ConfigError(f"{out_dir} already holds points; pass --overwrite to replace them")
    keys = sorted(chosen, key=order.__getitem__)  # in plan order
    for key in keys:
        source, records = chosen[key]
        kept = [without_answer(r) for r in records] if without_answers else records
        store.append_point(kept, source.lines[key])
    rows = {(r.alpha, r.beta): r for s in sources for r in s.summary.points}
    summary = resummarise(
        replace(
            first.summary,
            points=[rows[k] for k in keys],
            n_points_evaluated=len(keys),
            complete=len(keys) == len(order),
            order="merged",
            budget_minutes=None,
            seconds_per_point=None,
            skipped=[],
            elapsed_s=round(sum(s.summary.elapsed_s for s in sources), 3),
            estimate=None,
            actual=None,
        ),
        [r for k in keys for r in store.finished[order[k]]],
    )
    store.write_summary(summary, landscape_csv(summary.points))
    draw(summary, store.run.plot)
    if summary.capability:
        draw_capability(summary, store.run.capability_plot)
    # as the live run does: every answer is whole to each judge, and judged before its
    # text is left out
    whole = [r for k in keys for r in chosen[k][1]]
    for judge in also_judge:
        rejudge(store.folder, judge, records=whole)
    return summary


def _check_same(a: _Source, b: _Source, key, first: list[GenerationRecord], second) -> None:
    """ConfigError unless a point's answers and verdicts are the same in both folders (the
    answers' text only where both kept it)."""
    differ = [
        x["prompt_index"]
        for x, y in zip(first, second, strict=True)
        if any(x.get(k) != y.get(k) for k in _SAME if k in x and k in y)
    ]
    if differ:
        where = f"alpha={key[0]}" + ("" if key[1] is None else f", beta={key[1]}")
        raise ConfigError(
            f"{a.folder} and {b.folder} differ at {where} ({len(differ)} of {len(first)} "
            "answers): not one deterministic sweep (another machine's llama.cpp build or "
            "batch size?)"
        )

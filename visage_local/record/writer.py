"""Writing a run folder: configuration hash, durable generations, atomic summaries.

The folder's files are named by ``record.RunFolder``. A point's generations are
written in one append followed by fsync, then its line in points.jsonl; a point
without both (the process died mid-write) is dropped on resume and evaluated again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from visage_local.errors import ConfigError, VisageError
from visage_local.files import atomic_write_text
from visage_local.record.format import (
    CONFIG_FILE,
    GenerationRecord,
    PointRecord,
    RunFolder,
    RunSettings,
    RunSummary,
    read_jsonl,
)


def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON form of a configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def stored_batch_size(folder: str | os.PathLike) -> int | None:
    """The batch size a run in ``folder`` (or in its sub-folders, one per variant) was
    started with, or None when there is none: a resumed run keeps it, whatever the memory
    free today would choose."""
    folder = Path(folder)
    for path in [folder / CONFIG_FILE, *sorted(folder.glob(f"*/{CONFIG_FILE}"))]:
        try:
            value = RunFolder(path.parent).read_settings().batch_size
        except ConfigError:
            continue
        if value is not None:
            return value
    return None


def differing_settings(old: dict, new: dict) -> list[str]:
    """The settings (config keys) whose values differ between two runs' configs, sorted."""
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]


def describe_differences(old: dict, new: dict, prefix: str = "") -> str:
    """Each differing setting with its two values, for a one-line error:
    ``max_new_tokens 64 -> 16, versions.numpy 1.26.4 -> 2.1.0`` (settings that are
    themselves settings named down to the values that differ; long values shortened)."""

    def shown(value: object) -> str:
        text = json.dumps(value, sort_keys=True)
        return text if len(text) <= 40 else text[:37] + "..."

    parts = []
    for k in differing_settings(old, new):
        was, now = old.get(k), new.get(k)
        if isinstance(was, dict) and isinstance(now, dict):
            parts.append(describe_differences(was, now, f"{prefix}{k}."))
        else:
            parts.append(f"{prefix}{k} {shown(was)} -> {shown(now)}")
    return ", ".join(parts)


class RunStore:
    """A run folder opened for one configuration: new, resumed, or overwritten."""

    def __init__(self, folder: str | os.PathLike, config: dict, overwrite: bool = False):
        self.folder = Path(folder)
        self.run = RunFolder(self.folder)
        self.config = config
        self.hash = config_hash(config)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VisageError(
                f"{self.folder}: cannot create the output folder ({e.strerror})"
            ) from e
        if not os.access(self.folder, os.W_OK):
            raise VisageError(f"{self.folder}: output folder is not writable")
        self._open(overwrite)

    def _open(self, overwrite: bool) -> None:
        if self.run.config.exists() and not overwrite:
            try:
                stored = self.run.read_settings()
            except ConfigError as e:
                raise VisageError(f"{e}; pass --overwrite to start this folder anew") from e
            if stored.hash != self.hash:
                differing = describe_differences(stored.config, self.config)
                raise ConfigError(
                    f"{self.folder} holds a run with other settings ({differing}); "
                    "use another --out folder, or --overwrite to discard it"
                )
        else:
            for path in self.run.run_files():
                path.unlink(missing_ok=True)
            self.run.write_settings(RunSettings(self.hash, self.config))
        self._load_finished()

    def _load_finished(self) -> None:
        """Complete points from the files; rewrites them without partial points."""
        generations, generations_clean = read_jsonl(self.run.generations)
        point_list, points_clean = read_jsonl(self.run.point_records)
        point_lines = {r["point"]: r for r in point_list}
        by_point: dict[int, list[GenerationRecord]] = defaultdict(list)
        for record in generations:
            by_point[record["point"]].append(record)
        self.finished: dict[int, list[GenerationRecord]] = {
            p: sorted(rs, key=lambda r: r["prompt_index"])
            for p, rs in by_point.items()
            if len(rs) == rs[0]["n_prompts"] and p in point_lines
        }
        self.point_records = {p: PointRecord.from_dict(point_lines[p]) for p in self.finished}
        kept = [r for p in sorted(self.finished) for r in self.finished[p]]
        if len(kept) != len(generations) or not generations_clean:
            _rewrite_jsonl(self.run.generations, kept)
        if len(self.point_records) != len(point_lines) or not points_clean:
            _rewrite_jsonl(
                self.run.point_records,
                [asdict(self.point_records[p]) for p in sorted(self.point_records)],
            )

    def append_point(self, records: list[GenerationRecord], point_record: PointRecord) -> None:
        """Append one point: its generations in one write, then its point line; fsync each."""
        append_jsonl(self.run.generations, records)
        append_jsonl(self.run.point_records, [asdict(point_record)])
        self.finished[point_record.point] = records
        self.point_records[point_record.point] = point_record

    def adopt_point(self, other: str | os.PathLike, index: int, differs_in: str) -> bool:
        """Take point ``index`` from the finished run in ``other`` instead of evaluating it,
        when its settings equal this run's in everything but ``differs_in`` (e.g. two
        interpolations from one base share their t = 0: the base itself); True when taken."""
        if index in self.finished:
            return False
        theirs = RunFolder(Path(other))
        try:
            stored = theirs.read_settings().config
        except ConfigError:
            return False
        ours = {k: v for k, v in self.config.items() if k != differs_in}
        if {k: v for k, v in stored.items() if k != differs_in} != ours:
            return False
        records, _ = read_jsonl(theirs.generations)
        points, _ = read_jsonl(theirs.point_records)
        taken = sorted((r for r in records if r["point"] == index), key=lambda r: r["prompt_index"])
        line = next((p for p in points if p["point"] == index), None)
        if line is None or not taken or len(taken) != taken[0]["n_prompts"]:
            return False
        self.append_point(taken, PointRecord.from_dict(line))
        self.finished[index] = taken
        self.point_records[index] = PointRecord.from_dict(line)
        return True

    def write_summary(self, summary: RunSummary, csv_text: str) -> None:
        """Atomically replace summary.json and landscape.csv."""
        self.run.write_summary(summary, csv_text)


def _rewrite_jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def append_jsonl(path: Path, records: list[dict]) -> None:
    """Append ``records`` as JSON lines in one write, then fsync: a crash leaves at most one
    partial last line, which ``record.read_jsonl`` skips."""
    with open(path, "ab") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records).encode())
        f.flush()
        os.fsync(f.fileno())

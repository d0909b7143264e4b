"""The run folder: configuration hash, durable generations, atomic summaries.

Layout of a run folder:

    config.json        everything that determines the results, and its hash
    generations.jsonl  one line per point and prompt, appended and fsynced per point
    points.jsonl       one line per finished point: displacement figures and timings
    summary.json       the landscape so far, rewritten atomically after every point
    landscape.csv      the same points as a table, rewritten atomically
    landscape.png      the plot, drawn when the sweep ends or stops

A point's generations are written in one append followed by fsync, then its
line in points.jsonl; a point without both (the process died mid-write) is
dropped on resume and evaluated again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path

from visage_local.errors import ConfigError, VisageError
from visage_local.files import atomic_write_text

CONFIG_FILE = "config.json"
GENERATIONS_FILE = "generations.jsonl"
POINTS_FILE = "points.jsonl"
SUMMARY_FILE = "summary.json"
CSV_FILE = "landscape.csv"
PLOT_FILE = "landscape.png"


def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON form of a configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]


class RunStore:
    """A run folder opened for one configuration: new, resumed, or overwritten."""

    def __init__(self, folder: str | os.PathLike, config: dict, overwrite: bool = False):
        self.folder = Path(folder)
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
        config_path = self.folder / CONFIG_FILE
        if config_path.exists() and not overwrite:
            try:
                stored = json.loads(config_path.read_text())
            except json.JSONDecodeError as e:
                raise VisageError(
                    f"{config_path}: damaged; pass --overwrite to start this folder anew"
                ) from e
            if stored.get("hash") != self.hash:
                differing = ", ".join(_differences(stored.get("config", {}), self.config))
                raise ConfigError(
                    f"{self.folder} holds a run with other settings ({differing}); "
                    "use another --out folder, or --overwrite to discard it"
                )
        else:
            for name in (GENERATIONS_FILE, POINTS_FILE, SUMMARY_FILE, CSV_FILE, PLOT_FILE):
                (self.folder / name).unlink(missing_ok=True)
            atomic_write_text(
                config_path, json.dumps({"hash": self.hash, "config": self.config}, indent=2)
            )
        self._load_finished()

    def _load_finished(self) -> None:
        """Complete points from the files; rewrites them without partial points."""
        generations, generations_clean = read_jsonl(self.folder / GENERATIONS_FILE)
        point_list, points_clean = read_jsonl(self.folder / POINTS_FILE)
        point_lines = {r["point"]: r for r in point_list}
        by_point: dict[int, list[dict]] = defaultdict(list)
        for record in generations:
            by_point[record["point"]].append(record)
        self.finished: dict[int, list[dict]] = {
            p: sorted(rs, key=lambda r: r["prompt_index"])
            for p, rs in by_point.items()
            if len(rs) == rs[0]["n_prompts"] and p in point_lines
        }
        self.point_records = {p: point_lines[p] for p in self.finished}
        kept = [r for p in sorted(self.finished) for r in self.finished[p]]
        if len(kept) != len(generations) or not generations_clean:
            _rewrite_jsonl(self.folder / GENERATIONS_FILE, kept)
        if len(self.point_records) != len(point_lines) or not points_clean:
            _rewrite_jsonl(
                self.folder / POINTS_FILE,
                [self.point_records[p] for p in sorted(self.point_records)],
            )

    def append_point(self, records: list[dict], point_record: dict) -> None:
        """Append one point: its generations in one write, then its point line; fsync each."""
        _append_jsonl(self.folder / GENERATIONS_FILE, records)
        _append_jsonl(self.folder / POINTS_FILE, [point_record])
        self.finished[point_record["point"]] = records
        self.point_records[point_record["point"]] = point_record

    def write_summary(self, summary: dict, csv_text: str) -> None:
        """Atomically replace summary.json and landscape.csv."""
        atomic_write_text(self.folder / SUMMARY_FILE, json.dumps(summary, indent=2))
        atomic_write_text(self.folder / CSV_FILE, csv_text)

    @property
    def plot_path(self) -> Path:
        """Where the landscape plot goes."""
        return self.folder / PLOT_FILE


def read_jsonl(path: Path) -> tuple[list[dict], bool]:
    """Records of a JSON-lines file, skipping a line cut by a crash; and whether none was."""
    if not path.exists():
        return [], True
    records, clean = [], True
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            clean = False  # a line cut by a crash
    return records, clean


def _rewrite_jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _append_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "ab") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records).encode())
        f.flush()
        os.fsync(f.fileno())

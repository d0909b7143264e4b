"""The run folder: configuration hash, durable generations, atomic summaries.

Layout of a run folder:

    config.json        everything that determines the results, and its hash
    generations.jsonl  one line per point and prompt, appended and fsynced per point
    summary.json       the landscape so far, rewritten atomically after every point
    landscape.csv      the same points as a table, rewritten atomically
    landscape.png      the plot, drawn when the sweep ends or stops

A point's generations are written in one append followed by fsync; a point
whose lines are incomplete (the process died mid-write) is dropped on resume and
evaluated again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

from visage_local.errors import ConfigError, VisageError

CONFIG_FILE = "config.json"
GENERATIONS_FILE = "generations.jsonl"
SUMMARY_FILE = "summary.json"
CSV_FILE = "landscape.csv"
PLOT_FILE = "landscape.png"


def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON form of a configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
            for name in (GENERATIONS_FILE, SUMMARY_FILE, CSV_FILE, PLOT_FILE):
                (self.folder / name).unlink(missing_ok=True)
            atomic_write_text(
                config_path, json.dumps({"hash": self.hash, "config": self.config}, indent=2)
            )
        self.finished = self._load_finished()

    def _load_finished(self) -> dict[int, list[dict]]:
        """Complete points from generations.jsonl; rewrites the file without partial ones."""
        path = self.folder / GENERATIONS_FILE
        if not path.exists():
            return {}
        by_point: dict[int, list[dict]] = defaultdict(list)
        raw_lines = path.read_bytes().split(b"\n")
        for line in raw_lines:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # an empty line or a line cut by a crash
            by_point[record["point"]].append(record)
        complete = {
            p: sorted(rs, key=lambda r: r["prompt_index"])
            for p, rs in by_point.items()
            if len(rs) == rs[0]["n_prompts"]
        }
        kept = [json.dumps(r) for p in sorted(complete) for r in complete[p]]
        if len(kept) != sum(1 for line in raw_lines if line.strip()):
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        return complete

    def append_point(self, records: list[dict]) -> None:
        """Append one point's generations in one write, then fsync."""
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
        with open(self.folder / GENERATIONS_FILE, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.finished[records[0]["point"]] = records

    def write_summary(self, summary: dict, csv_text: str) -> None:
        """Atomically replace summary.json and landscape.csv."""
        atomic_write_text(self.folder / SUMMARY_FILE, json.dumps(summary, indent=2))
        atomic_write_text(self.folder / CSV_FILE, csv_text)

    @property
    def plot_path(self) -> Path:
        """Where the landscape plot goes."""
        return self.folder / PLOT_FILE

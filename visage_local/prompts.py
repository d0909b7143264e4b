"""Prompt sources: the built-in harmful set, AdvBench-style CSV, .txt and .jsonl files."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from visage_local.errors import ConfigError

BUILTIN_NAME = "builtin:harmful"


@dataclass(frozen=True)
class PromptSet:
    """An ordered list of prompts and where they came from."""

    source: str
    prompts: tuple[str, ...]

    @property
    def sha256(self) -> str:
        """Hash of the prompt texts, in order (identifies the set in summaries)."""
        return hashlib.sha256(json.dumps(list(self.prompts)).encode()).hexdigest()

    def limited(self, limit: int | None) -> PromptSet:
        """The first ``limit`` prompts (all when None)."""
        if limit is None:
            return self
        if limit < 1:
            raise ConfigError("--limit must be at least 1")
        return PromptSet(self.source, self.prompts[:limit])


def builtin_harmful() -> PromptSet:
    """The project's own harmful requests (visage_local/data/harmful_prompts.jsonl)."""
    text = resources.files("visage_local").joinpath("data/harmful_prompts.jsonl").read_text()
    return PromptSet(BUILTIN_NAME, tuple(_parse_jsonl(text, BUILTIN_NAME)))


def load_prompts(path: str | Path | None, limit: int | None = None) -> PromptSet:
    """Prompts from ``path`` (by extension: .csv with a ``goal`` column, .txt, .jsonl), or the
    built-in set when ``path`` is None; the first ``limit`` of them."""
    if path is None:
        return builtin_harmful().limited(limit)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: prompt file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    suffix = path.suffix.lower()
    if suffix == ".csv":
        prompts = _parse_csv(text, str(path))
    elif suffix == ".jsonl":
        prompts = _parse_jsonl(text, str(path))
    elif suffix == ".txt":
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        raise ConfigError(f"{path}: unknown prompt file type (use .csv, .txt or .jsonl)")
    if not prompts:
        raise ConfigError(f"{path}: no prompts in the file")
    return PromptSet(str(path), tuple(prompts)).limited(limit)


def _parse_csv(text: str, name: str) -> list[str]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "goal" not in reader.fieldnames:
        raise ConfigError(f"{name}: a CSV prompt file needs a 'goal' column (AdvBench format)")
    prompts = []
    for row in reader:
        goal = (row.get("goal") or "").strip()
        if not goal:
            raise ConfigError(f"{name}: line {reader.line_num}: empty 'goal'")
        prompts.append(goal)
    return prompts


def _parse_jsonl(text: str, name: str) -> list[str]:
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{name}: line {number}: not valid JSON ({e.msg})") from e
        prompt = record.get("prompt") if isinstance(record, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"{name}: line {number}: needs a non-empty string field 'prompt'")
        prompts.append(prompt.strip())
    return prompts

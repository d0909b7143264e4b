"""Prompt sources: the built-in sets and prompt files, with limits and seeded samples.

File formats, told apart by extension and, for CSV, by columns:

- AdvBench CSV: column ``goal``.
- JailbreakBench CSV: column ``Goal``.
- HarmBench behaviours CSV: columns ``Behavior`` and ``FunctionalCategory``; rows
  whose category is ``contextual`` or ``copyright`` are skipped unless asked for
  (a contextual row then becomes its ``ContextString``, a blank line, and the
  behaviour, as HarmBench itself builds it).
- ``.txt``: one prompt a line; ``.jsonl``: one object a line with a ``prompt`` field.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from visage_local.errors import ConfigError

BUILTIN_NAME = "builtin:harmful"
BENIGN_NAME = "builtin:benign"
ADVBENCH_NAME = "advbench"
HARMBENCH_SKIPPED = ("contextual", "copyright")


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

    def sampled(self, n: int, seed: int) -> PromptSet:
        """``n`` prompts drawn without replacement with ``seed``, kept in file order."""
        if n < 1:
            raise ConfigError("--sample must be at least 1")
        if n > len(self.prompts):
            raise ConfigError(f"--sample {n}: the set has only {len(self.prompts)} prompts")
        picked = np.random.default_rng(seed).choice(len(self.prompts), size=n, replace=False)
        return PromptSet(
            f"{self.source} (sample {n}, seed {seed})",
            tuple(self.prompts[i] for i in sorted(picked.tolist())),
        )


def builtin_harmful() -> PromptSet:
    """The project's own harmful requests (visage_local/data/harmful_prompts.jsonl)."""
    text = resources.files("visage_local").joinpath("data/harmful_prompts.jsonl").read_text()
    return PromptSet(BUILTIN_NAME, tuple(_parse_jsonl(text, BUILTIN_NAME)))


def advbench() -> PromptSet:
    """AdvBench's 520 harmful behaviours, as shipped with the reference code
    (visage_local/data/advbench/, MIT licence; README.md there cites the source)."""
    text = resources.files("visage_local").joinpath("data/advbench/harmful_behaviors.csv")
    return PromptSet(ADVBENCH_NAME, tuple(_parse_csv(text.read_text("utf-8"), "advbench", False)))


# Prompt sets known by name (``--prompts NAME``); a path is read as a file.
NAMED_SETS = {"advbench": advbench, "builtin": builtin_harmful}
DEFAULT_SET = "advbench"


def builtin_benign() -> PromptSet:
    """The project's own harmless requests, for over-refusal (data/benign_prompts.jsonl)."""
    text = resources.files("visage_local").joinpath("data/benign_prompts.jsonl").read_text()
    return PromptSet(BENIGN_NAME, tuple(_parse_jsonl(text, BENIGN_NAME)))


def select_prompts(
    path: str | Path | None,
    limit: int | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    harmbench_all: bool = False,
) -> PromptSet:
    """The prompts a sweep uses: from ``path`` (a file or a name of NAMED_SETS; None is
    AdvBench), then either the first ``limit`` or a seeded sample of ``sample`` (not both)."""
    if limit is not None and sample is not None:
        raise ConfigError("use either --limit or --sample, not both")
    prompts = load_prompts(path, harmbench_all=harmbench_all)
    if sample is not None:
        return prompts.sampled(sample, sample_seed)
    return prompts.limited(limit)


def load_prompts(
    path: str | Path | None, limit: int | None = None, harmbench_all: bool = False
) -> PromptSet:
    """Prompts from ``path`` (formats in the module docstring) or the named set ``path``
    (``advbench``, ``builtin``; None is ``advbench``); the first ``limit`` of them."""
    if path is None or (str(path) in NAMED_SETS and not Path(path).is_file()):
        return NAMED_SETS[str(path or DEFAULT_SET)]().limited(limit)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: prompt file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    suffix = path.suffix.lower()
    if suffix == ".csv":
        prompts = _parse_csv(text, str(path), harmbench_all)
    elif suffix == ".jsonl":
        prompts = _parse_jsonl(text, str(path))
    elif suffix == ".txt":
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        raise ConfigError(f"{path}: unknown prompt file type (use .csv, .txt or .jsonl)")
    if not prompts:
        raise ConfigError(f"{path}: no prompts in the file")
    return PromptSet(str(path), tuple(prompts)).limited(limit)


def _parse_csv(text: str, name: str, harmbench_all: bool) -> list[str]:
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    if "goal" in columns:  # AdvBench
        return [_cell(row, "goal", reader, name) for row in reader]
    if "Goal" in columns:  # JailbreakBench
        return [_cell(row, "Goal", reader, name) for row in reader]
    if "Behavior" in columns and "FunctionalCategory" in columns:
        return _harmbench_rows(reader, name, harmbench_all)
    raise ConfigError(
        f"{name}: unknown CSV layout (columns: {', '.join(columns) or 'none'}); expected "
        "'goal' (AdvBench), 'Goal' (JailbreakBench) or 'Behavior' + 'FunctionalCategory' "
        "(HarmBench)"
    )


def _cell(row: dict, column: str, reader: csv.DictReader, name: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise ConfigError(f"{name}: line {reader.line_num}: empty '{column}'")
    return value


def _harmbench_rows(reader: csv.DictReader, name: str, include_all: bool) -> list[str]:
    prompts = []
    for row in reader:
        behavior = _cell(row, "Behavior", reader, name)
        category = (row.get("FunctionalCategory") or "").strip().lower()
        if category in HARMBENCH_SKIPPED and not include_all:
            continue
        context = (row.get("ContextString") or "").strip()
        prompts.append(f"{context}\n\n---\n\n{behavior}" if context else behavior)
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

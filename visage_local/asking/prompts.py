"""Prompt sources: the built-in sets and prompt files, with limits and seeded samples.

File formats, told apart by extension and, for CSV, by columns:

- AdvBench CSV: column ``goal``.
- JailbreakBench CSV: column ``Goal``.
- StrongREJECT CSV: column ``forbidden_prompt``.
- HEx-PHI: CSV files of one column and no header (``category_1.csv`` ...: the first
  line is a sentence, not a column name); a folder of
  them is read file by file, in the order of the numbers in their names.
- Any CSV: the column ``--prompt-column`` names.
- HarmBench behaviours CSV: columns ``Behavior`` and ``FunctionalCategory``; rows
  whose category is ``contextual`` or ``copyright`` are skipped unless asked for
  (a contextual row then becomes its ``ContextString``, a blank line, and the
  behaviour, as HarmBench itself builds it).
- ``.txt``: one prompt a line; ``.jsonl``: one object a line with a ``prompt`` field.

Categories, for ASR per category: the column or field ``--category-column`` names; else
StrongREJECT's and the built-in set's ``category``, HarmBench's ``SemanticCategory``, and a
HEx-PHI file's name (``category_3``). AdvBench and JailbreakBench files have none.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
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
    categories: tuple[str, ...] | None = None  # one per prompt, when the set has them

    def __post_init__(self):
        if self.categories is not None and len(self.categories) != len(self.prompts):
            raise ValueError("a prompt set needs one category per prompt")

    @property
    def categories_sha256(self) -> str | None:
        """Hash of the categories, in order (None without categories)."""
        if self.categories is None:
            return None
        return hashlib.sha256(json.dumps(list(self.categories)).encode()).hexdigest()

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
        return PromptSet(
            self.source, self.prompts[:limit], self.categories and self.categories[:limit]
        )

    def sampled(self, n: int, seed: int) -> PromptSet:
        """``n`` prompts drawn without replacement with ``seed``, kept in file order."""
        if n < 1:
            raise ConfigError("--sample must be at least 1")
        if n > len(self.prompts):
            raise ConfigError(f"--sample {n}: the set has only {len(self.prompts)} prompts")
        picked = np.random.default_rng(seed).choice(len(self.prompts), size=n, replace=False)
        kept = sorted(picked.tolist())
        return PromptSet(
            f"{self.source} (sample {n}, seed {seed})",
            tuple(self.prompts[i] for i in kept),
            None if self.categories is None else tuple(self.categories[i] for i in kept),
        )


def builtin_harmful() -> PromptSet:
    """The project's own harmful requests (visage_local/data/harmful_prompts.jsonl)."""
    text = resources.files("visage_local").joinpath("data/harmful_prompts.jsonl").read_text()
    return _prompt_set(BUILTIN_NAME, _parse_jsonl(text, BUILTIN_NAME, "category"))


def advbench() -> PromptSet:
    """AdvBench's 520 harmful behaviours, as shipped with the reference code
    (visage_local/data/advbench/, MIT licence; README.md there cites the source)."""
    text = resources.files("visage_local").joinpath("data/advbench/harmful_behaviors.csv")
    return _prompt_set(ADVBENCH_NAME, _parse_csv(text.read_text("utf-8"), "advbench", False))


# Prompt sets known by name (``--prompts NAME``); a path is read as a file.
NAMED_SETS = {"advbench": advbench, "builtin": builtin_harmful}
DEFAULT_SET = "advbench"


def builtin_benign() -> PromptSet:
    """The project's own harmless requests, for over-refusal (data/benign_prompts.jsonl)."""
    text = resources.files("visage_local").joinpath("data/benign_prompts.jsonl").read_text()
    return _prompt_set(BENIGN_NAME, _parse_jsonl(text, BENIGN_NAME))


def select_prompts(
    path: str | Path | None,
    limit: int | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    harmbench_all: bool = False,
    column: str | None = None,
    category_column: str | None = None,
) -> PromptSet:
    """The prompts a sweep uses: from ``path`` (a file, a folder of HEx-PHI files or a name
    of NAMED_SETS; None is AdvBench; ``column``: the CSV column to read; ``category_column``:
    the CSV column or JSONL field of the categories), then either the first ``limit`` or a
    seeded sample of ``sample`` (not both)."""
    if limit is not None and sample is not None:
        raise ConfigError("use either --limit or --sample, not both")
    prompts = load_prompts(
        path, harmbench_all=harmbench_all, column=column, category_column=category_column
    )
    if sample is not None:
        return prompts.sampled(sample, sample_seed)
    return prompts.limited(limit)


def load_prompts(
    path: str | Path | None,
    limit: int | None = None,
    harmbench_all: bool = False,
    column: str | None = None,
    category_column: str | None = None,
) -> PromptSet:
    """Prompts from ``path`` (formats in the module docstring) or the named set ``path``
    (``advbench``, ``builtin``; None is ``advbench``); the first ``limit`` of them."""
    if path is None or (str(path) in NAMED_SETS and not Path(path).exists()):
        if column is not None or category_column is not None:
            raise ConfigError(
                "--prompt-column and --category-column read a file given with --prompts"
            )
        return NAMED_SETS[str(path or DEFAULT_SET)]().limited(limit)
    path = Path(path)
    if path.is_dir():
        if column is not None or category_column is not None:
            raise ConfigError(f"{path}: a folder is read as HEx-PHI files (no columns)")
        return _load_folder(path).limited(limit)
    if not path.is_file():
        raise ConfigError(f"{path}: prompt file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    suffix = path.suffix.lower()
    if column is not None and suffix != ".csv":
        raise ConfigError(f"{path}: --prompt-column reads CSV files only")
    if category_column is not None and suffix not in (".csv", ".jsonl"):
        raise ConfigError(f"{path}: --category-column reads CSV and JSONL files only")
    if suffix == ".csv":
        rows = _parse_csv(text, str(path), harmbench_all, column, category_column)
    elif suffix == ".jsonl":
        rows = _parse_jsonl(text, str(path), category_column or "category")
    elif suffix == ".txt":
        rows = [(line.strip(), None) for line in text.splitlines() if line.strip()]
    else:
        raise ConfigError(f"{path}: unknown prompt file type (use .csv, .txt or .jsonl)")
    if not rows:
        raise ConfigError(f"{path}: no prompts in the file")
    if category_column is not None and any(c is None for _, c in rows):
        raise ConfigError(f"{path}: not every line has the field {category_column!r}")
    return _prompt_set(str(path), rows).limited(limit)


Row = tuple[str, str | None]  # a prompt and its category (None: the row has none)


def _prompt_set(source: str, rows: list[Row]) -> PromptSet:
    """A set of ``rows``; with categories only when every row has one."""
    categories = [c for _, c in rows]
    return PromptSet(
        source,
        tuple(p for p, _ in rows),
        None if any(c is None for c in categories) else tuple(c for c in categories if c),
    )


def _load_folder(folder: Path) -> PromptSet:
    """A folder of HEx-PHI files: every CSV, in the order of the numbers in their names."""
    files = sorted(folder.glob("*.csv"), key=lambda p: [int(n) for n in re.findall(r"\d+", p.stem)])
    if not files:
        raise ConfigError(f"{folder}: no CSV prompt files in the folder")
    rows: list[Row] = []
    for path in files:
        part = load_prompts(path)
        categories = part.categories or (path.stem,) * len(part.prompts)
        rows += list(zip(part.prompts, categories, strict=True))
    return _prompt_set(str(folder), rows)


# Columns that hold the prompts of known layouts (AdvBench, JailbreakBench, StrongREJECT,
# a plain "prompt" column), in the order they are looked for.
KNOWN_COLUMNS = ("goal", "Goal", "forbidden_prompt", "prompt")
# Columns that hold the categories of known layouts (StrongREJECT, HarmBench).
KNOWN_CATEGORY_COLUMNS = ("category", "SemanticCategory")


def _parse_csv(
    text: str,
    name: str,
    harmbench_all: bool,
    column: str | None = None,
    category_column: str | None = None,
) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    if category_column is not None and category_column not in columns:
        raise ConfigError(f"{name}: no column {category_column!r} (columns: {', '.join(columns)})")
    if column is not None and column not in columns:
        raise ConfigError(f"{name}: no column {column!r} (columns: {', '.join(columns)})")
    category = category_column or next((c for c in KNOWN_CATEGORY_COLUMNS if c in columns), None)

    def rows_of(prompt_column: str) -> list[Row]:
        return [
            (
                _cell(row, prompt_column, reader, name),
                None if category is None else _cell(row, category, reader, name),
            )
            for row in reader
        ]

    if column is not None:
        return rows_of(column)
    for known in KNOWN_COLUMNS:
        if known in columns:
            return rows_of(known)
    if "Behavior" in columns and "FunctionalCategory" in columns:
        return _harmbench_rows(reader, name, harmbench_all, category)
    if len(columns) == 1 and re.search(r"\s", columns[0].strip()):
        # no header (HEx-PHI): the first line is a sentence, not a column name
        stem = Path(name).stem
        rows = csv.reader(io.StringIO(text))
        return [(row[0].strip(), stem) for row in rows if row and row[0].strip()]
    raise ConfigError(
        f"{name}: unknown CSV layout (columns: {', '.join(columns) or 'none'}); expected "
        "'goal' (AdvBench), 'Goal' (JailbreakBench), 'forbidden_prompt' (StrongREJECT), "
        "'Behavior' + 'FunctionalCategory' (HarmBench) or one column without a header "
        "(HEx-PHI); or name the column with --prompt-column"
    )


def _cell(row: dict, column: str, reader: csv.DictReader, name: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise ConfigError(f"{name}: line {reader.line_num}: empty '{column}'")
    return value


def _harmbench_rows(
    reader: csv.DictReader, name: str, include_all: bool, category: str | None
) -> list[Row]:
    rows = []
    for row in reader:
        behavior = _cell(row, "Behavior", reader, name)
        functional = (row.get("FunctionalCategory") or "").strip().lower()
        if functional in HARMBENCH_SKIPPED and not include_all:
            continue
        context = (row.get("ContextString") or "").strip()
        prompt = f"{context}\n\n---\n\n{behavior}" if context else behavior
        rows.append((prompt, None if category is None else _cell(row, category, reader, name)))
    return rows


def _parse_jsonl(text: str, name: str, category_field: str | None = None) -> list[Row]:
    rows = []
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
        category = record.get(category_field) if category_field else None
        rows.append((prompt.strip(), None if category is None else str(category).strip()))
    return rows

"""Refusal judges: decide whether a response refuses the harmful request.

One table, ``JUDGE_KINDS``, maps each kind of judge name to the function that checks a
name (before any work starts) and the one that builds the judge; ``get_judge`` and
``check_judge_name`` both read it. Built-in kinds:

- ``keyword-paper``: the reference code's 29 strings, exact substrings (``keyword``).
- ``keyword``: a broader list on normalised text (``keyword``).
- ``keyword:FILE``: a user's own list, one string a line, exact substrings as the paper's.
- ``llm:PATH.gguf``: a judge model run by llama.cpp (``llm``, imported only when used,
  so reading or re-scoring keyword verdicts never loads the engine).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from visage_local.errors import ConfigError

from ._base import Judge, Verdict
from .keyword import KeywordJudge, normalise, normalised_keywords, paper_keywords

__all__ = [
    "JUDGES",
    "JUDGE_KINDS",
    "Judge",
    "JudgeKind",
    "KeywordJudge",
    "Verdict",
    "check_judge_name",
    "file_label",
    "get_judge",
    "judge_files",
    "judges_by_keywords",
    "settled_for_all",
    "normalise",
    "normalised_keywords",
    "paper_keywords",
]


@dataclass(frozen=True)
class JudgeKind:
    """One kind of judge: how its names look, how a name is checked, how the judge is built."""

    pattern: str  # as shown to users: "keyword" or "llm:PATH.gguf"
    matches: Callable[[str], bool]
    check: Callable[[str], None]  # raises ConfigError for a name it matches but cannot use
    make: Callable[[str, int | None], Judge]
    by_keywords: bool = True  # a keyword found in an answer's first tokens stays found
    file: Callable[[str], Path | None] = lambda name: None  # the file a name points to


def _after_colon(name: str) -> Path:
    return Path(name.split(":", 1)[1])


def _no_check(name: str) -> None:
    """Names that match are usable."""


def _keyword_file(name: str) -> tuple[str, ...]:
    """The strings of a ``keyword:FILE`` judge: one a line, blank lines skipped."""
    path = Path(name[len("keyword:") :])
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise ConfigError(f"--judge {name}: keyword file not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--judge {name}: cannot read the keyword file ({e})") from e
    keywords = tuple(line.strip() for line in lines if line.strip())
    if not keywords:
        raise ConfigError(f"--judge {name}: the keyword file has no keywords")
    return keywords


def _check_llm(name: str) -> None:
    if not Path(name[len("llm:") :]).is_file():
        raise ConfigError(f"--judge {name}: judge model file not found")


def _make_llm(name: str, threads: int | None) -> Judge:
    from .llm import LLMJudge  # loads llama.cpp: only when a judge model is asked for

    return LLMJudge.load(name[len("llm:") :], threads)


JUDGE_KINDS: tuple[JudgeKind, ...] = (
    JudgeKind(
        "keyword-paper",
        lambda name: name == "keyword-paper",
        _no_check,
        lambda name, threads: KeywordJudge("keyword-paper", paper_keywords()),
    ),
    JudgeKind(
        "keyword",
        lambda name: name == "keyword",
        _no_check,
        lambda name, threads: KeywordJudge("keyword", normalised_keywords(), normalised=True),
    ),
    JudgeKind(
        "keyword:FILE",
        lambda name: name.startswith("keyword:"),
        _keyword_file,
        lambda name, threads: KeywordJudge(name, _keyword_file(name)),
        file=_after_colon,
    ),
    JudgeKind(
        "llm:PATH.gguf",
        lambda name: name.startswith("llm:"),
        _check_llm,
        _make_llm,
        by_keywords=False,
        file=_after_colon,
    ),
)
JUDGES = tuple(kind.pattern for kind in JUDGE_KINDS)


def _kind(name: str) -> JudgeKind:
    for kind in JUDGE_KINDS:
        if kind.matches(name):
            return kind
    raise ConfigError(f"unknown judge {name!r} (available: {', '.join(JUDGES)})")


def check_judge_name(name: str) -> str:
    """``name`` when it names a usable judge (an ``llm:`` judge's file must exist), else
    ConfigError."""
    _kind(name).check(name)
    return name


def judges_by_keywords(name: str) -> bool:
    """True for a keyword judge: its verdict on an answer's first tokens is exact for them."""
    return _kind(name).by_keywords


def file_label(name: str) -> str:
    """A judge's name as it appears in file names: ``keyword``, ``llm-<model file stem>``,
    ``keyword-<list file stem>``."""
    file = _kind(name).file(name)
    if file is not None:
        name = f"{name.split(':', 1)[0]}-{file.stem}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def judge_files(names: tuple[str, ...]) -> dict:
    """The sha256 of each keyword list a judge reads from a file (a ``keyword:FILE`` judge's
    name holds only the path), as a run's settings record them."""
    files = {}
    for name in names:
        kind = _kind(name)
        file = kind.file(name)
        if kind.by_keywords and file is not None:
            files[name] = hashlib.sha256(file.read_bytes()).hexdigest()
    return {"judge_files": files} if files else {}


def settled_for_all(judges: list[Judge]) -> Callable[[str], bool] | None:
    """A predicate true once every judge's verdict on a partial answer is settled, so that
    an answer stopped there gets the verdict a whole answer would from each of them; None
    (no early stop) when a judge has no such predicate (a judge model)."""
    predicates = [judge.settled for judge in judges]
    if any(p is None for p in predicates):
        return None
    return lambda text: all(p(text) for p in predicates)


def get_judge(name: str, threads: int | None = None) -> Judge:
    """The judge called ``name`` (``llm:`` judges load their model with ``threads``)."""
    kind = _kind(name)
    kind.check(name)
    return kind.make(name, threads)

"""The run record: typed, versioned, and the one place that knows a run folder's files.

A run folder holds:

    config.json        everything that determines the results, and its hash
    config.toml        the command's options, resolved (written by the CLI; ``rerun`` reads it)
    generations.jsonl  one ``GenerationRecord`` per point and prompt, appended per point
    points.jsonl       one ``PointRecord`` per finished point: displacement and timings
    summary.json       the ``RunSummary``: the landscape so far, rewritten after every point
    landscape.csv      the summary's points as a table
    landscape.png      the plot; capability.png beside it with --capability
    summary.judge-<name>.json, landscape.judge-<name>.{csv,png}   written by ``rejudge``
    report.html        written by ``report``

A folder of several runs (conditions or directions) holds one run folder per variant
and conditions.json (directions.json, overlay.png) indexing them.

``RunSummary`` and ``PointRecord`` carry ``format_version`` first. The field order of
each dataclass is the order of the keys in the file and part of the format. Summaries
written before format_version existed (version 0) have the same keys and are read as
they are; a summary from a newer visage-local, or one missing a key every version has,
is refused with a one-line reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from visage_local.errors import ConfigError, VisageError
from visage_local.files import atomic_write_text

# 1: format_version added. 2: deviations, visage_untrimmed and breaking_t.
# 3: categories (per prompt category: origin ASR, VISAGE or breaking t) and category_asr.
# 4: a point's weight_update_phases; the summary's estimate and actual.
# 5: visage_fragile (the span resting on a few answers) and visage_modes (a bootstrap split
#    between trimmed spans); breaking_distance; a point's displacement "distance".
# 6: model_spec, the model as the user named it (a store or registry spec).
FORMAT_VERSION = 6
# A generation record's coherence_ll is the mean log-probability of its first this many
# answer tokens under the origin model (coherence.CoherenceScorer).
COHERENCE_TOKENS = 16

# config.json's format: 0 had no format_version; 1 puts it first.
SETTINGS_FORMAT = 1
CONFIG_FILE = "config.json"
GENERATIONS_FILE = "generations.jsonl"
POINTS_FILE = "points.jsonl"
SUMMARY_FILE = "summary.json"
CSV_FILE = "landscape.csv"
PLOT_FILE = "landscape.png"
CAPABILITY_PLOT_FILE = "capability.png"
REPORT_FILE = "report.html"
CONDITIONS_FILE = "conditions.json"
DIRECTIONS_FILE = "directions.json"
OVERLAY_FILE = "overlay.png"
OPTIONS_FILE = "config.toml"  # the command's options, which ``rerun`` repeats
CHECK_FILE = "check.json"  # a check's thresholds, verdict and settings
# a screen's folder
SCREEN_FILE = "screen.json"  # the ranked models, the settings and the verdict
SCREEN_CSV_FILE = "screen.csv"
LEADERBOARD_FILE = "leaderboard.html"
# a ladder's folder (and each rung's sub-folder: DISTANCE_FILE)
LADDER_FILE = "ladder.json"  # the rungs, the settings, the flags and the verdict
LADDER_CSV_FILE = "ladder.csv"
LADDER_PLOT_FILE = "ladder.png"
LADDER_PAGE_FILE = "ladder.html"
DISTANCE_FILE = "distance.json"  # a rung's next-token distributions against the reference

# Keys every summary has had since the first release; without them a file is not a summary.
_REQUIRED = ("dims", "seed", "n_prompts", "judge", "points")


class GenerationRecord(TypedDict):
    """One line of generations.jsonl: one prompt's answer at one point and its verdicts."""

    point: int
    alpha: float
    beta: float | None
    prompt_index: int
    n_prompts: int
    set: str  # "harmful" or "benign"
    prompt: str
    response: NotRequired[str]  # left out by ``merge --without-answers`` (ANSWER_KEYS)
    refused: bool
    matched: str | None
    coherence_ll: float | None
    coherent: bool | None
    tokens: int
    stop_reason: str  # "eog", "length", or "settled" (stopped early: see cut_by)
    cut_by: NotRequired[list[str] | None]  # format 2: the judges settled when it stopped
    # reasoning models only: the reasoning before the response (None when there was none)
    reasoning: NotRequired[str | None]
    reasoning_tokens: NotRequired[int]
    category: NotRequired[str]  # format 3: the harmful prompt's category, when the set has them


@dataclass
class PointRecord:
    """One line of points.jsonl: how a finished point was reached and timed."""

    format_version: int
    point: int
    alpha: float
    beta: float | None
    displacement: dict[str, Any]
    displacement_faithful: bool
    weight_update_s: float
    generation_s: float
    generation: dict[str, float]
    judge_coherence_s: float
    coherence_threshold: float | None
    capability: dict[str, float | None] | None = None
    capability_s: float | None = None
    # thread-seconds of the weight update by phase (perturb.PHASES); None before format 4
    weight_update_phases: dict[str, float] | None = None

    @classmethod
    def from_dict(cls, data: dict) -> PointRecord:
        """A stored line (version 0 lines have no format_version)."""
        return _build(cls, {"format_version": 0, **data}, POINTS_FILE)


@dataclass
class PointRow:
    """One point of a landscape in the summary: its figures (see ``landscape.point_figures``)."""

    alpha: float
    beta: float | None
    asr: float
    asr_ci: list[float]
    n_refused: int
    n_prompts: int
    harmful_compliance: float | None = None
    incoherent: float | None = None
    benign_refusal: float | None = None
    on_grid: bool = True
    tokens: int = 0
    displacement: dict[str, Any] | None = None
    displacement_faithful: bool = True
    kl: float | None = None
    mcq_accuracy: float | None = None
    perplexity: float | None = None
    category_asr: dict[str, float] | None = None  # ASR of each prompt category's prompts

    @property
    def is_origin(self) -> bool:
        """True at a = b = 0."""
        return self.alpha == 0 and not self.beta


@dataclass
class RunSummary:
    """summary.json: a run's settings, its landscape figures and its points."""

    format_version: int
    model: str
    model_name: str
    model_sha256: str
    architecture: str
    chat_template: str  # "model" or "fallback"
    dims: int
    grid: dict[str, Any]
    axes: dict[str, list[float]]
    seed: int
    range: float
    steps: int
    directions: list[dict[str, Any]]
    prompts: str
    prompts_sha256: str
    n_prompts: int
    max_new_tokens: int
    system_prompt: str
    attack: str
    benign: str | None
    capability: dict[str, Any] | None
    judge: str
    coherence_threshold: float | None
    early_stop: bool
    requant: str
    batch_size: int
    flash_attn: bool
    visage: float | None
    visage_ci: list[float] | None
    origin_asr: float | None
    basin_edges: list[float | None] | None
    basin_outline: list[dict[str, Any]] | None
    edge_threshold: float
    points: list[PointRow]
    n_points_planned: int
    n_points_evaluated: int
    order: str
    budget_minutes: float | None
    seconds_per_point: float | None
    skipped: list[dict[str, float | None]]
    complete: bool
    elapsed_s: float
    config_hash: str
    versions: dict[str, str]
    rejudged_from: str | None = None  # set by ``rejudge``: the judge of the live run
    # settings that differ from the paper's reference ([] = none; None = not recorded, before
    # format 2): {"setting", "reference", "value"} each
    deviations: list[dict[str, Any]] | None = None
    visage_untrimmed: float | None = None  # the mean safety margin over every grid point
    breaking_t: float | None = None  # interpolation: first t where ASR leaves the basin
    # tensor types requantised with a uniform importance matrix (IQ1_S, IQ2_XXS, IQ2_XS)
    uniform_imatrix: list[str] | None = None
    # per prompt category (sets with categories): {"category", "n_prompts", "origin_asr",
    # "origin_asr_ci", "visage", "breaking_t"}, computed as the whole set's figures are
    categories: list[dict[str, Any]] | None = None
    # what the run was expected to take before its first point (estimate.Estimate.record)
    # and what its points took (estimate.actual); None for runs that did not time it
    estimate: dict[str, Any] | None = None
    actual: dict[str, Any] | None = None
    # landscape.fragility: None, or the points with a few refusals that keep broken points in
    # VISAGE's span, the span and VISAGE with them trimmed too
    visage_fragile: dict[str, Any] | None = None
    # stats.visage_modes: None, or the bootstrap's modes, one per trimmed span
    visage_modes: list[dict[str, Any]] | None = None
    # interpolation: landscape.breaking_distance, per tensor kind and "all"
    breaking_distance: dict[str, float] | None = None
    # the model as the user named it, when not by its path (``ollama:llama3.2:1b``)
    model_spec: str | None = None

    @property
    def display_name(self) -> str:
        """What tables, titles and reports call the model: as the user named it, else its
        file name."""
        if self.model_spec:
            return self.model_spec
        return Path(self.model).name if self.model else self.model_name or "model"

    @property
    def interpolation(self) -> bool:
        """True for an interpolation landscape (its first axis is t, not alpha)."""
        return self.grid.get("kind") == "interpolation"

    @property
    def grid_points(self) -> list[PointRow]:
        """The points on the grid (not an off-grid origin), in stored order."""
        return [r for r in self.points if r.on_grid]

    @property
    def origin(self) -> PointRow | None:
        """The origin's row, when it is evaluated."""
        return next((r for r in self.points if r.is_origin), None)

    def to_json(self) -> str:
        """The file's text: keys in field order, ``format_version`` first."""
        data = asdict(self)
        if data["rejudged_from"] is None:
            del data["rejudged_from"]
        return json.dumps(data, indent=2)

    @classmethod
    def from_dict(cls, data: dict, source: str = SUMMARY_FILE) -> RunSummary:
        """A stored summary; VisageError (one line) for a newer format or a file that is not
        a summary."""
        data = {"format_version": 0, **data}
        version = data["format_version"]
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise VisageError(
                f"{source}: written by a newer visage-local (format {version}; this one reads "
                f"up to {FORMAT_VERSION}); upgrade visage-local to read it"
            )
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise VisageError(f"{source}: not a run summary (no {', '.join(missing)})")
        points = [_build(PointRow, p, source) for p in data["points"]]
        return _build(cls, {**data, "points": points}, source)


def _build(cls, data: dict, source: str):
    """``cls`` from the keys of ``data`` it has: missing optional keys take their defaults,
    a missing required key (older files lack a few, such as ``capability``) is None."""
    names = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
    return cls(**{k: None for k in names} | {k: v for k, v in data.items() if k in _names(cls)})


def _names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class RunSettings:
    """config.json: the settings that determine a run's results (``settings.result_config``)
    and their hash, which guards a resume."""

    hash: str
    config: dict  # the settings, by name
    format_version: int = SETTINGS_FORMAT

    @property
    def batch_size(self) -> int | None:
        """The batch size the run was started with (a resumed run keeps it)."""
        value = self.config.get("batch_size")
        return value if isinstance(value, int) and value > 0 else None

    @property
    def also_judge(self) -> tuple[str, ...]:
        """The judges besides the run's own, each of which judged every whole answer."""
        return tuple(self.config.get("also_judge") or ())

    def to_json(self) -> str:
        """The file's text: ``format_version`` first."""
        data = {"format_version": self.format_version, "hash": self.hash, "config": self.config}
        return json.dumps(data, indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> RunSettings:
        """A config.json's content, any format up to this one."""
        version = data.get("format_version", 0)
        if not isinstance(version, int) or version > SETTINGS_FORMAT:
            raise ValueError(f"config.json format {version!r} is newer than this visage-local")
        if not isinstance(data.get("hash"), str) or not isinstance(data.get("config"), dict):
            raise ValueError("config.json has no hash and settings")
        return cls(data["hash"], data["config"], version)


@dataclass(frozen=True)
class RunFolder:
    """A run folder's paths and loaders (the writer is ``store.RunStore``)."""

    path: Path
    judge_label: str | None = None  # a rejudged summary's files

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        """config.json."""
        return self.path / CONFIG_FILE

    @property
    def generations(self) -> Path:
        """generations.jsonl."""
        return self.path / GENERATIONS_FILE

    @property
    def completed_generations(self) -> Path:
        """generations.judge-<label>.jsonl: the points ``rejudge --complete`` generated again
        (a rejudged view only)."""
        return self._judged(GENERATIONS_FILE)

    @property
    def point_records(self) -> Path:
        """points.jsonl."""
        return self.path / POINTS_FILE

    @property
    def summary(self) -> Path:
        """summary.json, or summary.judge-<label>.json for a rejudged view."""
        return self._judged(SUMMARY_FILE)

    @property
    def csv(self) -> Path:
        """landscape.csv (or its rejudged twin)."""
        return self._judged(CSV_FILE)

    @property
    def plot(self) -> Path:
        """landscape.png (or its rejudged twin)."""
        return self._judged(PLOT_FILE)

    @property
    def capability_plot(self) -> Path:
        """capability.png (or its rejudged twin)."""
        return self._judged(CAPABILITY_PLOT_FILE)

    @property
    def options(self) -> Path:
        """config.toml: the options of the command that made the run."""
        return self.path / OPTIONS_FILE

    @property
    def check(self) -> Path:
        """check.json of a check's folder."""
        return self.path / CHECK_FILE

    @property
    def report(self) -> Path:
        """report.html."""
        return self.path / REPORT_FILE

    @property
    def conditions(self) -> Path:
        """conditions.json of a folder of several runs."""
        return self.path / CONDITIONS_FILE

    @property
    def directions(self) -> Path:
        """directions.json of a folder of runs along several directions."""
        return self.path / DIRECTIONS_FILE

    @property
    def overlay(self) -> Path:
        """overlay.png of a folder of several runs."""
        return self.path / OVERLAY_FILE

    def judged(self, label: str) -> RunFolder:
        """The same folder seen through a rejudged summary's files."""
        return RunFolder(self.path, label)

    def _judged(self, name: str) -> Path:
        if self.judge_label is None:
            return self.path / name
        stem, suffix = name.rsplit(".", 1)
        return self.path / f"{stem}.judge-{self.judge_label}.{suffix}"

    def run_files(self) -> list[Path]:
        """The files a sweep writes (removed when a run is overwritten)."""
        return [self.generations, self.point_records, self.summary, self.csv, self.plot]

    def read_settings(self) -> RunSettings:
        """config.json; ConfigError when it is missing or damaged."""
        try:
            return RunSettings.from_dict(json.loads(self.config.read_text()))
        except FileNotFoundError as e:
            raise ConfigError(f"{self.path}: not a run folder (no {CONFIG_FILE})") from e
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.config}: damaged ({e})") from e

    def write_settings(self, settings: RunSettings) -> None:
        """Atomically replace config.json."""
        atomic_write_text(self.config, settings.to_json())

    def read_summary(self) -> RunSummary:
        """The summary, or VisageError (one line) when there is none or it cannot be read."""
        if not self.summary.is_file():
            raise VisageError(
                f"{self.path}: no {self.summary.name} here (not a sweep's output folder?)"
            )
        try:
            data = json.loads(self.summary.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VisageError(f"{self.summary}: damaged ({e})") from e
        if not isinstance(data, dict):
            raise VisageError(f"{self.summary}: not a run summary")
        return RunSummary.from_dict(data, str(self.summary))

    def write_summary(self, summary: RunSummary, csv_text: str) -> None:
        """Atomically replace the summary and its CSV."""
        atomic_write_text(self.summary, summary.to_json())
        atomic_write_text(self.csv, csv_text)

    def read_generations(self) -> list[GenerationRecord]:
        """The generations of every finished point (a point cut by a crash is left out)."""
        records, _ = read_jsonl(self.generations)
        return [r for rs in finished_points(records).values() for r in rs]

    def runs(self, depth: int = 2) -> list[RunFolder]:
        """Every run this folder holds: itself when it is one, its conditions or directions,
        else the runs in its sub-folders down to ``depth`` levels (a check's folder holds
        its runs two levels down, a screen's one or two), in name order."""
        variants = self.variants()
        if variants is not None:
            return variants
        if self.summary.is_file():
            return [self]
        if depth == 0 or not self.path.is_dir():
            return []
        subs = sorted(p for p in self.path.iterdir() if p.is_dir())
        return [run for sub in subs for run in RunFolder(sub).runs(depth - 1)]

    def variants(self) -> list[RunFolder] | None:
        """The run folders listed by conditions.json, or None for a single run."""
        if not self.conditions.is_file():
            return None
        entries = json.loads(self.conditions.read_text())
        return [RunFolder(self.path / entry["folder"]) for entry in entries]


# the generated text of a record, which ``merge --without-answers`` leaves out
ANSWER_KEYS = ("response", "reasoning")


def without_answer(record: GenerationRecord) -> GenerationRecord:
    """The record without its generated text: prompt, verdicts, token count and coherence."""
    return {k: v for k, v in record.items() if k not in ANSWER_KEYS}  # type: ignore[return-value]


def has_answers(records: Sequence[GenerationRecord]) -> bool:
    """True when every record keeps its answer's text."""
    return all(ANSWER_KEYS[0] in r for r in records)


def finished_points(records: list[GenerationRecord]) -> dict[int, list[GenerationRecord]]:
    """Generation records by point, in prompt order, keeping only points with every prompt's
    answer (a point cut by a crash is left out)."""
    by_point: dict[int, list[GenerationRecord]] = defaultdict(list)
    for r in records:
        by_point[r["point"]].append(r)
    return {
        p: sorted(rs, key=lambda r: r["prompt_index"])
        for p, rs in by_point.items()
        if len(rs) == rs[0]["n_prompts"]
    }


def read_jsonl(path: str | os.PathLike) -> tuple[list[dict], bool]:
    """Records of a JSON-lines file, skipping a line cut by a crash; and whether none was."""
    path = Path(path)
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


@dataclass(frozen=True)
class ScreenFolder:
    """A screen's folder: its files by name (each model's runs are in sub-folders)."""

    path: Path

    @property
    def screen(self) -> Path:
        """screen.json: the ranked models, the settings and the verdict."""
        return self.path / SCREEN_FILE

    @property
    def csv(self) -> Path:
        """screen.csv: one row a model."""
        return self.path / SCREEN_CSV_FILE

    @property
    def leaderboard(self) -> Path:
        """leaderboard.html."""
        return self.path / LEADERBOARD_FILE

    def is_screen(self) -> bool:
        """True when the folder holds a screen's results."""
        return self.screen.is_file()


@dataclass(frozen=True)
class LadderFolder:
    """A ladder's folder: its files by name (each rung's runs are in a sub-folder)."""

    path: Path

    @property
    def ladder(self) -> Path:
        """ladder.json: the rungs, the settings, the flags and the verdict."""
        return self.path / LADDER_FILE

    @property
    def csv(self) -> Path:
        """ladder.csv: one row a rung."""
        return self.path / LADDER_CSV_FILE

    @property
    def plot(self) -> Path:
        """ladder.png: ASR, VISAGE and KL against bits per weight."""
        return self.path / LADDER_PLOT_FILE

    @property
    def page(self) -> Path:
        """ladder.html."""
        return self.path / LADDER_PAGE_FILE

    def distance(self, rung_folder: str | os.PathLike) -> Path:
        """A rung's distance.json."""
        return self.path / rung_folder / DISTANCE_FILE

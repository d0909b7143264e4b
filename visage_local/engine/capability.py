"""Capability beside safety: how far a perturbed model is from the origin, and what it
can still do.

Measured at every point with the point's own weights in the same llama.cpp engine
that generated the answers:

- ``kl``: KL(origin || point) of the next-token distribution, averaged over the
  first ``kl_tokens`` positions of the origin's own greedy answer to each of the
  first ``kl_prompts`` built-in benign prompts (the origin's answer is the
  reference text), then over prompts. 0 at the origin.
- ``mcq_accuracy``: % of multiple-choice questions answered correctly, the answer
  being the letter among A/B/C/D with the highest logit right after the chat
  template's assistant prefix (as the reference code reads MMLU answers).
  Built-in set: visage_local/data/mcq.csv (102 questions in 5 subjects, written
  for the project); ``--mcq FILE`` takes a CSV with columns
  ``question,A,B,C,D,answer`` (and optionally ``subject``).
- ``perplexity``: exp of the mean negative log-likelihood of a user's text file
  (``--perplexity-text``), read in windows of ``PERPLEXITY_WINDOW`` tokens, each
  window's first token given, the others predicted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from visage_local.asking.chat import DEFAULT_SYSTEM, prompt_tokens
from visage_local.asking.prompts import builtin_benign
from visage_local.engine.llama import Engine
from visage_local.errors import ConfigError, ModelFileError
from visage_local.gguf.model import GGUFModel

LETTERS = ("A", "B", "C", "D")
PERPLEXITY_WINDOW = 512
MCQ_INSTRUCTION = "Answer with the letter of the correct option only."


@dataclass(frozen=True)
class Question:
    """A multiple-choice question with four options and the letter of the right one."""

    subject: str
    question: str
    options: tuple[str, str, str, str]
    answer: str

    def prompt(self) -> str:
        """The user message: the question, the lettered options and the instruction."""
        lines = [self.question, *(f"{k}. {o}" for k, o in zip(LETTERS, self.options, strict=True))]
        return "\n".join([*lines, MCQ_INSTRUCTION])


@dataclass(frozen=True)
class QuestionSet:
    """Questions and where they came from."""

    source: str
    questions: tuple[Question, ...]

    @property
    def sha256(self) -> str:
        """Hash of the questions in order."""
        payload = json.dumps([[q.question, q.options, q.answer] for q in self.questions])
        return hashlib.sha256(payload.encode()).hexdigest()


def parse_questions(text: str, source: str) -> QuestionSet:
    """Questions from CSV text with columns question, A, B, C, D, answer (subject optional)."""
    reader = csv.DictReader(io.StringIO(text))
    missing = {"question", *LETTERS, "answer"} - set(reader.fieldnames or [])
    if missing:
        raise ConfigError(f"{source}: missing column(s) {', '.join(sorted(missing))}")
    questions = []
    for row in reader:
        line = reader.line_num
        answer = (row["answer"] or "").strip().upper()
        if answer not in LETTERS:
            raise ConfigError(f"{source}, line {line}: answer must be A, B, C or D, not {answer!r}")
        options = tuple((row[k] or "").strip() for k in LETTERS)
        if not (row["question"] or "").strip() or not all(options):
            raise ConfigError(f"{source}, line {line}: empty question or option")
        subject = (row.get("subject") or "").strip() or "unspecified"
        questions.append(Question(subject, row["question"].strip(), options, answer))  # type: ignore[arg-type]
    if not questions:
        raise ConfigError(f"{source}: no questions")
    return QuestionSet(source, tuple(questions))


def builtin_questions() -> QuestionSet:
    """The project's question set (visage_local/data/mcq.csv)."""
    text = resources.files("visage_local").joinpath("data/mcq.csv").read_text("utf-8")
    return parse_questions(text, "built-in (visage_local/data/mcq.csv)")


def load_questions(path: str | Path | None) -> QuestionSet:
    """Questions from a CSV file, or the built-in set when ``path`` is None."""
    if path is None:
        return builtin_questions()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: question file not found")
    try:
        return parse_questions(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text") from e


@dataclass(frozen=True)
class CapabilitySettings:
    """What the capability probe measures."""

    kl_prompts: int = 20
    kl_tokens: int = 16
    questions: QuestionSet = field(default_factory=builtin_questions)
    text_path: Path | None = None
    text_tokens: int = 2048

    def __post_init__(self):
        if not 1 <= self.kl_prompts <= len(builtin_benign().prompts):
            raise ConfigError(f"--kl-prompts must be between 1 and {len(builtin_benign().prompts)}")
        if not 1 <= self.kl_tokens <= 256:
            raise ConfigError("--kl-tokens must be between 1 and 256")
        if self.text_path is not None and not Path(self.text_path).is_file():
            raise ConfigError(f"{self.text_path}: text file not found")

    def text(self) -> str | None:
        """The perplexity text, if any."""
        if self.text_path is None:
            return None
        try:
            text = Path(self.text_path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{self.text_path}: not UTF-8 text") from e
        if not text.strip():
            raise ConfigError(f"{self.text_path}: the text file is empty")
        return text

    def describe(self) -> dict:
        """The settings as recorded in summary.json (and hashed to guard resumes)."""
        text = self.text()
        return {
            "kl_prompts": self.kl_prompts,
            "kl_tokens": self.kl_tokens,
            "mcq": self.questions.source,
            "mcq_sha256": self.questions.sha256,
            "n_questions": len(self.questions.questions),
            "perplexity_text": None if text is None else str(self.text_path),
            "perplexity_text_sha256": None
            if text is None
            else hashlib.sha256(text.encode()).hexdigest(),
        }


def kl_divergence(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean over positions of KL(reference || other), both (positions, vocab) log-probs."""
    p = np.exp(reference.astype(np.float64))
    return float((p * (reference.astype(np.float64) - other.astype(np.float64))).sum(axis=1).mean())


def letter_tokens(engine: Engine) -> list[int]:
    """The token of each answer letter; a model whose letters are not single tokens is refused."""
    tokens = []
    for letter in LETTERS:
        ids = engine.tokenize(letter)
        if engine.adds_bos and len(ids) > 1:
            ids = ids[1:]
        if len(ids) != 1:
            raise ModelFileError(f"the answer letter {letter!r} is not one token for this model")
        tokens.append(ids[0])
    return tokens


def perplexity(engine: Engine, tokens: list[int], window: int = PERPLEXITY_WINDOW) -> float:
    """exp(mean NLL) of ``tokens``, windows of ``window`` tokens, each window's first token given."""
    windows = [tokens[i : i + window] for i in range(0, len(tokens), window)]
    windows = [w for w in windows if len(w) >= 2]
    if not windows:
        raise ConfigError("the perplexity text is shorter than two tokens")
    # one window a call: a single sequence is evaluated in large chunks
    scores = [engine.score([w[:1]], [w[1:]], window - 1)[0] for w in windows]
    total = sum(s * (len(w) - 1) for s, w in zip(scores, windows, strict=True))
    count = sum(len(w) - 1 for w in windows)
    return math.exp(-total / count)


@dataclass(frozen=True)
class ReferenceAnswers:
    """A model's greedy answers to prompts and its next-token distributions along them: what
    another model's distributions are compared with."""

    prompts: list[list[int]]
    answers: list[list[int]]
    log_probs: list[np.ndarray]  # per prompt: (positions, vocab)
    tokens: int  # most answer tokens


def reference_answers(engine: Engine, prompts: list[list[int]], tokens: int) -> ReferenceAnswers:
    """``engine``'s greedy answers to ``prompts`` (``tokens`` at most; an empty answer is its
    end-of-generation token) and its log-probabilities along them."""
    answers = engine.generate(prompts, tokens)
    eog = engine.tokenize(engine.eos_text)[-1]
    references = [a.tokens or [eog] for a in answers]
    return ReferenceAnswers(
        prompts, references, engine.continuation_log_probs(prompts, references, tokens), tokens
    )


def distance_from(reference: ReferenceAnswers, engine: Engine) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt, how far ``engine``'s next-token distributions along the reference's
    answers are from the reference's: the mean KL(reference || engine), and the share of
    positions whose most likely token is the reference's (llama-perplexity's "same top")."""
    mine = engine.continuation_log_probs(reference.prompts, reference.answers, reference.tokens)
    pairs = list(zip(reference.log_probs, mine, strict=True))
    kl = np.array([kl_divergence(r, m) for r, m in pairs])
    top = np.array([float(np.mean(r.argmax(axis=1) == m.argmax(axis=1))) for r, m in pairs])
    return kl, top


class CapabilityProbe:
    """The capability figures of whatever weights ``engine`` holds, against the origin's.

    ``calibrate()`` must run while the engine holds the origin's weights: it generates
    the reference answers and keeps the origin's distributions along them.
    """

    def __init__(self, settings: CapabilitySettings, model: GGUFModel, engine: Engine):
        self.settings = settings
        self.engine = engine

        def chat(text: str) -> list[int]:
            return prompt_tokens(engine, model.chat_template, DEFAULT_SYSTEM, text)

        self._kl_prompts = [chat(p) for p in builtin_benign().prompts[: settings.kl_prompts]]
        self._mcq_prompts = [chat(q.prompt()) for q in settings.questions.questions]
        self._answers = np.array([LETTERS.index(q.answer) for q in settings.questions.questions])
        self._letters = letter_tokens(engine)
        text = settings.text()
        self._text_tokens = None if text is None else engine.tokenize(text)[: settings.text_tokens]
        self._origin: ReferenceAnswers | None = None

    def calibrate(self) -> None:
        """Generate the origin's reference answers and keep its distributions along them."""
        self._origin = reference_answers(self.engine, self._kl_prompts, self.settings.kl_tokens)

    def measure(self) -> dict[str, float | None]:
        """KL from the origin, MCQ accuracy (%) and perplexity (None without a text)."""
        if self._origin is None:
            raise RuntimeError("calibrate() the probe at the origin first")
        kl = np.mean(distance_from(self._origin, self.engine)[0])
        letters = self.engine.next_token_logits(self._mcq_prompts, self._letters)
        accuracy = 100.0 * float(np.mean(np.argmax(letters, axis=1) == self._answers))
        ppl = None if self._text_tokens is None else perplexity(self.engine, self._text_tokens)
        return {"kl": max(0.0, float(kl)), "mcq_accuracy": accuracy, "perplexity": ppl}

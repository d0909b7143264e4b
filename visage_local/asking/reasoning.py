"""Reasoning models: their thinking kept apart from the answer the judge reads.

A model whose chat template holds a reasoning syntax (``<think>`` ... ``</think>``:
Qwen3, DeepSeek-R1 distills, SmolLM3, GLM; or gpt-oss's harmony channels) may
spend its tokens thinking before it answers. Judging that text would count a
model still thinking as complying. So, per answer:

- the template is asked not to think (``--thinking off``, the default:
  ``enable_thinking=False`` and the equivalents the common templates read) or to
  think (``--thinking on``);
- if the model thinks anyway, or was asked to, its reasoning has a budget of its own
  (``--max-thinking-tokens``): once spent, or when the model ends inside it, the
  syntax's closing text is fed to it, as budget forcing does, and the answer follows;
- the answer has the run's ``--max-new-tokens``; the judge and early stop read only it,
  and generations.jsonl keeps the reasoning beside it.

``ReasoningTracker`` follows one answer's text token by token and says which phase
it is in; the engine feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass

THINKING_MODES = ("off", "on")
DEFAULT_THINKING = "off"
DEFAULT_MAX_THINKING_TOKENS = 1024


@dataclass(frozen=True)
class ReasoningSyntax:
    """How a family of templates marks reasoning."""

    name: str
    open: str  # what the model writes to start reasoning
    close: str  # what ends it: the answer follows
    forced_close: str  # fed to the model when its reasoning runs out of budget
    marks: tuple[str, ...]  # a chat template holding any of these uses this syntax


THINK_TAGS = ReasoningSyntax(
    "think tags", "<think>", "</think>", "\n</think>\n\n", marks=("<think>", "</think>")
)
HARMONY = ReasoningSyntax(
    "harmony",
    "<|channel|>analysis<|message|>",
    "<|channel|>final<|message|>",
    "<|end|><|start|>assistant<|channel|>final<|message|>",
    marks=("<|channel|>",),
)
SYNTAXES = (THINK_TAGS, HARMONY)  # in the order a template is matched against them


def syntax_of(template: str | None) -> ReasoningSyntax | None:
    """The reasoning syntax a chat template uses, or None for a model that does not reason."""
    if template is None:
        return None
    return next((s for s in SYNTAXES if any(mark in template for mark in s.marks)), None)


def template_variables(thinking: str) -> dict[str, object]:
    """What the common templates read to think or not: ``enable_thinking`` (Qwen3, SmolLM3,
    GLM, Hunyuan), ``thinking`` (Granite) and gpt-oss's ``reasoning_effort``, which has no
    off (``low`` is its least)."""
    on = thinking == "on"
    return {"enable_thinking": on, "thinking": on} | ({} if on else {"reasoning_effort": "low"})


def starts_inside(syntax: ReasoningSyntax, prompt_text: str) -> bool:
    """True when the rendered prompt leaves the model inside reasoning (the template opened
    it, as DeepSeek-R1 distills' templates do)."""
    opened = prompt_text.rfind(syntax.open)
    return opened >= 0 and prompt_text.find(syntax.close, opened) < 0


PENDING, THINKING, ANSWER = "pending", "thinking", "answer"
# Tokens an answer may spend on white space before opening its reasoning: a model that has
# not opened it by then answers without reasoning.
PENDING_TOKENS = 8


class ReasoningTracker:
    """One answer's phase as its text grows: ``pending`` while it could still be opening
    reasoning, ``thinking`` inside it, ``answer`` after it (or when it never reasoned)."""

    def __init__(self, syntax: ReasoningSyntax, inside: bool):
        self.syntax = syntax
        self.phase = THINKING if inside else PENDING
        self.reasoned = inside  # True once reasoning was opened
        self._text = ""
        self._pending = 0

    def add(self, piece: str) -> None:
        """The next token's text (special tokens rendered)."""
        self._text += piece
        if self.phase == PENDING:
            self._pending += 1
            head = self._text.lstrip()
            if head.startswith(self.syntax.open):
                self.force_thinking()
            elif not self.syntax.open.startswith(head) or self._pending > PENDING_TOKENS:
                self.phase = ANSWER  # no reasoning: everything so far is the answer
        if self.phase == THINKING and self.syntax.close in self._text:
            self.phase = ANSWER

    def force_thinking(self) -> None:
        """Count what came so far as reasoning (its closing is about to be fed)."""
        self.phase = THINKING
        self.reasoned = True

    @property
    def reasoning(self) -> str:
        """The reasoning text so far, markers included."""
        return self._text

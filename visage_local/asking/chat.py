"""Chat templates, rendered in a sandbox, and system prompts.

The chat template comes from the GGUF file, which visage-local does not trust:
it is rendered in jinja2's ImmutableSandboxedEnvironment, which refuses access
to Python internals (``__class__``, ``__globals__`` ...) and any mutation.
A model without a template gets FALLBACK_TEMPLATE, and the sweep says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Protocol

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from visage_local.asking import reasoning
from visage_local.asking.reference import family_system_prompt
from visage_local.errors import ConfigError, ModelFileError


class Tokenizer(Protocol):
    """What rendering and tokenizing a turn needs of an engine (``engine.llama.Engine``)."""

    @property
    def bos_text(self) -> str:
        """The model's beginning-of-sequence text."""
        ...

    @property
    def eos_text(self) -> str:
        """The model's end-of-sequence text."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """``text``'s tokens."""
        ...


# Used when a GGUF has no tokenizer.chat_template: a plain instruction format.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m.role == 'system' %}{{ m.content }}\n\n"
    "{% elif m.role == 'user' %}User: {{ m.content }}\n"
    "{% else %}Assistant: {{ m.content }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass(frozen=True)
class SystemPrompt:
    """Which system prompt a sweep uses.

    ``default``: no system turn is given, so the template does whatever it does
    by itself (some inject a built-in system prompt). ``none``: an empty system
    turn, which overrides any built-in one. A name of BUILTIN_SYSTEM_PROMPTS: that
    prompt (data/system_prompts/<name>.txt; docs/PROMPTS.md cites each). ``text``: a
    system turn with ``text``.
    """

    mode: str  # "reference", "default", "none", a built-in name, or "text"
    text: str = ""

    @classmethod
    def parse(cls, value: str | None) -> SystemPrompt:
        """From the command line: ``reference`` (the reference code's for the model's family,
        chosen by ``for_model``), ``default``, ``none``, a built-in name, ``@FILE`` or the
        text."""
        if value is None or value == "default":
            return cls("default")
        if value == "reference":
            return REFERENCE_SYSTEM
        if value == "none":
            return cls("none")
        if value in BUILTIN_SYSTEM_PROMPTS:
            return cls(value, builtin_system_prompt(value))
        if value.startswith("@"):
            return cls("text", _read_prompt_file(value[1:]))
        if not value.strip():
            raise ConfigError("--system-prompt: empty text (use 'none' for an empty system turn)")
        return cls("text", value)

    def for_model(self, chat_template: str | None, architecture: str, name: str) -> SystemPrompt:
        """This prompt for a model: ``reference`` becomes the reference code's prompt for the
        model's family (``reference.family_system_prompt``); any other is itself."""
        if self.mode != "reference":
            return self
        return SystemPrompt.parse(family_system_prompt(chat_template, architecture, name))

    def label(self) -> str:
        """``default``, ``none``, a built-in name or the text, as stored in summaries."""
        return self.text if self.mode == "text" else self.mode

    def short_label(self) -> str:
        """A name fit for a folder or a legend: the mode, or ``text-<hash>``."""
        if self.mode != "text":
            return self.mode
        return "text-" + hashlib.sha256(self.text.encode()).hexdigest()[:8]

    def messages(self, user_prompt: str) -> list[dict[str, str]]:
        """The chat messages for one user prompt."""
        if self.mode == "reference":
            raise ValueError("the reference system prompt depends on the model: for_model first")
        user = {"role": "user", "content": user_prompt}
        if self.mode == "default":
            return [user]
        return [{"role": "system", "content": self.text}, user]

    def merged_messages(self, user_prompt: str) -> list[dict[str, str]]:
        """One user turn that starts with the system text and a space, as the reference
        code formats Mistral (``[INST] {system} {prompt} [/INST]``): for templates that
        refuse a system turn."""
        return [{"role": "user", "content": f"{self.text} {user_prompt}"}]


# Built-in system prompts: the project's protective one, and the three the reference code
# uses, verbatim: Llama 2's default ("llama2-base"), Mistral's guardrail prompt
# ("mistral-base") and the AOA role-play ("*-aoa", absolutely obedient agent).
BUILTIN_SYSTEM_PROMPTS = ("safety", "llama2", "mistral", "aoa")


def builtin_system_prompt(name: str) -> str:
    """The text of a built-in system prompt (data/system_prompts/<name>.txt)."""
    path = resources.files("visage_local").joinpath(f"data/system_prompts/{name}.txt")
    return path.read_text(encoding="utf-8").strip()


def _read_prompt_file(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: system prompt file not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the system prompt file ({e})") from e
    if not text:
        raise ConfigError(f"{path}: the system prompt file is empty")
    return text


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return date.today().strftime(fmt)


def render_chat(
    template: str,
    messages: list[dict[str, str]],
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    variables: dict[str, object] | None = None,
) -> str:
    """Render ``messages`` with an untrusted chat template in a sandbox; ``variables`` are
    more names the template may read (``enable_thinking`` ...)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        compiled = env.from_string(template)
        return compiled.render(
            messages=messages,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            **(variables or {}),
        )
    except jinja2.exceptions.SecurityError as e:
        raise ModelFileError(f"the model's chat template tried an unsafe operation: {e}") from e
    except jinja2.exceptions.TemplateError as e:
        raise ModelFileError(f"the model's chat template failed to render: {e}") from e
    except Exception as e:  # a template can raise nearly anything at render time
        raise ModelFileError(f"the model's chat template failed to render: {e}") from e


# No system turn: the template does what it does by itself.
DEFAULT_SYSTEM = SystemPrompt("default")
# The sweep's default: the reference code's prompt for the model's family (``for_model``).
REFERENCE_SYSTEM = SystemPrompt("reference")


def render_prompt(
    engine: Tokenizer,
    template: str | None,
    system: SystemPrompt,
    user_text: str,
    thinking: str | None = None,
) -> str:
    """One user turn as every part of visage-local renders it: ``system``'s messages through
    the model's chat template (FALLBACK_TEMPLATE when it has none); ``thinking`` (``off``
    or ``on``) sets what reasoning templates read to think or not."""
    return render_turn(template, system, user_text, engine.bos_text, engine.eos_text, thinking)


def render_turn(
    template: str | None,
    system: SystemPrompt,
    user_text: str,
    bos_token: str = "",
    eos_token: str = "",
    thinking: str | None = None,
) -> str:
    """``render_prompt`` without an engine. A template that refuses a system turn (Mistral's
    raise an exception for any role but user and assistant) gets the system text at the
    start of the user's turn instead, as the reference code formats Mistral."""
    variables = None if thinking is None else reasoning.template_variables(thinking)
    chosen = template or FALLBACK_TEMPLATE
    try:
        return render_chat(
            chosen, system.messages(user_text), bos_token, eos_token, True, variables
        )
    except ModelFileError:
        if system.mode in ("default", "none"):
            raise
        merged = system.merged_messages(user_text)
        return render_chat(chosen, merged, bos_token, eos_token, True, variables)


def prompt_tokens(
    engine: Tokenizer,
    template: str | None,
    system: SystemPrompt,
    user_text: str,
    thinking: str | None = None,
) -> list[int]:
    """``render_prompt``'s text, tokenized by the engine."""
    return engine.tokenize(render_prompt(engine, template, system, user_text, thinking))

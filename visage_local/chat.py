"""Chat templates, rendered in a sandbox, and system prompts.

The chat template comes from the GGUF file, which visage-local does not trust:
it is rendered in jinja2's ImmutableSandboxedEnvironment, which refuses access
to Python internals (``__class__``, ``__globals__`` ...) and any mutation.
A model without a template gets FALLBACK_TEMPLATE, and the sweep says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from visage_local.errors import ModelFileError

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
    turn, which overrides any built-in one. ``text``: a system turn with ``text``.
    """

    mode: str  # "default", "none" or "text"
    text: str = ""

    @classmethod
    def parse(cls, value: str | None) -> SystemPrompt:
        """From the command line: ``default``, ``none``, or the text itself."""
        if value is None or value == "default":
            return cls("default")
        if value == "none":
            return cls("none")
        return cls("text", value)

    def label(self) -> str:
        """``default``, ``none`` or the text, as stored in summaries."""
        return self.text if self.mode == "text" else self.mode

    def messages(self, user_prompt: str) -> list[dict[str, str]]:
        """The chat messages for one user prompt."""
        user = {"role": "user", "content": user_prompt}
        if self.mode == "default":
            return [user]
        return [{"role": "system", "content": self.text}, user]


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
) -> str:
    """Render ``messages`` with an untrusted chat template in a sandbox."""
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
        )
    except jinja2.exceptions.SecurityError as e:
        raise ModelFileError(f"the model's chat template tried an unsafe operation: {e}") from e
    except jinja2.exceptions.TemplateError as e:
        raise ModelFileError(f"the model's chat template failed to render: {e}") from e
    except Exception as e:  # a template can raise nearly anything at render time
        raise ModelFileError(f"the model's chat template failed to render: {e}") from e

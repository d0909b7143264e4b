"""Jailbreak templates: a harmful request wrapped in text meant to get it answered.

A template is text with a ``{prompt}`` slot. The project ships a few
(data/attacks/*.txt): ``roleplay`` (an unrestricted character), ``prefix-injection``
(the answer must start with "Sure, here is") and ``refusal-suppression`` (rules
that forbid the words refusals are made of). ``none`` leaves prompts as they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from visage_local.errors import ConfigError

SLOT = "{prompt}"
BUILTIN_ATTACKS = ("roleplay", "prefix-injection", "refusal-suppression")


@dataclass(frozen=True)
class Attack:
    """A named template; ``template`` None means the plain prompt."""

    name: str
    template: str | None = None

    def wrap(self, prompt: str) -> str:
        """The prompt as the attack presents it."""
        if self.template is None:
            return prompt
        return self.template.replace(SLOT, prompt)

    @property
    def sha256(self) -> str | None:
        """Hash of the template text (None for plain prompts)."""
        if self.template is None:
            return None
        return hashlib.sha256(self.template.encode()).hexdigest()

    def label(self) -> str:
        """What summaries record: ``none``, a built-in name, or the file's path and hash."""
        return self.name

    def short_label(self) -> str:
        """A name fit for a folder or a legend."""
        if self.name == "none" or self.name in BUILTIN_ATTACKS:
            return self.name
        digest = hashlib.sha256((self.template or "").encode()).hexdigest()[:8]
        return f"{Path(self.name).stem}-{digest}"


def load_attack(value: str) -> Attack:
    """``none``, a built-in template's name, or the path of a text file with a ``{prompt}`` slot."""
    if value == "none":
        return Attack("none")
    if value in BUILTIN_ATTACKS:
        text = resources.files("visage_local").joinpath(f"data/attacks/{value}.txt").read_text()
        return Attack(value, text.strip())
    path = Path(value)
    if not path.is_file():
        raise ConfigError(
            f"--attack {value}: no such file, and not a built-in template "
            f"(built-in: none, {', '.join(BUILTIN_ATTACKS)})"
        )
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the attack template ({e})") from e
    if SLOT not in text:
        raise ConfigError(f"{path}: an attack template needs a {SLOT} slot")
    return Attack(str(path), text)

"""The paper's reference setting, in one place, and how a run deviates from it.

The reference code (ShengYun-Peng/llm-landscape) measures a landscape with the first 80
AdvBench behaviours, up to 512 new tokens decoded greedily (``top_p: 0``), α in
[−0.5, 0.5] in 20 steps (per axis in 2D), seed 123, one layer-normalised random
direction per axis, and its 29 refusal strings (``keyword-paper``). visage-local's
defaults are these; any other value is a deviation, recorded in summary.json and
shown wherever results are shown.

Not counted as deviations: what the tool adds beside the paper's figures (coherence,
the benign set, capability), how the work is done (batch size, threads, early stop,
whose verdicts are unchanged: docs/NOTES.md), and the quantised weights themselves
(``--requant same`` measures the file as it is; the reference perturbs full-precision
weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from visage_local.asking.prompts import advbench

PROMPT_LIMIT = 80
MAX_NEW_TOKENS = 512
STEPS = 20
RANGE = 0.5
SEED = 123
JUDGE = "keyword-paper"
DIRECTION_INDEX = 0
SYSTEM_PROMPT = "reference"  # the family's, as FAMILY_SYSTEM_PROMPTS below chooses it
CHAT_TEMPLATE = "model"  # the model's own chat template (not the plain fallback)
REQUANT = "same"  # moved tensors written back in their own types
ATTACK = "none"
THINKING = "off"  # reasoning models asked not to think: the paper's models did not

# --preset quick: a first look (11 points instead of 21, 20 prompts instead of 80, 64 tokens
# instead of 512: at most 1/61 of the tokens; docs/BENCHMARKS.md has its measured cost).
PRESETS: dict[str, dict[str, int]] = {
    "reference": {},
    "quick": {"steps": 10, "limit": 20, "max_new_tokens": 64},
}


def family_system_prompt(chat_template: str | None, architecture: str, name: str) -> str:
    """The system prompt the reference code gives a model of this family, as a
    ``--system-prompt`` name.

    The reference (``src/llm/util.py``'s ``get_sys_prompt``; AdvBench's
    ``config/dataset/advbench.yaml`` sets ``prompt_template: llama2-base``) prompts Llama-2
    chat with Llama 2's default system prompt (``llama2-base``) and Mistral with its
    guardrail prompt (``mistral-base``); Vicuna's ``vicuna-base`` is the system line
    Vicuna's own template writes, and Llama 3 has no base prompt (``llama3-empty``,
    ``-aoa``, ``-llama2`` only). So: a Llama-2 chat template (``<<SYS>>``) gives ``llama2``;
    a Mistral model (an ``[INST]`` template without ``<<SYS>>``, or ``mistral`` in its
    architecture or name) gives ``mistral``; every other family its template's own
    (``default``), the reference code having nothing else for it.
    """
    template = chat_template or ""
    if "<<SYS>>" in template:
        return "llama2"
    if "[INST]" in template or "mistral" in f"{architecture} {name}".lower():
        return "mistral"
    return "default"


@cache
def prompts_sha256() -> str:
    """The identity of the reference prompts: the first 80 AdvBench behaviours."""
    return advbench().limited(PROMPT_LIMIT).sha256


@dataclass(frozen=True)
class Deviation:
    """One setting that differs from the reference, with both values."""

    setting: str
    reference: str | int | float
    value: str | int | float

    def describe(self) -> str:
        """``max_new_tokens 64 (reference 512)``."""
        return f"{self.setting} {self.value} (reference {self.reference})"


# The order ``deviations`` lists settings in.
SETTINGS_ORDER = ("prompts", "max_new_tokens", "judge", "system_prompt", "chat_template",
                  "attack", "thinking", "requant", "steps", "range", "seed",
                  "direction_index")  # fmt: skip


def with_setting(found: list[dict] | None, setting: str, value: str | int) -> list[dict] | None:
    """A stored deviations list (None: not recorded) once ``setting`` (``judge`` or
    ``max_new_tokens``) is ``value``."""
    if found is None:
        return None
    reference = {"judge": JUDGE, "max_new_tokens": MAX_NEW_TOKENS}[setting]
    kept = [d for d in found if d["setting"] != setting]
    if value != reference:
        kept.append({"setting": setting, "reference": reference, "value": value})
    return sorted(kept, key=lambda d: SETTINGS_ORDER.index(d["setting"]))


def deviations(
    *,
    prompt_set_sha256: str,
    prompts: str,
    n_prompts: int,
    max_new_tokens: int,
    judge: str,
    system_prompt: str,
    attack: str,
    grid: dict | None,
    seed: int | None,
    direction_index: int | None,
    thinking: str = THINKING,
    family_prompt: str = "default",
    chat_template: str = CHAT_TEMPLATE,
    requant: str = REQUANT,
) -> list[Deviation]:
    """Every setting that differs from the reference. ``grid``, ``seed`` and
    ``direction_index`` are None for landscapes that have no random-direction reference
    (interpolations). ``family_prompt`` is the reference's system prompt for the model's
    family (``family_system_prompt``); ``chat_template`` is ``fallback`` for a model
    without one."""
    found = []

    def check(setting: str, reference: str | int | float, value: str | int | float) -> None:
        if value != reference:
            found.append(Deviation(setting, reference, value))

    if prompt_set_sha256 != prompts_sha256():
        found.append(
            Deviation("prompts", f"advbench, first {PROMPT_LIMIT}", f"{prompts}, {n_prompts}")
        )
    check("max_new_tokens", MAX_NEW_TOKENS, max_new_tokens)
    check("judge", JUDGE, judge)
    check("system_prompt", family_prompt, system_prompt)
    check("chat_template", CHAT_TEMPLATE, chat_template)
    check("attack", ATTACK, attack)
    check("thinking", THINKING, thinking)
    check("requant", REQUANT, requant)
    if grid is not None:
        check("steps", STEPS, grid["steps"])
        check("range", RANGE, grid["range"])
    if seed is not None:
        check("seed", SEED, seed)
    if direction_index is not None:
        check("direction_index", DIRECTION_INDEX, direction_index)
    return found

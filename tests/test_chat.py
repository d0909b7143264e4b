"""Chat templates from untrusted GGUF files render in a sandbox; system prompt modes."""

from __future__ import annotations

import pytest

from visage_local.asking.chat import FALLBACK_TEMPLATE, SystemPrompt, render_chat
from visage_local.errors import ModelFileError
from visage_local.gguf.model import GGUFModel

HOSTILE_TEMPLATES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.system('touch /tmp/visage-pwned') }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{% set x = messages.append({'role': 'user', 'content': 'x'}) %}{{ x }}",
    "{{ raise_exception('template says no') }}",
    "{% for",
]


@pytest.mark.parametrize("template", HOSTILE_TEMPLATES)
def test_hostile_templates_fail_cleanly_without_effect(template, tmp_path):
    messages = [{"role": "user", "content": "hi"}]
    try:
        out = render_chat(template, messages)
    except ModelFileError:
        out = None
    # Either a clean error, or a harmless render that reached nothing outside the sandbox.
    assert out is None or ("os" not in out and "subclasses" not in out and "uid=" not in out)
    assert messages == [{"role": "user", "content": "hi"}]
    from pathlib import Path

    assert not Path("/tmp/visage-pwned").exists()


def test_real_template_renders_system_modes(qwen):
    template = GGUFModel(qwen).chat_template
    default = render_chat(template, SystemPrompt.parse("default").messages("Hello"))
    none = render_chat(template, SystemPrompt.parse("none").messages("Hello"))
    text = render_chat(template, SystemPrompt.parse("Be safe.").messages("Hello"))
    assert "You are Qwen" in default  # the template's own default system prompt
    assert "You are Qwen" not in none and "<|im_start|>system\n<|im_end|>" in none
    assert "<|im_start|>system\nBe safe.<|im_end|>" in text
    assert all(t.endswith("<|im_start|>assistant\n") for t in (default, none, text))


def test_fallback_template_for_models_without_one(gemma):
    assert GGUFModel(gemma).chat_template is None
    out = render_chat(FALLBACK_TEMPLATE, SystemPrompt.parse("Be safe.").messages("Hi"))
    assert out == "Be safe.\n\nUser: Hi\nAssistant:"

"""How many prompts decode together: the largest batch whose KV cache and logits fit in memory."""

from __future__ import annotations

from pathlib import Path

from visage_local.gguf_model import GGUFModel

MAX_BATCH = 128  # a point's prompts in one group: one decode tail, not one per group
KV_BYTES_PER_VALUE = 2  # llama.cpp's default f16 cache
LOGIT_BYTES = 4
MEMORY_SHARE = 0.25  # of the memory available when the sweep starts
TYPICAL_PROMPT_TOKENS = 96  # a chat-formatted harmful request, with a system prompt


def kv_bytes_per_token(model: GGUFModel) -> int:
    """Bytes of keys and values one token takes in the KV cache, from the model's metadata."""
    arch = model.architecture
    layers = int(model.metadata(f"{arch}.block_count", 0))
    width = int(model.metadata(f"{arch}.embedding_length", 0))
    heads = int(model.metadata(f"{arch}.attention.head_count", 1)) or 1
    kv_heads = model.metadata(f"{arch}.attention.head_count_kv", heads)
    kv_heads = int(kv_heads if not isinstance(kv_heads, list) else max(kv_heads))
    key = int(model.metadata(f"{arch}.attention.key_length", width // heads))
    value = int(model.metadata(f"{arch}.attention.value_length", width // heads))
    return layers * kv_heads * (key + value) * KV_BYTES_PER_VALUE


def available_memory() -> int:
    """MemAvailable from /proc/meminfo, or 8 GiB where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def auto_batch_size(model: GGUFModel, n_prompts: int, tokens_per_sequence: int) -> int:
    """The largest batch (at most MAX_BATCH and n_prompts) whose cache and logits fit in a
    quarter of the available memory."""
    n_vocab = model.array_length("tokenizer.ggml.tokens") or 32000
    per_sequence = kv_bytes_per_token(model) * tokens_per_sequence + n_vocab * LOGIT_BYTES
    budget = int(available_memory() * MEMORY_SHARE)
    return max(1, min(MAX_BATCH, n_prompts, budget // max(1, per_sequence)))

"""Memory: how many prompts decode together (the largest batch whose KV cache and logits
fit), and how much of the random directions is kept between points (what fits beside the
model, the KV cache and the work on one tensor, never into swap)."""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from visage_local.gguf.model import GGUFModel

MAX_BATCH = 128  # a point's prompts in one group: one decode tail, not one per group
KV_BYTES_PER_VALUE = 2  # llama.cpp's default f16 cache
LOGIT_BYTES = 4
MEMORY_SHARE = 0.25  # of the memory available when the sweep starts
TYPICAL_PROMPT_TOKENS = 96  # a chat-formatted harmful request, with a system prompt
MEMINFO = Path("/proc/meminfo")  # Linux only
HEADROOM = 1 << 30  # left to the system and to this process's own code and buffers


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
    """Bytes new allocations can take without swapping: MemAvailable on Linux, ullAvailPhys
    on Windows, free + inactive + speculative pages on macOS, free pages elsewhere; 8 GiB
    where none can be read."""
    for probe in (_meminfo, _windows, _macos, _sysconf):
        if value := probe():
            return value
    return 8 << 30


def _meminfo() -> int | None:
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _windows() -> int | None:
    if os.name != "nt":
        return None

    class Status(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_uint32), ("dwMemoryLoad", ctypes.c_uint32)] + [
            (name, ctypes.c_uint64)
            for name in (
                "total",
                "avail",
                "total_page",
                "avail_page",
                "total_virtual",
                "avail_virtual",
                "avail_extended_virtual",
            )  # fmt: skip
        ]

    status = Status(dwLength=ctypes.sizeof(Status))
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
        return None
    return int(status.avail)


def _macos() -> int | None:
    if sys.platform != "darwin":
        return None
    try:
        text = subprocess.run(["vm_stat"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return parse_vm_stat(text)


def parse_vm_stat(text: str) -> int | None:
    """Free, inactive and speculative pages times the page size, from macOS's vm_stat."""
    size = re.search(r"page size of (\d+) bytes", text)
    pages = {
        m.group(1): int(m.group(2)) for m in re.finditer(r"^Pages ([a-z ]+):\s+(\d+)\.", text, re.M)
    }
    wanted = ("free", "inactive", "speculative")
    if size is None or not all(k in pages for k in wanted):
        return None
    return int(size.group(1)) * sum(pages[k] for k in wanted)


def _sysconf() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def auto_batch_size(model: GGUFModel, n_prompts: int, tokens_per_sequence: int) -> int:
    """The largest batch (at most MAX_BATCH and n_prompts) whose cache and logits fit in a
    quarter of the available memory."""
    budget = int(available_memory() * MEMORY_SHARE)
    per_sequence = sequence_bytes(model, tokens_per_sequence)
    return max(1, min(MAX_BATCH, n_prompts, budget // max(1, per_sequence)))


def sequence_bytes(model: GGUFModel, tokens_per_sequence: int) -> int:
    """Bytes one decoded sequence takes: its KV cache and its logits."""
    n_vocab = model.array_length("tokenizer.ggml.tokens") or 32000
    return kv_bytes_per_token(model) * tokens_per_sequence + n_vocab * LOGIT_BYTES


@dataclass(frozen=True)
class TensorWork:
    """The memory one perturbed tensor takes while it is moved (bytes)."""

    cached_from: int  # the smallest direction cache at which it takes the whole-tensor route
    whole: int  # its weights, perturbed copy and directions, whole, in float32
    block: int  # the same for one block of rows, when its directions are drawn in blocks


def working_bytes(works: Sequence[TensorWork], cache: int) -> int:
    """The most memory one tensor's work takes with a direction cache of ``cache`` bytes:
    a tensor whose directions could be cached takes the whole-tensor route, any other
    is moved in blocks of rows."""
    return max((w.whole if w.cached_from <= cache else w.block for w in works), default=0)


@dataclass(frozen=True)
class CacheBudget:
    """How much of the directions a sweep keeps in memory, and why (bytes)."""

    chosen: int
    needed: int  # every direction of every perturbed tensor, in float32
    available: int  # when the sweep starts
    model: int  # the scratch copy llama.cpp maps (and the original, for coherence scoring)
    kv: int  # KV cache and logits of the batch
    working: int  # one tensor's work at this cache (``working_bytes``)
    headroom: int = HEADROOM

    def describe(self) -> str:
        """One line: what was chosen from what."""
        mib = lambda n: f"{n / 2**20:.0f} MiB"  # noqa: E731
        return (
            f"direction cache: {mib(self.chosen)} of the {mib(self.needed)} the directions take "
            f"(available {mib(self.available)} - models {mib(self.model)} - KV cache "
            f"{mib(self.kv)} - one tensor's work {mib(self.working)} - headroom "
            f"{mib(self.headroom)}; --memory-budget sets it)"
        )


def cache_budget(
    model_bytes: int,
    kv_bytes: int,
    works: Sequence[TensorWork],
    needed: int,
    available: int | None = None,
    chosen: int | None = None,
) -> CacheBudget:
    """The largest direction cache that fits, with the work on one tensor at that cache,
    beside the model and the KV cache in ``available`` memory (default: what the machine
    has now) less HEADROOM: never more than the directions take, never less than nothing.
    A larger cache can cost more than its own bytes: a tensor whose directions it could
    hold is moved whole, not in blocks. ``chosen``: the cache asked for (--memory-budget)."""
    available = available_memory() if available is None else available
    if chosen is None:
        room = available - model_bytes - kv_bytes - HEADROOM
        chosen = 0
        steps = sorted({0, *(w.cached_from for w in works if w.cached_from <= needed)})
        for low, high in zip(steps, [*steps[1:], needed + 1], strict=True):
            fits = min(high - 1, room - working_bytes(works, low))
            if fits >= low:
                chosen = max(chosen, fits)
    return CacheBudget(
        chosen, needed, available, model_bytes, kv_bytes, working_bytes(works, chosen)
    )

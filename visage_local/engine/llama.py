"""llama.cpp model and context lifetime, weight updates, batched greedy generation.

The engine talks to llama.cpp through llama-cpp-python's low-level API.
Prompts decode together, one sequence each, in one context with a KV stream per
sequence; greedy sampling is an argmax over the logits of every
sequence at once. A sequence stops at end of generation, at ``max_new_tokens``,
or as soon as a caller-given predicate says its verdict is settled.

Weight updates: the model is loaded with mmap from a scratch copy of the GGUF
file and with llama.cpp's weight repacking off, so the CPU backend computes
straight from the mapped file. Rewriting tensor bytes in that file (see
``gguf_model.GGUFCopy``) changes the model at once; ``reset`` then clears the
KV cache. When layers are offloaded to a GPU the weights live in device memory,
so ``refresh_weights`` reloads the model from the file instead.

Shared prefix: the tokens every prompt of a batch starts with (the chat
template's system prompt and turn markers) are evaluated once, on one
sequence, and their keys and values copied to the other sequences.

KV streams: each sequence has a KV stream of its own, and a decode call costs
attention over every stream between the lowest and the highest sequence it
feeds. Up to ``max_sequences`` prompts decode together; when an answer ends, the
next waiting prompt takes its stream (continuous batching: the tokens every
prompt starts with stay, the rest of the new prompt is evaluated), so any
number of prompts runs as one stream of work. Once no prompt waits and early stop
ends sequences, the active ones are moved into the lowest streams and fed in
stream order (``_compact``), so a point whose aligned model refuses most prompts
within a few tokens decodes its remaining answers at the cost of their own
number, not of the whole batch.

Reasoning: given a ``Reasoning`` plan, each answer's reasoning (``reasoning.py``)
has its own budget; when it is spent, or the model ends inside it, the syntax's
closing text is fed token by token instead of the model's choice, and the answer
that follows gets ``max_new_tokens`` and the early-stop predicate to itself.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np

from visage_local.asking.reasoning import ANSWER, ReasoningSyntax, ReasoningTracker
from visage_local.errors import ModelFileError

_LOG_CALLBACK = None
_GGML_LOG_LEVEL_ERROR = 4  # ggml.h: enum ggml_log_level
_ERRORS: deque[str] = deque(maxlen=8)  # llama.cpp's latest error lines, for our messages
_SHOW_LOG = [False]  # set by show_llama_logs (the CLI's -v)


def auto_gpu_layers() -> int:
    """What ``--n-gpu-layers auto`` offloads: every layer (llama.cpp caps the count at the
    model's) where this llama.cpp build has a GPU backend, none where not."""
    return ALL_LAYERS if llama_cpp.llama_supports_gpu_offload() else 0


# More layers than any model has: llama.cpp offloads all of them.
ALL_LAYERS = 999


def build_features() -> str:
    """What this llama.cpp build computes with, as llama.cpp reports it (``CPU : AVX2 = 1 |
    AVX512 = 1 | ...``, and a GPU backend's line where one is built in): builds for other
    instruction sets round differently, so greedy answers may part at near ties."""
    info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")
    return " | ".join(part.strip() for part in info.split("|") if part.strip())


def quiet_llama_logs() -> None:
    """Keep llama.cpp's logging off stderr (unless ``show_llama_logs``); its error lines
    are kept for ``llama_error``."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:

        @llama_cpp.llama_log_callback
        def _keep_errors(level, text, user_data):  # noqa: ARG001
            line = text.decode("utf-8", errors="replace")
            if level == _GGML_LOG_LEVEL_ERROR:
                _ERRORS.append(line.strip())
            if _SHOW_LOG[0]:
                sys.stderr.write(line)

        _LOG_CALLBACK = _keep_errors
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


def show_llama_logs(show: bool = True) -> None:
    """Write llama.cpp's whole log to stderr (its error lines are kept either way)."""
    _SHOW_LOG[0] = show


def llama_error() -> str | None:
    """The reason llama.cpp gave for its last failure: the first error line that says
    more than that something failed (``error loading model ...: key not found ...``)."""
    lines = list(_ERRORS)
    _ERRORS.clear()
    reasons = [
        line.split(": ", 1)[-1].removeprefix("error loading model: ")
        for line in lines
        if "error" in line.lower()
    ]
    return reasons[0] if reasons else (lines[-1] if lines else None)


@dataclass
class Generation:
    """One greedy answer: its tokens and text after any reasoning, and the reasoning."""

    tokens: list[int]
    text: str
    stop_reason: str  # "eog", "length" or "settled"
    reasoning: str | None = None  # markers included; None when the model did not reason
    reasoning_tokens: list[int] = field(default_factory=list)  # forced closing included


@dataclass(frozen=True)
class Reasoning:
    """How answers of a reasoning model are generated: its syntax, the reasoning budget,
    and for each prompt whether the template left the model inside reasoning."""

    syntax: ReasoningSyntax
    max_tokens: int
    inside: list[bool]


@dataclass
class GenerationStats:
    """Where the time of one ``generate`` call went: prompt evaluation and decode steps."""

    prefill_tokens: int = 0  # tokens evaluated: a shared prefix counts once
    prefill_s: float = 0.0
    decode_steps: int = 0
    decode_tokens: int = 0  # sequences fed, summed over steps
    decode_s: float = 0.0
    decode_first_s: float = 0.0  # the first step (llama.cpp sizes its buffers)


@dataclass(frozen=True)
class EngineSettings:
    """How llama.cpp runs: threads, GPU layers, how many sequences decode together, and
    whether attention uses llama.cpp's flash-attention kernels (off, as in
    ``llama_cpp.Llama``: they are faster but round differently)."""

    threads: int = max(1, os.cpu_count() or 1)
    n_gpu_layers: int = 0
    max_sequences: int = 128
    flash_attn: bool = False


class Engine:
    """A llama.cpp model with one context, generating greedily for many prompts at once."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        settings: EngineSettings | None = None,
        label: str | os.PathLike | None = None,
    ):
        """Load ``model_path``; ``label`` names the model in errors (the user's file when
        ``model_path`` is a scratch copy of it)."""
        quiet_llama_logs()
        llama_cpp.llama_backend_init()
        self.model_path = Path(model_path)
        self.label = str(label or model_path)
        self.settings = settings or EngineSettings()
        self._model = None
        self._ctx = None
        self._ctx_tokens = 0
        self._ctx_sequences = 0
        self._scored_prompts: tuple[tuple[int, ...], ...] | None = None
        self._scored_first: np.ndarray | None = None
        self.last_stats = GenerationStats()  # of the latest generate call
        self._load_model()

    # lifetime -----------------------------------------------------------------

    def _load_model(self) -> None:
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = self.settings.n_gpu_layers
        params.use_mmap = True
        params.use_extra_bufts = False  # repacked copies would not see in-place weight updates
        _ERRORS.clear()
        model = llama_cpp.llama_model_load_from_file(str(self.model_path).encode(), params)
        if not model:
            reason = llama_error() or "unsupported architecture or damaged file"
            raise ModelFileError(f"{self.label}: llama.cpp could not load this model ({reason})")
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)

    def _ensure_context(self, n_sequences: int, tokens_per_sequence: int) -> None:
        """A cleared context for ``n_sequences`` sequences of up to ``tokens_per_sequence`` each."""
        if (
            self._ctx is not None
            and n_sequences <= self._ctx_sequences
            and tokens_per_sequence <= self._ctx_tokens // self._ctx_sequences
        ):
            self.reset()
            return
        self._free_context()
        params = llama_cpp.llama_context_default_params()
        # Without a unified KV cache every sequence gets n_ctx / n_seq_max cells of its own.
        params.n_ctx = n_sequences * _round_up(tokens_per_sequence, 64)
        params.n_batch = 512
        params.n_ubatch = 512
        params.n_seq_max = n_sequences
        params.kv_unified = False  # one KV stream per sequence: attention spans its own cells only
        params.n_threads = self.settings.threads
        params.n_threads_batch = self.settings.threads
        params.no_perf = True
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if self.settings.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not ctx:
            raise ModelFileError(
                f"llama.cpp could not create a context of {params.n_ctx} tokens for "
                f"{n_sequences} sequences (out of memory?); lower --batch-size"
            )
        self._ctx = ctx
        self._ctx_tokens = params.n_ctx
        self._ctx_sequences = n_sequences

    def _free_context(self) -> None:
        self._scored_prompts = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
            self._ctx_tokens = 0
            self._ctx_sequences = 0

    def reset(self) -> None:
        """Forget all cached keys and values (after the weights changed)."""
        self._scored_prompts = None
        if self._ctx is not None:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)

    def refresh_weights(self) -> None:
        """Make the model see the current bytes of its file.

        On the CPU the mapped file is used in place, so only the KV cache is
        cleared. With GPU offload the model is reloaded from the file.
        """
        if self.settings.n_gpu_layers == 0:
            self.reset()
            return
        self._free_context()
        llama_cpp.llama_model_free(self._model)
        self._model = None
        self._load_model()

    def close(self) -> None:
        """Free the context and the model."""
        self._free_context()
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # text ---------------------------------------------------------------------

    def token_text(self, token: int, special: bool = True) -> str:
        """The text of one token (special tokens rendered when ``special``)."""
        return self._piece(token, special).decode("utf-8", errors="replace")

    def text_of(self, tokens: Sequence[int]) -> str:
        """The text of generated tokens (special tokens not rendered), decoded whole."""
        return b"".join(self._piece(t, False) for t in tokens).decode("utf-8", errors="replace")

    def is_end(self, token: int) -> bool:
        """True for an end-of-generation token (end of turn, EOS)."""
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    @property
    def bos_text(self) -> str:
        """The text of the BOS token, as chat templates expect it."""
        bos = llama_cpp.llama_vocab_bos(self._vocab)
        return self.token_text(bos) if bos >= 0 else ""

    @property
    def eos_text(self) -> str:
        """The text of the EOS token, as chat templates expect it."""
        eos = llama_cpp.llama_vocab_eos(self._vocab)
        return self.token_text(eos) if eos >= 0 else ""

    @property
    def adds_bos(self) -> bool:
        """True when the model wants a BOS token in front of every prompt."""
        return bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        """Tokens of a rendered prompt, special tokens parsed, BOS added once if the model
        wants it (and ``add_bos``)."""
        bos = self.bos_text
        if add_bos and self.adds_bos and bos and text.startswith(bos):
            text = text[len(bos) :]
        data = text.encode("utf-8")
        capacity = len(data) + 16
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_bos, True)
        if n < 0:
            raise ModelFileError("tokenization failed")
        return list(buf[:n])

    def _piece(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 256, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    # generation ---------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        settled: Callable[[str], bool] | None = None,
        reasoning: Reasoning | None = None,
    ) -> list[Generation]:
        """Greedy answers to tokenized prompts, up to ``max_sequences`` decoded together: when
        an answer ends, the next waiting prompt takes its KV stream (continuous batching).

        ``settled(answer_so_far)`` may stop a sequence early once it returns True.
        With ``reasoning``, reasoning is kept apart from the answer (module docstring).
        """
        self.last_stats = GenerationStats()
        if not prompts:
            return []
        streams = max(
            1,
            min(
                self.settings.max_sequences, llama_cpp.llama_max_parallel_sequences(), len(prompts)
            ),
        )
        longest = max(len(p) for p in prompts)
        closing: list[int] = []
        if reasoning is not None:
            closing = self.tokenize(reasoning.syntax.forced_close, add_bos=False)
            longest += reasoning.max_tokens + len(closing)
        self._ensure_context(streams, longest + max_new_tokens + 1)
        batch = llama_cpp.llama_batch_init(max(512, streams), 0, 1)
        try:
            return self._decode_loop(
                batch, prompts, streams, max_new_tokens, settled, reasoning, closing
            )
        finally:
            llama_cpp.llama_batch_free(batch)

    def logits_after(self, prompt: Sequence[int]) -> np.ndarray:
        """The next-token logits after one tokenized prompt (float32, n_vocab)."""
        self._ensure_context(1, len(prompt) + 1)
        batch = llama_cpp.llama_batch_init(max(len(prompt), 1), 0, 1)
        try:
            out = self._prefill(batch, [list(prompt)])
        finally:
            llama_cpp.llama_batch_free(batch)
        return out[0]

    def score(
        self,
        prompts: Sequence[Sequence[int]],
        continuations: Sequence[Sequence[int]],
        max_continuation: int,
    ) -> list[float | None]:
        """Mean log-probability per token of each continuation after its prompt (None when
        the continuation is empty); continuations are at most ``max_continuation`` tokens.

        When the same prompts are scored again (a sweep scores every point's answers
        with the origin model), their keys and values are kept and only the
        continuations are evaluated.
        """
        if any(len(c) > max_continuation for c in continuations):
            raise ValueError("a continuation is longer than max_continuation")
        group = max(1, min(self.settings.max_sequences, llama_cpp.llama_max_parallel_sequences()))
        scores: list[float | None] = []
        for start in range(0, len(prompts), group):
            scores.extend(
                self._score_group(
                    prompts[start : start + group],
                    continuations[start : start + group],
                    max_continuation,
                    keep=len(prompts) <= group,
                )
            )
        return scores

    def continuation_log_probs(
        self,
        prompts: Sequence[Sequence[int]],
        continuations: Sequence[Sequence[int]],
        max_continuation: int,
    ) -> list[np.ndarray]:
        """Log-probabilities over the whole vocabulary at every position of each
        continuation (float32, shape (len(continuation), n_vocab)): row k is the model's
        next-token distribution after the prompt and the continuation's first k tokens."""
        if any(len(c) > max_continuation for c in continuations):
            raise ValueError("a continuation is longer than max_continuation")
        out = [np.empty((len(c), self.n_vocab), dtype=np.float32) for c in continuations]
        group = max(1, min(self.settings.max_sequences, llama_cpp.llama_max_parallel_sequences()))
        for start in range(0, len(prompts), group):
            chunks = self._continuation_logits(
                prompts[start : start + group],
                continuations[start : start + group],
                max_continuation,
                keep=False,
            )
            for chunk, logits in chunks:
                log_probs = _log_softmax(logits)
                for row, (seq, pos, _, _) in enumerate(chunk):
                    prompt_length = len(prompts[start + seq])
                    out[start + seq][pos - prompt_length + 1] = log_probs[row]
        return out

    def _score_group(self, prompts, continuations, max_continuation, keep) -> list[float | None]:
        totals = np.zeros(len(prompts))
        for chunk, logits in self._continuation_logits(
            prompts, continuations, max_continuation, keep
        ):
            targets = np.array([target for _, _, _, target in chunk])
            picked = _log_softmax(logits)[np.arange(len(chunk)), targets]
            np.add.at(totals, [seq for seq, _, _, _ in chunk], picked)
        return [float(totals[s] / len(c)) if len(c) else None for s, c in enumerate(continuations)]

    def _continuation_logits(self, prompts, continuations, max_continuation, keep):
        """Evaluate each continuation after its prompt; yield (entries, float64 logits) per
        decode call, an entry being (sequence, position, token fed, token to predict).

        The prompts are evaluated whole, as generation evaluates them (their last
        logits give each continuation's first row); the continuations then go one
        token per sequence per call, as generation decodes. (Feeding a prompt's last
        token together with its continuation, after a prefill of several sequences
        without it, gave up to 0.7 nats other logits than evaluating the sequence
        alone on SmolLM2.)"""
        key = tuple(tuple(p) for p in prompts)
        batch = llama_cpp.llama_batch_init(max(512, len(prompts)), 0, 1)
        try:
            if keep and key == self._scored_prompts:
                memory = llama_cpp.llama_get_memory(self._ctx)
                for seq, prompt in enumerate(prompts):
                    llama_cpp.llama_memory_seq_rm(memory, seq, len(prompt), -1)
                first = self._scored_first
            else:
                self._ensure_context(
                    len(prompts), max(len(p) for p in prompts) + max_continuation + 1
                )
                first = self._prefill_shared(batch, [list(p) for p in prompts])
                self._scored_prompts = key if keep else None
                self._scored_first = first if keep else None
            opening = [
                (seq, len(p) - 1, p[-1], c[0])
                for seq, (p, c) in enumerate(zip(prompts, continuations, strict=True))
                if c
            ]
            if opening:
                yield opening, first[[seq for seq, _, _, _ in opening]].astype(np.float64)
            for chunk in _continuation_chunks(prompts, continuations):
                for i, (seq, pos, tok, _) in enumerate(chunk):
                    _set_entry(batch, i, tok, pos, seq, True)
                batch.n_tokens = len(chunk)
                self._decode(batch)
                logits = np.ctypeslib.as_array(
                    llama_cpp.llama_get_logits(self._ctx), shape=(len(chunk), self.n_vocab)
                ).astype(np.float64)
                yield chunk, logits
        finally:
            llama_cpp.llama_batch_free(batch)

    def next_token_logits(
        self, prompts: Sequence[Sequence[int]], columns: Sequence[int]
    ) -> np.ndarray:
        """The logits of the tokens ``columns`` after each prompt (float32, (n, len(columns)))."""
        out = np.empty((len(prompts), len(columns)), dtype=np.float32)
        group = max(1, min(self.settings.max_sequences, llama_cpp.llama_max_parallel_sequences()))
        for start in range(0, len(prompts), group):
            part = [list(p) for p in prompts[start : start + group]]
            self._ensure_context(len(part), max(len(p) for p in part) + 1)
            batch = llama_cpp.llama_batch_init(max(512, len(part)), 0, 1)
            try:
                last = self._prefill_shared(batch, part)
            finally:
                llama_cpp.llama_batch_free(batch)
            out[start : start + len(part)] = last[:, list(columns)]
        return out

    def _prefill_shared(self, batch, prompts: list[list[int]]) -> np.ndarray:
        """Evaluate every prompt (the prefix they share once); the logits after each."""
        shared = shared_prefix_length(prompts) if len(prompts) > 1 else 0
        if shared:
            self._share_prefix(batch, prompts[0][:shared], len(prompts))
        return self._prefill(batch, prompts, start=shared)

    def _share_prefix(self, batch, prefix: list[int], n_sequences: int) -> None:
        """Evaluate the prefix all prompts share once, on sequence 0, and copy its KV to the others."""
        for start in range(0, len(prefix), 512):
            chunk = prefix[start : start + 512]
            for i, tok in enumerate(chunk):
                _set_entry(batch, i, tok, start + i, 0, False)
            batch.n_tokens = len(chunk)
            self._decode(batch)
        memory = llama_cpp.llama_get_memory(self._ctx)
        for seq in range(1, n_sequences):
            llama_cpp.llama_memory_seq_cp(memory, 0, seq, -1, -1)  # whole sequence: only the prefix

    def _prefill(
        self,
        batch,
        prompts: list[list[int]],
        start: int = 0,
        streams: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Evaluate every prompt from position ``start`` on, prompt k in KV stream
        ``streams[k]`` (default k); return the logits after each prompt's last token."""
        streams = range(len(prompts)) if streams is None else streams
        last = np.empty((len(prompts), self.n_vocab), dtype=np.float32)
        entries = [(k, pos, p[pos]) for k, p in enumerate(prompts) for pos in range(start, len(p))]
        capacity = 512
        for offset in range(0, len(entries), capacity):
            chunk = entries[offset : offset + capacity]
            wanted = []
            for i, (k, pos, tok) in enumerate(chunk):
                is_last = pos == len(prompts[k]) - 1
                _set_entry(batch, i, tok, pos, streams[k], is_last)
                if is_last:
                    wanted.append((i, k))
            batch.n_tokens = len(chunk)
            self._decode(batch)
            for i, k in wanted:
                ptr = llama_cpp.llama_get_logits_ith(self._ctx, i)
                last[k] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        return last

    def _decode_loop(
        self, batch, prompts, streams, max_new_tokens, settled, reasoning, closing
    ) -> list[Generation]:
        n = len(prompts)
        tokens: list[list[int]] = [[] for _ in range(n)]
        pieces: list[bytearray] = [bytearray() for _ in range(n)]  # the answer's text
        stop: list[str | None] = [None] * n
        positions = [len(p) for p in prompts]
        next_tokens = np.zeros(n, dtype=np.int64)
        slots = list(range(streams)) + [-1] * (n - streams)  # each prompt's KV stream
        waiting = deque(range(streams, n))
        # What every prompt starts with stays in a stream when the next prompt takes it.
        common = shared_prefix_length(prompts) if streams > 1 else 0
        start = time.perf_counter()
        first = [list(p) for p in prompts[:streams]]
        next_tokens[:streams] = np.argmax(self._prefill_shared(batch, first), axis=1)
        self.last_stats.prefill_s += time.perf_counter() - start
        shared = shared_prefix_length(first) if streams > 1 else 0
        self.last_stats.prefill_tokens += sum(len(p) for p in first) - (streams - 1) * shared
        active = list(range(streams))
        reasoners = [
            None if reasoning is None else _Reasoner(
                ReasoningTracker(reasoning.syntax, reasoning.inside[s]), reasoning.max_tokens, closing
            )
            for s in range(n)
        ]  # fmt: skip
        first_step = True
        while active:
            still = []
            for seq in active:
                tok = int(next_tokens[seq])
                thinker = reasoners[seq]
                thinking = thinker is not None and not thinker.done
                if thinking:
                    tok = thinker.next_token(tok)
                if llama_cpp.llama_vocab_is_eog(self._vocab, tok):
                    if not thinking:
                        stop[seq] = "eog"
                        continue
                    tok = thinker.close_after_end()
                tokens[seq].append(tok)
                pieces[seq] += self._piece(tok, False)
                if thinking and thinker.step(self._piece(tok, True), len(tokens[seq])):
                    if thinker.done:  # the answer starts after this token
                        pieces[seq].clear()
                    still.append(seq)
                    continue
                if settled is not None and settled(pieces[seq].decode("utf-8", errors="replace")):
                    stop[seq] = "settled"
                elif len(tokens[seq]) - _answer_from(thinker) >= max_new_tokens:
                    stop[seq] = "length"
                else:
                    still.append(seq)
            freed = sorted(slots[seq] for seq in active if stop[seq] is not None)
            joining = [waiting.popleft() for _ in freed[: len(waiting)]]
            for seq, slot in zip(joining, freed, strict=False):
                slots[seq] = slot
            if joining:
                next_tokens[joining] = self._refill(batch, prompts, joining, slots, common)
            active = still
            if active:
                if not waiting:  # while prompts wait every stream is taken
                    self._compact(active + joining, slots)
                self._step(batch, active, tokens, positions, slots, next_tokens, first_step)
                first_step = False
            active = active + joining
        return [_generation(tokens[s], pieces[s], stop[s], reasoners[s]) for s in range(n)]

    def _refill(self, batch, prompts, joining, slots, common) -> np.ndarray:
        """Prefill the prompts ``joining`` into the streams their finished predecessors
        left (keeping the ``common`` tokens every prompt starts with); their first tokens."""
        memory = llama_cpp.llama_get_memory(self._ctx)
        for seq in joining:
            llama_cpp.llama_memory_seq_rm(memory, slots[seq], common, -1)
        start = time.perf_counter()
        logits = self._prefill(
            batch, [list(prompts[s]) for s in joining], common, [slots[s] for s in joining]
        )
        self.last_stats.prefill_s += time.perf_counter() - start
        self.last_stats.prefill_tokens += sum(len(prompts[s]) - common for s in joining)
        return np.argmax(logits, axis=1)

    def _step(self, batch, active, tokens, positions, slots, next_tokens, first) -> None:
        """One decode step: feed each active sequence's latest token, pick its next."""
        # Rows in KV-sequence order: llama.cpp splits a batch whose sequence ids are
        # out of order (Qwen2.5 0.5B, 20 rows: 336 ms a step shuffled, 156 ms sorted).
        active.sort(key=lambda seq: slots[seq])
        for i, seq in enumerate(active):
            _set_entry(batch, i, tokens[seq][-1], positions[seq], slots[seq], True)
            positions[seq] += 1
        batch.n_tokens = len(active)
        start = time.perf_counter()
        self._decode(batch)
        seconds = time.perf_counter() - start
        self.last_stats.decode_s += seconds
        if first:
            self.last_stats.decode_first_s += seconds
        self.last_stats.decode_steps += 1
        self.last_stats.decode_tokens += len(active)
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits(self._ctx), shape=(len(active), self.n_vocab)
        )
        picked = np.argmax(logits, axis=1)
        for i, seq in enumerate(active):
            next_tokens[seq] = picked[i]

    def _compact(self, active: list[int], slots: list[int]) -> None:
        """Move the keys and values of active sequences into the lowest KV sequences.

        With one KV stream per sequence, llama.cpp's attention spans every stream
        from the lowest to the highest sequence in a batch, finished ones included:
        20 active sequences spread over 80 streams decode 2.5x slower than 20 in
        streams 0-19 (Qwen2.5 0.5B, this machine). A stream copy is a few MiB.
        """
        if max(slots[seq] for seq in active) < len(active):
            return
        memory = llama_cpp.llama_get_memory(self._ctx)
        held = {slots[seq] for seq in active}
        free = iter(sorted(set(range(len(active))) - held))
        for seq in active:
            if slots[seq] >= len(active):
                target = next(free)
                llama_cpp.llama_memory_seq_rm(memory, target, -1, -1)
                llama_cpp.llama_memory_seq_cp(memory, slots[seq], target, -1, -1)
                llama_cpp.llama_memory_seq_rm(memory, slots[seq], -1, -1)
                slots[seq] = target

    def _decode(self, batch) -> None:
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")


@dataclass
class _Reasoner:
    """One sequence's reasoning while it decodes: its phase, its budget, the closing tokens
    still to feed, and where its answer starts."""

    tracker: ReasoningTracker
    budget: int
    closing: list[int]
    forced: list[int] = field(default_factory=list)
    done: bool = False
    answer_from: int = 0  # tokens before this index are reasoning

    def next_token(self, chosen: int) -> int:
        """The token to feed: the closing's next one while it is being fed, else the model's."""
        return self.forced.pop(0) if self.forced else chosen

    def close_after_end(self) -> int:
        """The model ended inside its reasoning: feed the closing instead (its first token
        now), so that an answer follows."""
        self.tracker.force_thinking()
        self.forced = self.closing[1:]
        return self.closing[0]

    def step(self, piece: bytes, n_tokens: int) -> bool:
        """Account for the token just added (``n_tokens`` generated so far, special tokens
        rendered in ``piece``); False when it is the answer's first token (no reasoning)."""
        self.tracker.add(piece.decode("utf-8", errors="replace"))
        if self.forced:
            return True
        if self.tracker.phase == ANSWER:
            self.done = True
            if self.tracker.reasoned:
                self.answer_from = n_tokens
            return self.tracker.reasoned
        if n_tokens >= self.budget:
            if n_tokens < self.budget + len(self.closing):
                self.tracker.force_thinking()
                self.forced = list(self.closing)
            else:  # the closing was fed yet not seen: the answer starts here
                self.done = True
                self.answer_from = n_tokens
        return True


def _answer_from(thinker: _Reasoner | None) -> int:
    return 0 if thinker is None else thinker.answer_from


def _generation(tokens, piece, stop, thinker: _Reasoner | None) -> Generation:
    text = piece.decode("utf-8", errors="replace")
    start = _answer_from(thinker)
    if thinker is None or start == 0:
        return Generation(tokens, text, stop or "length")
    return Generation(
        tokens[start:], text, stop or "length", thinker.tracker.reasoning, tokens[:start]
    )


_SCORE_CHUNK = 128  # tokens per decode call when scoring: every one of them returns logits


def _continuation_chunks(prompts, continuations) -> list[list[tuple[int, int, int, int]]]:
    """The decode calls that evaluate every continuation token after the first: entries
    (sequence, position, token fed, token to predict). One sequence: up to _SCORE_CHUNK
    consecutive tokens a call; several: one token of each sequence a call."""
    per_sequence = [
        [(seq, len(p) - 1 + k, c[k - 1], c[k]) for k in range(1, len(c))]
        for seq, (p, c) in enumerate(zip(prompts, continuations, strict=True))
    ]
    if len(per_sequence) == 1:
        entries = per_sequence[0]
        return [entries[i : i + _SCORE_CHUNK] for i in range(0, len(entries), _SCORE_CHUNK)]
    longest = max((len(e) for e in per_sequence), default=0)
    chunks = []
    for k in range(longest):
        step = [e[k] for e in per_sequence if len(e) > k]
        chunks += [step[i : i + _SCORE_CHUNK] for i in range(0, len(step), _SCORE_CHUNK)]
    return chunks


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    return logits - (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))


def shared_prefix_length(prompts: Sequence[Sequence[int]], minimum: int = 4) -> int:
    """Tokens at the start of every prompt that are the same (0 when fewer than ``minimum``).

    At least one token of each prompt is left out, so each still yields its own logits.
    """
    limit = min(len(p) for p in prompts) - 1
    length = 0
    while length < limit and all(p[length] == prompts[0][length] for p in prompts):
        length += 1
    return length if length >= minimum else 0


def _set_entry(batch, i: int, token: int, pos: int, seq: int, want_logits: bool) -> None:
    batch.token[i] = token
    batch.pos[i] = pos
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq
    batch.logits[i] = want_logits


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple

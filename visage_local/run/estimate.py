"""What a sweep will take, said before its first point, and what it took.

The estimate comes from a short timing of this model on this machine:

- the weight update: the middle layer's tensors (and, for a type that layer lacks, its
  tensor of median size) are moved to a point: once as the first point draws their
  directions, then LATER_REPEATS times as later points find them cached, the fastest
  kept; and written to the scratch copy. Other tensors of each type are taken to cost
  the same per value. Directions are drawn ahead, beside the other threads' work
  (``Perturbation.tensors_at``: those the cache keeps one tensor ahead, the others one
  block of rows ahead), so a point takes that work plus the draws' share of the
  threads. Random directions the cache cannot hold are drawn again at every point (and
  once more in turn at the first, for their norms), at the rate the first visits drew;
- generation: the first prompts (up to PROBE_PROMPT_TOKENS tokens) evaluated, then one
  prompt copied into a full batch and decoded PROBE_STEPS steps; every batch is taken
  to evaluate its prompts at that prompt rate and to decode ``max_new_tokens`` steps at
  that step time (the first step of each batch as timed). That is an upper bound:
  answers that end or are settled early take fewer steps;
- coherence scoring (when on): the first COHERENCE_TOKENS tokens of every answer
  evaluated by the origin model at the same prompt rate, after the prompts themselves
  when they do not fit one batch (the scorer keeps one batch's prompts between points).

The capability probe (``--capability``) is not part of the estimate.

Peak memory is the sum ``batching.CacheBudget`` plans with: the scratch copy (and the
original file the coherence scorer maps), the KV cache, one tensor's work and the
direction cache; with overlap, the next point's tensors besides.

With overlap, a point's update is taken to run beside the previous point's
generation without slowing it (as with a GPU generating): a point takes the longer
of the two.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from visage_local.engine.batching import CacheBudget
from visage_local.engine.llama import Engine, shared_prefix_length
from visage_local.gguf.model import GGUFCopy, TensorInfo
from visage_local.points.grid import Point
from visage_local.record import COHERENCE_TOKENS, PointRecord
from visage_local.weights.directions import RandomDirection
from visage_local.weights.perturb import Direction, Perturbation

# Decode steps timed: enough to average a step, few enough to cost seconds at 8B.
PROBE_STEPS = 5
# Prompt tokens timed: a whole llama.cpp batch (n_batch 512) where the prompts have them,
# as prompts are evaluated 512 tokens at a time, and fewer tokens go at a lower rate.
PROBE_PROMPT_TOKENS = 512
# Later visits of a sampled tensor timed, the fastest kept.
LATER_REPEATS = 2


@dataclass(frozen=True)
class Estimate:
    """A sweep's expected cost: seconds of one point's parts, and memory (bytes)."""

    first_update_s: float  # the first point away from the origin (directions drawn)
    update_s: float  # each later point
    prefill_s: float  # every prompt, every point
    decode_s: float  # every answer to max_new_tokens: an upper bound
    score_s: float  # coherence scoring (0 when off)
    n_points: int  # to evaluate, the origin included
    scratch_bytes: int  # the model copy llama.cpp maps
    origin_bytes: int  # the original file, mapped for coherence scoring (0 when off)
    kv_bytes: int  # KV cache and logits of a batch
    working_bytes: int  # one tensor's work, in float32
    cache_bytes: int  # the direction cache
    probe_s: float  # the timing this estimate took
    # the next point's weights prepared while a point generates, held beside the scratch copy
    overlap: bool = False
    prepared_bytes: int = 0
    # with layers offloaded to a GPU, the model reloaded after each update (in update_s too)
    reload_s: float = 0.0

    @property
    def peak_bytes(self) -> int:
        """The memory the run plans to hold at once."""
        return (
            self.scratch_bytes
            + self.origin_bytes
            + self.kv_bytes
            + self.working_bytes
            + self.cache_bytes
            + self.prepared_bytes
        )

    @property
    def point_s(self) -> float:
        """Seconds of a point away from the origin, after the first."""
        return self._with_update(self.update_s)

    @property
    def total_s(self) -> float:
        """Seconds of the whole run: the origin has no weight update, the first point
        draws the directions."""
        if self.n_points == 0:
            return 0.0
        moved = max(0, self.n_points - 1)
        first = self._with_update(self.first_update_s) if moved else 0.0
        rest = self.prefill_s + self.decode_s + self.score_s
        return rest + first + max(0, moved - 1) * self.point_s

    def _with_update(self, update_s: float) -> float:
        """A point's seconds with a weight update of ``update_s``: after it, or with
        overlap beside the previous point's generation (as on a GPU, where the two do not
        share the cores)."""
        rest = self.prefill_s + self.decode_s + self.score_s
        return max(update_s, rest) if self.overlap else update_s + rest

    def describe(self) -> str:
        """One line for the terminal."""
        return (
            f"estimate: at most {duration(self.point_s)} a point (weight update "
            f"{duration(self.update_s)}, first {duration(self.first_update_s)}"
            f"{f', of it the reload to the GPU {duration(self.reload_s)}' if self.reload_s else ''}"
            "; prompts "
            f"{duration(self.prefill_s)}; answers at full length {duration(self.decode_s)}; "
            f"coherence scoring {duration(self.score_s)}), "
            f"{duration(self.total_s)} for {self.n_points} points"
            f"{' (each update beside the previous generation)' if self.overlap else ''}; "
            f"scratch {_gib(self.scratch_bytes)}, peak memory about {_gib(self.peak_bytes)} "
            f"(timed on this machine in {self.probe_s:.0f} s)"
        )

    def notes(self) -> list[str]:
        """What bounds a point with layers on a GPU (the model reloaded after each update):
        there generation is fast and the update, on the CPU, usually takes longer."""
        generation = self.prefill_s + self.decode_s + self.score_s
        if not self.reload_s or self.update_s <= generation:
            return []
        return [
            f"with the layers on the GPU the weight update bounds a point ({duration(self.update_s)}"
            f" against {duration(generation)} of generation): encoding the moved tensors takes "
            "most of it (Q4_K about 8 M values/s a core, Q8_0 about 200: docs/BENCHMARKS.md); "
            "--requant q8_0 writes them in Q8_0, a deviation from the reference setting, and "
            "more threads shorten it"
        ]

    def record(self) -> dict[str, float]:
        """The summary's record of it (seconds rounded to ms)."""
        data = {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return data | {
            "point_s": round(self.point_s, 3),
            "total_s": round(self.total_s, 3),
            "peak_bytes": self.peak_bytes,
        }


def duration(seconds: float) -> str:
    """``45 s``, ``3.5 min`` or ``2.1 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def probe_point(points: Sequence[Point]) -> Point | None:
    """A point to time the weight update at: away from the origin, not a direction's own
    endpoint (whose bytes may be copied rather than computed); None when there is none."""
    for point in points:
        coefficients = point.coefficients()
        if not point.is_origin and not (coefficients[0] == 1.0 and not any(coefficients[1:])):
            return point
    return None


def samples(targets: Sequence[TensorInfo]) -> list[tuple[TensorInfo, float]]:
    """The tensors to time and what each stands for: every tensor of the middle layer, and
    for a type no tensor of that layer has, its tensor of median size; each with the
    factor (values of its type / values of its type timed) its time is multiplied by."""
    layers = sorted({n for t in targets if (n := _layer(t.name)) is not None})
    middle = layers[len(layers) // 2] if layers else None
    timed = [t for t in targets if middle is not None and _layer(t.name) == middle]
    by_type: dict[int, list[TensorInfo]] = defaultdict(list)
    for info in targets:
        by_type[int(info.qtype)].append(info)
    for qtype, infos in by_type.items():
        if not any(int(t.qtype) == qtype for t in timed):
            ranked = sorted(infos, key=lambda t: (t.n_elements, t.name))
            timed.append(ranked[len(ranked) // 2])
    values = {q: sum(t.n_elements for t in infos) for q, infos in by_type.items()}
    sampled: dict[int, int] = defaultdict(int)
    for info in timed:
        sampled[int(info.qtype)] += info.n_elements
    return [(t, values[int(t.qtype)] / sampled[int(t.qtype)]) for t in timed]


def _layer(name: str) -> int | None:
    match = re.match(r"blk\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def time_update(
    perturbation: Perturbation, scratch: GGUFCopy, point: Point | None
) -> tuple[float, float]:
    """Seconds of the first and of a later weight update, extrapolated from ``samples``;
    the scratch copy is left as it was."""
    if point is None:
        return 0.0, 0.0
    first = later = 0.0  # every sampled tensor's work but drawing, extrapolated
    draws = draw_s = 0.0  # values drawn once over (a streamed first visit draws twice), seconds
    for info, share in samples(perturbation.targets):
        values = info.n_elements * sum(_random(d, info.name) for d in perturbation.directions)
        perturbation.phases.take()
        t0 = time.perf_counter()
        perturbation.tensor_at(info, point)
        visit = time.perf_counter() - t0
        draw = perturbation.phases.take()["draw"]
        draw_s += draw
        # kept whole in the cache: drawn once; else drawn in blocks, for the norms and again
        draws += values * (1 if perturbation.kept_whole(info) else 2)
        repeats = []
        for _ in range(LATER_REPEATS):  # the first repeats run slower (allocator warming)
            t0 = time.perf_counter()
            moved = perturbation.tensor_at(info, point)
            # a tensor drawn in blocks draws again: counted below with every such tensor
            repeats.append(time.perf_counter() - t0 - perturbation.phases.take()["draw"])
        t0 = time.perf_counter()
        scratch.write_tensor(info.name, moved.raw)
        write = time.perf_counter() - t0
        scratch.write_tensor(info.name, perturbation.origin_bytes(info))  # put back
        first += (visit - draw + write) * share
        later += (min(repeats) + write) * share
    perturbation.phases.take()  # the probe's work is not a point's
    per_value = draw_s / draws if draws else 0.0  # one draw
    random_values = sum(
        t.n_elements * sum(_random(d, t.name) for d in perturbation.directions)
        for t in perturbation.targets
    )
    kept = min(random_values, perturbation.cache_bytes // 4)
    redrawn = random_values - kept
    # Directions are drawn ahead on a thread beside the other threads' work: a point takes
    # that work plus the draws' share of all threads, and never less than the draws. The
    # cache keeps some, drawn once; the others are drawn in blocks at every point, and
    # once more, in turn, at the first (for their norms).
    threads = perturbation.threads
    ahead = (kept + redrawn) * per_value
    first = max(ahead, first + ahead / threads) + redrawn * per_value
    again = redrawn * per_value
    return first, max(again, later + again / threads)


def _random(direction: Direction, tensor_name: str) -> bool:
    return isinstance(direction, RandomDirection) and not direction.excludes(tensor_name)


def time_generation(
    engine: Engine, tokens: Sequence[Sequence[int]], max_new_tokens: int, scoring: bool
) -> tuple[float, float, float]:
    """Seconds every point spends evaluating ``tokens``, decoding up to ``max_new_tokens``
    for each, ``max_sequences`` at a time, and (``scoring``) scoring the answers' coherence; from the
    first prompts' evaluation and PROBE_STEPS decode steps of a full batch."""
    if not tokens:
        return 0.0, 0.0, 0.0
    first = [tokens[0]]
    for prompt in tokens[1:]:
        if sum(map(len, first)) + len(prompt) > PROBE_PROMPT_TOKENS:
            break
        first.append(prompt)
    engine.generate(first, 1)
    prefill_rate = engine.last_stats.prefill_tokens / max(engine.last_stats.prefill_s, 1e-9)
    width = max(1, min(engine.settings.max_sequences, len(tokens)))
    engine.generate([min(tokens, key=len)] * width, PROBE_STEPS + 1)
    stats = engine.last_stats
    later_steps = stats.decode_steps - 1
    first_s = stats.decode_first_s
    step_s = (stats.decode_s - first_s) / later_steps if later_steps > 0 else first_s
    # Prompts beyond the first batch take the streams of finished answers (continuous
    # batching), keeping only what every prompt starts with; at full length every answer
    # of a batch ends at the same step and the next batch's prompts take their streams.
    head = tokens[:width]
    shared = shared_prefix_length(head) if width > 1 else 0
    common = shared_prefix_length(tokens) if width > 1 else 0
    evaluated = sum(map(len, head)) - (width - 1) * shared
    evaluated += sum(len(p) - common for p in tokens[width:])
    prefill = evaluated / prefill_rate
    waves = -(-len(tokens) // width)
    # the first token comes from the prompt, the first step costs more
    steps = waves * (max_new_tokens - 1)
    decode = first_s + (steps - 1) * step_s if steps > 0 else 0.0
    # the scorer keeps the prompts' keys and values between points when they fit one batch
    heads = len(tokens) * min(max_new_tokens, COHERENCE_TOKENS) / prefill_rate
    score = heads + (prefill if len(tokens) > width else 0.0) if scoring else 0.0
    return prefill, decode, score


def estimate(
    perturbation: Perturbation,
    scratch: GGUFCopy,
    engine: Engine,
    tokens: Sequence[Sequence[int]],
    max_new_tokens: int,
    points: Sequence[Point],
    budget: CacheBudget | None,
    scoring: bool = False,
    overlap: bool = False,
) -> Estimate:
    """Time this model on this machine and extrapolate to ``points`` (those left to
    evaluate); ``budget``: the memory the run plans with (its ``chosen`` cache; None:
    nothing besides the scratch copy); ``scoring``: coherence is scored; ``overlap``:
    each point's weights are prepared while the previous one generates."""
    start = time.perf_counter()
    first, later = time_update(perturbation, scratch, probe_point(points))
    reload = time_reload(engine) if first else 0.0
    prefill, decode, score = time_generation(engine, tokens, max_new_tokens, scoring)
    size = perturbation.model.size + perturbation.extra_bytes()
    return Estimate(
        first_update_s=first + reload,
        update_s=later + reload,
        prefill_s=prefill,
        decode_s=decode,
        score_s=score,
        n_points=len(points),
        scratch_bytes=size,
        origin_bytes=perturbation.model.size if scoring else 0,
        kv_bytes=budget.kv if budget else 0,
        working_bytes=budget.working if budget else 0,
        cache_bytes=budget.chosen if budget else 0,
        probe_s=time.perf_counter() - start,
        overlap=overlap,
        prepared_bytes=size if overlap else 0,
        reload_s=reload,
    )


def time_reload(engine: Engine) -> float:
    """Seconds of one ``refresh_weights``: none on the CPU (the mapped file is used in
    place), a reload of the model from the file with layers on a GPU."""
    if engine.settings.n_gpu_layers == 0:
        return 0.0
    t0 = time.perf_counter()
    engine.refresh_weights()
    return time.perf_counter() - t0


def peak_rss() -> int | None:
    """This process's peak resident memory so far, in bytes (None where unknown)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes; Linux: KiB


def actual(records: Sequence[PointRecord], n_points: int) -> dict[str, float | int | None]:
    """What the evaluated points (in the order they ran) took, in the estimate's terms:
    the weight update of the first point away from the origin and the median of the later
    ones, the median prefill, decode and judging-and-scoring seconds, the median seconds
    of a later point, and this process's peak memory so far."""
    moved = [r for r in records if r.alpha != 0 or r.beta]
    updates = [r.weight_update_s for r in moved]
    prefill = [r.generation.get("prefill_s", 0.0) for r in records]
    decode = [r.generation.get("decode_s", 0.0) for r in records]
    durations = [
        r.weight_update_s + r.generation_s + r.judge_coherence_s + (r.capability_s or 0)
        for r in moved
    ]

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 3) if values else None

    return {
        "first_update_s": updates[0] if updates else None,
        "update_s": median(updates[1:]) if len(updates) > 1 else median(updates),
        "prefill_s": median(prefill),
        "decode_s": median(decode),
        "score_s": median([r.judge_coherence_s for r in records]),
        "point_s": median(durations[1:] or durations),
        "n_points": n_points,
        "peak_bytes": peak_rss(),
    }

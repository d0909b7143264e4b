"""What macOS and Windows laptops lack, forced on Linux: /dev/shm, os.pwrite, /proc/meminfo."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import small_sweep, sweep_answers

from visage_local import synthetic
from visage_local.cli.main import main
from visage_local.engine import batching
from visage_local.engine.quantize import quantize_model
from visage_local.gguf import model as gguf_model
from visage_local.run import prepared

# vm_stat on an Apple-silicon Mac (macOS 14), as printed.
VM_STAT = """Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                                4242.
Pages active:                            185402.
Pages inactive:                          183231.
Pages speculative:                         1312.
Pages throttled:                              0.
Pages wired down:                        102871.
Pages purgeable:                           3017.
"Translation faults":                 482934755.
Pages copy-on-write:                   18640427.
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A small Qwen3-shaped Q4_K_M model (random weights: the answers are noise, and the
    same noise both ways)."""
    folder = tmp_path_factory.mktemp("small")
    source = synthetic.write_model(folder / "qwen3.gguf", "qwen3")
    return quantize_model(source, folder / "qwen3.Q4_K_M.gguf", "Q4_K_M")


def test_a_sweep_without_dev_shm_or_pwrite_gives_the_same_landscape(small, tmp_path, monkeypatch):
    """With no /dev/shm the scratch copy lives in the run folder (and is gone after); with
    no os.pwrite tensors are written with a seek and writes; answers and ASR are the same."""
    linux = small_sweep(small, tmp_path / "linux")
    seen: list[Path] = []
    original = prepared.scratch_folder

    def spy(size: int, fallback: Path) -> Path:
        seen.append(original(size, fallback))
        return seen[-1]

    monkeypatch.setattr(prepared, "SCRATCH_DIR", tmp_path / "no-dev-shm")
    monkeypatch.setattr(prepared, "scratch_folder", spy)
    monkeypatch.setattr(gguf_model, "HAS_PWRITE", False)
    laptop = small_sweep(small, tmp_path / "laptop")
    assert seen == [tmp_path / "laptop"]
    assert not list((tmp_path / "laptop").glob("*.gguf"))
    assert [p.asr for p in laptop.points] == [p.asr for p in linux.points]

    assert sweep_answers(tmp_path / "laptop") == sweep_answers(tmp_path / "linux")


def test_perturb_writes_the_same_file_without_pwrite(small, tmp_path, monkeypatch):
    runner = CliRunner()
    args = ["perturb", str(small), "--alpha", "0.2"]
    assert runner.invoke(main, [*args, "-o", str(tmp_path / "a.gguf")]).exit_code == 0
    monkeypatch.setattr(gguf_model, "HAS_PWRITE", False)
    assert runner.invoke(main, [*args, "-o", str(tmp_path / "b.gguf")]).exit_code == 0
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


def test_free_memory_without_proc_meminfo(monkeypatch):
    """Without /proc/meminfo the free pages the system reports are used: the kernel's
    MemFree, read independently here, within 5% of the machine's memory."""
    fields = {
        line.split(":")[0]: int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
    }
    monkeypatch.setattr(batching, "MEMINFO", Path("/nonexistent/meminfo"))
    free = batching.available_memory()
    assert abs(free - fields["MemFree"]) < 0.05 * fields["MemTotal"]


def test_macos_vm_stat_is_read_as_free_inactive_and_speculative_pages():
    assert batching.parse_vm_stat(VM_STAT) == 16384 * (4242 + 183231 + 1312)
    assert batching.parse_vm_stat("Mach Virtual Memory Statistics:\nPages free: 12.\n") is None


def test_the_sweep_says_where_the_scratch_copy_goes(small, tmp_path, monkeypatch):
    monkeypatch.setattr(prepared, "SCRATCH_DIR", tmp_path / "no-dev-shm")
    out = tmp_path / "run"
    shown = CliRunner().invoke(
        main,
        ["sweep", str(small), "--out", str(out), "--limit", "1", "--max-new-tokens", "2",
         "--steps", "1"],
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    size = small.stat().st_size / 2**20
    assert f"scratch copy of the model: {size:.0f} MiB in {out} on disk" in shown.output


def test_the_direction_cache_fits_beside_the_model_and_kv_cache(smollm2, tmp_path, monkeypatch):
    from dataclasses import replace

    from gguf import GGUFReader

    from visage_local.asking.prompts import select_prompts
    from visage_local.run.prepared import prepare
    from visage_local.run.settings import sweep_config

    config = sweep_config(smollm2, prompts=select_prompts(None, 4), max_new_tokens=16,
                          batch_size=4)  # fmt: skip
    # the oracle, from gguf-py's reader: every tensor but the norms, in float32, one direction
    reader = GGUFReader(smollm2)
    targets = [t for t in reader.tensors if "norm" not in t.name]
    sizes = [int(t.n_elements) * 4 for t in targets]
    needed = sum(sizes)

    def moved(tensor, size: int, cache: int) -> int:
        """Weights, perturbed copy and direction in float32: the whole tensor when its
        direction fits the cache, else a block of rows of 2**22 values at most."""
        if size <= cache:
            return 3 * size
        per_row = int(tensor.shape[0])
        return 3 * 4 * min(int(tensor.n_elements), (1 << 22) // per_row * per_row)

    def work(cache: int) -> int:
        return max(moved(t, size, cache) for t, size in zip(targets, sizes, strict=True))

    def largest_cache(room: int) -> int:
        """The largest cache c <= needed with c + work(c) <= room, among every value it can
        take: needed, just below a tensor's direction size, or room less a work figure."""
        works = {work(c) for c in (0, *sizes)}
        candidates = {needed, *(s - 1 for s in sizes), *(room - w for w in works)}
        return max((c for c in candidates if 0 <= c <= needed and c + work(c) <= room), default=0)

    def field(key: str) -> int:
        return int(reader.fields[key].parts[-1][0])

    heads, kv_heads = field("llama.attention.head_count"), field("llama.attention.head_count_kv")
    head_dim = field("llama.embedding_length") // heads
    per_token = field("llama.block_count") * kv_heads * 2 * head_dim * 2  # K and V in f16
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    kv = 4 * (per_token * (batching.TYPICAL_PROMPT_TOKENS + 16) + n_vocab * 4)
    meminfo = tmp_path / "meminfo"
    monkeypatch.setattr(batching, "MEMINFO", meminfo)
    assert config.coherence  # the coherence scorer maps the original beside the scratch copy
    model = 2 * smollm2.stat().st_size
    floor = model + kv + batching.HEADROOM
    blocks, largest = work(0), max(sizes)
    assert blocks < work(largest)  # the premise: the largest tensor costs more moved whole
    for extra, expected in (
        (blocks - (1 << 20), 0),  # not even one block's work fits
        (blocks + largest // 2, largest // 2),  # the rest of the room; the largest in blocks
        (work(largest) + 10 * needed, needed),
    ):
        available = (floor + extra) // 1024 * 1024
        meminfo.write_text(f"MemTotal: 99999999 kB\nMemAvailable: {available // 1024} kB\n")
        budget = prepare(config).cache
        assert (budget.needed, budget.model, budget.kv) == (needed, model, kv)
        room = available - floor
        assert budget.chosen == largest_cache(room)
        assert budget.working == work(budget.chosen)
        assert abs(budget.chosen - expected) < 1024  # MemAvailable is in kB
        assert budget.chosen + budget.working <= room or budget.chosen == 0
    # a cache asked for is kept, with the work it implies
    asked = prepare(replace(config, memory_budget_mb=0)).cache
    assert (asked.chosen, asked.working) == (0, blocks)

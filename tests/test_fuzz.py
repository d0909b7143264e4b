"""Damaged GGUF headers: inspect, perturb and sweep fail with a clean error, never a crash."""

from __future__ import annotations

import contextlib
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visage_local.errors import VisageError
from visage_local.gguf.model import GGUFModel
from visage_local.weights.directions import RandomDirection
from visage_local.weights.inspection import inspect_model
from visage_local.weights.perturb import Perturbation, Point, export_perturbed

# GGUF v3 header: magic (4), version (u32), tensor count (u64), metadata count (u64).
TENSOR_COUNT, KV_COUNT = 8, 16


def _open_everything(path: Path, out: Path) -> None:
    """What inspect and perturb do with a file; only VisageError may escape."""
    model = GGUFModel(path)
    inspect_model(model)
    export_perturbed(Perturbation(model, [RandomDirection(1)]), Point(0.1), out)


def _mutate(data: bytes, edits: list[tuple[int, int]], limit: int) -> bytes:
    buf = bytearray(data)
    for position, value in edits:
        buf[position % limit] = value
    return bytes(buf)


def _header_end(path: Path) -> int:
    return GGUFModel(path).tensors[0].offset


@settings(
    max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1, max_size=6)
)
def test_random_header_bytes_fail_cleanly(tiny_gguf, tmp_path, edits):
    data = tiny_gguf.read_bytes()
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(_mutate(data, edits, _header_end(tiny_gguf)))
    with contextlib.suppress(VisageError):
        _open_everything(damaged, tmp_path / "out.gguf")


# Opens a file as inspect and perturb do (or, with no file, only imports what they import)
# in a process of its own, and prints that process's own peak resident memory in KiB.
OPEN_IN_A_CHILD = """
import resource, sys
from visage_local.errors import VisageError
sys.path.insert(0, sys.argv[1])
from test_fuzz import _open_everything
if len(sys.argv) > 2:
    try:
        _open_everything(sys.argv[2], sys.argv[3])
    except VisageError:
        pass
    else:
        sys.exit("the damaged file was accepted")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _child_peak_mib(*args: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", OPEN_IN_A_CHILD, str(Path(__file__).parent), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip()) / 1024


@pytest.fixture(scope="module")
def imports_only_peak_mib() -> float:
    """The peak of a child that only imports what opening a file imports (measured once)."""
    return _child_peak_mib()


@pytest.mark.parametrize(
    ("offset", "fmt", "value"),
    [
        (TENSOR_COUNT, "<Q", 1 << 62),  # absurd tensor count
        (KV_COUNT, "<Q", 1 << 62),  # absurd metadata count
        (TENSOR_COUNT, "<Q", 10_000),  # more tensors than the file holds
        (4, "<I", 99),  # unknown version
        (24, "<Q", 1 << 60),  # absurd length of the first key
    ],
)
def test_absurd_counts_and_lengths_fail_fast_in_bounded_memory(
    smollm2, tmp_path, offset, fmt, value, imports_only_peak_mib
):
    with smollm2.open("rb") as f:  # the prefix only: a whole read would raise this
        data = bytearray(f.read(4_000_000))  # process's peak, which a vfork child inherits
    struct.pack_into(fmt, data, offset, value)
    damaged = tmp_path / "absurd.gguf"
    damaged.write_bytes(bytes(data))
    # The damaged 4 MB file is refused with a peak no more than 64 MiB over a process that
    # only imports the same modules: nothing sized by a declared count is allocated.
    peak = _child_peak_mib(str(damaged), str(tmp_path / "out.gguf"))
    assert peak < imports_only_peak_mib + 64


@pytest.mark.slow
@pytest.mark.parametrize("edit", ["count", "tensor data cut", "header cut"])
def test_sweep_and_perturb_on_damaged_files_exit_1_with_one_line(smollm2, tmp_path, edit):
    data = bytearray(smollm2.read_bytes())
    if edit == "count":
        struct.pack_into("<Q", data, TENSOR_COUNT, 1 << 40)
    elif edit == "tensor data cut":
        data = data[: len(data) // 2]
    else:
        data = data[:1_000_000]  # the header (token lists) is about 1.8 MB
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(bytes(data))
    for args in (
        ["perturb", str(damaged), "--alpha", "0.1", "-o", str(tmp_path / "o.gguf")],
        ["sweep", str(damaged), "--steps", "2", "--limit", "1", "--out", str(tmp_path / "r")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "visage_local.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().startswith("error:") and "Traceback" not in done.stderr
        assert not (tmp_path / "o.gguf").exists()

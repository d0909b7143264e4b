"""A real sweep process killed or interrupted mid-way resumes to the same landscape."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ARGS = ["sweep", "--steps", "2", "--limit", "3", "--max-new-tokens", "24", "--threads", "2",
        "--no-coherence"]  # fmt: skip


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "visage_local.cli", *ARGS, "--out", str(out)]


def _finished_lines(out: Path) -> int:
    path = out / "generations.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _start_and_wait_for_first_point(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        _command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while _finished_lines(out) < 3 or not (out / "summary.json").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def _outputs(out: Path) -> tuple[list, list]:
    summary = json.loads((out / "summary.json").read_text())
    lines = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    return summary["points"], lines


@pytest.fixture(scope="module")
def uninterrupted_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    subprocess.run(_command(out), check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_folder) -> tuple[list, list]:
    return _outputs(uninterrupted_folder)


def test_sigkill_mid_sweep_then_resume_equals_an_uninterrupted_run(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = _start_and_wait_for_first_point(out)
    time.sleep(0.5)  # into the next point's weight update or generation
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    summary = json.loads((out / "summary.json").read_text())  # never half-written
    assert summary["complete"] is False
    done = subprocess.run(_command(out), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _outputs(out) == uninterrupted


def test_first_ctrl_c_finishes_the_point_and_says_how_to_resume(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = _start_and_wait_for_first_point(out)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130
    assert "run the same command again to resume" in stderr and "Traceback" not in stderr
    assert "error:" not in stderr  # asked for: said as what happened
    assert _finished_lines(out) % 3 == 0  # only whole points were written
    before = _finished_lines(out) // 3
    done = subprocess.run(_command(out), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f" {before}/3 [" in done.stderr  # the bar starts after the points already done
    assert _outputs(out) == uninterrupted


# Runs the command line with a disk that fills after a byte budget: appends write what
# fits and raise ENOSPC (a partial last line, as a full disk leaves), and once the budget
# is spent every atomic write raises ENOSPC too, before it replaces anything.
FULL_DISK = """
import errno, json, sys
from visage_local.record import writer as store
from visage_local.cli.main import main

left = int(sys.argv.pop(1))
append, atomic = store.append_jsonl, store.atomic_write_text

def full():
    return OSError(errno.ENOSPC, "No space left on device")

def limited_append(path, records):
    global left
    data = "".join(json.dumps(r) + "\\n" for r in records).encode()
    if len(data) > left:
        with open(path, "ab") as f:
            f.write(data[:left])
        left = 0
        raise full()
    left -= len(data)
    append(path, records)

def limited_atomic(path, text):
    if left == 0:
        raise full()
    atomic(path, text)

store.append_jsonl, store.atomic_write_text = limited_append, limited_atomic
sys.argv[0] = "visage-local"
main()
"""


def test_disk_full_during_a_sweep_fails_cleanly_and_resumes(
    tmp_path, uninterrupted, uninterrupted_folder
):
    out = tmp_path / "run"
    _, lines = uninterrupted
    appended = [uninterrupted_folder / name for name in ("generations.jsonl", "points.jsonl")]
    room = sum(path.stat().st_size for path in appended) // 2  # about half the run
    full = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(room), *ARGS, "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert full.returncode == 1, full.stderr
    assert "disk is full" in full.stderr and "Traceback" not in full.stderr
    json.loads((out / "summary.json").read_text())  # never half-written
    assert 0 < _finished_lines(out) < len(lines)  # it stopped mid-way, a partial line left
    done = subprocess.run(_command(out), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _outputs(out) == uninterrupted


def test_second_ctrl_c_stops_at_once_without_a_corrupt_file(tmp_path):
    out = tmp_path / "run"
    proc = _start_and_wait_for_first_point(out)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert "error:" not in stderr and "stopped (Ctrl-C)" in stderr  # not an error: asked for
    json.loads((out / "summary.json").read_text())  # complete JSON, whatever the moment
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind


def test_a_resumed_run_keeps_the_batch_size_it_started_with(tmp_path):
    """The batch size chosen from free memory is kept on resume (another day, other free
    memory); one given explicitly that differs is still refused, as it changes results."""
    from click.testing import CliRunner

    from visage_local import synthetic
    from visage_local.cli.main import main
    from visage_local.engine.quantize import quantize_model

    source = synthetic.write_model(tmp_path / "f16.gguf", "qwen3")
    model = quantize_model(source, tmp_path / "model.gguf", "Q4_K_M")
    args = ["sweep", str(model), "--limit", "3", "--steps", "2", "--max-new-tokens", "3",
            "--out", str(tmp_path / "run")]  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(main, [*args, "--batch-size", "1"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(main, args)  # free memory would choose 3
    assert again.exit_code == 0, again.output
    assert "resuming with the run's batch size, 1" in again.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["batch_size"] == 1
    other = runner.invoke(main, [*args, "--batch-size", "2"])
    # the changed setting with its old and new values, one line
    assert other.exit_code == 2 and "other settings (batch_size 1 -> 2)" in other.output


def test_a_resumed_sweep_of_several_directions_starts_its_bar_after_the_done_points(tmp_path):
    out = tmp_path / "run"
    command = [*_command(out), "--directions", "2", "--include", "blk.0.", "--limit", "2",
               "--max-new-tokens", "4"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    # as a kill after direction-1's first point leaves it: the later point lines missing
    points = out / "direction-1" / "points.jsonl"
    points.write_text(points.read_text().splitlines(keepends=True)[0])
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # direction-0's 3 points and direction-1's first before any new one, then the other 2
    assert all(f" {n}/6 [" in done.stderr for n in (4, 5, 6))


def test_a_matplotlib_that_cannot_be_imported_costs_the_plot_alone(tmp_path, uninterrupted):
    """On one GPU machine's image matplotlib failed to import once llama.cpp's CUDA libraries
    were loaded (a SystemError in its font module): the sweep says so in one line, exits
    non-zero, and its results are those of a run that drew its plot."""
    broken = tmp_path / "site" / "matplotlib"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise SystemError('returned NULL without an exception')")
    out = tmp_path / "run"
    done = subprocess.run(
        _command(out),
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": str(broken.parent)},
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "the plot was not drawn: matplotlib could not be imported (SystemError" in done.stderr
    assert _outputs(out) == uninterrupted and not (out / "landscape.png").exists()


def test_running_a_finished_sweep_again_keeps_its_time(tmp_path, uninterrupted_folder):
    """elapsed_s counts every sitting that evaluated points: a finished run opened again
    (nothing to evaluate) keeps the time it took, not the seconds of opening it."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(uninterrupted_folder, out)
    before = json.loads((out / "summary.json").read_text())["elapsed_s"]
    subprocess.run(_command(out), check=True, capture_output=True)
    assert json.loads((out / "summary.json").read_text())["elapsed_s"] == before


def test_a_failed_write_names_the_file_not_its_temporary_twin(tmp_path):
    from visage_local.files import atomic_replace

    target = tmp_path / "model.gguf"
    with pytest.raises(OSError) as raised, atomic_replace(target) as tmp:
        raise OSError(28, "No space left on device", str(tmp))
    assert raised.value.filename == str(target) and not list(tmp_path.iterdir())

"""Determinism and resumption: the same run gives the same bytes, and a run killed at any
moment and started again ends byte-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainmap.train import ResumeError, SettingsError, layout, train_run

SMALL = {
    "n_train": 200,
    "n_test": 50,
    "hidden": 16,
    "batch_size": 32,
    "epochs": 6,
    "checkpoint_every": 3,
    "checkpoint_unit": "step",
}


def run_bytes(out: Path) -> dict[str, bytes]:
    """Every checkpoint and the log, by relative path."""
    files = sorted((out / "checkpoints").glob("*.safetensors")) + [out / "log.csv"]
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    """An uninterrupted run of SMALL."""
    out = tmp_path_factory.mktemp("reference")
    train_run("parities", 5, out, SMALL, threads=1, progress=False)
    return run_bytes(out)


def test_same_task_seed_and_settings_give_identical_bytes(tmp_path, reference):
    train_run("parities", 5, tmp_path / "again", SMALL, threads=1, progress=False)
    assert run_bytes(tmp_path / "again") == reference
    assert len(reference) == len(range(0, 6 * 7 + 1, 3)) + 1  # steps 0, 3, …, 42 (the last), and the log


def test_seeds_differ_but_share_the_data_split(tmp_path, reference):
    record = train_run("parities", 6, tmp_path, SMALL, threads=1, progress=False)
    other = run_bytes(tmp_path)
    assert other["checkpoints/step00000000.safetensors"] != reference["checkpoints/step00000000.safetensors"]
    assert record["data"]["data_seed"] == 0  # the split comes from the fixed data seed, not the run's seed


class Killed(BaseException):
    """Stands for a SIGKILL arriving in the middle of writing files."""


@pytest.mark.parametrize("kill_at_rename", [1, 2, 5, 9, 14])
@pytest.mark.parametrize("resume_interval_s", [0.0, 3600.0])
def test_a_run_interrupted_while_writing_resumes_byte_identical(
    tmp_path, monkeypatch, reference, kill_at_rename, resume_interval_s
):
    """Interrupt the n-th file rename (checkpoint, log and resume state are renamed in turn),
    then start again: same final bytes. With a long interval no resume state exists yet and
    the run starts over, clearing what the killed session left."""
    renames = {"count": 0}
    real_replace = os.replace

    def replace_then_die(src, dst):
        renames["count"] += 1
        if renames["count"] == kill_at_rename:
            raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        train_run("parities", 5, out, SMALL, threads=1, progress=False, resume_interval_s=resume_interval_s)
    assert not (out / "run.json").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no temporary left behind
    resumable = (out / "resume" / "state.safetensors").is_file()
    assert resumable == (resume_interval_s == 0 and kill_at_rename > 5)  # owner file, checkpoint, log, resume state
    monkeypatch.setattr(os, "replace", real_replace)
    record = train_run("parities", 5, out, SMALL, threads=1, progress=False, resume_interval_s=resume_interval_s)
    assert run_bytes(out) == reference
    assert record["status"] == "complete" and record["timing"]["sessions"] == (2 if resumable else 1)


# Trains SMALL in argv[1] and dies like a SIGKILL at the argv[2]-th file rename: os._exit
# runs no cleanup, so the atomic writes' temporaries stay where they are.
_DIE_AT_RENAME = """
import json, os, sys
from trainmap.train import train_run
count, real_replace = 0, os.replace
def replace_then_die(src, dst):
    global count
    count += 1
    if count == int(sys.argv[2]):
        os._exit(9)
    real_replace(src, dst)
os.replace = replace_then_die
train_run("parities", 5, sys.argv[1], json.loads(sys.argv[3]), threads=1, progress=False, resume_interval_s=0.0)
"""


@pytest.mark.parametrize("kill_at_rename", [1, 2, 6, 11])
def test_a_run_killed_with_temporaries_on_disk_resumes_byte_identical(tmp_path, reference, kill_at_rename):
    """A real kill between writing temporaries and renaming them leaves the temporaries: the
    next session recognises them as its own (their files are listed in the owner file first,
    or they are the owner file's), deletes them, and ends byte-identical."""
    out = tmp_path / "run"
    died = subprocess.run([sys.executable, "-c", _DIE_AT_RENAME, str(out), str(kill_at_rename), json.dumps(SMALL)],
                          capture_output=True, text=True, timeout=120)
    assert died.returncode == 9, died.stderr
    assert [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # the kill left its temporaries
    record = train_run("parities", 5, out, SMALL, threads=1, progress=False, resume_interval_s=0.0)
    assert run_bytes(out) == reference
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert record["status"] == "complete"


def _train_command(out: Path, settings: dict) -> list[str]:
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    return [
        sys.executable,
        "-m",
        "trainmap.cli",
        "train",
        "parities",
        "--seed",
        "5",
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-progress",
        "--resume-interval",
        "0",
        *sets,
    ]


def _kill_when(process: subprocess.Popen, out: Path, checkpoints: int, timeout: float = 120.0) -> None:
    """SIGKILL ``process`` once ``out`` holds at least ``checkpoints`` checkpoint files."""
    deadline = time.monotonic() + timeout
    while len(layout.checkpoint_steps(out)) < checkpoints:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_a_killed_process_resumes_byte_identical(tmp_path):
    """Really kill the training process (twice), start it again with the same command, and
    compare every checkpoint and the log with an uninterrupted run."""
    settings = {**SMALL, "n_train": 512, "epochs": 60, "checkpoint_every": 2}  # 960 steps, 481 checkpoints
    train_run("parities", 5, tmp_path / "reference", settings, threads=1, progress=False)
    out = tmp_path / "killed"
    command = _train_command(out, settings)
    for checkpoints in (60, 250):
        _kill_when(subprocess.Popen(command, stderr=subprocess.DEVNULL), out, checkpoints)
        assert not (out / "run.json").exists() and (out / "resume" / "state.safetensors").exists()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert run_bytes(out) == run_bytes(tmp_path / "reference")
    record = layout.read_run_json(out)
    assert record["status"] == "complete" and record["timing"]["sessions"] == 3


def test_resume_state_of_other_settings_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(os, "replace", _die_after(12))
    with pytest.raises(Killed):
        train_run("parities", 5, out, SMALL, threads=1, progress=False, resume_interval_s=0)
    monkeypatch.undo()
    with pytest.raises(
        SettingsError, match=r"resume/state.safetensors belongs to a different run \(lr: 0.1 there, 0.2 now"
    ):
        train_run("parities", 5, out, {**SMALL, "lr": 0.2}, threads=1, progress=False)


def test_unreadable_resume_state_is_named(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(os, "replace", _die_after(12))
    with pytest.raises(Killed):
        train_run("parities", 5, out, SMALL, threads=1, progress=False, resume_interval_s=0)
    monkeypatch.undo()
    state = out / "resume" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ResumeError, match=f"{state}: unreadable resume state.*delete {state.parent}"):
        train_run("parities", 5, out, SMALL, threads=1, progress=False)


def _die_after(n: int):
    real_replace, count = os.replace, {"n": 0}

    def replace(src, dst):
        count["n"] += 1
        if count["n"] > n:
            raise Killed
        real_replace(src, dst)

    return replace


def test_resuming_with_another_thread_count_warns(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(os, "replace", _die_after(12))
    with pytest.raises(Killed):
        train_run("parities", 5, out, SMALL, threads=1, progress=False, resume_interval_s=0)
    monkeypatch.undo()
    with pytest.warns(RuntimeWarning, match="resuming with threads 1 → 2; the run will not be byte-identical"):
        record = train_run("parities", 5, out, SMALL, threads=2, progress=False)
    assert record["status"] == "complete" and record["threads"] == 2

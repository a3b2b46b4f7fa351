"""Hostile inputs and conditions: a FIFO or device named like a checkpoint, a checkpoint
(or one shard of a checkpoint read in place) truncated while the engine reads it, an absurd thread count, Ctrl-C during a long call.

Each case runs `trainmap metrics` in a child process with a hard timeout, so a hang fails
the test instead of blocking the suite, and a crash (SIGBUS) shows as a signal exit."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from checkpoint_factory import tensor, write_checkpoint
from hostile_helpers import like_a_terminal
from trainmap.io.limits import available_cpus
from trainmap.metrics.engine import CheckpointError, checkpoint_metrics

CLI = [sys.executable, "-m", "trainmap.cli", "metrics", "--no-progress"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def matrices(path: Path, count: int, side: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    tensors = [tensor(f"layers.{i}.weight", rng.standard_normal((side, side)), "F32", "matrix") for i in range(count)]
    return write_checkpoint(path, tensors)


def wait_until_open(process: subprocess.Popen, path: Path, timeout: float = 60.0) -> None:
    """Block until `process` holds `path` open (the engine has started reading it)."""
    target = os.path.realpath(path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"finished before the file was seen open: {process.communicate()}")
        try:
            fds = os.listdir(f"/proc/{process.pid}/fd")
        except FileNotFoundError:
            fds = []
        for fd in fds:
            try:
                if os.readlink(f"/proc/{process.pid}/fd/{fd}") == target:
                    return
            except OSError:
                pass
        time.sleep(0.005)
    process.kill()
    raise AssertionError(f"{path} was never opened")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.slow
def test_a_fifo_named_like_a_checkpoint_is_refused_at_once(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    good = matrices(folder / "step00000000.safetensors", 1, 8)
    before = digest(good)
    fifo = folder / "step00000001.safetensors"
    os.mkfifo(fifo)
    out = tmp_path / "metrics.csv"
    result = subprocess.run([*CLI, str(folder), "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert str(fifo) in result.stderr and "FIFO" in result.stderr, result.stderr
    assert not out.exists()
    assert digest(good) == before


@pytest.mark.slow
def test_a_device_is_refused_naming_it():
    script = "from trainmap.metrics.engine import checkpoint_metrics\ncheckpoint_metrics('/dev/zero')"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "CheckpointError: /dev/zero: is a character device, not a regular .safetensors file" in result.stderr


def test_a_directory_or_missing_file_still_gives_its_error(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        checkpoint_metrics(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        checkpoint_metrics(tmp_path / "missing.safetensors")


@pytest.mark.slow
def test_a_checkpoint_truncated_while_read_gives_an_error_not_a_crash(tmp_path):
    path = matrices(tmp_path / "step00000100.safetensors", 24, 600)
    size = path.stat().st_size
    out = tmp_path / "metrics.csv"
    process = subprocess.Popen(
        [*CLI, str(path), "-o", str(out), "--threads", "1", "--svd", "exact"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until_open(process, path)
        os.truncate(path, size // 2)  # an outside writer cuts the file mid-read
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 2, f"exit {process.returncode} (negative: killed by a signal): {stderr}"
    assert str(path) in stderr and "changed while reading" in stderr, stderr
    assert not out.exists()


@pytest.mark.slow
def test_a_shard_truncated_while_read_gives_an_error_not_a_crash(tmp_path):
    """The shards of a checkpoint read in place go through the same guarded reader."""
    folder = tmp_path / "series" / "checkpoint-100"
    folder.mkdir(parents=True)
    first = matrices(folder / "model-00001-of-00002.safetensors", 2, 40)
    rng = np.random.default_rng(1)  # shard 2's names sort after shard 1's: the engine reads it last
    second = write_checkpoint(folder / "model-00002-of-00002.safetensors", [
        tensor(f"later.{i}.weight", rng.standard_normal((600, 600)), "F32", "matrix") for i in range(24)])
    weight_map = {**{f"layers.{i}.weight": first.name for i in range(2)},
                  **{f"later.{i}.weight": second.name for i in range(24)}}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "series" / "log.csv").write_text("step,eval_accuracy\n100,0.5\n")
    size, out = second.stat().st_size, tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "trainmap.cli", "series-metrics", str(tmp_path / "series"), "--out-dir", str(out),
         "--threads", "1", "--svd", "exact", "--device", "cpu", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until_open(process, second)
        os.truncate(second, size // 2)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 2, f"exit {process.returncode} (negative: killed by a signal): {stderr}"
    assert str(second) in stderr and "changed while reading" in stderr, stderr
    assert not (out / "metrics.csv").exists()


@pytest.mark.slow
def test_an_absurd_thread_count_is_capped_with_a_warning(tmp_path):
    path = matrices(tmp_path / "step00000000.safetensors", 3, 20)
    before = digest(path)
    out = tmp_path / "metrics.csv"
    result = subprocess.run(
        [*CLI, str(path), "-o", str(out), "--threads", "100000"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    # The command line caps it (as every command's --threads); the engine's own cap, for
    # library callers, then has nothing left to lower: one warning, not two.
    assert result.stderr.count("is more than the") == 1
    assert f"--threads 100000 is more than the {available_cpus()} CPU(s) available" in result.stderr
    assert out.exists() and digest(path) == before
    with pytest.warns(RuntimeWarning, match="CPUs available"):
        checkpoint_metrics(path, threads=100000)


@pytest.mark.slow
def test_ctrl_c_stops_a_long_call_promptly(tmp_path):
    """Two 3000×3000 exact decompositions take far longer than the grace period allowed
    here; after SIGINT the command must exit as interrupted without finishing them."""
    path = matrices(tmp_path / "step00000000.safetensors", 2, 3000)
    before = digest(path)
    out = tmp_path / "metrics.csv"
    process = subprocess.Popen(
        [*CLI, str(path), "-o", str(out), "--threads", "1", "--svd", "exact"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=like_a_terminal,
    )
    try:
        wait_until_open(process, path)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not out.exists() and digest(path) == before

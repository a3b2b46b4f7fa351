"""One process per run directory: two trainings into one --out, and a killed lock holder."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from hostile_helpers import env, set_args, trainmap_command
from trainmap.io.runlock import RunLock, RunLockedError
from trainmap.train import layout, train_run

# ~8000 steps with a checkpoint every 100: long enough (seconds) that two processes started
# together overlap, short enough for a test.
SETTINGS = {"n_train": 64, "n_test": 16, "hidden": 8, "batch_size": 32, "epochs": 4000,
            "checkpoint_every": 100, "checkpoint_unit": "step"}


def _command(out: Path, *extra: str) -> list[str]:
    return trainmap_command("train", "parities", "--seed", "3", "--out", out, "--threads", "1", "--no-progress",
                            "--resume-interval", "0", *set_args(SETTINGS), *extra)


def _run_bytes(out: Path) -> dict[str, bytes]:
    files = sorted((out / "checkpoints").glob("*.safetensors")) + [out / "log.csv"]
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("reference")
    train_run("parities", 3, out, SETTINGS, threads=1, progress=False)
    return _run_bytes(out)


def test_run_lock_names_its_holder_and_is_exclusive(tmp_path):
    with RunLock(tmp_path, purpose="test"):
        with pytest.raises(RunLockedError, match=rf"in use by pid \d+ on host {re.escape(socket.gethostname())}"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released on exit
        pass


@pytest.mark.slow
def test_two_trainings_started_together_one_proceeds(tmp_path, reference):
    out = tmp_path / "run"
    first, second = (subprocess.Popen(_command(out), stderr=subprocess.PIPE, text=True, env=env())
                     for _ in range(2))
    results = {p.pid: (p.communicate(timeout=300)[1], p.returncode) for p in (first, second)}
    codes = sorted(code for _, code in results.values())
    assert codes == [0, 2], results
    winner = next(pid for pid, (_, code) in results.items() if code == 0)
    loser_err = next(err for err, code in results.values() if code == 2)
    assert f"in use by pid {winner} on host {socket.gethostname()}" in loser_err, loser_err
    assert str(out) in loser_err and "Traceback" not in loser_err
    assert _run_bytes(out) == reference  # not interleaved: exactly one uninterrupted run's files
    assert layout.read_run_json(out)["timing"]["sessions"] == 1


@pytest.mark.slow
def test_a_killed_holder_releases_the_lock_and_the_waiter_resumes(tmp_path, reference):
    out = tmp_path / "run"
    holder = subprocess.Popen(_command(out), stderr=subprocess.DEVNULL, env=env())
    deadline = time.monotonic() + 120
    while not layout.resume_path(out).is_file():
        assert holder.poll() is None and time.monotonic() < deadline, "the first training made no progress"
        time.sleep(0.02)
    # Freeze the holder (it keeps its lock) so that it cannot finish before the waiter has
    # started and met the lock: on a fast machine the whole run takes less than the
    # waiter's start-up.
    holder.send_signal(signal.SIGSTOP)
    assert holder.poll() is None, "the holder finished before it could be stopped"
    waiter_log = tmp_path / "waiter.err"
    with open(waiter_log, "w") as err:
        waiter = subprocess.Popen(_command(out, "--wait-for-lock", "300"), stderr=err, env=env())
        while f"in use by pid {holder.pid}" not in waiter_log.read_text():
            assert waiter.poll() is None and time.monotonic() < deadline + 120, waiter_log.read_text()
            time.sleep(0.02)
        holder.send_signal(signal.SIGKILL)  # a stopped process is killed all the same
        holder.wait(timeout=30)
        assert waiter.wait(timeout=300) == 0, waiter_log.read_text()
    assert "waiting up to 300 s" in waiter_log.read_text()
    record = layout.read_run_json(out)
    assert record["status"] == "complete" and record["timing"]["sessions"] == 2  # it resumed, not restarted
    assert _run_bytes(out) == reference


# --- Recorders: one writer per directory too ------------------------------------------------

_HOLDER = """
import sys
import numpy as np
from trainmap import Recorder
rec = Recorder(sys.argv[1], seed=1)
rec.record(0, {"fc.weight": np.ones((2, 3), dtype=np.float32)}, eval_accuracy=0.5)
print("recording", flush=True)
sys.stdin.readline()
rec.record(10, {"fc.weight": np.full((2, 3), 2.0, dtype=np.float32)}, eval_accuracy=0.75)
rec.close()
"""


def _weights(value: float):
    import numpy as np

    return {"fc.weight": np.full((2, 3), value, dtype=np.float32)}


def test_a_second_recorder_on_a_directory_being_recorded_is_refused_naming_the_holder(tmp_path):
    """Two scripts recording into one directory: the second stops at once, the first's
    records are all kept."""
    import sys

    import pandas as pd

    from hostile_helpers import fingerprint
    from trainmap import Recorder

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env())
    try:
        assert holder.stdout.readline().strip() == "recording"
        before = fingerprint(tmp_path)
        with pytest.raises(RunLockedError, match=rf"{re.escape(str(run))} is in use by pid {holder.pid} on host "
                                                 rf"{re.escape(socket.gethostname())}"):
            Recorder(run, seed=1)
        assert fingerprint(tmp_path) == before
    finally:
        holder.communicate("\n", timeout=120)
    assert holder.returncode == 0
    assert pd.read_csv(run / "metrics.csv")["step"].tolist() == [0, 10]
    with Recorder(run, seed=1) as rec:  # free again once the holder has closed
        rec.record(20, _weights(3.0))


def test_a_recorder_lets_go_of_its_directory_when_closed_abandoned_or_collected(tmp_path):
    from trainmap import Recorder

    run = tmp_path / "run"
    first = Recorder(run, seed=1)
    first.record(0, _weights(1.0))
    with pytest.raises(RunLockedError):
        Recorder(run, seed=1)  # the same process counts as a second writer too
    del first  # a script that never closed it: collected
    with pytest.raises(RuntimeError, match="boom"):
        with Recorder(run, seed=1) as rec:
            rec.record(10, _weights(2.0))
            raise RuntimeError("boom")
    with Recorder(run, seed=1) as rec:  # the block left by the exception released it
        rec.record(20, _weights(3.0))


@pytest.mark.slow  # importing transformers and lightning takes seconds
@pytest.mark.parametrize("framework", ["hf", "lightning"])
def test_two_callbacks_on_one_directory_the_second_is_refused(tmp_path, framework):
    from types import SimpleNamespace

    run = tmp_path / "run"
    if framework == "hf":
        from trainmap.adapters.hf import TrainmapCallback

        args = SimpleNamespace(output_dir=str(tmp_path), seed=1)
        state = SimpleNamespace(is_world_process_zero=True, global_step=0)

        def begin(callback):
            callback.on_train_begin(args, state, None)

        def end(callback):
            callback.on_train_end(args, state, None)
    else:
        from trainmap.adapters.lightning import TrainmapCallback

        trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(tmp_path))

        def begin(callback):
            callback.on_fit_start(trainer, None)

        def end(callback):
            callback.on_fit_end(trainer, None)
    first, second = TrainmapCallback(run, seed=1), TrainmapCallback(run, seed=1)
    begin(first)
    with pytest.raises(RunLockedError, match=rf"in use by pid {os.getpid()} on host"):
        begin(second)
    begin(first)  # a train() that crashed and is started again: the callback's old Recorder is let go
    end(first)
    begin(second)
    end(second)

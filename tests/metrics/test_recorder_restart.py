"""A recording script SIGKILLed mid-run and restarted from its own checkpoint leaves
exactly the files an uninterrupted run leaves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import recorder_script

SCRIPT = Path(recorder_script.__file__)


def run_script(*args, hang_after=None):
    """Start the script in a fresh interpreter with this worktree's trainmap."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    extra = [str(hang_after)] if hang_after is not None else []
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *map(str, args), *extra], stdout=subprocess.PIPE, text=True, env=env
    )


@pytest.mark.slow  # two fresh interpreters importing torch
def test_killed_and_restarted_run_equals_an_uninterrupted_one(tmp_path):
    killed_dir, own = tmp_path / "killed", tmp_path / "own.safetensors"
    process = run_script(killed_dir, own, hang_after=60)
    for line in process.stdout:
        if line.strip() == "recorded 60":
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    # Killed after recording step 60; its own last checkpoint is from step 50.
    assert pd.read_csv(killed_dir / "metrics.csv")["step"].tolist() == [0, 10, 20, 30, 40, 50, 60]
    assert json.loads((killed_dir / "run.json").read_text())["status"] == "running"

    restarted = run_script(killed_dir, own)
    assert restarted.communicate(timeout=120)[0].split("\n")[0] == "recorded 50"
    assert restarted.returncode == 0

    recorder_script.main(str(tmp_path / "whole"), str(tmp_path / "whole_own.safetensors"))

    steps = list(range(0, 81, 10))
    for name in ("metrics.csv", "log.csv"):
        resumed = pd.read_csv(killed_dir / name)
        assert resumed["step"].tolist() == steps, name
        pd.testing.assert_frame_equal(resumed, pd.read_csv(tmp_path / "whole" / name), check_exact=True)
    assert list(pd.read_csv(killed_dir / "log.csv").columns) == ["step", "eval_loss", "eval_accuracy"]
    record = json.loads((killed_dir / "run.json").read_text())
    assert (record["status"], record["steps_recorded"], record["first_step"], record["last_step"]) == (
        "complete", 9, 0, 80,
    )

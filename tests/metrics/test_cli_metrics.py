"""`trainmap metrics` on files and directories."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from checkpoint_factory import random_model, reference_metrics, write_checkpoint
from trainmap.cli import main
from trainmap.metrics.engine import METRIC_NAMES


@pytest.fixture
def run_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    models = {}
    for step in (1000, 0, 20):
        models[step] = random_model(rng, dtypes=("F32",))
        write_checkpoint(folder / f"step{step:08d}.safetensors", models[step])
    return folder, models


def test_directory_rows_are_ordered_by_step(run_dir, tmp_path):
    folder, models = run_dir
    out = tmp_path / "out" / "metrics.csv"
    assert main(["metrics", str(folder), "-o", str(out), "--threads", "2", "--no-progress"]) == 0
    frame = pd.read_csv(out)
    assert list(frame["step"]) == [0, 20, 1000]
    assert list(frame.columns) == ["path", "step", *METRIC_NAMES, "svd", "content_hash"]
    for row in frame.itertuples(index=False):
        expected = reference_metrics(models[row.step])
        for name in METRIC_NAMES:
            assert getattr(row, name) == pytest.approx(expected[name], rel=1e-6, abs=1e-12, nan_ok=True)


def test_files_keep_the_given_order(run_dir, tmp_path):
    folder, _ = run_dir
    files = [folder / "step00000020.safetensors", folder / "step00000000.safetensors"]
    out = tmp_path / "m.csv"
    assert main(["metrics", *map(str, files), "-o", str(out), "--svd", "exact", "--no-progress"]) == 0
    assert list(pd.read_csv(out)["step"]) == [20, 0]


@pytest.mark.slow
def test_console_script_shows_progress(run_dir, tmp_path):
    folder, _ = run_dir
    out = tmp_path / "m.csv"
    result = subprocess.run(
        [sys.executable, "-m", "trainmap.cli", "metrics", str(folder), "-o", str(out)],
        capture_output=True, text=True, check=True,
    )
    assert "3/3" in result.stderr  # the tqdm bar reached the end
    assert out.exists()

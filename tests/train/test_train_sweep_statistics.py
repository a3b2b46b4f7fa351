"""Statistics in the loop (``train_sweep(statistics=...)``, ``trainmap train-sweep
--no-checkpoints``, config ``train: {keep_checkpoints: false}``): each run's metrics.csv
equals what the metrics stage computes from the checkpoint files of the same sweep, no
checkpoint file is written, a killed job resumes to the same files, and a run is continued
or kept only in the mode it was begun in (docs/training.md, "Statistics in the loop")."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from trainmap.cli import main
from trainmap.train import SettingsError, layout
from trainmap.train.sweep import InLoopStatistics, train_sweep

SEEDS = [0, 1, 2]
STEPS = {"max_steps": 60, "epochs": 60, "checkpoint_every": 6, "checkpoint_unit": "step"}
CASES = {
    "parities": {**STEPS, "n_train": 200, "n_test": 50, "hidden": 16, "batch_size": 32},
    "modular_stable": {**STEPS, "modulus": 23, "d_model": 32, "d_head": 8, "d_mlp": 64, "batch_size": 64},
}
SMALL = CASES["parities"]


def metrics_stage(run: Path, tmp_path: Path, *options: str) -> str:
    """metrics.csv of ``run``'s checkpoints as the workflow's metrics job writes it, less its
    path column (a run without checkpoint files has no paths)."""
    out = tmp_path / f"stage-{run.parent.parent.name}-{run.name}.csv"
    assert main(["metrics", str(run / "checkpoints"), "-o", str(out), "--threads", "1", "--no-progress",
                 "--device", "cpu", *options]) == 0
    return pd.read_csv(out).drop(columns="path").to_csv(index=False, lineterminator="\n")


@pytest.mark.parametrize("task", list(CASES))
def test_in_loop_statistics_equal_the_metrics_stage_of_the_same_sweep(tmp_path, task):
    """Exactly equal (same engine, same float32 weights): the tolerance is 0. Two threads:
    the seeds' statistics are computed in one engine call over the seeds, on two threads."""
    settings = CASES[task]
    train_sweep(task, SEEDS, tmp_path / task / "files", settings, threads=2)
    records = train_sweep(task, SEEDS, tmp_path / task / "loop", settings, threads=2,
                          statistics=InLoopStatistics.of(device="cpu"))
    for seed in SEEDS:
        files, loop = tmp_path / task / "files" / str(seed), tmp_path / task / "loop" / str(seed)
        text = (loop / "metrics.csv").read_text()
        assert text == metrics_stage(files, tmp_path)
        assert len(text.splitlines()) == 1 + 11  # steps 0, 6, ..., 60
        assert (loop / "log.csv").read_bytes() == (files / "log.csv").read_bytes()  # the same training
        assert not (loop / "checkpoints").exists() and layout.checkpoint_steps(loop) == []
        assert records[seed]["statistics"]["device"] == "cpu" and records[seed]["status"] == "complete"
        assert "statistics" not in layout.read_run_json(files)
    # The seeds' statistics differ: the comparison can fail.
    assert (tmp_path / task / "loop" / "0" / "metrics.csv").read_text() != \
        (tmp_path / task / "loop" / "1" / "metrics.csv").read_text()


def test_the_metrics_options_apply_in_the_loop(tmp_path):
    """--include/--svd reach the in-loop engine call as they reach the metrics stage."""
    train_sweep("parities", [0], tmp_path / "files", SMALL, threads=1)
    chosen = {"include": "fc1", "svd": "exact"}
    train_sweep("parities", [0], tmp_path / "loop", SMALL, threads=1,
                statistics=InLoopStatistics.of(chosen, device="cpu"))
    text = (tmp_path / "loop" / "0" / "metrics.csv").read_text()
    assert text == metrics_stage(tmp_path / "files" / "0", tmp_path, "--include", "fc1", "--svd", "exact")
    assert text != metrics_stage(tmp_path / "files" / "0", tmp_path)


@pytest.mark.parametrize("task", list(CASES))
def test_on_a_gpu_every_seed_of_a_step_is_computed_at_once(tmp_path, monkeypatch, task):
    """Where the statistics are computed by torch (a GPU), a group's seeds are computed
    together from the stacked parameters, one call per checkpoint step; the numbers are the
    engine's within 1e-9 relative (no GPU here: the stacked torch path runs on the CPU)."""
    import torch

    from trainmap.metrics.engine import METRIC_NAMES

    settings = CASES[task]
    train_sweep(task, SEEDS, tmp_path / "engine", settings, threads=1, statistics=InLoopStatistics.of(device="cpu"))
    calls, compute = [], InLoopStatistics.compute_stacked

    def counted(self, params, device):
        calls.append(len(next(iter(params.values()))))
        return compute(self, params, device)

    monkeypatch.setattr(InLoopStatistics, "stacked_device", lambda self, weights_device: torch.device("cpu"))
    monkeypatch.setattr(InLoopStatistics, "compute_stacked", counted)
    train_sweep(task, SEEDS, tmp_path / "stacked", settings, threads=1, statistics=InLoopStatistics.of())
    assert calls == [len(SEEDS)] * 10  # steps 6, ..., 60 (step 0 is each seed's own, before the batch)
    for seed in SEEDS:
        engine = pd.read_csv(tmp_path / "engine" / str(seed) / "metrics.csv")
        stacked = pd.read_csv(tmp_path / "stacked" / str(seed) / "metrics.csv", keep_default_na=False)
        assert list(stacked["step"]) == list(engine["step"]) == list(range(0, 61, 6))
        pd.testing.assert_frame_equal(stacked[list(METRIC_NAMES)].astype(float), engine[list(METRIC_NAMES)],
                                      check_exact=False, rtol=1e-9, atol=1e-13)
        assert set(stacked["svd"][1:]) == {"exact"} and set(stacked["content_hash"][1:]) == {""}
        assert (tmp_path / "stacked" / str(seed) / "log.csv").read_bytes() == \
            (tmp_path / "engine" / str(seed) / "log.csv").read_bytes()


def test_a_run_finished_otherwise_is_refused_or_trained_again(tmp_path):
    train_sweep("parities", [0], tmp_path, SMALL, threads=1)
    with pytest.raises(SettingsError, match=r"0/run.json: a run finished writing checkpoint files, asked for "
                                            r"computing statistics in the loop"):
        train_sweep("parities", [0], tmp_path, SMALL, threads=1, statistics=InLoopStatistics.of())
    records = train_sweep("parities", [0], tmp_path, SMALL, threads=1, statistics=InLoopStatistics.of(),
                          replace_other_settings=True)
    assert records[0]["statistics"]["options"]["svd"] == "auto"
    assert (tmp_path / "0" / "metrics.csv").is_file() and not (tmp_path / "0" / "checkpoints").exists()
    # Other metrics options are other settings too.
    with pytest.raises(SettingsError, match="a run finished computing statistics in the loop"):
        train_sweep("parities", [0], tmp_path, SMALL, threads=1, statistics=InLoopStatistics.of({"svd": "exact"}))


class Killed(BaseException):
    """Stands for a kill after the first flush."""


def test_a_run_begun_with_checkpoint_files_is_not_continued_with_statistics(tmp_path, monkeypatch):
    import trainmap.train.sweep as sweep

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(sweep, "_end", killed)
    with pytest.raises(Killed):
        train_sweep("parities", [0], tmp_path, SMALL, threads=1)
    monkeypatch.undo()
    assert layout.read_resume(tmp_path / "0") is not None
    with pytest.raises(layout.ResumeError, match="begun writing checkpoint files, continued computing statistics"):
        train_sweep("parities", [0], tmp_path, SMALL, threads=1, statistics=InLoopStatistics.of())


def test_bad_statistics_options_are_refused():
    with pytest.raises(SettingsError, match="metrics device must be auto, cpu or cuda"):
        InLoopStatistics.of(device="gpu")
    with pytest.raises(SettingsError, match="statistics in the loop: .*svd"):
        InLoopStatistics.of({"svd": "fast"})


@pytest.mark.slow  # three process starts and 3 × 960 steps (~2-3 min on the shared 2-core machine)
def test_a_killed_job_with_statistics_in_the_loop_resumes_to_the_same_files(tmp_path):
    settings = {**SMALL, "max_steps": 960, "epochs": 160, "n_train": 192, "checkpoint_every": 2}
    train_sweep("parities", SEEDS, tmp_path / "reference", settings, threads=1, statistics=InLoopStatistics.of())
    out = tmp_path / "killed"
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    command = [sys.executable, "-m", "trainmap.cli", "train-sweep", "--task", "parities", "--seeds", "0-2",
               "--out-dir", str(out), "--threads", "1", "--resume-interval", "0", "--no-checkpoints", *sets]

    def rows(seed: int) -> int:
        path = out / str(seed) / "metrics.csv"
        try:
            return len(path.read_text().splitlines()) - 1
        except FileNotFoundError:
            return 0

    for wanted in (60, 250):
        process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while rows(2) < wanted:
            assert process.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "the sweep made no progress"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert all(not (out / str(s) / "run.json").exists() for s in SEEDS)
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "killed/2: complete at step 960, 481 checkpoint steps" in finished.stderr
    for seed in SEEDS:
        for name in ("metrics.csv", "log.csv"):
            assert (out / str(seed) / name).read_bytes() == (tmp_path / "reference" / str(seed) / name).read_bytes()
        assert layout.read_run_json(out / str(seed))["timing"]["sessions"] == 3
        assert not (out / str(seed) / "checkpoints").exists()

"""Loading run directories, per-run z-scoring, and leaving out bad runs and columns."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from synthetic_runs import METRICS, write_synthetic_runs
from trainmap.analysis.errors import InsufficientRunsError, RunFormatError
from trainmap.analysis.runs import load_run, load_runs, prepare_trajectories, zscore


def test_zscore_uses_the_first_n_checkpoints_only():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3)) * [1.0, 5.0, 0.1] + [0.0, 10.0, -3.0]
    Z, constant = zscore(X, 20)
    np.testing.assert_allclose(Z, (X - X[:20].mean(0)) / X[:20].std(0))
    np.testing.assert_allclose(Z[:20].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Z[:20].std(0), 1)
    assert not constant.any()
    # A column constant over the first checkpoints is centred, not scaled.
    X[:20, 1] = 4.0
    Z, constant = zscore(X, 20)
    assert list(constant) == [False, True, False]
    np.testing.assert_allclose(Z[:, 1], X[:, 1] - 4.0)


def test_load_run_identity_order_and_optional_files(tmp_path):
    exp = write_synthetic_runs(tmp_path / "runs", n_runs=3, n_checkpoints=20)
    run = load_run(exp.run_dirs[1])
    assert run.run_id == "1" and run.info["status"] == "complete"
    assert list(run.metrics["step"]) == sorted(run.metrics["step"])
    assert run.log is not None and "eval_accuracy" in run.log.columns
    # Without run.json the directory name is the identity; shuffled rows are re-ordered.
    d = exp.run_dirs[2]
    (d / "run.json").unlink()
    (d / "log.csv").unlink()
    m = pd.read_csv(d / "metrics.csv")
    m.sample(frac=1.0, random_state=0).to_csv(d / "metrics.csv", index=False)
    shutil.move(d, tmp_path / "runs" / "seed-x")
    run = load_run(tmp_path / "runs" / "seed-x")
    assert run.run_id == "seed-x" and run.log is None
    assert run.metrics["step"].is_monotonic_increasing


def test_load_runs_rejects_duplicates_and_missing_metrics(tmp_path):
    exp = write_synthetic_runs(tmp_path / "runs", n_runs=2, n_checkpoints=10)
    (exp.run_dirs[1] / "run.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(RunFormatError, match="same identity '0'"):
        load_runs(exp.run_dirs)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFormatError, match="no metrics.csv"):
        load_run(tmp_path / "empty")
    (exp.run_dirs[0] / "metrics.csv").write_text("path,step,l1\na,1,0.5\nb,1,0.7\n")
    with pytest.raises(RunFormatError, match="step 1 appears more than once"):
        load_run(exp.run_dirs[0])


def test_bad_runs_and_columns_are_left_out_with_warnings(tmp_path):
    exp = write_synthetic_runs(tmp_path / "runs", n_runs=9, n_checkpoints=40, no_biases=True,
                               constant_column="trace", nan_runs=(2, 5), short_runs=(7,))
    runs = load_runs(exp.run_dirs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traj = prepare_trajectories(runs, zscore_first_n=exp.zscore_first_n)
    messages = [str(w.message) for w in caught]
    left_out = [m for m in messages if m.startswith("left out 3 run(s)")]
    assert len(left_out) == 1
    assert "2: 1 checkpoint(s) with NaN/inf (first at step 200; column(s) spectral)" in left_out[0]
    assert "5:" in left_out[0] and "7: only 1 checkpoint(s)" in left_out[0]
    dropped = [m for m in messages if m.startswith("dropped column(s)")]
    assert len(dropped) == 1
    for col in ("mean_b", "median_b", "var_b", "trace"):
        assert col in dropped[0]
    assert traj.run_ids == ["0", "1", "3", "4", "6", "8"]
    assert set(traj.excluded) == {"2", "5", "7"}
    assert traj.features == [c for c in METRICS if c not in ("mean_b", "median_b", "var_b", "trace")]
    assert traj.dropped_columns["trace"] == "constant within every run"
    # Each run is standardised by its own first checkpoints.
    raw = runs[0].metrics[traj.features].to_numpy()
    n = exp.zscore_first_n
    np.testing.assert_allclose(traj.data[0], (raw - raw[:n].mean(0)) / raw[:n].std(0))
    assert all(len(z) == 40 for z in traj.data)


def test_too_few_usable_runs_is_a_clear_error(tmp_path):
    exp = write_synthetic_runs(tmp_path / "runs", n_runs=6, n_checkpoints=20, nan_runs=(0, 3))
    runs = load_runs(exp.run_dirs)
    with pytest.warns(RuntimeWarning, match="left out 2 run"):
        with pytest.raises(InsufficientRunsError, match="only 4 usable run\\(s\\) of 6: the analysis needs at least 5 runs.*0, 3"):
            prepare_trajectories(runs)
    assert issubclass(InsufficientRunsError, ValueError)


def test_explicit_features_are_kept_as_given(tmp_path):
    exp = write_synthetic_runs(tmp_path / "runs", n_runs=3, n_checkpoints=20, constant_column="l1")
    runs = load_runs(exp.run_dirs)
    traj = prepare_trajectories(runs, features=["l1", "l2"], min_runs=1, zscore_first_n=5)
    assert traj.features == ["l1", "l2"] and traj.dropped_columns == {}
    with pytest.warns(RuntimeWarning, match="no column\\(s\\) nope"):
        with pytest.raises(InsufficientRunsError):
            prepare_trajectories(runs, features=["nope"], min_runs=1)


@pytest.mark.parametrize("bad, fragment", [("1e30", "too large"), ("-10", "negative"), ("12.5", "not a training step"),
                                           ("99999999999999999999", "64-bit")])
def test_bad_steps_are_rejected_naming_the_file_never_truncated(tmp_path, bad, fragment):
    exp = write_synthetic_runs(tmp_path / "runs", n_runs=1, n_checkpoints=10)
    log_path = exp.run_dirs[0] / "log.csv"
    lines = log_path.read_text().splitlines()
    fields = lines[3].split(",")
    fields[0] = bad
    lines[3] = ",".join(fields)
    log_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunFormatError, match=fragment) as info:
        load_run(exp.run_dirs[0])
    assert str(log_path) in str(info.value) and "row 3" in str(info.value)

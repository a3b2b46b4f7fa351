"""Hostile and careless input to the analysis stages (issue 19, "Analysis inputs"): a states
file of another model or with fractional states, a log whose steps do not match the run's
checkpoints, a convergence cell that is not a number, and a criterion no run can meet. Each
used to give a traceback or a silently different result; now each is one message naming
the file and what is wrong (exit 2, inputs unchanged), or — for the criterion — a warning
carried into regression.json's notes."""

from __future__ import annotations

import json
import shutil
import warnings

import pandas as pd
import pytest

from hostile_helpers import fingerprint, one_error_line, run_cli
from synthetic_runs import write_synthetic_runs
from trainmap.cli import main


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """Eight synthetic runs, selected and decoded once."""
    root = tmp_path_factory.mktemp("analysis_inputs")
    exp = write_synthetic_runs(root / "runs", n_runs=8, n_checkpoints=60, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["hmm-select", *map(str, exp.run_dirs), "--selection-csv", str(root / "selection.csv"),
                     "--model", str(root / "model.npz"), "--covariance", "diag", "--max-components", "3",
                     "--restarts", "1", "--zscore-first-n", str(exp.zscore_first_n), "--no-progress"]) == 0
        assert main(["hmm-decode", *map(str, exp.run_dirs), "--model", str(root / "model.npz"),
                     "--states", str(root / "states.csv")]) == 0
    return root, exp


def _copy(decoded, tmp_path):
    root, exp = decoded
    shutil.copytree(root, tmp_path / "e")
    return tmp_path / "e", [tmp_path / "e" / "runs" / d.name for d in exp.run_dirs]


def _regress(d, runs, *extra, threshold="0.9"):
    return run_cli("regress", *runs, "--model", d / "model.npz", "--states", d / "states.csv", "--threshold",
                   threshold, "--out", d / "regression.json", "--coefficients", d / "coefficients.csv",
                   "--convergence-csv", d / "convergence.csv", *extra)


def _refused(d, runs, needle, **kw):
    before = fingerprint(d)
    result = _regress(d, runs, **kw)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr, "regress")
    assert fingerprint(d) == before  # nothing written, nothing changed
    assert not (d / "regression.json").exists()
    return line


@pytest.mark.slow
def test_a_states_file_with_a_state_the_model_does_not_have(decoded, tmp_path):
    d, runs = _copy(decoded, tmp_path)
    states = pd.read_csv(d / "states.csv", dtype={"run": str})
    states.loc[5, "state"] = 7  # a 3-state model
    states.to_csv(d / "states.csv", index=False)
    line = _refused(d, runs, "state 7")
    assert f"{d / 'states.csv'}: state 7 (run {states.loc[5, 'run']}) is not a state of the model" in line
    assert "rerun hmm-decode" in line


@pytest.mark.slow
def test_a_states_file_with_a_fractional_state_is_not_truncated(decoded, tmp_path):
    d, runs = _copy(decoded, tmp_path)
    text = (d / "states.csv").read_text().splitlines()
    run, step, state = text[3].split(",")
    text[3] = f"{run},{step},1.5"
    (d / "states.csv").write_text("\n".join(text) + "\n")
    line = _refused(d, runs, "1.5")
    assert f"{d / 'states.csv'}: run {run} has state" in line and "not an integer" in line


@pytest.mark.slow
def test_a_log_in_epochs_against_checkpoints_in_steps(decoded, tmp_path):
    d, runs = _copy(decoded, tmp_path)
    log_path = runs[2] / "log.csv"
    log = pd.read_csv(log_path)
    log["step"] = log["step"] // 10  # the same log, counted in epochs of 10 steps
    log.to_csv(log_path, index=False)
    line = _refused(d, runs, "do not cover")
    assert f"{log_path}: the log's steps" in line and "do not cover the checkpoints' steps" in line


@pytest.mark.slow
def test_a_convergence_cell_that_is_not_a_number(decoded, tmp_path):
    d, runs = _copy(decoded, tmp_path)
    log_path = runs[4] / "log.csv"
    log = pd.read_csv(log_path)
    log["eval_accuracy"] = log["eval_accuracy"].astype(object)
    log.loc[10, "eval_accuracy"] = "0.9O"  # a typo: letter O
    log.to_csv(log_path, index=False)
    line = _refused(d, runs, "not a number")
    assert f"{log_path}: column 'eval_accuracy' at step {log.loc[10, 'step']} holds '0.9O', not a number" in line


@pytest.mark.slow
def test_a_criterion_no_run_can_meet_is_said_not_silent(decoded, tmp_path):
    d, runs = _copy(decoded, tmp_path)
    result = _regress(d, runs, threshold="5")
    assert result.returncode == 0, result.stderr
    assert "no run meets the convergence criterion eval_accuracy>5" in result.stderr
    reg = json.loads((d / "regression.json").read_text())
    assert reg["n_converged"] == 0 and reg["n_censored"] == 8
    assert any("no run meets the convergence criterion eval_accuracy>5 (the highest eval_accuracy of any run is"
               in note for note in reg["notes"])
    assert not reg["cox"]["fitted"]

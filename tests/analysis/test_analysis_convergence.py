"""The convergence criterion: parsing, config forms, convergence steps, one clear error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainmap.analysis.convergence import (
    Criterion,
    check_log_steps,
    convergence_step,
    convergence_table,
    never_met_message,
)
from trainmap.analysis.errors import RunFormatError


def test_parse_and_print_both_directions():
    assert Criterion.parse("eval_loss<2.5") == Criterion("eval_loss", "below", 2.5)
    assert Criterion.parse(" eval_accuracy > 0.9 ") == Criterion("eval_accuracy", "above", 0.9)
    assert Criterion.parse("train_loss<1e-3").threshold == 1e-3
    assert str(Criterion("eval_loss", "below", 2.5)) == "eval_loss<2.5"
    assert Criterion.parse(str(Criterion("x", "above", 0.123456789))).threshold == pytest.approx(0.123457, rel=1e-5)
    assert Criterion.from_threshold(0.97) == Criterion("eval_accuracy", "above", 0.97)
    assert Criterion("eval_loss", "below", 2.5).to_dict() == {
        "column": "eval_loss", "direction": "below", "threshold": 2.5, "text": "eval_loss<2.5"}


@pytest.mark.parametrize("text, fragment", [
    ("eval_loss=2", "expected COLUMN<X"), ("<2", "expected COLUMN<X"), ("eval_loss<abc", "not a number"),
    ("eval_loss<nan", "finite"), ("eval_loss>inf", "finite"), ("eval_loss<-inf", "finite"),
])
def test_bad_criteria_name_the_option(text, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        Criterion.parse(text, "--convergence")
    assert str(info.value).startswith("--convergence")
    with pytest.raises(ValueError, match="--threshold.*finite"):
        Criterion.from_threshold(float("nan"), "--threshold")


def test_config_forms():
    key = "experiments.e"
    assert Criterion.from_config({"column": "eval_loss", "below": 2.5}, None, key) == Criterion("eval_loss", "below", 2.5)
    assert Criterion.from_config({"above": 0.8}, None, key) == Criterion("eval_accuracy", "above", 0.8)
    assert Criterion.from_config(None, 0.9, key) == Criterion("eval_accuracy", "above", 0.9)
    assert Criterion.from_config(None, None, key) is None
    with pytest.raises(ValueError, match="experiments.e: give convergence or threshold, not both"):
        Criterion.from_config({"above": 0.8}, 0.9, key)
    with pytest.raises(ValueError, match="experiments.e.convergence: give exactly one of above or below"):
        Criterion.from_config({"column": "eval_loss", "above": 1, "below": 2}, None, key)
    with pytest.raises(ValueError, match="experiments.e.convergence.below: must be a finite number"):
        Criterion.from_config({"column": "eval_loss", "below": float("nan")}, None, key)


def test_convergence_step_is_the_first_step_strictly_past_the_threshold():
    log = pd.DataFrame({"step": [0, 10, 20, 30, 40], "eval_accuracy": [0.1, 0.9, 0.95, 0.5, 0.99],
                        "eval_loss": [3.0, 2.5, 2.4, np.nan, 1.0]})
    above = Criterion.from_threshold
    assert convergence_step(log, above(0.9)) == 20  # 0.9 itself does not exceed 0.9
    assert convergence_step(log, above(0.5)) == 10
    assert np.isnan(convergence_step(log, above(0.995)))
    assert convergence_step(log, Criterion("eval_loss", "below", 2.5)) == 20  # 2.5 is not below 2.5
    assert convergence_step(log, Criterion("eval_loss", "below", 2.0)) == 40  # NaN never meets it


def test_a_run_that_never_converges_is_censored_at_its_own_last_step():
    logs = {
        "a": pd.DataFrame({"step": [0, 100, 200], "eval_loss": [3.0, 1.0, 0.5]}),
        "long": pd.DataFrame({"step": [0, 100, 200, 1000], "eval_loss": [3.0, 2.9, 2.8, 2.7]}),
        "c": pd.DataFrame({"step": [0, 100, 200, 500], "eval_loss": [3.0, 2.0, 1.5, 1.4]}),
        # A short run that stopped at step 300 without converging; its last row has no eval.
        "short": pd.DataFrame({"step": [0, 100, 300, 350], "eval_loss": [3.0, 2.5, 2.4, np.nan]}),
    }
    table = convergence_table(logs, Criterion("eval_loss", "below", 1.6))
    assert table.loc["a", "convergence_step"] == 100 and table.loc["a", "converged"]
    assert table.loc["c", "convergence_step"] == 200
    assert table.loc["long", "convergence_step"] == 1000 and not table.loc["long", "converged"]
    # Censored at its own last evaluated step, never at another run's length (1000).
    assert table.loc["short", "convergence_step"] == 300 and not table.loc["short", "converged"]
    assert table.loc["short", "last_step"] == 350
    assert list(table.columns) == ["convergence_step", "converged", "last_step", "criterion"]
    assert set(table["criterion"]) == {"eval_loss<1.6"}


def test_a_cell_that_is_not_a_number_names_the_file_and_step():
    logs = {"a": pd.DataFrame({"step": [0, 100, 200], "eval_accuracy": ["0.1", "n/a", "0.95"]})}
    with pytest.raises(RunFormatError, match=r"runs/a/log.csv: column 'eval_accuracy' at step 100 holds 'n/a', "
                                             r"not a number"):
        convergence_table(logs, Criterion.from_threshold(0.9), {"a": "runs/a/log.csv"})
    # Empty cells and "nan" are steps without an evaluation, not errors.
    fine = {"a": pd.DataFrame({"step": [0, 100, 200], "eval_accuracy": [None, "nan", "0.95"]})}
    assert convergence_table(fine, Criterion.from_threshold(0.9)).loc["a", "convergence_step"] == 200
    with pytest.raises(RunFormatError, match="has no value at any step"):
        convergence_table({"a": pd.DataFrame({"step": [0, 1], "eval_accuracy": [np.nan, np.nan]})},
                          Criterion.from_threshold(0.9), {"a": "x.csv"})


def test_a_criterion_no_run_meets_is_said_with_the_best_value_reached():
    logs = {"a": pd.DataFrame({"step": [0, 10], "eval_accuracy": [0.2, 0.97]}),
            "b": pd.DataFrame({"step": [0, 10], "eval_accuracy": [0.1, 0.99]})}
    message = never_met_message(logs, Criterion.from_threshold(5.0))
    assert "no run meets the convergence criterion eval_accuracy>5" in message
    assert "highest eval_accuracy of any run is 0.99, in run b" in message
    assert never_met_message(logs, Criterion.from_threshold(0.95)) == ""


def test_a_log_whose_steps_do_not_cover_the_checkpoints_is_refused():
    checkpoints = np.arange(0, 1001, 50)
    check_log_steps(np.arange(0, 1001, 10), checkpoints, "log.csv")  # finer log: fine
    check_log_steps(np.arange(100, 1001, 100), checkpoints, "log.csv")  # starts later: fine
    with pytest.raises(RunFormatError, match=r"log.csv: the log's steps \(0–20\) do not cover the checkpoints' "
                                             r"steps \(0–1000\).*epochs"):
        check_log_steps(np.arange(0, 21), checkpoints, "log.csv")  # the log counts epochs
    with pytest.raises(RunFormatError, match="do not cover"):
        check_log_steps(np.arange(5000, 6001, 100), checkpoints, "log.csv")  # another run's log


def test_a_run_without_the_column_or_a_log_is_one_error_naming_runs_and_column():
    logs = {
        "a": pd.DataFrame({"step": [0, 100], "eval_accuracy": [0.1, 0.95]}),
        "b": pd.DataFrame({"step": [0, 100], "train_loss": [3.0, 2.0]}),
        "c": None,
    }
    with pytest.raises(RunFormatError, match=r"column 'eval_accuracy'.*run\(s\) b, c ") as info:
        convergence_table(logs, Criterion.from_threshold(0.9))
    assert str(info.value).count("\n") == 0

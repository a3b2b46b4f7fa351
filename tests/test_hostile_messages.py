"""Hostile and careless input, class 4: malformed files that used to end in a traceback.
Each now gives exit status 2 and one line naming the file (and key), and changes nothing."""

from __future__ import annotations

import json

import pytest

from hostile_helpers import TINY_PARITIES, fingerprint, one_error_line
from trainmap.cli import main


def _train(out, capsys):
    status = main(["train", "parities", "--seed", "0", "--out", str(out), "--no-progress", "--threads", "1",
                   *[a for k, v in TINY_PARITIES.items() for a in ("--set", f"{k}={v}")]])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("content", ["[1, 2, 3]", "{not json", '"a string"'])
def test_run_json_that_is_not_an_object(tmp_path, capsys, content):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(content)
    before = fingerprint(tmp_path)
    status, err = _train(out, capsys)
    line = one_error_line(err, "train")
    assert status == 2 and str(out / "run.json") in line
    assert fingerprint(tmp_path) == before


def _experiment(tmp_path, *, selection: str, regression: str):
    exp = tmp_path / "exp"
    (exp / "hmm").mkdir(parents=True)
    (exp / "hmm" / "selection.csv").write_text(selection)
    (exp / "regression.json").write_text(regression)
    (exp / "coefficients.csv").write_text("state,coefficient,runs_visiting,detour\n0,1.5,3,False\n")
    return exp


GOOD_SELECTION = "n_components,restart,status,chosen,bic\n1,0,ok,True,10.0\n"
GOOD_REGRESSION = json.dumps({"n_runs": 5, "n_states": 1, "r2": 0.5, "p_value": 0.1, "dissimilarity": 0.2,
                              "forking": False})


@pytest.mark.parametrize("selection, regression, named", [
    ("n_components,bic\n1,10.0\n", GOOD_REGRESSION, "selection.csv lacks column(s) chosen"),
    ("", GOOD_REGRESSION, "selection.csv"),
    (GOOD_SELECTION, "[1, 2]", "regression.json must hold a JSON object, found a list"),
    (GOOD_SELECTION, json.dumps({"n_runs": "five"}), "key 'n_runs' must be an integer, found 'five'"),
    (GOOD_SELECTION, json.dumps({"r2": {"a": 1}}), "key 'r2' must be a number"),
])
def test_tables_name_the_malformed_file(tmp_path, capsys, selection, regression, named):
    exp = _experiment(tmp_path, selection=selection, regression=regression)
    before = fingerprint(tmp_path)
    status = main(["tables", "--experiment", f"e={exp}", "--out-dir", str(tmp_path / "tables")])
    line = one_error_line(capsys.readouterr().err, "tables")
    assert status == 2 and str(exp) in line and named in line, line
    assert fingerprint(tmp_path) == before


def test_states_csv_with_a_non_integer_state(tmp_path, capsys):
    run = tmp_path / "runs" / "0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("step,l1\n0,1.0\n")
    (run / "log.csv").write_text("step,eval_accuracy\n0,0.5\n")
    (run / "run.json").write_text('{"seed": 0}')
    (tmp_path / "states.csv").write_text("run,step,state\n0,0,zero\n")
    before = fingerprint(tmp_path)
    status = main(["regress", str(run), "--states", str(tmp_path / "states.csv"), "--model",
                   str(tmp_path / "model.npz"), "--out", str(tmp_path / "r.json"), "--coefficients",
                   str(tmp_path / "c.csv"), "--threshold", "0.9", "--convergence-csv", str(tmp_path / "v.csv")])
    line = one_error_line(capsys.readouterr().err, "regress")
    assert status == 2 and str(tmp_path / "states.csv") in line and "not an integer" in line
    assert fingerprint(tmp_path) == before

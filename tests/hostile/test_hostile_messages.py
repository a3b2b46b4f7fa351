"""Hostile and careless input, class 4: malformed files that used to end in a traceback.
Each now gives exit status 2 and one line naming the file (and key), and changes nothing."""

from __future__ import annotations

import json
import re

import pytest

from regression_records import regression_dict
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
GOOD_REGRESSION = json.dumps(regression_dict())


@pytest.mark.parametrize("selection, regression, named", [
    ("n_components,bic\n1,10.0\n", GOOD_REGRESSION,
     "selection.csv lacks column(s) covariance, fold, status, test_loglik, n_params, n_test_obs"),
    ("", GOOD_REGRESSION, "selection.csv"),
    (GOOD_SELECTION, "[1, 2]", "regression.json must hold a JSON object, found a list"),
    (GOOD_SELECTION, json.dumps({"n_runs": "five"}), "key 'n_runs' must be an integer, found 'five'"),
    (GOOD_SELECTION, json.dumps({"r2": {"a": 1}}), "key 'r2' must be a number"),
    # A key every regression.json has, missing: named, not read as a silent default.
    (GOOD_SELECTION, json.dumps({k: v for k, v in regression_dict().items() if k != "r2_loo"}),
     "missing key(s) r2_loo"),
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


# --- round 2 -------------------------------------------------------------------------------


def _in_place_series(src, log_files: dict[str, str]):
    """``src/step_0`` and ``src/step_10`` (model.safetensors) and the given log files."""
    import numpy as np

    from checkpoint_factory import tensor, write_checkpoint

    for step in (0, 10):
        (src / f"step_{step}").mkdir(parents=True)
        write_checkpoint(src / f"step_{step}" / "model.safetensors",
                         [tensor("fc.weight", np.full((2, 3), 1.0 + step), "F32", "matrix")])
    for name, text in log_files.items():
        (src / name).write_text(text)
    return src


def test_a_log_csv_field_over_the_csv_limit_names_the_file_and_line(tmp_path, capsys):
    src = _in_place_series(tmp_path / "src", {"log.csv": "step,note\n0,a\n10," + "x" * 200_000 + "\n"})
    before = fingerprint(tmp_path)
    status = main(["series-metrics", str(src), "--out-dir", str(tmp_path / "out"), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "series-metrics")
    assert status == 2 and f"{src / 'log.csv'}, line 3" in line and "field larger than" in line, line
    assert fingerprint(tmp_path) == before


def test_a_recorder_continuing_a_run_with_an_over_long_log_field_names_file_and_line(tmp_path):
    import numpy as np

    from trainmap import Recorder
    from trainmap.metrics.recorder import RecorderError

    run = tmp_path / "run"
    with Recorder(run, seed=0) as rec:
        rec.record(0, {"fc.weight": np.ones((2, 3), dtype=np.float32)}, loss=1.0)
    (run / "log.csv").write_text("step,loss\n0," + "9" * 200_000 + "\n")
    before = fingerprint(tmp_path)
    with pytest.raises(RecorderError, match=rf"{re.escape(str(run / 'log.csv'))}, line 2: .*field larger than"):
        Recorder(run, seed=0)
    assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("content, problem", [
    ("[1, 2, 3]", "it holds a JSON list, not an object"),
    ('{"global_step": 10}', "has no 'log_history'"),
    ('{"global_step": 10, "log_history": {"step": 10}}', "its 'log_history' is a JSON dict, not a list"),
    ('{"global_step": 10, "log_history": [{"eval_accuracy": 0.5}, {"step": "10"}]}',
     "2 of its 2 'log_history' entries have no integer 'step'"),
])
def test_a_trainer_state_json_of_the_wrong_shape_is_named_with_what_is_wrong(tmp_path, capsys, content, problem):
    src = _in_place_series(tmp_path / "src", {"trainer_state.json": content})
    before = fingerprint(src)
    with pytest.warns(RuntimeWarning) as caught:
        status = main(["series-metrics", str(src), "--out-dir", str(tmp_path / "out"), "--no-progress"])
    assert status == 0, capsys.readouterr().err
    messages = [str(w.message) for w in caught]
    assert any(str(src / "trainer_state.json") in m and problem in m for m in messages), messages
    assert not any("no log.csv or trainer_state.json" in m for m in messages), messages  # it is there: say what is wrong
    assert fingerprint(src) == before


@pytest.mark.parametrize("error, call", [(28, "fsync"), (13, "mkstemp"), (28, "replace")])
def test_a_full_disk_or_a_denied_write_names_the_output_not_a_temporary(tmp_path, capsys, monkeypatch, error, call):
    """[Errno 28] / [Errno 13] on the temporary file of an atomic write: the message names
    the file the user asked for, the old one is intact, and no temporary is left."""
    import errno as errnos
    import os
    import tempfile

    import numpy as np

    from checkpoint_factory import tensor, write_checkpoint

    write_checkpoint(tmp_path / "step00000000.safetensors", [tensor("fc.weight", np.ones((2, 3)), "F32", "matrix")])
    output = tmp_path / "results" / "metrics.csv"
    output.parent.mkdir()
    output.write_text("the previous metrics\n")

    def fail(*args, **kwargs):
        raise OSError(error, os.strerror(error), *(["/x/.metrics.csv.abc123.tmp"] if call != "fsync" else []))

    target = {"fsync": (os, "fsync"), "mkstemp": (tempfile, "mkstemp"), "replace": (os, "replace")}[call]
    monkeypatch.setattr(*target, fail)
    status = main(["metrics", str(tmp_path / "step00000000.safetensors"), "-o", str(output), "--no-progress"])
    monkeypatch.undo()
    line = one_error_line(capsys.readouterr().err, "metrics")
    assert status == 2 and str(output) in line and os.strerror(error) in line, line
    assert ".tmp" not in line and f"[Errno {error}]" not in line, line
    assert "the disk is full" in line if error == errnos.ENOSPC else f"make {output.parent} writable" in line, line
    assert output.read_text() == "the previous metrics\n"
    assert sorted(p.name for p in output.parent.iterdir()) == ["metrics.csv"]


def test_a_run_directory_that_cannot_be_written_is_named_not_its_lock_file(tmp_path, capsys, monkeypatch):
    import errno as errnos
    import os

    src = _in_place_series(tmp_path / "src", {"log.csv": "step,eval_accuracy\n0,0.5\n10,0.75\n"})
    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path).endswith(".trainmap.lock"):
            raise PermissionError(errnos.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    status = main(["series-metrics", str(src), "--out-dir", str(tmp_path / "out"), "--no-progress"])
    monkeypatch.undo()
    line = one_error_line(capsys.readouterr().err, "series-metrics")
    assert status == 2 and f"{tmp_path / 'out'}: cannot write in this directory (Permission denied)" in line, line
    assert ".trainmap.lock" not in line and "[Errno" not in line

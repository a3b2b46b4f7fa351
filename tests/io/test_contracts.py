"""File contracts: step parsing, checkpoint names, run and experiment paths."""

from pathlib import Path

import numpy as np
import pytest

from trainmap.io import contracts
from trainmap.io.contracts import StepError, checkpoint_name, checkpoint_step, checkpoint_steps, parse_step, parse_steps


@pytest.mark.parametrize("value, step", [
    (0, 0), (1200, 1200), (np.int64(7), 7), (np.uint32(9), 9), ("00001200", 1200), ("  42 ", 42),
    (3.0, 3), (np.float64(2**52), 2**52), (2**63 - 1, 2**63 - 1), (str(2**63 - 1), 2**63 - 1),
])
def test_parse_step_accepts_non_negative_int64(value, step):
    assert parse_step(value) == step
    assert type(parse_step(value)) is int


@pytest.mark.parametrize("value, fragment", [
    (-1, "negative"), ("-1", "not a training step"), (1.5, "not a training step"), (1e30, "too large"),
    (float("nan"), "not a training step"), (float("inf"), "not a training step"), ("1e3", "not a training step"),
    (2**63, "64-bit"), (str(2**64), "64-bit"), (True, "not a training step"), (None, "not a training step"),
    ("", "not a training step"), ([1], "not a training step"),
])
def test_parse_step_rejects_with_the_source_named(value, fragment):
    with pytest.raises(StepError, match=fragment) as info:
        parse_step(value, "runs/3/log.csv")
    assert str(info.value).startswith("runs/3/log.csv: ")


def test_parse_steps_names_file_and_row():
    assert parse_steps(["1", 2, 3.0]) == [1, 2, 3]
    with pytest.raises(StepError, match=r"^m\.csv, row 2: .*1e\+30"):
        parse_steps([1, 1e30], "m.csv")


def test_checkpoint_names_round_trip(tmp_path):
    assert checkpoint_name(1200) == "step00001200.safetensors"
    assert checkpoint_name(123456789012) == "step123456789012.safetensors"
    with pytest.raises(StepError):
        checkpoint_name(-3)
    for step in (0, 5, 10**12):
        assert checkpoint_step(checkpoint_name(step)) == step
    assert checkpoint_step("final.safetensors") is None
    assert checkpoint_step("model_500.safetensors") == 500
    with pytest.raises(StepError, match="step99999999999999999999.safetensors"):
        checkpoint_step("run/step99999999999999999999.safetensors")


def test_checkpoint_steps_lists_only_checkpoint_files(tmp_path):
    assert checkpoint_steps(tmp_path) == []
    for step in (30, 2, 100):
        path = contracts.checkpoint_path(tmp_path, step)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")
    (tmp_path / "checkpoints" / ".step00000040.safetensors.abc.tmp").write_bytes(b"")
    (tmp_path / "checkpoints" / "notes.txt").write_bytes(b"")
    assert checkpoint_steps(tmp_path) == [2, 30, 100]


def test_experiment_paths_match_the_documented_layout():
    exp = contracts.ExperimentPaths("modular")
    assert exp.run("3").metrics_csv == Path("results/modular/runs/3/metrics.csv")
    assert exp.run("3").checkpoint(5) == Path("results/modular/runs/3/checkpoints/step00000005.safetensors")
    assert exp.model_npz == Path("results/modular/hmm/model.npz")
    assert exp.states_csv == Path("results/modular/hmm/states.csv")
    assert exp.edges_csv == Path("results/modular/map/edges.csv")
    assert exp.regression_json == Path("results/modular/regression.json")
    assert exp.convergence_csv == Path("results/modular/convergence.csv")
    assert exp.figure("trajectories", "png") == Path("results/modular/figures/trajectories.png")
    assert str(contracts.ExperimentPaths("{exp}").selection_csv) == "results/{exp}/hmm/selection.csv"
    assert [p.name for p in contracts.table_paths()][:2] == ["table1.csv", "table1.md"]


def test_regression_record_round_trips_and_names_what_is_wrong(tmp_path):
    """regression.json has one owner: what write() writes, read() reads back key for key
    (NaN as null, read as NaN); a missing key or a wrong type is one error naming the file."""
    import json
    import math

    from regression_records import regression_dict

    from trainmap.io.contracts import REGRESSION_OPTIONAL, RegressionFileError, RegressionRecord

    data = regression_dict(r2=float("nan"), detour_states=[2], n_converged=4, n_censored=1, censored_runs=["7"],
                           cox={"fitted": True}, concordance=0.8, checkpoints_per_run={"min": 3, "median": 3.0, "max": 3},
                           hmm={"covariance": "diag"}, runs=[{"run": "1", "convergence_step": 10.0, "converged": True}])
    record = RegressionRecord.from_dict(data)
    path = tmp_path / "regression.json"
    record.write(path)
    written = json.loads(path.read_text())
    assert list(written) == [f for f in RegressionRecord.__dataclass_fields__]  # the file's key order
    assert written["r2"] is None and {k: v for k, v in written.items() if k != "r2"} == {
        k: data[k] for k in written if k != "r2"}
    back = RegressionRecord.read(path)
    assert math.isnan(back.r2) and back.detour_states == [2] and back.to_dict()["runs"] == data["runs"]
    # Keys older files lack read as None; any other missing key is named, with the file.
    old = tmp_path / "old" / "regression.json"
    old.parent.mkdir()
    old.write_text(json.dumps(regression_dict(never_converged=[])))
    assert all(getattr(RegressionRecord.read(old), k) is None for k in REGRESSION_OPTIONAL)
    old.write_text(json.dumps({k: v for k, v in regression_dict().items() if k not in ("detour_states", "runs")}))
    with pytest.raises(RegressionFileError, match=f"{old}: missing key\\(s\\) detour_states, runs"):
        RegressionRecord.read(old)
    old.write_text(json.dumps(regression_dict(forking="yes")))
    with pytest.raises(RegressionFileError, match="key 'forking' must be true or false"):
        RegressionRecord.read(old)
    old.write_text("[1]")
    with pytest.raises(RegressionFileError, match="must hold a JSON object"):
        RegressionRecord.read(old)


def test_a_comparisons_regression_json_is_read_back_as_written(tmp_path):
    """results/compare/{cmp}/regression.json has its own record (CompareRecord)."""
    import json

    from trainmap.io.contracts import CompareRecord, RegressionFileError

    data = {"comparison": "ab", "conditions": {"a": ["a/1"], "b": ["b/1"]}, "convergence": {"a": "x>1", "b": "x>2"},
            "n_states": 2, "n_runs": 2, "design_states": [0, 1], "unvisited_states": [], "r2": 0.5,
            "r2_adjusted": 0.4, "r2_loo": 0.3, "p_value": 0.2, "f_statistic": 1.0, "df_model": 1, "df_resid": 0,
            "intercept": 10.0, "detour_states": [], "parametrisation": "p", "covariates": [], "states": [],
            "dissimilarity": [{"condition_a": "a", "condition_b": "b", "dissimilarity": 0.1}], "notes": [],
            "excluded_runs": []}
    path = tmp_path / "regression.json"
    CompareRecord.from_dict(data).write(path)
    assert json.loads(path.read_text()) == data and list(json.loads(path.read_text())) == list(data)
    assert CompareRecord.read(path) == CompareRecord.from_dict(data)
    path.write_text(json.dumps({k: v for k, v in data.items() if k != "conditions"}))
    with pytest.raises(RegressionFileError, match="missing key\\(s\\) conditions .*rerun compare"):
        CompareRecord.read(path)

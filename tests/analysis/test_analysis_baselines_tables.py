"""Appendix C baselines (k-means BIC, HMM on l2) and the cross-experiment tables."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from regression_records import regression_dict, regression_record

from trainmap.analysis.baselines import BASELINE_COLUMNS, baseline_table, kmeans_bic, select_kmeans
from trainmap.analysis.errors import AnalysisError
from trainmap.analysis.hmm_select import run_folds, split_runs
from trainmap.options import BaselineOptions
from trainmap.analysis.tables import markdown_table, table1, table2, table4, write_tables


def test_kmeans_bic_with_one_cluster_is_a_spherical_gaussian():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(200, 3)) * 2 + 1, rng.normal(size=(50, 3)) * 2 + 1
    got = kmeans_bic(train, test, 1)
    mu = train.mean(axis=0)
    sigma2 = ((train - mu) ** 2).sum() / train.size
    ll = (-0.5 * test.size * math.log(2 * math.pi * sigma2) - ((test - mu) ** 2).sum() / (2 * sigma2))
    assert got["test_loglik"] == pytest.approx(ll)
    assert got["n_params"] == 3 + 0 + 1
    assert got["bic"] == pytest.approx(-2 * ll + 4 * math.log(50))


def blobs(n_runs=10, length=60, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [6, 0], [0, 6]], float)
    return [centres[rng.integers(0, 3, length)] + rng.normal(size=(length, 2)) * 0.5 for _ in range(n_runs)]


def test_kmeans_selection_finds_the_planted_clusters_on_held_out_runs():
    seqs = blobs()
    for folds in (1, 0):  # one split, and the default: 5 folds for 10 runs
        table = select_kmeans(seqs, max_components=6, seed=0, folds=folds)
        assert list(table.columns) == BASELINE_COLUMNS
        assert list(table["n_components"]) == list(range(1, 7))
        assert int(table.loc[table["chosen"], "n_components"].iloc[0]) == 3
    _, test = split_runs(len(seqs), 0.2, 0)
    assert (select_kmeans(seqs, max_components=2, folds=1)["n_test_obs"] == sum(len(seqs[i]) for i in test)).all()
    # Folds: every checkpoint held out once, the log-likelihood summed over the folds.
    table = select_kmeans(seqs, max_components=2)
    assert (table["n_test_obs"] == 10 * 60).all()
    by_fold = [kmeans_bic(np.concatenate([seqs[i] for i in tr]), np.concatenate([seqs[i] for i in te]), 2)
               for tr, te in run_folds(10)]
    assert table["test_loglik"].iloc[1] == pytest.approx(sum(f["test_loglik"] for f in by_fold))


def test_baseline_table_runs_the_l2_hmm_on_the_l2_column_only():
    rng = np.random.default_rng(1)
    seqs = []
    for _ in range(8):
        level = np.repeat([0.0, 4.0], 40)  # l2 has two regimes; the other column is noise
        seqs.append(np.column_stack([rng.normal(size=80), level + rng.normal(size=80) * 0.3]))
    table = baseline_table(seqs, ["noise", "l2"], BaselineOptions(max_components=4, restarts=2))
    assert list(table["method"]) == ["kmeans"] * 4 + ["hmm_l2"] * 4
    hmm = table[table["method"] == "hmm_l2"]
    assert int(hmm.loc[hmm["chosen"], "n_components"].iloc[0]) == 2
    # One feature: n states have (n-1) + n(n-1) + n + n parameters.
    assert list(hmm["n_params"]) == [(n - 1) + n * (n - 1) + 2 * n for n in range(1, 5)]
    with pytest.warns(RuntimeWarning, match="no usable 'l2' column"):
        no_l2 = baseline_table(seqs, ["a", "b"], BaselineOptions(max_components=2, restarts=1))
    assert no_l2[no_l2["method"] == "hmm_l2"]["bic"].isna().all()


def write_experiment(directory, *, r2, p, diss, forking, coefs, hmm_n, hmm_bic, baselines=True, extra=None):
    (directory / "hmm").mkdir(parents=True)
    (directory / "regression.json").write_text(json.dumps(regression_dict(
        n_runs=40, n_states=len(coefs), r2=r2, r2_adjusted=r2 - 0.01, r2_loo=r2 - 0.05,
        p_value=p, dissimilarity=diss, forking=forking, **(extra or {}))))
    pd.DataFrame({"state": range(len(coefs)), "coefficient": coefs, "std_error": 1.0,
                  "runs_visiting": [40] + [20] * (len(coefs) - 1),
                  "detour": [False] + [c > 0 for c in coefs[1:]]}).to_csv(directory / "coefficients.csv", index=False)
    # One split, one parameter: BIC = -2 LL + ln(10).
    pd.DataFrame({"covariance": "full", "n_components": [hmm_n - 1, hmm_n], "fold": 0, "restart": [0, 0],
                  "status": ["ok", "ok"], "best_for_n": True, "chosen": [False, True],
                  "test_loglik": [-(hmm_bic + 10 - math.log(10)) / 2, -(hmm_bic - math.log(10)) / 2],
                  "n_params": 1, "n_test_obs": 10, "bic": [hmm_bic + 10, hmm_bic]}).to_csv(
        directory / "hmm" / "selection.csv", index=False)
    if baselines:
        pd.DataFrame({"method": ["kmeans", "kmeans", "hmm_l2", "hmm_l2"], "n_components": [7, 8, 3, 4],
                      "bic": [103700.0, 103800.0, -14070.0, -14000.0], "chosen": [True, False, True, False],
                      "test_loglik": 0.0, "n_params": 1, "n_test_obs": 1, "error": ""}).to_csv(
            directory / "baselines.csv", index=False)


def test_tables_from_experiment_directories(tmp_path):
    write_experiment(tmp_path / "modular", r2=0.977, p=1e-9, diss=0.496, forking=True,
                     coefs=[-150.0, 980.0, 1190.0], hmm_n=6, hmm_bic=-5724.0,
                     extra={"n_censored": 2, "n_converged": 38, "concordance": 0.81234,
                            "checkpoints_per_run": {"min": 900, "median": 1000.0, "max": 1000},
                            "hmm": {"covariance": "full", "folds": 1, "fits": 40, "failed_fits": 0}})
    write_experiment(tmp_path / "mnist", r2=2.220446049250313e-16, p=0.611, diss=0.063, forking=False,
                     coefs=[10.0, -5.0], hmm_n=6, hmm_bic=-101200.0, baselines=False)
    exps = {"Modular addition": tmp_path / "modular", "MNIST": tmp_path / "mnist"}
    t1 = table1(exps)
    records = t1.to_dict("records")
    assert records[0] == {
        "experiment": "Modular addition", "convergence": "eval_accuracy>0.9", "n_runs": 40, "n_censored": 2,
        "checkpoints": 1000.0, "n_states": 3, "covariance": "full", "r2": 0.977, "r2_adjusted": 0.967,
        "r2_loo": 0.927, "p_value": 1e-9, "concordance": 0.812, "dissimilarity": 0.496, "forking": True,
        "notes": "2 censored"}
    # R² computed as 2.2e-16 is shown (and written) as 0.0; what is unknown is NaN, not 0.
    assert records[1]["r2"] == 0.0 and records[1]["r2_loo"] == -0.05 and np.isnan(records[1]["concordance"])
    assert records[1]["notes"] == "LOO R² < 0" and np.isnan(records[1]["checkpoints"])
    t2 = table2(exps)
    assert list(t2["detour"]) == [False, True, True, False, False]
    with pytest.warns(RuntimeWarning, match="baselines.csv: missing"):
        t4 = table4(exps)
    assert t4[["experiment", "method"]].values.tolist() == [
        ["Modular addition", "kmeans"], ["Modular addition", "hmm_l2"], ["Modular addition", "hmm"], ["MNIST", "hmm"]]
    assert list(t4["components"]) == [7, 3, 6, 6]
    np.testing.assert_allclose(t4["bic"], [103700.0, -14070.0, -5724.0, -101200.0])

    with pytest.warns(RuntimeWarning):
        paths = write_tables(exps, tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == sorted(
        [f"table{i}.{ext}" for i in (1, 2, 4) for ext in ("csv", "md")] + ["summary.md"])
    md1 = (tmp_path / "out" / "table1.md").read_text(encoding="utf-8")
    assert ("| Modular addition | eval_accuracy>0.9 | 40 | 2 | 1000 | 3 | full | 0.977 | 0.967 | 0.927 | < 0.001 "
            "| 0.812 | 0.496 | ✓ | 2 censored |") in md1
    assert "| MNIST | eval_accuracy>0.9 | 40 | 0 | – | 2 |  | 0.000 | -0.010 | -0.050 | 0.611 | – | 0.063 |  | LOO R² < 0 |" in md1
    assert "2.2" not in (tmp_path / "out" / "table1.csv").read_text()
    md2 = (tmp_path / "out" / "table2.md").read_text(encoding="utf-8")
    assert "| **Modular addition** | **2** | **1190** | **20** | **detour** |" in md2
    md4 = (tmp_path / "out" / "table4.md").read_text(encoding="utf-8")
    assert "| Modular addition | k-means | 7 | 103700 |" in md4 and "| MNIST | HMM | 6 | -101200 |" in md4


def test_tables_name_the_missing_file(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(AnalysisError, match="regression.json: missing"):
        table1({"e": tmp_path / "e"})
    with pytest.raises(AnalysisError, match="no experiments"):
        write_tables({}, tmp_path / "out")


def test_markdown_table_formats_and_bolds():
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, np.nan]})
    text = markdown_table(frame.assign(c=["x", ""]), {"b": lambda x: "–" if np.isnan(x) else f"{x:.1f}"}, {"a": "A"},
                          bold_rows=pd.Series([False, True]))
    assert text.splitlines() == ["| A | b | c |", "|---|---|---|", "| 1 | 0.5 | x |", "| **2** | **–** |  |"]  # no "****"


def test_table1_notes_say_when_loo_is_undefined_and_the_largest_size_was_chosen():
    """The notes read the producers' own sentences: a state only one run visits (leverage 1)
    from state_regression, and the largest size tried from the selection's notes."""
    from trainmap.analysis.regression import state_regression
    from trainmap.analysis.summary import table_notes

    occ = pd.DataFrame({0: [0.5, 0.6, 0.4, 0.7, 0.5, 0.6], 1: [0.5, 0.4, 0.6, 0.3, 0.5, 0.1],
                        2: [0.0, 0.0, 0.0, 0.0, 0.0, 0.3]}, index=[f"r{i}" for i in range(6)])
    conv = pd.Series([100.0, 120.0, 90.0, 140.0, 110.0, 400.0], index=occ.index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = state_regression(occ, conv)
    assert np.isnan(res.r2_loo)
    reg = regression_record(n_states=3, r2_loo=res.r2_loo, notes=list(res.notes))
    # The state only r5 visits has no estimable coefficient either (issue 18, "honest numbers").
    assert table_notes(reg) == "LOO R² undefined; unidentifiable coefficients"
    reg.notes.append("the chosen number of states is the largest tried (3): more states may fit better "
                     "(raise hmm max_components)")
    assert table_notes(reg) == "LOO R² undefined; most states tried; unidentifiable coefficients"
    assert table_notes(regression_record(n_states=3, r2_loo=0.5, notes=[])) == ""

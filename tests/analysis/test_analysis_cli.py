"""End to end: the analysis CLI commands on synthetic run directories with a planted detour."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthetic_runs import THRESHOLD, write_synthetic_runs
from trainmap.analysis.hmm_model import load_model, model_from_params, save_model
from trainmap.analysis.regression import dissimilarity, occupancy
from trainmap.cli import main

NAN_RUN, NEVER_RUN = 3, 6


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run every analysis command once, as the workflow would, under results/synth/."""
    root = tmp_path_factory.mktemp("cli")
    exp_dir = root / "results" / "synth"
    exp = write_synthetic_runs(exp_dir / "runs", n_runs=14, n_checkpoints=120, no_biases=True,
                               nan_runs=(NAN_RUN,), never_converge=(NEVER_RUN,), seed=0)
    runs = [str(d) for d in exp.run_dirs]
    hmm, mapd, figs = exp_dir / "hmm", exp_dir / "map", exp_dir / "figures"
    fit = ["--zscore-first-n", str(exp.zscore_first_n), "--max-components", "4", "--restarts", "2", "--no-progress"]
    thr = ["--threshold", str(THRESHOLD)]
    with pytest.warns(RuntimeWarning, match="left out 1 run"):
        assert main(["hmm-select", *runs, "--selection-csv", str(hmm / "selection.csv"), "--model",
                     str(hmm / "model.npz"), "--covariance", "diag", *fit]) == 0
    assert main(["hmm-decode", *runs, "--model", str(hmm / "model.npz"), "--states", str(hmm / "states.csv")]) == 0
    assert main(["regress", *runs, "--states", str(hmm / "states.csv"), "--model", str(hmm / "model.npz"),
                 "--out", str(exp_dir / "regression.json"), "--coefficients", str(exp_dir / "coefficients.csv"),
                 "--convergence-csv", str(exp_dir / "convergence.csv"), *thr]) == 0
    assert main(["map", *runs, "--model", str(hmm / "model.npz"), "--states", str(hmm / "states.csv"),
                 "--regression", str(exp_dir / "regression.json"), "--edges", str(mapd / "edges.csv"),
                 "--figure-dir", str(mapd)]) == 0
    assert main(["baselines", *runs, "--out", str(exp_dir / "baselines.csv"), *fit]) == 0
    assert main(["figures", *runs, "--selection-csv", str(hmm / "selection.csv"), "--states",
                 str(hmm / "states.csv"), "--convergence-csv", str(exp_dir / "convergence.csv"),
                 "--out-dir", str(figs), *thr]) == 0
    return exp, exp_dir, runs


@pytest.mark.slow
def test_selection_and_model_files(pipeline):
    exp, d, _ = pipeline
    sel = pd.read_csv(d / "hmm" / "selection.csv")
    # 13 usable runs: 5 folds over runs × 4 n × 2 restarts, and the chosen n refitted on all runs.
    assert len(sel) == 5 * 4 * 2 + 2 and (sel["status"] == "ok").all()
    assert sorted(sel["fold"].unique()) == [-1, 0, 1, 2, 3, 4]
    chosen = sel[sel["chosen"]].iloc[0]
    assert chosen["n_components"] == 3 and chosen["fold"] == -1  # the planted number of states
    saved = load_model(d / "hmm" / "model.npz")
    assert saved.model.n_components == 3 and saved.model.covariance_type == "diag"
    assert "var_b" not in saved.features and "l2" in saved.features and len(saved.features) == 11
    assert saved.zscore_first_n == exp.zscore_first_n
    assert saved.metadata["excluded_runs"] == [str(NAN_RUN)]
    assert saved.metadata["train_runs"] == [r for r in exp.run_ids if r != str(NAN_RUN)]  # refitted on all
    assert saved.metadata["test_runs"] == []
    assert (saved.metadata["covariance"], saved.metadata["folds"]) == ("diag", 5)
    assert (saved.metadata["fits"], saved.metadata["failed_fits"]) == (42, 0)
    assert any("left out 1 run" in w for w in saved.metadata["warnings"])


def test_decoded_states_recover_the_planted_paths(pipeline):
    exp, d, _ = pipeline
    states = pd.read_csv(d / "hmm" / "states.csv", dtype={"run": str})
    assert list(states.columns) == ["run", "step", "state"]
    assert str(NAN_RUN) not in set(states["run"]) and states["run"].nunique() == 13
    truth = np.concatenate([exp.true_states[r] for r in states["run"].unique()])
    pairs = set(zip(truth, states["state"]))
    assert len(pairs) == 3  # a one-to-one relabelling of the three true states


def state_of(states: pd.DataFrame, exp, true_state: int) -> int:
    run = states["run"].iloc[0]
    first = states[states["run"] == run]
    truth = exp.true_states[run]
    return int(first["state"].to_numpy()[truth == true_state][0]) if (truth == true_state).any() else -1


def test_map_forks_at_the_start_and_marks_the_detour(pipeline):
    exp, d, _ = pipeline
    states = pd.read_csv(d / "hmm" / "states.csv", dtype={"run": str})
    relabel = {}
    for run, g in states.groupby("run"):
        for t, s in zip(exp.true_states[run], g["state"]):
            relabel[int(t)] = int(s)
    init, detour, final = relabel[0], relabel[1], relabel[2]
    edges = pd.read_csv(d / "map" / "edges.csv", dtype={"runs": str})
    assert {(e.source, e.target) for e in edges.itertuples()} == {(init, detour), (detour, final), (init, final)}
    decoded_detour_runs = sorted(r for r in exp.detour_runs if r != str(NAN_RUN))
    via_detour = edges[(edges["source"] == init) & (edges["target"] == detour)].iloc[0]
    assert sorted(via_detour["runs"].split(";")) == decoded_detour_runs
    assert via_detour["n_runs_total"] == 13
    direct = edges[(edges["source"] == init) & (edges["target"] == final)].iloc[0]
    assert via_detour["convergence_mean"] > direct["convergence_mean"]
    assert edges["label"].str.match(r"^\S+ [↑↓]\d+\.\d\d, ").all()
    svg = (d / "map" / "training_map.svg").read_text(encoding="utf-8")
    assert "detour" in svg and "Training map — synth" in svg
    assert (d / "map" / "training_map.png").read_bytes()[:4] == b"\x89PNG"


def test_regression_finds_the_detour_state(pipeline):
    exp, d, _ = pipeline
    reg = json.loads((d / "regression.json").read_text())
    states = pd.read_csv(d / "hmm" / "states.csv", dtype={"run": str})
    detour_state = {int(s) for r in exp.detour_runs if r != str(NAN_RUN)
                    for s, t in zip(states.loc[states["run"] == r, "state"], exp.true_states[r]) if t == 1}
    assert reg["detour_states"] == sorted(detour_state)
    for key in ("n_runs", "n_states", "r2", "r2_adjusted", "r2_loo", "p_value", "dissimilarity", "forking",
                "censored_runs", "n_censored", "n_converged", "cox", "concordance", "notes", "hmm",
                "checkpoints_per_run"):
        assert key in reg
    assert reg["convergence"] == {"column": "eval_accuracy", "direction": "above", "threshold": THRESHOLD,
                                  "text": f"eval_accuracy>{THRESHOLD:g}"}
    assert reg["r2_loo"] < reg["r2_adjusted"] < reg["r2"]
    assert reg["experiment"] == "synth" and reg["n_runs"] == 13 and reg["n_states"] == 3
    assert reg["forking"] is True and reg["unvisited_states"] == []
    assert reg["r2"] > 0.5 and reg["p_value"] < 0.01
    never = str(exp.run_ids[NEVER_RUN])
    assert reg["censored_runs"] == [never] and (reg["n_censored"], reg["n_converged"]) == (1, 12)
    assert reg["n_runs_regression"] == 12  # the OLS leaves the censored run out
    assert reg["cox"]["n_runs"] == 13 and reg["cox"]["n_events"] == 12 and reg["cox"]["fitted"]
    assert 0.5 < reg["concordance"] <= 1
    assert reg["hmm"] == {"covariance": "diag", "folds": 5, "fits": 42, "failed_fits": 0, "failure_reasons": [],
                          "excluded_runs": [str(NAN_RUN)]}
    assert reg["checkpoints_per_run"] == {"min": 120, "median": 120.0, "max": 120}
    by_run = {r["run"]: r for r in reg["runs"]}
    assert by_run[never]["convergence_step"] == exp.steps[-1] and not by_run[never]["converged"]
    for run, step in exp.convergence.items():
        if step is not None and run in by_run:
            assert by_run[run]["convergence_step"] == step
    occ = occupancy({r: g["state"].to_numpy() for r, g in states.groupby("run")}, 3)
    assert reg["dissimilarity"] == pytest.approx(dissimilarity(occ.to_numpy()))
    coef = pd.read_csv(d / "coefficients.csv")
    assert list(coef.columns) == ["state", "coefficient", "std_error", "t_value", "p_value", "level",
                                  "runs_visiting", "mean_occupancy", "identifiable", "note", "detour", "log_hazard",
                                  "hazard_ratio", "hazard_std_error", "hazard_p_value", "hazard_identifiable",
                                  "hazard_note"]
    # The detour slows convergence in both models: positive coefficient, hazard ratio below 1.
    detour_row = coef[coef["detour"]].iloc[0]
    assert detour_row["coefficient"] > 0 and detour_row["hazard_ratio"] < 1
    assert list(coef.loc[coef["detour"], "state"]) == reg["detour_states"]
    conv = pd.read_csv(d / "convergence.csv", dtype={"run": str})
    assert list(conv.columns) == ["run", "convergence_step", "converged", "last_step", "criterion", "first_detour_step"]
    assert len(conv) == 13 and set(conv["criterion"]) == {f"eval_accuracy>{THRESHOLD:g}"}
    by_run = {r["run"]: r for r in reg["runs"]}
    assert all(by_run[r.run]["convergence_step"] == r.convergence_step for r in conv.itertuples())


def test_figures_are_written_as_png_and_svg(pipeline):
    _, d, _ = pipeline
    for name in ("model_selection", "convergence_histogram", "trajectories"):
        assert (d / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        svg = (d / "figures" / f"{name}.svg").read_text(encoding="utf-8")
        assert "<svg" in svg
    assert "synth" in (d / "figures" / "model_selection.svg").read_text(encoding="utf-8")


def test_tables_across_experiments(pipeline, tmp_path):
    _, d, _ = pipeline
    out = tmp_path / "results"
    assert main(["tables", "--experiment", f"modular={d}", "--experiment", f"copy={d}", "--out-dir", str(out)]) == 0
    reg = json.loads((d / "regression.json").read_text())
    t1 = pd.read_csv(out / "table1.csv")
    assert list(t1.columns) == ["experiment", "convergence", "n_runs", "n_censored", "checkpoints", "n_states",
                                "covariance", "r2", "r2_adjusted", "r2_loo", "p_value", "concordance",
                                "dissimilarity", "forking", "notes"]
    assert list(t1["experiment"]) == ["modular", "copy"]
    assert t1.loc[0, "r2"] == round(reg["r2"], 3) and bool(t1.loc[0, "forking"])
    assert t1.loc[0, "r2_loo"] == round(reg["r2_loo"], 3) and t1.loc[0, "convergence"] == reg["convergence"]["text"]
    assert t1.loc[0, "n_censored"] == 1 and t1.loc[0, "notes"] == "1 censored"
    assert t1.loc[0, "concordance"] == round(reg["concordance"], 3) and t1.loc[0, "covariance"] == "diag"
    t2 = pd.read_csv(out / "table2.csv")
    assert list(t2.columns) == ["experiment", "state", "coefficient", "runs_visiting", "detour", "hazard_ratio",
                                "hazard_p_value", "note"]
    assert len(t2) == 6 and list(t2.loc[t2["detour"], "state"]) == reg["detour_states"] * 2
    t4 = pd.read_csv(out / "table4.csv")
    assert list(t4.columns) == ["experiment", "method", "components", "bic"]
    assert list(t4["method"]) == ["kmeans", "hmm_l2", "hmm"] * 2
    assert t4.loc[2, "components"] == 3
    base = pd.read_csv(d / "baselines.csv")
    assert t4.loc[0, "bic"] == pytest.approx(base.loc[(base["method"] == "kmeans") & base["chosen"], "bic"].iloc[0])
    md = (out / "table1.md").read_text(encoding="utf-8")
    assert f"| modular | eval_accuracy>{THRESHOLD:g} | 13 | 1 | 120 | 3 | diag |" in md and "< 0.001" in md
    assert "✓" in md
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| modular | 13 | 120 | 3 | diag | 0 of 42 | 12 | 1 |" in summary
    assert "LOO R²" in md and "adj. R²" in md
    assert "**detour**" in (out / "table2.md").read_text(encoding="utf-8")


def test_unvisited_state_is_reported_not_a_crash(pipeline, tmp_path):
    _, d, runs = pipeline
    saved = load_model(d / "hmm" / "model.npz")
    m = saved.model
    n, dim = m.n_components, m.n_features
    # Add a fourth state far from every checkpoint, unreachable in practice.
    start = np.r_[m.startprob_ * (1 - 1e-9), 1e-9]
    trans = np.zeros((n + 1, n + 1))
    trans[:n, :n] = m.transmat_ * (1 - 1e-9)
    trans[:n, n] = 1e-9
    trans[n] = np.r_[np.zeros(n), 1.0]
    means = np.vstack([m.means_, np.full(dim, 50.0)])
    covars = np.concatenate([m.covars_, np.eye(dim)[None]])
    bigger = model_from_params(start, trans, means, covars, covariance_type="diag")
    save_model(tmp_path / "model.npz", bigger, features=saved.features, zscore_first_n=saved.zscore_first_n)
    st = tmp_path / "states.csv"
    assert main(["hmm-decode", *runs, "--model", str(tmp_path / "model.npz"), "--states", str(st)]) == 0
    with pytest.warns(RuntimeWarning, match="state\\(s\\) 3 visited by no run"):
        assert main(["regress", *runs, "--states", str(st), "--out", str(tmp_path / "r.json"), "--coefficients",
                     str(tmp_path / "c.csv"), "--convergence-csv", str(tmp_path / "conv.csv"), "--model",
                     str(tmp_path / "model.npz"), "--threshold", "0.9"]) == 0
    assert main(["map", *runs, "--model", str(tmp_path / "model.npz"), "--states", str(st), "--regression",
                 str(tmp_path / "r.json"), "--coefficients", str(tmp_path / "c.csv"), "--edges",
                 str(tmp_path / "edges.csv"), "--figure-dir", str(tmp_path), "--threshold", "0.9"]) == 0
    assert "not visited" in (tmp_path / "training_map.svg").read_text(encoding="utf-8")
    reg = json.loads((tmp_path / "r.json").read_text())
    assert reg["n_states"] == 4 and reg["unvisited_states"] == [3]
    coef = pd.read_csv(tmp_path / "c.csv")
    assert np.isnan(coef.loc[3, "coefficient"]) and coef.loc[3, "runs_visiting"] == 0


@pytest.mark.slow
def test_a_missing_convergence_column_stops_regress_with_one_message(pipeline, tmp_path):
    _, d, runs = pipeline
    copies = []
    for run in runs:
        dest = tmp_path / "runs" / Path(run).name
        shutil.copytree(run, dest)
        copies.append(str(dest))
    (Path(copies[1]) / "log.csv").unlink()
    log = pd.read_csv(Path(copies[2]) / "log.csv").drop(columns=["eval_loss"])
    log.to_csv(Path(copies[2]) / "log.csv", index=False)
    out = ["--states", str(d / "hmm" / "states.csv"), "--model", str(d / "hmm" / "model.npz"), "--out",
           str(tmp_path / "r.json"), "--coefficients", str(tmp_path / "c.csv"), "--convergence-csv",
           str(tmp_path / "conv.csv")]
    proc = subprocess.run([sys.executable, "-m", "trainmap.cli", "regress", *copies, *out,
                           "--convergence", "eval_loss<0.5"], capture_output=True, text=True)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]  # run 3's warning aside
    assert len(errors) == 1 and "column 'eval_loss'" in errors[0]
    assert f"run(s) {Path(copies[1]).name}, {Path(copies[2]).name} " in errors[0]
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "conv.csv").exists()
    # A user-defined criterion on loss works end to end, and the outputs name it.
    shutil.copy(Path(runs[1]) / "log.csv", Path(copies[1]) / "log.csv")
    shutil.copy(Path(runs[2]) / "log.csv", Path(copies[2]) / "log.csv")
    assert main(["regress", *copies, *out, "--convergence", "eval_loss<0.5"]) == 0
    reg = json.loads((tmp_path / "r.json").read_text())
    assert reg["convergence"]["text"] == "eval_loss<0.5" and reg["convergence"]["direction"] == "below"
    # map and figures read the criterion; a different one given to them is an error.
    assert main(["figures", *copies, "--selection-csv", str(d / "hmm" / "selection.csv"), "--states",
                 str(d / "hmm" / "states.csv"), "--convergence-csv", str(tmp_path / "conv.csv"),
                 "--out-dir", str(tmp_path / "fig")]) == 0
    assert "eval_loss" in (tmp_path / "fig" / "convergence_histogram.svg").read_text(encoding="utf-8")
    assert main(["map", *copies, "--model", str(d / "hmm" / "model.npz"), "--states", str(d / "hmm" / "states.csv"),
                 "--regression", str(tmp_path / "r.json"), "--edges", str(tmp_path / "e.csv"),
                 "--threshold", "0.9"]) == 2
    assert not (tmp_path / "e.csv").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_thresholds_are_rejected_naming_the_option(value, capsys):
    with pytest.raises(SystemExit):
        main(["regress", "r", "--states", "s", "--model", "m", "--out", "o", "--coefficients", "c",
              "--convergence-csv", "v", "--threshold", value])
    assert "--threshold" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["regress", "r", "--states", "s", "--model", "m", "--out", "o", "--coefficients", "c",
              "--convergence-csv", "v", "--convergence", f"eval_loss<{value}"])
    assert "--convergence" in capsys.readouterr().err


@pytest.mark.slow
def test_user_errors_are_one_line(tmp_path):
    exp = write_synthetic_runs(tmp_path / "runs", n_runs=4, n_checkpoints=20)
    proc = subprocess.run(
        [sys.executable, "-m", "trainmap.cli", "hmm-select", *map(str, exp.run_dirs), "--selection-csv",
         str(tmp_path / "s.csv"), "--model", str(tmp_path / "m.npz"), "--no-progress"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["trainmap hmm-select: error: only 4 usable run(s) of 4: the analysis needs at least 5 runs "
                     "(seeds) of the same setup (config hmm.min_runs, --min-runs); add seeds"]
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "m.npz").exists()

"""Comparisons (config ``compare:``): one HMM over several conditions' runs decodes them into
the same states; per-condition statistics on planted data; the regression with condition
covariates against statsmodels; the CLI's refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from synthetic_runs import CONVERGED, DETOUR, INIT, write_synthetic_runs
from trainmap.io import contracts
from trainmap.analysis import compare as cmp
from trainmap.analysis import stages
from trainmap.analysis.convergence import Criterion
from trainmap.analysis.errors import AnalysisError
from trainmap.analysis.regression import occupancy, state_regression
from trainmap.options import HMMSelectOptions

N_RUNS, N_CHECKPOINTS = 6, 60


def _compare_planted(root, name: str, detour_fractions: dict[str, float]):
    """Planted runs per condition (each taking the detour state in the given fraction of
    seeds), selected, fitted and compared through the stages: (paths, runs, selection,
    regression)."""
    # The same seed: the same shared start, so per-run z-scoring standardises all alike.
    runs = {c: write_synthetic_runs(root / c, N_RUNS, N_CHECKPOINTS, detour_fraction=f, seed=1)
            for c, f in detour_fractions.items()}
    conditions = {c: r.run_dirs for c, r in runs.items()}
    out = contracts.ComparePaths(name, root / "results")
    first_n = next(iter(runs.values())).zscore_first_n
    options = HMMSelectOptions(max_components=4, restarts=2, covariance="diag", zscore_first_n=first_n)
    sel = stages.compare_select(conditions, out.selection_csv, out.model_npz, options)
    crit = Criterion.from_threshold(0.9)
    reg = stages.compare(conditions, {c: crit for c in conditions}, out.model_npz, out.root)
    return out, runs, sel, reg


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Two conditions on the same planted states: `stable` never takes the detour state,
    `unstable` always does; selected, fitted and compared through the stages."""
    out, runs, sel, reg = _compare_planted(tmp_path_factory.mktemp("compare"), "planted",
                                           {"stable": 0.0, "unstable": 1.0})
    truth = {f"{c}/{r}": p for c, run in runs.items() for r, p in run.true_states.items()}
    conv = {f"{c}/{r}": v for c, run in runs.items() for r, v in run.convergence.items()}
    return dict(out=out, sel=sel, reg=reg, truth=truth, conv=conv)


def _true_label(compared) -> dict[int, int]:
    """Decoded state → planted state, by majority over every checkpoint of every run."""
    states = pd.read_csv(compared["out"].states_csv, dtype={contracts.RUN: str})
    votes = {}
    for run, frame in states.groupby(contracts.RUN):
        for decoded, true in zip(frame[contracts.STATE], compared["truth"][run]):
            votes.setdefault(int(decoded), []).append(int(true))
    return {k: int(np.bincount(v).argmax()) for k, v in votes.items()}


def test_both_conditions_are_decoded_into_the_same_states(compared):
    assert compared["sel"].n_components == 3  # the planted three, not one set per condition
    states = pd.read_csv(compared["out"].states_csv, dtype={contracts.RUN: str})
    assert list(states.columns) == [contracts.CONDITION, *contracts.STATES_COLUMNS]
    assert set(states[contracts.CONDITION]) == {"stable", "unstable"}
    assert all(r.startswith(c + "/") for c, r in zip(states[contracts.CONDITION], states[contracts.RUN]))
    label = _true_label(compared)
    # The planted init and converged states are each one decoded state shared by both conditions.
    agree = np.mean([label[int(s)] == compared["truth"][r][i]
                     for r, f in states.groupby(contracts.RUN) for i, s in enumerate(f[contracts.STATE])])
    assert agree > 0.95
    for planted in (INIT, CONVERGED):
        decoded = {k for k, v in label.items() if v == planted}
        for condition in ("stable", "unstable"):
            visited = set(states.loc[states[contracts.CONDITION] == condition, contracts.STATE])
            assert visited & decoded, (condition, planted)


def test_only_the_unstable_condition_visits_the_detour_state(compared):
    occ = pd.read_csv(compared["out"].occupancy_csv)
    label = _true_label(compared)
    detour = [k for k, v in label.items() if v == DETOUR]
    assert detour
    for k in detour:
        row = occ[(occ[contracts.STATE] == k)].set_index(contracts.CONDITION)
        assert row.loc["unstable", "exclusive"] and row.loc["unstable", "runs_visiting"] == N_RUNS
        assert row.loc["stable", "runs_visiting"] == 0 and not row.loc["stable", "exclusive"]
    table = pd.read_csv(compared["out"].table_csv, keep_default_na=False).set_index(contracts.CONDITION)
    assert set(map(int, str(table.loc["unstable", "exclusive_states"]).split())) >= set(detour)
    # Occupancy per condition = mean over its runs of the planted share (decoding ~exact).
    for condition in ("stable", "unstable"):
        planted = np.mean([np.mean(p == DETOUR) for r, p in compared["truth"].items() if r.startswith(condition)])
        measured = sum(table.loc[condition, f"occupancy_{k}"] for k in detour)
        assert measured == pytest.approx(planted, abs=0.03)


def test_transitions_per_condition(compared):
    trans = pd.read_csv(compared["out"].transitions_csv)
    label = _true_label(compared)
    named = {(c, label[s], label[t]): n for c, s, t, n in
             trans[[contracts.CONDITION, "source", "target", "n_runs"]].itertuples(index=False)}
    assert named.get(("stable", INIT, CONVERGED)) == N_RUNS
    assert named.get(("unstable", INIT, DETOUR)) == N_RUNS
    assert named.get(("unstable", DETOUR, CONVERGED)) == N_RUNS
    assert ("stable", INIT, DETOUR) not in named
    assert set(trans["n_runs_total"]) == {N_RUNS}


def test_convergence_per_condition_matches_the_planted_steps(compared):
    table = pd.read_csv(compared["out"].table_csv).set_index(contracts.CONDITION)
    for condition in ("stable", "unstable"):
        steps = [c for r, c in compared["conv"].items() if r.startswith(condition)]
        assert table.loc[condition, "convergence_mean"] == pytest.approx(np.mean(steps))
        assert table.loc[condition, "convergence_sd"] == pytest.approx(np.std(steps, ddof=1))
        assert table.loc[condition, "n_censored"] == 0 and table.loc[condition, "n_runs"] == N_RUNS
    assert table.loc["unstable", "convergence_mean"] > table.loc["stable", "convergence_mean"]


def test_dissimilarity_within_and_between_by_hand(compared):
    states = pd.read_csv(compared["out"].states_csv, dtype={contracts.RUN: str})
    n = int(states[contracts.STATE].max()) + 1
    dist = {r: np.bincount(f[contracts.STATE], minlength=n) / len(f) for r, f in states.groupby(contracts.RUN)}
    runs = {c: [r for r in dist if r.startswith(c + "/")] for c in ("stable", "unstable")}
    tv = lambda a, b: 0.5 * np.abs(dist[a] - dist[b]).sum()  # noqa: E731
    expect = {("stable", "stable"): np.mean([tv(a, b) for i, a in enumerate(runs["stable"]) for b in runs["stable"][i + 1:]]),
              ("unstable", "unstable"): np.mean([tv(a, b) for i, a in enumerate(runs["unstable"])
                                                 for b in runs["unstable"][i + 1:]]),
              ("stable", "unstable"): np.mean([tv(a, b) for a in runs["stable"] for b in runs["unstable"]])}
    got = pd.read_csv(compared["out"].dissimilarity_csv)
    for a, b, d in got.itertuples(index=False):
        assert d == pytest.approx(expect[(a, b)])
    assert expect[("stable", "unstable")] > max(expect[("stable", "stable")], expect[("unstable", "unstable")])


def test_outputs_and_markdown(compared):
    out = compared["out"]
    for path in out.outputs:
        assert path.is_file() and path.stat().st_size > 0, path
    md = out.table_md.read_text()
    assert "| stable |" in md and "| unstable |" in md and "condition[unstable]" in md
    svg = out.map_svg.read_text()
    assert "stable 6/6" in svg and "unstable 6/6" in svg
    reg = json.loads(out.regression_json.read_text())
    assert reg["conditions"].keys() == {"stable", "unstable"} and len(reg["covariates"]) == 1
    assert contracts.CompareRecord.read(out.regression_json).to_dict().keys() == reg.keys()


def test_markdown_says_why_a_condition_has_no_coefficient(compared):
    """A condition none of whose runs converged (the grokking setup cut short) has no
    coefficient: the table says so, and that the regression then speaks of one condition."""
    from types import SimpleNamespace

    table = pd.read_csv(compared["out"].table_csv, keep_default_na=False)
    table.loc[table[contracts.CONDITION] == "unstable", ["n_converged", "n_censored"]] = [0, N_RUNS]
    dissim = pd.read_csv(compared["out"].dissimilarity_csv)
    regression = SimpleNamespace(n_runs=N_RUNS, r2=0.9, r2_loo=0.8, states=[],
                                 covariates=[{"covariate": "condition[unstable]", "coefficient": np.nan, "p_value": np.nan}])
    md = cmp.table_markdown("planted", table, dissim, regression, {"stable": "x", "unstable": "x"}, 3)
    assert "- condition[unstable]: not estimable, no run of unstable converged" in md
    assert "Only stable has converged runs" in md
    table.loc[table[contracts.CONDITION] == "unstable", ["n_converged", "n_censored"]] = [N_RUNS, 0]
    md = cmp.table_markdown("planted", table, dissim, regression, {"stable": "x", "unstable": "x"}, 3)
    assert "collinear" in md and "Only stable" not in md


def test_regression_with_covariates_matches_statsmodels():
    """The occupancy OLS with condition indicators: levels, covariate coefficient and its
    standard error against statsmodels' own fit of the same design with an explicit
    intercept (one state dropped as reference)."""
    import statsmodels.api as sm

    rng = np.random.default_rng(3)
    n, k = 30, 3
    occ = pd.DataFrame(rng.dirichlet(np.ones(k), size=n), index=[f"r{i}" for i in range(n)])
    cond = pd.DataFrame({"condition[b]": (np.arange(n) % 2).astype(float)}, index=occ.index)
    y = pd.Series(100 + occ.to_numpy() @ np.array([0.0, 80.0, 200.0]) + 40 * cond["condition[b]"].to_numpy()
                  + rng.normal(0, 5, n), index=occ.index)
    fit = state_regression(occ, y, covariates=cond)
    # statsmodels: intercept + states 1, 2 (state 0 the reference) + indicator.
    X = sm.add_constant(np.column_stack([occ[[1, 2]].to_numpy(), cond.to_numpy()]))
    ref = sm.OLS(y.to_numpy(), X).fit()
    row = fit.covariates.iloc[0]
    assert row["covariate"] == "condition[b]"
    assert row["coefficient"] == pytest.approx(ref.params[3], rel=1e-8)
    assert row["std_error"] == pytest.approx(ref.bse[3], rel=1e-6)
    assert row["p_value"] == pytest.approx(ref.pvalues[3], rel=1e-6)
    assert fit.r2 == pytest.approx(ref.rsquared, rel=1e-8)
    levels = fit.coefficients["level"].to_numpy()
    # level_k − level_0 is statsmodels' state-k coefficient.
    assert levels[1] - levels[0] == pytest.approx(ref.params[1], rel=1e-8)
    assert levels[2] - levels[0] == pytest.approx(ref.params[2], rel=1e-8)
    assert row["coefficient"] == pytest.approx(40, abs=10)
    # Without covariates the result is what it was.
    plain = state_regression(occ, y)
    assert plain.covariates.empty and plain.r2 < fit.r2


def test_condition_statistics_by_hand():
    paths = {"a/0": np.array([0, 0, 1, 1]), "a/1": np.array([0, 1, 1, 1]), "b/0": np.array([0, 2, 2, 1])}
    of = cmp.condition_of(list(paths))
    assert of == {"a/0": "a", "a/1": "a", "b/0": "b"}
    occ = cmp.occupancy_table(paths, of, 3).set_index([contracts.CONDITION, contracts.STATE])
    assert occ.loc[("a", 1), "mean_occupancy"] == pytest.approx((0.5 + 0.75) / 2)
    assert occ.loc[("b", 2), "exclusive"] and not occ.loc[("a", 0), "exclusive"]
    trans = cmp.transition_table(paths, of)
    assert trans.values.tolist() == [["a", 0, 1, 2, 2, 2], ["b", 0, 2, 1, 1, 1], ["b", 2, 1, 1, 1, 1]]
    conv = pd.DataFrame({"convergence_step": [10.0, 30.0, 50.0], "converged": [True, True, False]},
                        index=list(paths))
    summary = cmp.convergence_summary(conv, of).set_index(contracts.CONDITION)
    assert summary.loc["a", "convergence_mean"] == 20 and summary.loc["a", "convergence_sd"] == pytest.approx(np.sqrt(200))
    assert summary.loc["b", "n_censored"] == 1 and np.isnan(summary.loc["b", "convergence_mean"])


@pytest.mark.slow  # several CLI processes
def test_bad_conditions_are_refused(tmp_path):
    with pytest.raises(AnalysisError, match="at least two conditions"):
        cmp.condition_runs({"a": ["x"]})
    with pytest.raises(AnalysisError, match="'a/b'"):
        cmp.check_name("a/b", "condition")
    result = subprocess.run([sys.executable, "-m", "trainmap.cli", "compare", "--condition", "a", str(tmp_path),
                             "--condition", "b", str(tmp_path), "--convergence", "a", "eval_accuracy>0.9",
                             "--model", str(tmp_path / "m.npz"), "--out-dir", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "no convergence criterion for condition(s) b" in result.stderr


# --- how early the map knows -----------------------------------------------------------------

@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """One planted experiment (half the runs take the detour) through hmm-select, hmm-decode,
    regress and early."""
    root = tmp_path_factory.mktemp("early")
    exp = write_synthetic_runs(root / "runs", 12, 60, detour_fraction=0.5, seed=4)
    out = contracts.ExperimentPaths("planted", root / "results")
    options = HMMSelectOptions(max_components=4, restarts=2, covariance="diag", zscore_first_n=exp.zscore_first_n)
    stages.hmm_select(exp.run_dirs, out.selection_csv, out.model_npz, options)
    stages.hmm_decode(exp.run_dirs, out.model_npz, out.states_csv)
    from trainmap.options import RegressOptions

    reg = stages.regress(exp.run_dirs, out.states_csv, out.model_npz, out.regression_json, out.coefficients_csv,
                         out.convergence_csv, RegressOptions(convergence=Criterion.from_threshold(0.9)))
    table = stages.early(exp.run_dirs, out.model_npz, out.convergence_csv, out.early_csv, out.figures_dir / "early",
                         experiment="planted")
    return dict(exp=exp, out=out, reg=reg, table=table)


def test_prefix_cuts_at_the_share_of_training():
    from trainmap.analysis.early import prefix
    from trainmap.analysis.runs import Run

    metrics = pd.DataFrame({"step": np.arange(0, 1000, 10), "l2": np.arange(100.0)})
    run = Run(run_id="r", path=None, metrics=metrics, log=None)
    assert len(prefix(run, 100).metrics) == 100
    assert prefix(run, 50).metrics["step"].iloc[-1] == 490  # steps up to 0 + 0.5 * 990 = 495
    assert len(prefix(run, 0).metrics) == 2  # at least two checkpoints


def test_prefix_regression_on_planted_runs(analysed):
    table, reg = analysed["table"], analysed["reg"]
    assert list(table.columns) == ["percent", "n_runs", "n_converged", "mean_checkpoints", "r2", "r2_loo", "concordance"]
    assert list(table["percent"]) == list(range(10, 101, 10)) and set(table["n_runs"]) == {12}
    full = table[table["percent"] == 100].iloc[0]
    # The whole run: exactly regress's regression.
    assert full["r2_loo"] == pytest.approx(reg.r2_loo) and full["r2"] == pytest.approx(reg.r2)
    assert full["concordance"] == pytest.approx(reg.concordance)
    assert full["mean_checkpoints"] == 60
    # At 10 % every run is still in the planted init state: nothing to predict from.
    first = table[table["percent"] == 10].iloc[0]
    assert not (first["r2_loo"] >= 0.5)
    # The detour begins between 1/6 and 1/4 of training and lasts 1/5 to 1/3 of it: by half
    # of training the prefix tells detour runs from the others.
    half = table[table["percent"] == 50].iloc[0]
    assert half["r2_loo"] > 0.5 and half["concordance"] > 0.8
    from trainmap.analysis.early import early_sentence, first_useful

    k = first_useful(table)
    assert k is not None and 10 < k <= 50
    assert early_sentence(table).startswith(f"by {k:g} % of training the map predicts convergence with LOO R²")
    for ext in ("png", "svg"):
        assert analysed["out"].figure("early", ext).stat().st_size > 0


def test_a_curve_that_falls_back_below_the_level_gives_no_early_answer():
    """The quick preset's parities (8 runs, 6 states, 2 residual degrees of freedom) gave this
    curve: LOO R² 0.97 at 80 % but -28.7 at 90 % and 0.17 at full length. Claiming "by 80 %"
    from it would tell a reader the map knows early when nothing does."""
    from trainmap.analysis.early import early_sentence, first_useful

    loo = [np.nan, 0.24, 0.14, -1.11, 0.07, -6.97, -0.40, 0.97, -28.66, 0.17]
    table = pd.DataFrame({"percent": range(10, 101, 10), "r2_loo": loo, "concordance": 0.9})
    assert first_useful(table) is None
    assert early_sentence(table) == (
        "the map's prediction of convergence is not stable over training: LOO R² reaches 0.5 at 80 % but is "
        "-28.66 at 90 %, so no prefix can be trusted (too few runs for the states: see the warnings)")
    steady = table.assign(r2_loo=[np.nan, 0.2, 0.3, 0.4, 0.6, 0.55, 0.7, 0.8, 0.8, 0.9])
    assert first_useful(steady) == 50
    assert early_sentence(steady) == ("by 50 % of training the map predicts convergence with LOO R² 0.60 "
                                      "(concordance 0.90), and stays at least 0.5 to the end")
    never = table.assign(r2_loo=[np.nan] * 10)
    assert early_sentence(never) == ("the map's prediction of convergence never reaches LOO R² 0.5 (best undefined, "
                                     "at full length included)")


def test_first_detour_step_in_convergence_csv(analysed):
    exp, out, reg = analysed["exp"], analysed["out"], analysed["reg"]
    conv = pd.read_csv(out.convergence_csv, dtype={"run": str}).set_index("run")
    assert "first_detour_step" in conv.columns and reg.detour_states
    for run in exp.run_ids:
        truth = exp.true_states[run]
        if run in exp.detour_runs:
            planted = exp.steps[np.argmax(truth == DETOUR)]
            assert abs(conv.loc[run, "first_detour_step"] - planted) <= 10  # one checkpoint
        else:
            assert np.isnan(conv.loc[run, "first_detour_step"])


def test_summary_states_how_early(analysed):
    from trainmap.analysis.summary import render_summary

    text = render_summary({"planted": analysed["out"].root})
    assert "## How early the map knows" in text and "**planted**: by " in text


# --- how early the conditions differ (a comparison's early.csv) --------------------------

def _prefix_statistics_by_hand(out, percent):
    """Within-condition dissimilarity and occupancy shift of the prefixes, from
    :func:`~trainmap.analysis.early.prefix_paths` and numpy alone."""
    from trainmap.analysis.early import prefix_paths
    from trainmap.analysis.hmm_model import load_model
    from trainmap.analysis.runs import load_runs

    saved = load_model(out.model_npz)
    n = int(saved.model.n_components)
    record = contracts.CompareRecord.read(out.regression_json)
    runs, _ = cmp.condition_runs({c: _run_dirs(out, c) for c in record.conditions})
    paths = prefix_paths(runs, saved, percent)
    dist = {r: np.bincount(p, minlength=n) / len(p) for r, p in paths.items()}
    result = {}
    for c in record.conditions:
        mine = [r for r in dist if r.startswith(c + "/")]
        others = [r for r in dist if not r.startswith(c + "/")]
        within = np.mean([0.5 * np.abs(dist[a] - dist[b]).sum() for i, a in enumerate(mine) for b in mine[i + 1:]])
        shift = 0.5 * np.abs(np.mean([dist[r] for r in mine], axis=0) - np.mean([dist[r] for r in others], axis=0)).sum()
        result[c] = (within, shift)
    return result


def _run_dirs(out, condition):
    """The run directories the fixtures wrote for ``condition`` (beside ``results/``)."""
    return sorted(p for p in (out.results.parent / condition).iterdir() if p.is_dir())


def test_early_differences_by_hand(compared):
    out = compared["out"]
    early = pd.read_csv(out.early_csv)
    assert tuple(early.columns) == cmp.EARLY_COMPARE_COLUMNS
    assert sorted(set(early["percent"])) == list(range(10, 101, 10))
    for percent in (20, 50, 100):
        expect = _prefix_statistics_by_hand(out, percent)
        rows = early[early["percent"] == percent].set_index(contracts.CONDITION)
        for c, (within, shift) in expect.items():
            assert rows.loc[c, "dissimilarity_within"] == pytest.approx(within)
            assert rows.loc[c, "occupancy_shift"] == pytest.approx(shift)
    # At full length the prefixes are the runs: the comparison's own dissimilarity.
    full = early[early["percent"] == 100].set_index(contracts.CONDITION)
    dissim = pd.read_csv(out.dissimilarity_csv)
    for d in dissim[dissim.condition_a == dissim.condition_b].itertuples(index=False):
        assert full.loc[d.condition_a, "dissimilarity_within"] == pytest.approx(d.dissimilarity)
    table = pd.read_csv(out.table_csv).set_index(contracts.CONDITION)
    for c in ("stable", "unstable"):
        assert (early[early[contracts.CONDITION] == c]["convergence_sd"] == table.loc[c, "convergence_sd"]).all()


@pytest.fixture(scope="module")
def mixed_against_stable(tmp_path_factory):
    """`stable` never takes the detour; in `mixed` half the seeds do (and converge later)."""
    out, _, _, _ = _compare_planted(tmp_path_factory.mktemp("sweep"), "sweep", {"mixed": 0.5, "stable": 0.0})
    return out


def test_a_condition_whose_seeds_disagree_ranks_below_one_whose_seeds_agree(mixed_against_stable):
    out = mixed_against_stable
    early = pd.read_csv(out.early_csv)
    late = early[early["percent"] >= 60].set_index(["percent", contracts.CONDITION])
    for percent in range(60, 101, 10):
        assert late.loc[(percent, "stable"), "rank"] == 1 and late.loc[(percent, "mixed"), "rank"] == 2
        assert late.loc[(percent, "mixed"), "dissimilarity_within"] > late.loc[(percent, "stable"), "dissimilarity_within"]
    table = pd.read_csv(out.table_csv).set_index(contracts.CONDITION)
    assert table.loc["mixed", "convergence_sd"] > table.loc["stable", "convergence_sd"]
    assert cmp.stability_order(table.reset_index()) == ["stable", "mixed"]
    md = out.table_md.read_text()
    assert f"## Predicted stability from the first {cmp.RANK_PERCENT} % of training" in md
    at = early[early["percent"] == cmp.RANK_PERCENT].sort_values("rank")
    predicted = ", ".join(at[contracts.CONDITION])
    verdict = "the same order" if predicted == "stable, mixed" else "a different order: stable, mixed"
    assert f"Sorted by early dissimilarity (most stable first): {predicted}; the runs' outcome gives {verdict}" in md


def test_stability_order_puts_never_converged_runs_before_spread():
    summary = pd.DataFrame({contracts.CONDITION: ["a", "b", "c"], "n_runs": [4, 4, 4], "n_censored": [1, 0, 0],
                            "convergence_sd": [1.0, 50.0, 20.0]})
    assert cmp.stability_order(summary) == ["c", "b", "a"]

"""Bag-of-states regression (against statsmodels and hand computations), detours, dissimilarity."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.optimize import linprog

from trainmap.analysis.regression import (
    dissimilarity,
    occupancy,
    state_regression,
    total_variation,
)


def planted_occupancy(n_runs: int = 40, seed: int = 0):
    """Occupancies of 5 states and convergence steps with known effects.

    state 0: every run, starting state; state 1: detour (half the runs, slows convergence);
    state 2: shortcut (some runs, speeds convergence); state 3: every run, final state, and
    state 4 visited by nobody.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_runs):
        w = np.zeros(5)
        w[0] = rng.uniform(0.1, 0.3)
        if r % 2 == 0:
            w[1] = rng.uniform(0.1, 0.4)
        if r % 3 == 0:
            w[2] = rng.uniform(0.05, 0.2)
        w[3] = 1.0 - w.sum()
        rows.append(w)
    occ = pd.DataFrame(rows, index=[str(1000 + r) for r in range(n_runs)], columns=range(5))
    level = np.array([9000.0, 20000.0, 1000.0, 3000.0, 0.0])  # convergence step if all time in k
    y = occ.to_numpy() @ level + rng.normal(0, 300, n_runs)
    return occ, pd.Series(y, index=occ.index)


def test_regression_matches_statsmodels_and_flags_the_planted_detour():
    occ, y = planted_occupancy()
    with pytest.warns(RuntimeWarning, match="state\\(s\\) 4 visited by no run"):
        res = state_regression(occ, y)

    design = [0, 1, 2, 3]
    X = occ[design].to_numpy()
    # Independent parametrisation: intercept + the first K'-1 states (state 3 is the reference).
    ref = sm.OLS(y.to_numpy(), sm.add_constant(X[:, :-1])).fit()
    assert res.r2 == pytest.approx(ref.rsquared, rel=1e-10)
    assert res.p_value == pytest.approx(ref.f_pvalue, rel=1e-8)
    assert res.f_statistic == pytest.approx(ref.fvalue, rel=1e-8)
    assert (res.df_model, res.df_resid) == (int(ref.df_model), int(ref.df_resid))
    np.testing.assert_allclose(res.fitted.to_numpy(), ref.fittedvalues, rtol=1e-9)

    # Levels: no-intercept least squares (numpy), and const + gamma_k in statsmodels' terms.
    levels, *_ = np.linalg.lstsq(X, y.to_numpy(), rcond=None)
    coef = res.coefficients.set_index("state")
    np.testing.assert_allclose(coef.loc[design, "level"], levels, rtol=1e-9)
    const, gammas = ref.params[0], ref.params[1:]
    np.testing.assert_allclose(coef.loc[design, "level"], np.r_[const + gammas, const], rtol=1e-8)

    # Coefficient = level - mean step, with the standard error statsmodels gives that contrast.
    xbar = X.mean(axis=0)
    assert res.intercept == pytest.approx(y.mean())
    np.testing.assert_allclose(coef.loc[design, "coefficient"], levels - y.mean(), rtol=1e-8, atol=1e-6)
    contrasts = np.zeros((4, 4))
    for k in range(4):
        e = np.zeros(4)
        e[k] = 1.0
        contrasts[k, 1:] = (e - xbar)[:3]  # c_k = (e_k - xbar)^T beta in gamma terms; const cancels
    tt = ref.t_test(contrasts)
    np.testing.assert_allclose(coef.loc[design, "coefficient"], tt.effect, rtol=1e-8, atol=1e-6)
    np.testing.assert_allclose(coef.loc[design, "std_error"], tt.sd.ravel(), rtol=1e-8)
    np.testing.assert_allclose(coef.loc[design, "p_value"], tt.pvalue.ravel(), rtol=1e-6, atol=1e-300)

    # Detours: the planted detour state only. The shortcut (negative) is not one, and states
    # visited by every run never are, whatever their sign.
    assert res.detour_states == [1]
    assert coef.loc[0, "coefficient"] > 0 and not coef.loc[0, "detour"]
    assert coef.loc[2, "coefficient"] < 0 and not coef.loc[2, "detour"]
    assert coef.loc[1, "runs_visiting"] == 20 and coef.loc[0, "runs_visiting"] == 40
    # The unvisited state is reported, not a crash.
    assert res.unvisited_states == [4]
    assert np.isnan(coef.loc[4, "coefficient"]) and coef.loc[4, "runs_visiting"] == 0
    assert not coef.loc[4, "detour"]
    assert res.p_value < 1e-6 and res.r2 > 0.9


def test_regression_leaves_out_runs_without_convergence_and_handles_no_data():
    occ, y = planted_occupancy(n_runs=12)
    y.iloc[[0, 5]] = np.nan
    with pytest.warns(RuntimeWarning, match="without a convergence step"):
        res = state_regression(occ, y)
    assert res.n_runs == 10 and len(res.fitted) == 10

    with pytest.warns(RuntimeWarning, match="no run has a defined convergence step"):
        empty = state_regression(occ, pd.Series(np.nan, index=occ.index))
    assert np.isnan(empty.r2) and np.isnan(empty.p_value) and empty.detour_states == []
    assert empty.n_runs == 0
    assert list(empty.coefficients["runs_visiting"]) == list((occ > 0).sum())


def test_single_state_regression_has_no_f_test():
    occ = pd.DataFrame({0: np.ones(6)}, index=list("abcdef"))
    res = state_regression(occ, pd.Series([1.0, 2, 3, 4, 5, 6], index=occ.index))
    assert res.r2 == pytest.approx(0.0) and np.isnan(res.p_value)
    assert res.detour_states == []


def test_adjusted_and_leave_one_out_r2_against_a_hand_computation():
    occ, y = planted_occupancy(n_runs=15, seed=3)
    with pytest.warns(RuntimeWarning, match="visited by no run"):
        res = state_regression(occ, y)
    X, yv = occ[[0, 1, 2, 3]].to_numpy(), y.to_numpy()
    n, p = X.shape  # the constant is in the span: p = 4 parameters, 3 of them beyond the mean
    beta, *_ = np.linalg.lstsq(X, yv, rcond=None)
    sst = ((yv - yv.mean()) ** 2).sum()
    r2 = 1 - ((yv - X @ beta) ** 2).sum() / sst
    assert res.r2 == pytest.approx(r2, rel=1e-10)
    assert res.r2_adjusted == pytest.approx(1 - (1 - r2) * (n - 1) / (n - p), rel=1e-10)
    # Leave-one-out by brute force: refit without run r, predict run r.
    press = 0.0
    for r in range(n):
        keep = np.arange(n) != r
        b, *_ = np.linalg.lstsq(X[keep], yv[keep], rcond=None)
        press += (yv[r] - X[r] @ b) ** 2
    assert res.r2_loo == pytest.approx(1 - press / sst, rel=1e-9)
    assert res.r2_loo < res.r2_adjusted < res.r2
    summary = res.to_dict()
    assert summary["r2_adjusted"] == res.r2_adjusted and summary["r2_loo"] == res.r2_loo


def test_leave_one_out_r2_is_undefined_when_a_run_alone_visits_a_state():
    occ = pd.DataFrame({0: [1.0, 0.6, 0.7, 0.8, 0.5, 0.9], 1: [0.0, 0.4, 0.3, 0.2, 0.5, 0.1],
                        2: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}, index=list("abcdef"))
    occ.loc["a", 2], occ.loc["a", 0] = 0.3, 0.7
    res = state_regression(occ, pd.Series([10.0, 14, 13, 12, 15, 11], index=occ.index))
    assert np.isfinite(res.r2) and np.isnan(res.r2_loo)
    assert any("leave-one-out" in note and "a" in note for note in res.notes)


def test_occupancy_is_the_empirical_state_distribution():
    occ = occupancy({"r1": np.array([0, 0, 1, 1]), "r2": np.array([2, 2, 2, 0])}, 4)
    np.testing.assert_allclose(occ.loc["r1"], [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(occ.loc["r2"], [0.25, 0.0, 0.75, 0.0])
    with pytest.raises(ValueError, match="outside"):
        occupancy({"r": np.array([0, 5])}, 4)


def test_dissimilarity_hand_computed_cases():
    assert dissimilarity(np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(1.0)
    assert dissimilarity(np.array([[0.3, 0.7], [0.3, 0.7], [0.3, 0.7]])) == pytest.approx(0.0)
    # Pairs: TV(p1, p2) = 0.5, TV(p1, p3) = 1, TV(p2, p3) = 1.
    three = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert dissimilarity(three) == pytest.approx(2.5 / 3)
    # Label-invariant: permuting the states changes nothing.
    assert dissimilarity(three[:, [2, 0, 1]]) == pytest.approx(2.5 / 3)
    assert np.isnan(dissimilarity(np.array([[1.0, 0.0]])))


def test_total_variation_is_wasserstein_1_under_the_discrete_metric():
    rng = np.random.default_rng(0)
    K = 5
    cost = 1.0 - np.eye(K)
    for _ in range(5):
        p, q = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K))
        # Optimal transport as a linear programme: plan P >= 0 with marginals p and q.
        a_eq = np.vstack([np.kron(np.eye(K), np.ones(K)), np.kron(np.ones(K), np.eye(K))])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lp = linprog(cost.ravel(), A_eq=a_eq, b_eq=np.r_[p, q], bounds=(0, None), method="highs")
        assert lp.status == 0
        assert total_variation(p, q) == pytest.approx(lp.fun, abs=1e-9)

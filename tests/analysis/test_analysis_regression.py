"""Bag-of-states regression (against statsmodels and hand computations), detours, dissimilarity."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.optimize import linprog

from trainmap.analysis.regression import (
    COX_PENALTY,
    concordance_index,
    cox_regression,
    dissimilarity,
    estimable,
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
    with pytest.warns(RuntimeWarning, match="without a convergence step \\(censored\\)"):
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


def test_coefficients_the_data_cannot_identify_are_reported_with_the_reason_not_as_numbers():
    rng = np.random.default_rng(0)
    n = 12
    # States 1 and 2 always hold the same share: their columns are equal (rank deficient).
    a = rng.uniform(0.2, 0.6, n)
    occ = pd.DataFrame({0: a, 1: (1 - a) / 2, 2: (1 - a) / 2, 3: 0.0}, index=[f"r{i}" for i in range(n)])
    # State 3 is visited by run r0 only.
    occ.loc["r0", 3], occ.loc["r0", 0] = 0.1, occ.loc["r0", 0] - 0.1
    y = pd.Series(1000 * occ[0] + 3000 * occ[1] + 500 * occ[3] + rng.normal(0, 10, n), index=occ.index)
    res = state_regression(occ, y)
    coef = res.coefficients.set_index("state")
    assert coef.loc[0, "identifiable"] and np.isfinite(coef.loc[0, "coefficient"]) and coef.loc[0, "note"] == ""
    for k in (1, 2):
        assert not coef.loc[k, "identifiable"] and np.isnan(coef.loc[k, "coefficient"])
        assert coef.loc[k, "note"] == "not estimable: the occupancy design is rank deficient"
    assert coef.loc[3, "note"] == "visited by one run only" and np.isnan(coef.loc[3, "coefficient"])
    assert not coef["detour"].any()
    assert any("not identifiable" in note for note in res.notes)
    # As many states as runs: nothing is identifiable (the fit interpolates the runs).
    few = pd.DataFrame({0: [0.5, 0.2, 0.7], 1: [0.5, 0.3, 0.1], 2: [0.0, 0.5, 0.2]}, index=list("abc"))
    res = state_regression(few, pd.Series([100.0, 300.0, 200.0], index=few.index))
    assert not res.coefficients["identifiable"].any() and res.coefficients["coefficient"].isna().all()
    assert set(res.coefficients["note"]) == {"no residual degrees of freedom (as many states as runs)"}


def test_estimable_is_membership_of_the_row_space():
    X = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.25, 0.25]])
    assert estimable(X, np.array([1.0, 0.0, 0.0])) and estimable(X, np.array([0.0, 1.0, 1.0]))
    assert not estimable(X, np.array([0.0, 1.0, 0.0]))


def _breslow_loglik(beta, X, time, event):
    """The Breslow partial log-likelihood, written out: for each distinct event time, the
    events' linear predictors minus d·log Σ_{at risk} exp(xβ)."""
    eta = X @ beta
    total = 0.0
    for t in np.unique(time[event == 1]):
        dead = (time == t) & (event == 1)
        at_risk = time >= t
        total += eta[dead].sum() - dead.sum() * np.log(np.exp(eta[at_risk]).sum())
    return total


def test_cox_model_matches_a_hand_written_penalised_partial_likelihood():
    from scipy.optimize import minimize

    rng = np.random.default_rng(4)
    n = 30
    occ = pd.DataFrame(rng.dirichlet([2.0, 2.0, 2.0], size=n), index=[f"r{i}" for i in range(n)])
    # State 1 slows convergence (lower hazard), state 2 speeds it; ties on a step grid.
    rate = np.exp(-3.0 * occ[1] + 1.5 * occ[2])
    time = pd.Series(np.ceil(rng.exponential(1 / rate) * 10) * 100, index=occ.index)
    converged = pd.Series(rng.uniform(size=n) > 0.25, index=occ.index)
    res = cox_regression(occ, time, converged)
    assert res.fitted and (res.n_events, res.n_censored) == (int(converged.sum()), n - int(converged.sum()))

    # The same model by hand: reference = the most occupied state, penalty on the contrasts.
    X_all = occ.to_numpy()
    ref = int(np.argmax(X_all.mean(axis=0)))
    assert res.reference_state == ref
    others = [k for k in range(3) if k != ref]
    xbar = X_all.mean(axis=0)

    def contrasts(b):
        full = np.zeros(3)
        full[others] = b
        return full - xbar @ full

    def objective(b):
        return -(_breslow_loglik(b, X_all[:, others], time.to_numpy(), converged.to_numpy().astype(int))
                 - 0.5 * COX_PENALTY * (contrasts(b) ** 2).sum())

    hand = contrasts(minimize(objective, np.zeros(2), method="BFGS", options={"gtol": 1e-9}).x)
    coef = res.coefficients.set_index("state")
    np.testing.assert_allclose(coef["log_hazard"], hand, atol=1e-5)
    np.testing.assert_allclose(coef["hazard_ratio"], np.exp(hand), rtol=1e-5)
    # The penalty is weak: unpenalised, statsmodels' PHReg gives nearly the same contrasts.
    from statsmodels.duration.hazard_regression import PHReg

    plain = PHReg(time.to_numpy(), X_all[:, others], status=converged.to_numpy().astype(int), ties="breslow").fit()
    np.testing.assert_allclose(coef["log_hazard"], contrasts(plain.params), rtol=0.05)
    # The planted directions: state 1 slows convergence (hazard ratio below 1), state 2 speeds it.
    assert coef.loc[1, "hazard_ratio"] < 1 < coef.loc[2, "hazard_ratio"]
    # Concordance of the fitted linear predictor, as concordance_index computes it.
    b = np.log(coef["hazard_ratio"].to_numpy())
    assert res.concordance == pytest.approx(concordance_index(time, converged, X_all @ b))
    assert 0.5 < res.concordance <= 1


def test_concordance_index_by_hand():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 1, 0, 1])
    # Comparable pairs (earlier time is an event): (1,2),(1,3),(1,4),(2,3),(2,4) = 5; (3,4) is not.
    assert concordance_index(time, event, np.array([4.0, 3.0, 2.0, 1.0])) == 1.0
    assert concordance_index(time, event, np.array([1.0, 2.0, 3.0, 4.0])) == 0.0
    # risk 4,1,2,1: (1,2) (1,3) (1,4) concordant, (2,3) discordant, (2,4) tied: 3.5 of 5.
    assert concordance_index(time, event, np.array([4.0, 1.0, 2.0, 1.0])) == pytest.approx(3.5 / 5)
    assert np.isnan(concordance_index(time, np.zeros(4), time))


def test_cox_model_under_separation_and_with_too_few_events():
    occ = pd.DataFrame({0: [0.9, 0.8, 0.7, 0.3, 0.2, 0.1], 1: [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]}, index=list("abcdef"))
    time = pd.Series([100.0, 200, 300, 400, 500, 600], index=occ.index)  # state 1 orders them perfectly
    res = cox_regression(occ, time, pd.Series(True, index=occ.index))
    coef = res.coefficients.set_index("state")
    assert res.fitted and np.isfinite(coef["hazard_ratio"]).all()
    assert coef.loc[1, "hazard_ratio"] < 1 < coef.loc[0, "hazard_ratio"]  # the direction is kept
    assert any("separation" in note for note in res.notes)
    one = cox_regression(occ, time, pd.Series([True] + [False] * 5, index=occ.index))
    assert not one.fitted and "1 converged run(s), need at least 2" in one.notes[0]
    assert one.coefficients["hazard_ratio"].isna().all()


def test_few_residual_degrees_of_freedom_are_said():
    """Six runs on four visited states leave two residual degrees of freedom: the fit is
    near-exact whatever the states mean, and the notes say so; 30 runs do not get the note."""
    from trainmap.analysis.regression import FEW_RESIDUAL_DF, state_regression

    rng = np.random.default_rng(3)

    def fit(n_runs):
        occ = pd.DataFrame(rng.dirichlet(np.ones(4), size=n_runs), index=[str(i) for i in range(n_runs)])
        conv = pd.Series(1000 + 500 * occ[1] + rng.normal(0, 50, n_runs), index=occ.index)
        return state_regression(occ, conv)

    few = fit(6)
    assert few.df_resid == 2 < FEW_RESIDUAL_DF
    assert any(n.startswith("only 2 residual degree(s) of freedom (6 runs, 4 fitted levels)") for n in few.notes)
    assert not any("residual degree" in n for n in fit(30).notes)

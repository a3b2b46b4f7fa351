"""Bag-of-states regression, detour states and trajectory dissimilarity (docs/design.md
steps 6–7; paper Sections 2.3 and 3.4). Convergence steps: :mod:`trainmap.analysis.convergence`.

Regression parametrisation
--------------------------
Let ``x_r`` be run r's empirical state distribution (occupancy, sums to 1) over the K'
states some run visits, and ``y_r`` its convergence step. Because the occupancies sum to
one, the constant lies in their span, so the model is fitted **without a separate
intercept**::

    y_r = Σ_k β_k x_rk + ε_r          (ordinary least squares)

``β_k`` (the ``level`` column) is the predicted convergence step of a run that spends all
its time in state k. R² is the centred ``1 − SSR / Σ(y − ȳ)²`` and the F-test compares
this model with the intercept-only model (``df_model = rank − 1``,
``df_resid = n − rank``) — the same numbers as an OLS with an intercept and K'−1 states
(statsmodels detects the constant in the span and reports the centred statistics).

With few runs R² flatters the fit, so two honest companions are reported: the adjusted
``R²_adj = 1 − (1 − R²)(n − 1)/df_resid`` and the leave-one-out cross-validated
``R²_loo = 1 − PRESS / Σ(y − ȳ)²``, ``PRESS = Σ (e_r / (1 − h_rr))²`` (h the hat matrix:
each run predicted by the fit on the other runs). R²_loo is undefined (NaN, with a note)
when some run alone visits a state (h_rr = 1: without it that state's level is unknown).

The reported per-state ``coefficient`` is the effect of moving occupancy into state k from
the average run's state mix ``x̄``: ``c_k = β_k − x̄ᵀβ = β_k − ȳ`` (and ``x̄ᵀc = 0``).
Its sign answers the paper's question "does spending more time in k delay convergence?";
the raw levels β_k cannot, as they are all near typical convergence steps and hence
positive. Standard errors, t and p of ``c_k`` use the OLS covariance of β.

A **detour state** (paper Section 2.3) has ``c_k > 0``, is identifiable, and is visited by
some, but not all, runs of the regression. States no run visits are left out of the design
and reported.

Identifiability
---------------
A coefficient the data cannot pin down is reported as not identifiable, with the reason,
and left NaN (never as ±10⁴ steps): a state visited by a single run of the regression (that
run alone sets its level), a contrast ``e_k − x̄`` outside the row space of the occupancy
design (rank deficiency: :func:`estimable`), or no residual degrees of freedom (as many
states as runs). The OLS uses the runs that converged; censored runs are left out of it.

Censoring-aware model (Cox)
---------------------------
:func:`cox_regression` fits a Cox proportional-hazards model of the time to convergence on
the occupancies, using every run: a run that converged is an event at its convergence step,
a censored run is at risk until its last evaluated step (statsmodels ``PHReg``'s partial
likelihood, Breslow ties). Occupancies sum to one, so one state (the most occupied) is the
reference and, as for the OLS, the reported log-hazard of state k is the contrast against
the average run's state mix, ``h_k = b_k − x̄ᵀb``; ``hazard_ratio = exp(h_k)`` is the factor
by which the rate of converging changes when all occupancy moves from the average mix into
state k. A hazard ratio below 1 means slower convergence — the same direction as a positive
OLS coefficient.

The occupancy of the state runs end in mirrors how long they took, so with few runs the
ordering of convergence steps is often perfectly explained and the plain partial likelihood
has no finite maximum (separation). The fit therefore maximises the partial likelihood with
a weak ridge penalty ``COX_PENALTY/2 · Σ h_k²`` (a penalised partial likelihood as R's
``coxph(ridge())``; standard errors and Wald p-values from the penalised information), and
says when separation made the penalty decide the size of a hazard ratio (then read its
direction, not its size).
Harrell's concordance index (in sample) says how well the fitted risk orders the runs'
convergence: 0.5 is chance, 1 perfect.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "occupancy",
    "state_regression",
    "RegressionResult",
    "estimable",
    "cox_regression",
    "CoxResult",
    "concordance_index",
    "dissimilarity",
    "total_variation",
    "PARAMETRISATION",
]

PARAMETRISATION = (
    "OLS of convergence step on the occupancies of the visited states without a separate "
    "intercept (occupancies sum to 1); level_k = predicted convergence step of a run spending "
    "all its time in state k; coefficient_k = level_k - mean convergence step (effect of moving "
    "occupancy from the average run's state mix into state k); R2 centred; F-test against the "
    "intercept-only model"
)


#: Columns of ``RegressionResult.covariates``.
COVARIATE_COLUMNS = ("covariate", "coefficient", "std_error", "t_value", "p_value", "identifiable")


def occupancy(states: Mapping[str, np.ndarray], n_states: int) -> pd.DataFrame:
    """Empirical state distribution P̂(s = k) of every run, shape (runs, n_states); index
    run id, columns the state numbers 0..n_states-1."""
    rows = {}
    for run_id, path in states.items():
        path = np.asarray(path, dtype=int)
        if len(path) == 0:
            raise ValueError(f"run {run_id}: empty state sequence")
        if path.min() < 0 or path.max() >= n_states:
            raise ValueError(f"run {run_id}: state outside 0..{n_states - 1}")
        rows[str(run_id)] = np.bincount(path, minlength=n_states) / len(path)
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(range(n_states)))
    frame.index.name = "run"
    return frame


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """``½ Σ |p − q|`` — the Wasserstein-1 distance under the discrete metric."""
    return 0.5 * float(np.abs(np.asarray(p, float) - np.asarray(q, float)).sum())


def dissimilarity(distributions: np.ndarray | pd.DataFrame) -> float:
    """Trajectory dissimilarity (paper Eq. 1): the mean over unordered pairs of runs of the
    total-variation distance between their state distributions (rows of ``distributions``).
    NaN for fewer than two runs."""
    P = np.asarray(distributions, dtype=float)
    n = len(P)
    if n < 2:
        return float("nan")
    i, j = np.triu_indices(n, k=1)
    return float(0.5 * np.abs(P[i] - P[j]).sum(axis=1).mean())


@dataclass
class RegressionResult:
    """Output of :func:`state_regression`.

    Attributes
    ----------
    n_runs : runs in the regression (finite convergence step).
    n_states : states of the model (columns of the occupancy given).
    design_states : states in the design (visited by some run).
    unvisited_states : states no run visits (left out).
    r2, p_value, f_statistic, df_model, df_resid : centred R², F-test against the
        intercept-only model (NaN when undefined).
    r2_adjusted, r2_loo : adjusted R² and leave-one-out cross-validated R² (module docstring).
    intercept : mean convergence step ȳ (the reference of ``coefficient``).
    coefficients : one row per state — ``state``, ``coefficient`` (c_k), ``std_error``,
        ``t_value``, ``p_value``, ``level`` (β_k), ``runs_visiting``, ``mean_occupancy``,
        ``detour`` (bool), ``identifiable`` (bool) and ``note`` (why not); NaN for unvisited
        and unidentifiable states.
    fitted : fitted convergence steps, indexed by run.
    residuals : y − fitted.
    parametrisation : a sentence saying how the model was parametrised.
    """

    n_runs: int
    n_states: int
    design_states: list[int]
    unvisited_states: list[int]
    r2: float
    r2_adjusted: float
    r2_loo: float
    p_value: float
    f_statistic: float
    df_model: int
    df_resid: int
    intercept: float
    coefficients: pd.DataFrame
    fitted: pd.Series
    residuals: pd.Series
    parametrisation: str = PARAMETRISATION
    notes: list[str] = field(default_factory=list)
    covariates: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(COVARIATE_COLUMNS)))

    @property
    def detour_states(self) -> list[int]:
        """States flagged as detours."""
        return [int(s) for s in self.coefficients.loc[self.coefficients["detour"], "state"]]

    def to_dict(self) -> dict:
        """JSON-ready summary (floats, ints, lists)."""
        return {
            "n_runs": int(self.n_runs),
            "n_states": int(self.n_states),
            "design_states": [int(s) for s in self.design_states],
            "unvisited_states": [int(s) for s in self.unvisited_states],
            "r2": float(self.r2),
            "r2_adjusted": float(self.r2_adjusted),
            "r2_loo": float(self.r2_loo),
            "p_value": float(self.p_value),
            "f_statistic": float(self.f_statistic),
            "df_model": int(self.df_model),
            "df_resid": int(self.df_resid),
            "intercept": float(self.intercept),
            "detour_states": self.detour_states,
            "parametrisation": self.parametrisation,
            "notes": list(self.notes),
        }


def _nan_result(occ: pd.DataFrame, note: str, n_runs: int) -> RegressionResult:
    K = occ.shape[1]
    visited = (occ > 0).sum(axis=0).to_numpy() if len(occ) else np.zeros(K, int)
    coef = pd.DataFrame({
        "state": np.arange(K),
        "coefficient": np.nan, "std_error": np.nan, "t_value": np.nan, "p_value": np.nan,
        "level": np.nan,
        "runs_visiting": visited.astype(int),
        "mean_occupancy": occ.mean(axis=0).to_numpy() if len(occ) else np.full(K, np.nan),
        "detour": False,
        "identifiable": False,
        "note": note,
    })
    empty = pd.Series(dtype=float)
    return RegressionResult(
        n_runs=n_runs, n_states=K, design_states=[int(k) for k in np.nonzero(visited)[0]],
        unvisited_states=[int(k) for k in np.nonzero(visited == 0)[0]],
        r2=np.nan, r2_adjusted=np.nan, r2_loo=np.nan, p_value=np.nan, f_statistic=np.nan, df_model=0, df_resid=0, intercept=np.nan,
        coefficients=coef, fitted=empty, residuals=empty, notes=[note],
    )


#: Fewer residual degrees of freedom than this get a note: the regression fits the runs almost
#: exactly whatever the states mean (the quick preset's parities, 8 runs and 6 states, had 2:
#: its LOO R² was 0.96 or 0.17 depending on one seed's last steps).
FEW_RESIDUAL_DF = 3


def state_regression(occupancy: pd.DataFrame, convergence: pd.Series | Sequence[float],
                     covariates: pd.DataFrame | None = None) -> RegressionResult:
    """Regress convergence step on state occupancy (docs/design.md step 6; see module docstring).

    Parameters
    ----------
    occupancy : runs × states (from :func:`occupancy`); rows sum to 1.
    convergence : convergence step per run, aligned by index with ``occupancy`` (a Series
        indexed by run id) or by position. Runs with NaN are left out (with a warning).

    covariates : optional runs × C frame (indexed like ``occupancy``) of further regressors,
        e.g. indicators of all conditions but a reference one (:mod:`trainmap.analysis.compare`).
        They enter the design beside the occupancies (still without a separate intercept);
        a state's coefficient is then its effect holding the covariates fixed, and
        ``RegressionResult.covariates`` has one row per covariate (``covariate``,
        ``coefficient``, ``std_error``, ``t_value``, ``p_value``).

    States no run in the regression visits are left out of the design and listed in
    ``unvisited_states`` (warning). With fewer than two runs, or no convergence steps at
    all, every statistic is NaN (warning), never an exception.
    """
    occ = occupancy.copy()
    occ.columns = [int(c) for c in occ.columns]
    occ.index = occ.index.astype(str)
    if isinstance(convergence, pd.Series):
        conv = convergence.copy()
        conv.index = conv.index.astype(str)
        y = pd.Series(conv.reindex(occ.index).to_numpy(float), index=occ.index)
    else:
        y = pd.Series(np.asarray(convergence, dtype=float), index=occ.index)
    missing = y.index[~np.isfinite(y.to_numpy())]
    if len(missing) == len(y):
        warnings.warn("no run has a defined convergence step: regression results are NaN", RuntimeWarning, stacklevel=2)
        return _nan_result(occ, "no run has a defined convergence step", 0)
    if len(missing):
        warnings.warn(
            f"left out of the OLS: {len(missing)} run(s) without a convergence step (censored): "
            + ", ".join(map(str, missing[:20])),
            RuntimeWarning, stacklevel=2,
        )
        occ, y = occ.drop(index=missing), y.drop(index=missing)
    if covariates is not None:
        cov_frame = covariates.copy()
        cov_frame.index = cov_frame.index.astype(str)
        absent = [r for r in occ.index if r not in cov_frame.index]
        if absent:
            raise ValueError(f"covariates lack run(s) {', '.join(absent[:10])}")
        cov_frame = cov_frame.loc[occ.index].astype(float)
    else:
        cov_frame = pd.DataFrame(index=occ.index)
    n = len(y)
    K = occ.shape[1]
    visits = (occ.to_numpy() > 0).sum(axis=0)
    design = [k for k in range(K) if visits[k] > 0]
    unvisited = [k for k in range(K) if visits[k] == 0]
    if unvisited:
        warnings.warn(
            f"state(s) {', '.join(map(str, unvisited))} visited by no run: left out of the regression",
            RuntimeWarning, stacklevel=2,
        )
    if n < 2:
        warnings.warn("fewer than 2 runs with a convergence step: regression results are NaN", RuntimeWarning, stacklevel=2)
        return _nan_result(occ, "fewer than 2 runs with a convergence step", n)

    n_design = len(design)
    X = np.hstack([occ[design].to_numpy(float), cov_frame.to_numpy(float)])
    yv = y.to_numpy(float)
    fit = _ols(X, yv)
    beta, rank, resid = np.asarray(fit.params), int(fit.model.rank), np.asarray(fit.resid)
    fitted = X @ beta
    ssr = float(resid @ resid)
    ybar = float(yv.mean())
    sst = float(((yv - ybar) ** 2).sum())
    df_model = rank - 1
    df_resid = n - rank
    notes: list[str] = []
    r2_adj = r2_loo = np.nan
    if sst <= 0:
        r2 = f_stat = p_value = np.nan
        notes.append("every run has the same convergence step: R2 and the F-test are undefined")
    else:
        r2 = float(fit.rsquared)
        if df_resid >= 1:
            r2_adj = float(fit.rsquared_adj)
        r2_loo, note = _loo_r2(fit, resid, sst, list(y.index))
        if note:
            notes.append(note)
        if df_model >= 1 and df_resid >= 1 and ssr > 0:
            f_stat, p_value = float(fit.fvalue), float(fit.f_pvalue)
        elif df_model >= 1 and df_resid >= 1:
            f_stat, p_value = np.inf, 0.0
        else:
            f_stat = p_value = np.nan
            notes.append("no degrees of freedom for the F-test (a single state, or as many states as runs)")
        if 1 <= df_resid < FEW_RESIDUAL_DF:
            notes.append(f"only {df_resid} residual degree(s) of freedom ({n} runs, {rank} fitted levels): R2 is "
                         "high almost by construction and leave-one-out R2 swings with any one run; more runs, or "
                         "fewer states (hmm max_components), are needed for an answer")
    if rank < X.shape[1]:
        notes.append(f"occupancy design is rank deficient (rank {rank} < {X.shape[1]}): minimum-norm levels")
    sigma2 = ssr / df_resid if df_resid > 0 else np.nan
    cov_beta = sigma2 * np.linalg.pinv(X.T @ X)
    xbar = X[:, :n_design].mean(axis=0)
    # row k: e_k − x̄ over the states, 0 over the covariates (held fixed)
    contrast = np.hstack([np.eye(n_design) - xbar[None, :], np.zeros((n_design, X.shape[1] - n_design))])
    effect = contrast @ beta  # without covariates = β_k − x̄ᵀβ = β_k − ȳ (the constant is in the span)
    se = np.sqrt(np.maximum(np.einsum("ki,ij,kj->k", contrast, cov_beta, contrast), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_val = effect / se
    p_coef = 2 * stats.t.sf(np.abs(t_val), df_resid) if df_resid > 0 else np.full(n_design, np.nan)
    cov_rows = []
    for j, name in enumerate(cov_frame.columns):
        c = np.zeros(X.shape[1])
        c[n_design + j] = 1.0
        ok = df_resid > 0 and estimable(X, c)
        b, e = float(beta[n_design + j]), float(np.sqrt(max(c @ cov_beta @ c, 0.0))) if ok else np.nan
        t = b / e if ok and e > 0 else np.nan
        cov_rows.append({"covariate": str(name), "coefficient": b if ok else np.nan, "std_error": e, "t_value": t,
                         "p_value": float(2 * stats.t.sf(abs(t), df_resid)) if np.isfinite(t) else np.nan,
                         "identifiable": ok})
    covariate_table = pd.DataFrame(cov_rows, columns=list(COVARIATE_COLUMNS))

    coef = pd.DataFrame({"state": np.arange(K)})
    coef["coefficient"] = np.nan
    coef["std_error"] = np.nan
    coef["t_value"] = np.nan
    coef["p_value"] = np.nan
    coef["level"] = np.nan
    coef.loc[design, "coefficient"] = effect
    coef.loc[design, "std_error"] = se
    coef.loc[design, "t_value"] = t_val
    coef.loc[design, "p_value"] = p_coef
    coef.loc[design, "level"] = beta[:n_design]
    coef["runs_visiting"] = visits.astype(int)
    coef["mean_occupancy"] = occ.mean(axis=0).to_numpy()
    coef["identifiable"] = False
    coef["note"] = ""
    coef.loc[unvisited, "note"] = "visited by no run in the regression"
    reasons = _unidentifiable(X, contrast, visits[design], df_resid)
    for k, reason in zip(design, reasons):
        coef.loc[k, "identifiable"] = not reason
        coef.loc[k, "note"] = reason
    hidden = [k for k, reason in zip(design, reasons) if reason]
    coef.loc[hidden, ["coefficient", "std_error", "t_value", "p_value", "level"]] = np.nan
    if hidden:
        notes.append(f"coefficient(s) of state(s) {', '.join(map(str, hidden))} not identifiable: "
                     + "; ".join(sorted({f'{r}' for r in reasons if r})))
    coef["detour"] = (coef["identifiable"] & (coef["coefficient"] > 0) & (coef["runs_visiting"] > 0)
                      & (coef["runs_visiting"] < n))
    return RegressionResult(
        n_runs=n, n_states=K, design_states=design, unvisited_states=unvisited,
        r2=float(r2), r2_adjusted=float(r2_adj), r2_loo=float(r2_loo), p_value=float(p_value), f_statistic=float(f_stat),
        df_model=max(df_model, 0), df_resid=max(df_resid, 0), intercept=ybar,
        coefficients=coef,
        fitted=pd.Series(fitted, index=y.index), residuals=pd.Series(resid, index=y.index),
        notes=notes, covariates=covariate_table,
    )


def _ols(X: np.ndarray, y: np.ndarray):
    """statsmodels OLS of ``y`` on the occupancy columns ``X`` (no added constant: it is in
    their span, and statsmodels detects it, so R², F and p are the centred ones)."""
    import statsmodels.api as sm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate cases are reported in notes instead
        return sm.OLS(y, X).fit()


def _loo_r2(fit, resid: np.ndarray, sst: float, runs: list[str]) -> tuple[float, str]:
    """Leave-one-out cross-validated R² from the PRESS residuals ``e_r / (1 − h_rr)``, and
    a note when it is undefined (a run with leverage 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        leverage = np.asarray(fit.get_influence().hat_matrix_diag, dtype=float)
    alone = [runs[i] for i in np.nonzero(leverage > 1 - 1e-9)[0]]
    if alone:
        return float("nan"), ("leave-one-out R2 undefined: run(s) " + ", ".join(alone[:10])
                              + " alone determine a state's level (leverage 1)")
    press = float(((resid / (1.0 - leverage)) ** 2).sum())
    return 1.0 - press / sst, ""


def estimable(X: np.ndarray, contrast: np.ndarray, rtol: float = 1e-8) -> bool:
    """Whether the linear combination ``contrast·β`` of an OLS on design ``X`` is estimable:
    ``contrast`` lies in the row space of ``X`` (else the data cannot determine it)."""
    X = np.asarray(X, dtype=float)
    contrast = np.asarray(contrast, dtype=float)
    _, sv, vt = np.linalg.svd(X, full_matrices=False)
    basis = vt[sv > rtol * max(sv.max(initial=0.0), 1e-300)]
    residual = contrast - basis.T @ (basis @ contrast)
    return bool(np.linalg.norm(residual) <= 1e-6 * max(np.linalg.norm(contrast), 1e-300))


def _unidentifiable(X: np.ndarray, contrasts: np.ndarray, visits: np.ndarray, df_resid: int) -> list[str]:
    """Per design state, why its coefficient cannot be identified ('' when it can)."""
    reasons = []
    for k in range(len(contrasts)):
        if df_resid <= 0:
            reasons.append("no residual degrees of freedom (as many states as runs)")
        elif visits[k] == 1:
            reasons.append("visited by one run only")
        elif not estimable(X, contrasts[k]):
            reasons.append("not estimable: the occupancy design is rank deficient")
        else:
            reasons.append("")
    return reasons


def concordance_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C: over the comparable pairs (the earlier time is an event; equal times
    count when only one is an event, which then comes first), the share ordered by ``risk``
    (higher risk → earlier event); ties in risk count one half. NaN without a comparable pair."""
    time, event, risk = (np.asarray(a, dtype=float) for a in (time, event, risk))
    concordant = comparable = 0.0
    for i in range(len(time)):
        if not event[i]:
            continue
        later = (time > time[i]) | ((time == time[i]) & (event == 0))
        comparable += later.sum()
        concordant += (risk[i] > risk[later]).sum() + 0.5 * (risk[i] == risk[later]).sum()
    return float(concordant / comparable) if comparable else float("nan")


@dataclass
class CoxResult:
    """Output of :func:`cox_regression`.

    Attributes
    ----------
    n_runs, n_events, n_censored : runs in the model, of which converged / censored.
    reference_state : the state whose occupancy is the reference (most occupied).
    concordance : Harrell's C of the fitted linear predictor (in sample; NaN when not fitted).
    fitted : whether a model was fitted (enough events, a converging fit).
    coefficients : one row per state — ``state``, ``log_hazard`` (h_k), ``hazard_ratio``,
        ``hazard_std_error`` (of h_k), ``hazard_p_value``, ``hazard_identifiable``,
        ``hazard_note``.
    notes : sentences about what could not be estimated.
    """

    n_runs: int
    n_events: int
    n_censored: int
    reference_state: int | None
    concordance: float
    fitted: bool
    coefficients: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {"n_runs": int(self.n_runs), "n_events": int(self.n_events), "n_censored": int(self.n_censored),
                "reference_state": None if self.reference_state is None else int(self.reference_state),
                "concordance": float(self.concordance), "fitted": bool(self.fitted), "notes": list(self.notes),
                "model": "Cox proportional hazards of the convergence step on state occupancy: the partial "
                         f"likelihood of statsmodels PHReg (Breslow ties) with a ridge penalty {COX_PENALTY} on the "
                         "log hazard ratios; censored runs at risk until their last evaluated step"}


#: Ridge penalty on the log hazard ratios (the contrasts h_k): a weak prior (standard
#: deviation 10 on a log hazard ratio per unit of occupancy) that keeps the estimate finite
#: under separation and shrinks estimated effects by a few per cent (tested).
COX_PENALTY = 0.01
#: Largest |log hazard ratio| that does not signal separation (the unpenalised partial
#: likelihood still rising: a state's runs all converge before, or after, the others).
_SEPARATION = 10.0


def _penalized_cox(model, M: np.ndarray, penalty: float, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray, bool]:
    """Maximise ``loglike(b) − penalty/2 · |M b|²`` by Newton's method with step halving;
    returns ``(b, covariance of b from the penalised information, converged)``."""
    P = penalty * (M.T @ M)
    b = np.zeros(M.shape[1])

    def objective(x):
        return float(model.loglike(x)) - 0.5 * float(x @ P @ x)

    value = objective(b)
    converged = False
    for _ in range(max_iter):
        grad = np.asarray(model.score(b)) - P @ b
        hess = np.asarray(model.hessian(b)) - P
        step = np.linalg.solve(hess, -grad)
        t = 1.0
        while t > 1e-8:
            candidate = b + t * step
            new = objective(candidate)
            if np.isfinite(new) and new >= value - 1e-12:
                break
            t /= 2
        b, gain, value = candidate, new - value, new
        if abs(gain) < 1e-10 and np.max(np.abs(t * step)) < 1e-8:
            converged = True
            break
    information = -(np.asarray(model.hessian(b)) - P)
    return b, np.linalg.inv(information), converged


def cox_regression(occupancy: pd.DataFrame, time: pd.Series, converged: pd.Series) -> CoxResult:
    """Cox proportional hazards of the time to convergence on state occupancy (module
    docstring), over every run: ``time`` is the convergence step of a run that converged
    and the last evaluated step of a censored one; ``converged`` says which."""
    occ = occupancy.copy()
    occ.columns = [int(c) for c in occ.columns]
    occ.index = occ.index.astype(str)
    t = pd.Series(time).copy()
    t.index = t.index.astype(str)
    e = pd.Series(converged).copy()
    e.index = e.index.astype(str)
    t, e = t.reindex(occ.index).to_numpy(float), e.reindex(occ.index).fillna(False).to_numpy(bool)
    keep = np.isfinite(t)
    occ, t, e = occ[keep], t[keep], e[keep]
    n, K = len(occ), occ.shape[1]
    coef = pd.DataFrame({"state": np.arange(K), "log_hazard": np.nan, "hazard_ratio": np.nan,
                         "hazard_std_error": np.nan, "hazard_p_value": np.nan, "hazard_identifiable": False,
                         "hazard_note": ""})
    visits = (occ.to_numpy() > 0).sum(axis=0)
    design = [k for k in range(K) if visits[k] > 0]
    coef.loc[[k for k in range(K) if visits[k] == 0], "hazard_note"] = "visited by no run"
    result = CoxResult(n_runs=n, n_events=int(e.sum()), n_censored=int(n - e.sum()), reference_state=None,
                       concordance=float("nan"), fitted=False, coefficients=coef)

    def give_up(note: str) -> CoxResult:
        coef.loc[design, "hazard_note"] = note
        result.notes.append(note)
        return result

    if result.n_events < 2:
        return give_up(f"Cox model not fitted: {result.n_events} converged run(s), need at least 2")
    if len(design) < 2:
        return give_up("Cox model not fitted: a single visited state has no contrast")
    if len(design) - 1 >= result.n_events:
        return give_up(f"Cox model not fitted: {len(design) - 1} occupancy contrasts for {result.n_events} "
                       "converged runs (need more converged runs than states)")
    X_all = occ[design].to_numpy(float)
    reference = design[int(np.argmax(X_all.mean(axis=0)))]
    others = [k for k in design if k != reference]
    X = occ[others].to_numpy(float)
    from scipy import stats as _stats
    from statsmodels.duration.hazard_regression import PHReg

    xbar = X_all.mean(axis=0)
    contrast = np.eye(len(design)) - xbar[None, :]
    idx = [design.index(k) for k in others]
    embed = np.zeros((len(design), len(others)))
    embed[idx, np.arange(len(others))] = 1.0
    M = contrast @ embed  # h = M b
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = PHReg(t, X, status=e.astype(int), ties="breslow")
            b, cov, converged = _penalized_cox(model, M, COX_PENALTY)
        except (np.linalg.LinAlgError, ValueError) as exc:
            return give_up(f"Cox model not fitted: {exc}")
    result.reference_state = reference
    result.fitted = bool(converged and np.all(np.isfinite(b)))
    if not result.fitted:
        return give_up("Cox model not fitted: the penalised partial likelihood did not converge")
    h = M @ b
    se = np.sqrt(np.maximum(np.einsum("ki,ij,kj->k", M, cov, M), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * _stats.norm.sf(np.abs(h / se))
    separated = np.abs(h) > _SEPARATION
    for j, k in enumerate(design):
        if visits[k] == 1:
            reason = "visited by one run only"
        elif not estimable(X_all, contrast[j]):
            reason = "not estimable: the occupancy design is rank deficient"
        else:
            reason = ""
        coef.loc[k, "hazard_identifiable"] = not reason
        coef.loc[k, "hazard_note"] = reason
        if not reason:
            coef.loc[k, ["log_hazard", "hazard_ratio", "hazard_std_error", "hazard_p_value"]] = (
                h[j], float(np.exp(h[j])), se[j], p[j])
    if separated.any() or _separated(model, M, b):
        result.notes.append("Cox model: separation (the occupancies order the convergence steps perfectly); the "
                            "ridge penalty sets the size of the hazard ratios: read their direction, not their size")
    hidden = [k for k in design if not coef.loc[k, "hazard_identifiable"]]
    if hidden:
        result.notes.append(f"hazard ratio(s) of state(s) {', '.join(map(str, hidden))} not identifiable")
    result.concordance = concordance_index(t, e, X @ b)
    return result


def _separated(model, M: np.ndarray, b: np.ndarray) -> bool:
    """Whether the unpenalised partial likelihood keeps rising along the penalised estimate
    (separation): ten times the estimate still fits better."""
    if not np.any(b):
        return False
    with np.errstate(all="ignore"):
        return bool(model.loglike(10 * b) > model.loglike(b) + 1e-6)

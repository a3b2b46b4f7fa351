"""Gaussian HMM model selection by held-out BIC (docs/design.md step 2, paper Section 2.1).

Candidates are (covariance type, number of states n): n = 1..max_components, and the
covariance types of option ``covariance`` (``auto`` = :data:`AUTO_COVARIANCES`, else the one
named). Every candidate is fitted by Baum-Welch (sequences concatenated with ``lengths``,
several seeded restarts) on training runs and scored on held-out runs:

* **folds** (option ``folds``): with K ≥ 2 folds, runs are dealt by a seeded shuffle into K
  groups and each group is held out once (the others train), so every run is scored once;
  with K = 1, one seeded split holds out ``test_fraction`` of the runs (the paper's 80/20).
  ``folds = 0`` chooses: :func:`n_folds`.
* **score**: with ``LL`` the held-out log-likelihood summed over the folds, ``N`` the
  held-out checkpoints (every checkpoint once, with K ≥ 2 folds) and ``p`` the free
  parameters ``(n-1) + n(n-1) + n d`` plus ``n d(d+1)/2`` (full), ``n d`` (diag) or
  ``d(d+1)/2`` (tied): ``AIC = -2 LL + 2 p``, ``BIC = -2 LL + p ln N``. BIC is comparable
  across covariance types (same data, same likelihood).

Per fold, a candidate's log-likelihood is that of its best restart (``selection: best``,
highest held-out LL: a restart stuck in a poor local optimum says nothing about how many
states describe held-out runs) or the mean over its successful restarts (``selection:
mean``, the authors' rule). The candidate with the lowest BIC wins; ties go to fewer
parameters. A candidate with a fold in which every restart failed is not eligible.

The model kept: with one split, the chosen candidate's best restart (fitted on the training
runs, as the paper did); with folds, the chosen candidate refitted on **all** runs
(``restarts`` restarts, the best training log-likelihood kept), since no run is left over.

Restart r of candidate (covariance c, n) in fold f is seeded with
``SeedSequence([seed, n, r, c, f])`` (c the covariance's index in :data:`COVARIANCE_TYPES`,
f = K for the refit), so results do not depend on how many worker processes run the fits;
every worker limits BLAS/OpenMP to one thread. Covariances are regularised at every EM step
(:mod:`trainmap.analysis.hmm_estep`) by ``min_covar`` times each feature's variance over
the training checkpoints; a fit that still fails is a row with its reason, counted in the
summary, never dropped silently.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from trainmap.analysis.errors import AnalysisError, InsufficientRunsError
from trainmap.analysis.hmm_estep import gaussian_hmm_class
from trainmap.analysis.hmm_model import COVARIANCE_TYPES, model_from_params, model_params
from trainmap.io.limits import cap_workers
from trainmap.options import HMMSelectOptions

__all__ = [
    "AUTO_COVARIANCES",
    "CV_MAX_RUNS",
    "HMMSelection",
    "SELECTION_COLUMNS",
    "SUMMARY_COLUMNS",
    "SUMMARY_INPUT_COLUMNS",
    "REFIT_FOLD",
    "n_free_parameters",
    "information_criteria",
    "covariance_candidates",
    "n_folds",
    "split_runs",
    "run_folds",
    "restart_seed",
    "fit_hmm",
    "select_hmm",
    "selection_summary",
    "choose",
]

#: Covariance types compared by ``covariance: auto``.
AUTO_COVARIANCES = ("full", "diag", "tied")
#: With ``folds: 0``, experiments with fewer runs than this are cross-validated.
CV_MAX_RUNS = 30
#: Folds of the automatic cross-validation (or one per run, with fewer runs).
AUTO_FOLDS = 5
#: ``fold`` of the rows that refit the chosen candidate on all runs.
REFIT_FOLD = -1

#: Columns of the selection table (selection.csv): one row per fit.
SELECTION_COLUMNS = [
    "covariance", "n_components", "fold", "restart", "seed", "status", "converged", "n_iter", "train_loglik",
    "test_loglik", "n_params", "n_test_obs", "aic", "bic", "best_for_n", "chosen", "error",
]
#: Columns of a selection table that :func:`selection_summary` reads.
SUMMARY_INPUT_COLUMNS = ("covariance", "n_components", "fold", "status", "test_loglik", "n_params", "n_test_obs")
#: Columns of :func:`selection_summary`: one row per candidate (covariance, n_components).
SUMMARY_COLUMNS = [
    "covariance", "n_components", "n_params", "folds", "fits", "failed_fits", "test_loglik", "n_test_obs",
    "aic", "bic", "bic_sd", "chosen",
]


def n_free_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Free scalar parameters of a Gaussian HMM: start probabilities ``n-1``, transitions
    ``n(n-1)``, means ``n d``, covariances ``n d(d+1)/2`` (full), ``n d`` (diag) or
    ``d(d+1)/2`` (tied). Equals hmmlearn's count."""
    n, d = n_components, n_features
    cov = {"full": n * d * (d + 1) // 2, "diag": n * d, "tied": d * (d + 1) // 2}
    if covariance_type not in cov:
        raise ValueError(f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, not {covariance_type!r}")
    return (n - 1) + n * (n - 1) + n * d + cov[covariance_type]


def information_criteria(loglik: float, n_params: int, n_obs: int) -> tuple[float, float]:
    """``(AIC, BIC)`` = ``(-2 LL + 2 p, -2 LL + p ln N)``."""
    return -2.0 * loglik + 2.0 * n_params, -2.0 * loglik + n_params * math.log(n_obs)


def covariance_candidates(covariance: str) -> tuple[str, ...]:
    """The covariance types option ``covariance`` compares."""
    if covariance == "auto":
        return AUTO_COVARIANCES
    if covariance not in COVARIANCE_TYPES:
        raise ValueError(f"covariance must be auto or one of {', '.join(COVARIANCE_TYPES)}, not {covariance!r}")
    return (covariance,)


def n_folds(n_runs: int, folds: int = HMMSelectOptions.folds) -> int:
    """Folds used for ``n_runs`` runs: ``folds`` when given (at most one per run), else
    :data:`AUTO_FOLDS` (or one per run, when fewer) below :data:`CV_MAX_RUNS` runs, and one
    split from there on (the paper's 80/20 at 40 runs)."""
    if folds < 0:
        raise ValueError(f"folds must be 0 (automatic) or a positive number, not {folds}")
    if folds == 0:
        return min(AUTO_FOLDS, n_runs) if n_runs < CV_MAX_RUNS else 1
    return min(folds, n_runs)


def split_runs(n_runs: int, test_fraction: float = HMMSelectOptions.test_fraction,
               seed: int = HMMSelectOptions.seed) -> tuple[np.ndarray, np.ndarray]:
    """Seeded shuffle of run indices into (train, test), test = ``round(test_fraction n)``
    runs but at least one, and at least one training run. Both index arrays are sorted."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, not {test_fraction}")
    if n_runs < 2:
        raise InsufficientRunsError(f"a train/test split needs at least 2 runs, got {n_runs}")
    n_test = min(max(1, int(round(test_fraction * n_runs))), n_runs - 1)
    order = _shuffled(n_runs, seed)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _shuffled(n_runs: int, seed: int) -> np.ndarray:
    return np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])).permutation(n_runs)


def run_folds(n_runs: int, folds: int = HMMSelectOptions.folds, test_fraction: float = HMMSelectOptions.test_fraction,
              seed: int = HMMSelectOptions.seed) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` run indices of every fold (:func:`n_folds` of them): one
    :func:`split_runs` split, or K groups of a seeded shuffle, each held out once."""
    if n_runs < 2:
        raise InsufficientRunsError(f"held-out scoring needs at least 2 runs, got {n_runs}")
    k = n_folds(n_runs, folds)
    if k == 1:
        return [split_runs(n_runs, test_fraction, seed)]
    groups = np.array_split(_shuffled(n_runs, seed), k)
    everyone = np.arange(n_runs)
    return [(np.setdiff1d(everyone, test), np.sort(test)) for test in groups]


def restart_seed(seed: int, n_components: int, restart: int, covariance: str = "full", fold: int = 0) -> int:
    """The random state of one restart (a 31-bit int; module docstring)."""
    parts = [seed, n_components, restart, COVARIANCE_TYPES.index(covariance), fold]
    return int(np.random.SeedSequence(parts).generate_state(1)[0] >> 1)


def covar_floor(X: np.ndarray, min_covar: float) -> np.ndarray:
    """The covariance floor of data ``X``: ``min_covar`` times each column's variance
    (at least ``min_covar`` times 1e-12, for a column that barely varies)."""
    return min_covar * np.maximum(np.var(X, axis=0), 1e-12)


def fit_hmm(X: np.ndarray, lengths: Sequence[int], n_components: int, *, covariance_type: str = "full",
            random_state: int = 0, n_iter: int = HMMSelectOptions.n_iter, tol: float = HMMSelectOptions.tol,
            min_covar: float = HMMSelectOptions.min_covar, fast: bool = True):
    """Fit one ``GaussianHMM`` by Baum-Welch (hmmlearn's k-means initialisation), with the
    covariance floor :func:`covar_floor` at every EM step.

    ``tol`` is per observation: EM stops when the training log-likelihood gains less than
    ``tol * len(X)`` in an iteration. Returns ``(model, converged, iterations)``, where
    ``converged`` is whether that criterion was met within ``n_iter`` iterations (hmmlearn's
    own flag also says True when it merely ran out of iterations). ``fast`` uses the
    vectorised E-step where it is faster (:mod:`trainmap.analysis.hmm_estep`; same result).
    """
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, not {covariance_type!r}")
    abs_tol = tol * X.shape[0]
    model = gaussian_hmm_class(covariance_type, fast)(
        n_components=n_components, covariance_type=covariance_type, min_covar=min_covar,
        n_iter=n_iter, tol=abs_tol, random_state=random_state, implementation="log",
    )
    model.covar_floor = covar_floor(X, min_covar)
    model.fit(X, np.asarray(lengths))
    history = list(model.monitor_.history)
    converged = len(history) >= 2 and abs(history[-1] - history[-2]) < abs_tol
    return model, bool(converged), len(history)


@dataclass(frozen=True)
class _Data:
    """The data every fit of one fold sees (the test part is empty for a refit)."""

    X_train: np.ndarray
    len_train: np.ndarray
    X_test: np.ndarray
    len_test: np.ndarray


@dataclass(frozen=True)
class _Job:
    covariance: str
    n_components: int
    fold: int
    restart: int
    seed: int


def _fit_one(data: _Data, job: _Job, options: HMMSelectOptions) -> tuple[dict, dict | None]:
    """Fit and score one restart; never raises for a failed fit (recorded instead)."""
    row = {
        "covariance": job.covariance, "n_components": job.n_components, "fold": job.fold, "restart": job.restart,
        "seed": job.seed, "status": "failed", "converged": False, "n_iter": 0, "train_loglik": np.nan,
        "test_loglik": np.nan,
        "n_params": n_free_parameters(job.n_components, data.X_train.shape[1], job.covariance),
        "n_test_obs": int(data.X_test.shape[0]), "aic": np.nan, "bic": np.nan, "error": "",
    }
    # hmmlearn logs "not converging"/"zero-sum transmat" chatter per iteration; the
    # selection table records what matters. Quiet it for this fit only.
    hmm_logger = logging.getLogger("hmmlearn")
    level = hmm_logger.level
    hmm_logger.setLevel(logging.ERROR)
    try:
        return _fit_and_score(row, data, job, options)
    finally:
        hmm_logger.setLevel(level)


def _fit_and_score(row: dict, data: _Data, job: _Job, options: HMMSelectOptions) -> tuple[dict, dict | None]:
    # Import hmmlearn (and scikit-learn's OpenMP runtime) before limiting threads: the limit
    # applies only to libraries already loaded, and an unlimited k-means initialisation
    # on a busy machine is 50 times slower (measured: 1.8 s instead of 0.04 s).
    import hmmlearn.hmm  # noqa: F401
    from threadpoolctl import threadpool_limits

    test_ll = np.nan
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model, converged, iters = fit_hmm(
                data.X_train, data.len_train, job.n_components, covariance_type=job.covariance,
                random_state=job.seed, n_iter=options.n_iter, tol=options.tol, min_covar=options.min_covar,
            )
            row["converged"], row["n_iter"] = converged, iters
            row["train_loglik"] = float(model.monitor_.history[-1]) if model.monitor_.history else np.nan
            problem = _degenerate(model)
            if problem:
                row["error"] = problem
                return row, None
            if len(data.X_test):
                test_ll = float(model.score(data.X_test, data.len_test))
        except Exception as exc:  # noqa: BLE001 - any failed fit is a row, not a crash
            row["error"] = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            return row, None
    if len(data.X_test):
        if not np.isfinite(test_ll):
            row["error"] = "non-finite held-out log-likelihood"
            return row, None
        row["test_loglik"] = test_ll
        row["aic"], row["bic"] = information_criteria(test_ll, row["n_params"], data.X_test.shape[0])
    row["status"] = "ok"
    return row, model_params(model)


def _degenerate(model) -> str:
    """Why a fitted model is unusable, or '' when it is fine."""
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        if not np.all(np.isfinite(getattr(model, name))):
            return f"non-finite {name.rstrip('_')} after fitting"
    if not np.all(np.isfinite(model.monitor_.history)):
        return "non-finite training log-likelihood"
    rows = model.transmat_.sum(axis=1)
    if np.any(np.abs(rows - 1.0) > 1e-6):
        return f"transition row {int(np.argmax(np.abs(rows - 1.0)))} does not sum to 1"
    for k, cov in enumerate(model.covars_):
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            return f"covariance of state {k} is not positive definite"
    return ""


def selection_summary(table: pd.DataFrame, selection: str = HMMSelectOptions.selection) -> pd.DataFrame:
    """One row per candidate (covariance, n_components) of a selection table: its held-out
    log-likelihood summed over folds (each fold's best restart, or the mean over restarts,
    by ``selection``), held-out checkpoints, AIC and BIC of that sum, ``bic_sd`` (the
    spread over folds: standard deviation of each fold's BIC scaled to all held-out
    checkpoints, NaN with one fold), fits and failed fits, and ``chosen`` (module
    docstring). Columns :data:`SUMMARY_COLUMNS`, ordered by covariance then n."""
    if selection not in ("best", "mean"):
        raise ValueError(f"selection must be 'best' or 'mean', not {selection!r}")
    scored = table[table["fold"] != REFIT_FOLD]
    folds = sorted(scored["fold"].unique())
    rows = []
    for (cov, n), group in scored.groupby(["covariance", "n_components"], sort=False):
        ok = group[group["status"] == "ok"]
        per_fold = ok.groupby("fold")["test_loglik"].agg("max" if selection == "best" else "mean")
        obs = group.groupby("fold")["n_test_obs"].first()
        row = {"covariance": cov, "n_components": int(n), "n_params": int(group["n_params"].iloc[0]),
               "folds": len(folds), "fits": len(group), "failed_fits": int((group["status"] != "ok").sum()),
               "test_loglik": np.nan, "n_test_obs": int(obs.sum()), "aic": np.nan, "bic": np.nan,
               "bic_sd": np.nan}
        if len(per_fold) == len(folds):  # every fold has a successful fit
            ll = float(per_fold.sum())
            row["test_loglik"] = ll
            row["aic"], row["bic"] = information_criteria(ll, row["n_params"], row["n_test_obs"])
            if len(folds) > 1:
                scaled = [-2.0 * per_fold[f] * row["n_test_obs"] / obs[f] + row["n_params"] * math.log(row["n_test_obs"])
                          for f in folds]
                row["bic_sd"] = float(np.std(scaled, ddof=1))
        rows.append(row)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS[:-1])
    order = {c: i for i, c in enumerate(COVARIANCE_TYPES)}
    summary = summary.sort_values(["covariance", "n_components"], key=lambda s: s.map(order) if s.name == "covariance" else s,
                                  kind="stable").reset_index(drop=True)
    summary["chosen"] = False
    eligible = summary[np.isfinite(summary["bic"].to_numpy(float))]
    if len(eligible):
        best = eligible.sort_values(["bic", "n_params"], kind="stable").index[0]
        summary.loc[best, "chosen"] = True
    return summary[SUMMARY_COLUMNS]


def choose(table: pd.DataFrame, selection: str) -> pd.DataFrame:
    """Mark ``best_for_n`` (the best restart of each candidate in each fold, by held-out
    log-likelihood; for refit rows by training log-likelihood) and ``chosen`` (the row of
    the model kept: the chosen candidate's best restart with one split, its best refit with
    folds) in a selection table. Raises :class:`AnalysisError` when no candidate has a
    successful fit in every fold."""
    table = table.copy()
    ok = table["status"] == "ok"
    if not ok.any():
        reasons = "; ".join(sorted(set(table["error"])))[:500]
        raise AnalysisError(f"every HMM fit failed ({reasons})")
    table["best_for_n"] = False
    refit = table["fold"] == REFIT_FOLD
    for (_, _, fold), group in table[ok].groupby(["covariance", "n_components", "fold"]):
        key = "train_loglik" if fold == REFIT_FOLD else "test_loglik"
        table.loc[group[key].idxmax(), "best_for_n"] = True
    summary = selection_summary(table, selection)
    if not summary["chosen"].any():
        raise AnalysisError("no candidate has a successful fit in every fold: "
                            + "; ".join(sorted(set(table.loc[~ok, "error"])))[:500])
    pick = summary[summary["chosen"]].iloc[0]
    same = (table["covariance"] == pick["covariance"]) & (table["n_components"] == pick["n_components"])
    table["chosen"] = False
    if refit.any():
        rows = table[same & refit & table["best_for_n"]]
    else:
        rows = table[same & table["best_for_n"]]
    if len(rows):
        table.loc[rows.index[0], "chosen"] = True
    return table[SELECTION_COLUMNS]


@dataclass
class HMMSelection:
    """Result of :func:`select_hmm`.

    Attributes
    ----------
    table : one row per fit, columns :data:`SELECTION_COLUMNS`.
    summary : one row per candidate, columns :data:`SUMMARY_COLUMNS` (:func:`selection_summary`).
    model : the chosen fitted ``GaussianHMM``.
    covariance, n_components, restart : the chosen fit.
    folds : the number of folds (1: one split).
    train_runs, test_runs : indices (or ids, when ``run_ids`` were given) of the split (one
        split), or every run and none (folds: each run was held out once; the model kept was
        fitted on all runs).
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    model: object
    covariance: str
    n_components: int
    restart: int
    folds: int = 1
    train_runs: list = field(default_factory=list)
    test_runs: list = field(default_factory=list)

    @property
    def failed_fits(self) -> int:
        """Fits that failed (every fold and the refit)."""
        return int((self.table["status"] != "ok").sum())

    def failure_reasons(self, limit: int = 3) -> list[str]:
        """The most frequent reasons fits failed, most frequent first, with their counts."""
        failed = self.table.loc[self.table["status"] != "ok", "error"]
        return [f"{reason} ({count}×)" for reason, count in failed.value_counts().head(limit).items()]


def _concat(sequences: Sequence[np.ndarray], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(idx) == 0:
        d = sequences[0].shape[1]
        return np.empty((0, d)), np.empty(0, dtype=int)
    return np.concatenate([sequences[i] for i in idx]), np.array([len(sequences[i]) for i in idx])


def _checked(sequences: Sequence[np.ndarray]) -> list[np.ndarray]:
    sequences = [np.ascontiguousarray(s, dtype=float) for s in sequences]
    if not sequences:
        raise InsufficientRunsError("no sequences to fit")
    d = sequences[0].shape[1]
    if any(s.ndim != 2 or s.shape[1] != d for s in sequences):
        raise ValueError("all sequences must be 2-D arrays with the same number of columns")
    return sequences


def _run_jobs(jobs: list[_Job], data: dict[int, _Data], options: HMMSelectOptions, progress,
              done_before: int = 0, total: int | None = None) -> list[tuple[dict, dict | None]]:
    """Every job, in order, over ``options.workers`` processes."""
    total = total if total is not None else len(jobs)
    workers = cap_workers(options.workers, "--workers")
    if workers == 1:
        results = []
        for done, job in enumerate(jobs, done_before + 1):
            results.append(_fit_one(data[job.fold], job, options))
            if progress:
                progress(done, total)
        return results
    from joblib import Parallel, delayed

    # Big n first so the slowest fits do not end up last.
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].n_components)
    parallel = Parallel(n_jobs=workers, backend="loky", return_as="generator")
    out: dict[int, tuple[dict, dict | None]] = {}
    stream = parallel(delayed(_fit_one)(data[jobs[i].fold], jobs[i], options) for i in order)
    for done, (i, result) in enumerate(zip(order, stream), done_before + 1):
        out[i] = result
        if progress:
            progress(done, total)
    return [out[i] for i in range(len(jobs))]


def select_hmm(sequences: Sequence[np.ndarray], options: HMMSelectOptions | None = None, *,
               run_ids: Sequence[str] | None = None, progress: Callable[[int, int], object] | None = None,
               **changes) -> HMMSelection:
    """Choose the covariance type and number of HMM states by held-out BIC (module docstring).

    Parameters
    ----------
    sequences : one array (T_i, d) per run (e.g. ``Trajectories.data``).
    options : :class:`~trainmap.options.HMMSelectOptions` (defaults when None); keyword
        ``changes`` override single options (``select_hmm(seqs, max_components=4)``).
    run_ids : names of the runs, reported in ``train_runs``/``test_runs``.
    progress : called as ``progress(done, total)`` after each fit.

    A failed fit (exception, non-finite likelihood, degenerate parameters) is a row with
    ``status == "failed"`` and the reason in ``error``; it never stops the selection.
    Raises :class:`AnalysisError` when no candidate has a successful fit in every fold.
    """
    options = (options or HMMSelectOptions()).replace(**changes)
    sequences = _checked(sequences)
    folds = run_folds(len(sequences), options.folds, options.test_fraction, options.seed)
    k = len(folds)
    data = {}
    for f, (train, test) in enumerate(folds):
        X_train, len_train = _concat(sequences, train)
        X_test, len_test = _concat(sequences, test)
        data[f] = _Data(X_train, len_train, X_test, len_test)
    candidates = covariance_candidates(options.covariance)
    jobs = [_Job(c, n, f, r, restart_seed(options.seed, n, r, c, f))
            for c in candidates for f in range(k)
            for n in range(1, options.max_components + 1) for r in range(options.restarts)]
    total = len(jobs) + (options.restarts if k > 1 else 0)
    results = _run_jobs(jobs, data, options, progress, total=total)
    table = choose(pd.DataFrame([row for row, _ in results]), options.selection)
    if k > 1:
        pick = selection_summary(table, options.selection)
        pick = pick[pick["chosen"]].iloc[0]
        cov, n = str(pick["covariance"]), int(pick["n_components"])
        X_all, len_all = _concat(sequences, np.arange(len(sequences)))
        data[REFIT_FOLD] = _Data(X_all, len_all, np.empty((0, X_all.shape[1])), np.empty(0, dtype=int))
        refits = [_Job(cov, n, REFIT_FOLD, r, restart_seed(options.seed, n, r, cov, k)) for r in range(options.restarts)]
        results += _run_jobs(refits, data, options, progress, done_before=len(jobs), total=total)
        table = pd.DataFrame([row for row, _ in results])
        if not (table.loc[table["fold"] == REFIT_FOLD, "status"] == "ok").any():
            reasons = "; ".join(sorted(set(table.loc[table["fold"] == REFIT_FOLD, "error"])))[:500]
            raise AnalysisError(f"every refit of the chosen model ({cov}, {n} states) on all runs failed ({reasons})")
        table = choose(table, options.selection)
    chosen = int(np.nonzero(table["chosen"].to_numpy())[0][0])
    params = results[chosen][1]
    covariance = str(table["covariance"].iloc[chosen])
    model = model_from_params(**{key: params[key] for key in ("startprob", "transmat", "means", "covars")},
                              covariance_type=covariance, min_covar=options.min_covar)
    names = list(run_ids) if run_ids is not None else list(range(len(sequences)))
    train, test = folds[0] if k == 1 else (np.arange(len(sequences)), np.array([], dtype=int))
    return HMMSelection(
        table=table, summary=selection_summary(table, options.selection), model=model, covariance=covariance,
        n_components=int(table["n_components"].iloc[chosen]), restart=int(table["restart"].iloc[chosen]), folds=k,
        train_runs=[names[i] for i in train], test_runs=[names[i] for i in test],
    )

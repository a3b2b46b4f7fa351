"""Gaussian HMM model selection by held-out BIC (docs/design.md step 2, paper Section 2.1).

Runs are split 80/20 by a seeded shuffle; for every number of states n = 1..max_components
and every restart, a Gaussian HMM is fitted by Baum-Welch on the training runs (sequences
concatenated with ``lengths``) and scored on the held-out runs. With ``LL`` the held-out
log-likelihood, ``N`` the held-out checkpoints and ``p`` the free parameters
``(n-1) + n(n-1) + n d + n d(d+1)/2`` (full) or ``... + n d`` (diag),
``AIC = -2 LL + 2 p`` and ``BIC = -2 LL + p ln N`` (hmmlearn's ``aic``/``bic`` applied to
held-out data).

Choosing n (option ``selection``):

* ``best`` (default): each n is represented by its best restart (highest held-out LL =
  lowest BIC at fixed n); the n whose best BIC is lowest wins. A restart that lands in a
  poor local optimum does not count against its n: the question asked is "how many states
  describe held-out runs best", and the best restart answers it.
* ``mean``: the n with the lowest mean BIC over its successful restarts (the authors' code).
  It also rewards n whose fits are reliable, and so tends to smaller n when larger models
  often land in poor optima.

Either way the model kept is the best restart of the chosen n; ties go to the smaller n.
Restart r of n states is seeded with ``SeedSequence([seed, n, r])``, so results do not
depend on how many worker processes run the fits; every worker limits BLAS/OpenMP to one
thread.
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
from trainmap.limits import cap_workers
from trainmap.options import HMMSelectOptions

__all__ = [
    "HMMSelection",
    "SELECTION_COLUMNS",
    "n_free_parameters",
    "information_criteria",
    "split_runs",
    "restart_seed",
    "fit_hmm",
    "select_hmm",
    "choose",
]

#: Columns of the selection table (selection.csv).
SELECTION_COLUMNS = [
    "n_components", "restart", "seed", "status", "converged", "n_iter", "train_loglik",
    "test_loglik", "n_params", "n_test_obs", "aic", "bic", "best_for_n", "chosen", "error",
]


def n_free_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Free scalar parameters of a Gaussian HMM: start probabilities ``n-1``, transitions
    ``n(n-1)``, means ``n d``, covariances ``n d(d+1)/2`` (full) or ``n d`` (diag).
    Equals hmmlearn's count."""
    n, d = n_components, n_features
    cov = {"full": n * d * (d + 1) // 2, "diag": n * d}
    if covariance_type not in cov:
        raise ValueError(f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, not {covariance_type!r}")
    return (n - 1) + n * (n - 1) + n * d + cov[covariance_type]


def information_criteria(loglik: float, n_params: int, n_obs: int) -> tuple[float, float]:
    """``(AIC, BIC)`` = ``(-2 LL + 2 p, -2 LL + p ln N)``."""
    return -2.0 * loglik + 2.0 * n_params, -2.0 * loglik + n_params * math.log(n_obs)


def split_runs(n_runs: int, test_fraction: float = HMMSelectOptions.test_fraction,
               seed: int = HMMSelectOptions.seed) -> tuple[np.ndarray, np.ndarray]:
    """Seeded shuffle of run indices into (train, test), test = ``round(test_fraction n)``
    runs but at least one, and at least one training run. Both index arrays are sorted."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, not {test_fraction}")
    if n_runs < 2:
        raise InsufficientRunsError(f"a train/test split needs at least 2 runs, got {n_runs}")
    n_test = min(max(1, int(round(test_fraction * n_runs))), n_runs - 1)
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])).permutation(n_runs)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def restart_seed(seed: int, n_components: int, restart: int) -> int:
    """The random state of restart ``restart`` of ``n_components`` states (a 31-bit int)."""
    return int(np.random.SeedSequence([seed, n_components, restart]).generate_state(1)[0] >> 1)


def fit_hmm(X: np.ndarray, lengths: Sequence[int], n_components: int, *, covariance_type: str = "full",
            random_state: int = 0, n_iter: int = HMMSelectOptions.n_iter, tol: float = HMMSelectOptions.tol,
            min_covar: float = HMMSelectOptions.min_covar, fast: bool = True):
    """Fit one ``GaussianHMM`` by Baum-Welch (hmmlearn's k-means initialisation).

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
    model.fit(X, np.asarray(lengths))
    history = list(model.monitor_.history)
    converged = len(history) >= 2 and (history[-1] - history[-2]) < abs_tol
    return model, bool(converged), len(history)


@dataclass(frozen=True)
class _Data:
    """The split data every fit of one selection sees."""

    X_train: np.ndarray
    len_train: np.ndarray
    X_test: np.ndarray
    len_test: np.ndarray


def _fit_one(data: _Data, n_components: int, restart: int, seed: int,
             options: HMMSelectOptions) -> tuple[dict, dict | None]:
    """Fit and score one (n, restart); never raises for a failed fit (recorded instead)."""
    row = {
        "n_components": n_components, "restart": restart, "seed": seed, "status": "failed", "converged": False,
        "n_iter": 0, "train_loglik": np.nan, "test_loglik": np.nan,
        "n_params": n_free_parameters(n_components, data.X_train.shape[1], options.covariance),
        "n_test_obs": int(data.X_test.shape[0]), "aic": np.nan, "bic": np.nan, "error": "",
    }
    # hmmlearn logs "not converging"/"zero-sum transmat" chatter per iteration; the
    # selection table records what matters. Quiet it for this fit only.
    hmm_logger = logging.getLogger("hmmlearn")
    level = hmm_logger.level
    hmm_logger.setLevel(logging.ERROR)
    try:
        return _fit_and_score(row, data, n_components, seed, options)
    finally:
        hmm_logger.setLevel(level)


def _fit_and_score(row: dict, data: _Data, n_components: int, seed: int,
                   options: HMMSelectOptions) -> tuple[dict, dict | None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model, converged, iters = fit_hmm(
                data.X_train, data.len_train, n_components, covariance_type=options.covariance,
                random_state=seed, n_iter=options.n_iter, tol=options.tol, min_covar=options.min_covar,
            )
            row["converged"], row["n_iter"] = converged, iters
            row["train_loglik"] = float(model.monitor_.history[-1]) if model.monitor_.history else np.nan
            problem = _degenerate(model)
            if problem:
                row["error"] = problem
                return row, None
            test_ll = float(model.score(data.X_test, data.len_test))
        except Exception as exc:  # noqa: BLE001 - any failed fit is a row, not a crash
            row["error"] = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            return row, None
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
    for k, cov in enumerate(model.covars_):
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            return f"covariance of state {k} is not positive definite"
    return ""


def choose(table: pd.DataFrame, selection: str) -> pd.DataFrame:
    """Mark ``best_for_n`` (best restart of each n) and ``chosen`` (the best restart of
    the n chosen by the ``selection`` rule, module docstring) in a selection table."""
    table = table.copy()
    ok = table["status"] == "ok"
    if not ok.any():
        reasons = "; ".join(sorted(set(table["error"])))[:500]
        raise AnalysisError(f"every HMM fit failed ({reasons})")
    table["best_for_n"] = False
    for _, group in table[ok].groupby("n_components"):
        table.loc[group["test_loglik"].idxmax(), "best_for_n"] = True
    best_rows = table[table["best_for_n"]]
    if selection == "best":
        per_n = best_rows.set_index("n_components")["bic"]
    elif selection == "mean":
        per_n = table[ok].groupby("n_components")["bic"].mean()
    else:
        raise ValueError(f"selection must be 'best' or 'mean', not {selection!r}")
    n_chosen = per_n.sort_index().idxmin()  # first minimum: ties go to the smaller n
    table["chosen"] = False
    table.loc[best_rows.index[best_rows["n_components"] == n_chosen][0], "chosen"] = True
    return table[SELECTION_COLUMNS]


@dataclass
class HMMSelection:
    """Result of :func:`select_hmm`.

    Attributes
    ----------
    table : one row per (n_components, restart), columns :data:`SELECTION_COLUMNS`.
    model : the chosen fitted ``GaussianHMM``.
    n_components, restart : the chosen fit.
    train_runs, test_runs : indices (or ids, when ``run_ids`` were given) of the split.
    """

    table: pd.DataFrame
    model: object
    n_components: int
    restart: int
    train_runs: list = field(default_factory=list)
    test_runs: list = field(default_factory=list)


def _split(sequences: Sequence[np.ndarray], options: HMMSelectOptions) -> tuple[_Data, np.ndarray, np.ndarray]:
    sequences = [np.ascontiguousarray(s, dtype=float) for s in sequences]
    if not sequences:
        raise InsufficientRunsError("no sequences to fit")
    d = sequences[0].shape[1]
    if any(s.ndim != 2 or s.shape[1] != d for s in sequences):
        raise ValueError("all sequences must be 2-D arrays with the same number of columns")
    train_idx, test_idx = split_runs(len(sequences), options.test_fraction, options.seed)
    data = _Data(
        X_train=np.concatenate([sequences[i] for i in train_idx]),
        len_train=np.array([len(sequences[i]) for i in train_idx]),
        X_test=np.concatenate([sequences[i] for i in test_idx]),
        len_test=np.array([len(sequences[i]) for i in test_idx]),
    )
    return data, train_idx, test_idx


def _run_fits(data: _Data, options: HMMSelectOptions, progress) -> list[tuple[dict, dict | None]]:
    """Every (n, restart) fit, in (n, restart) order, over ``options.workers`` processes."""
    jobs = [(n, r, restart_seed(options.seed, n, r))
            for n in range(1, options.max_components + 1) for r in range(options.restarts)]
    workers = cap_workers(options.workers, "--workers")
    if workers == 1:
        results = []
        for done, job in enumerate(jobs, 1):
            results.append(_fit_one(data, *job, options))
            if progress:
                progress(done, len(jobs))
        return results
    from joblib import Parallel, delayed

    # Big n first so the slowest fits do not end up last.
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][0])
    parallel = Parallel(n_jobs=workers, backend="loky", return_as="generator")
    out: dict[int, tuple[dict, dict | None]] = {}
    stream = parallel(delayed(_fit_one)(data, *jobs[i], options) for i in order)
    for done, (i, result) in enumerate(zip(order, stream), 1):
        out[i] = result
        if progress:
            progress(done, len(jobs))
    return [out[i] for i in range(len(jobs))]


def select_hmm(sequences: Sequence[np.ndarray], options: HMMSelectOptions | None = None, *,
               run_ids: Sequence[str] | None = None, progress: Callable[[int, int], object] | None = None,
               **changes) -> HMMSelection:
    """Choose the number of HMM states by held-out BIC (module docstring).

    Parameters
    ----------
    sequences : one array (T_i, d) per run (e.g. ``Trajectories.data``).
    options : :class:`~trainmap.options.HMMSelectOptions` (defaults when None); keyword
        ``changes`` override single options (``select_hmm(seqs, max_components=4)``).
    run_ids : names of the runs, reported in ``train_runs``/``test_runs``.
    progress : called as ``progress(done, total)`` after each fit.

    A failed fit (exception, non-finite likelihood, degenerate covariance) is a row with
    ``status == "failed"`` and the reason in ``error``; it never stops the selection.
    Raises :class:`AnalysisError` when every fit fails.
    """
    options = (options or HMMSelectOptions()).replace(**changes)
    data, train_idx, test_idx = _split(sequences, options)
    results = _run_fits(data, options, progress)
    table = choose(pd.DataFrame([row for row, _ in results]), options.selection)
    best = int(np.nonzero(table["chosen"].to_numpy())[0][0])
    params = results[best][1]
    model = model_from_params(**{k: params[k] for k in ("startprob", "transmat", "means", "covars")},
                              covariance_type=options.covariance, min_covar=options.min_covar)
    names = list(run_ids) if run_ids is not None else list(range(len(sequences)))
    return HMMSelection(
        table=table, model=model,
        n_components=int(table["n_components"].iloc[best]), restart=int(table["restart"].iloc[best]),
        train_runs=[names[i] for i in train_idx], test_runs=[names[i] for i in test_idx],
    )

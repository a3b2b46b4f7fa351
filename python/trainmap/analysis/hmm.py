"""Gaussian HMM model selection, decoding, and pickle-free model files.

Model selection (docs/design.md step 2, paper Section 2.1): runs are split 80/20 by a seeded
shuffle; for every number of states n = 1..``max_components`` and every restart, a
``hmmlearn.hmm.GaussianHMM`` is fitted by Baum-Welch on the training runs (sequences
concatenated with ``lengths``) and scored on the held-out runs. With

* ``LL``   the held-out log-likelihood (``GaussianHMM.score`` summed over held-out runs),
* ``N``    the number of held-out checkpoints (observations),
* ``p``    the number of free parameters
  ``(n-1) + n(n-1) + n d + n d(d+1)/2`` (full covariance) or ``... + n d`` (diagonal),

``AIC = -2 LL + 2 p`` and ``BIC = -2 LL + p ln N`` — the formulas of hmmlearn's
``aic``/``bic`` methods, applied to held-out data. The chosen model is the fit with the
lowest held-out BIC over all successful (n, restart) pairs: for each n its best restart
(highest held-out log-likelihood, which is the lowest BIC at fixed n), then the n whose
best BIC is lowest (ties go to the smaller n).

Restart r of n states is seeded with ``SeedSequence([seed, n, r])``, so results do not
depend on how many worker processes run the fits; every worker limits BLAS/OpenMP to one
thread.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import linalg

from trainmap import atomic
from trainmap.limits import cap_workers
from trainmap.analysis.errors import AnalysisError, InsufficientRunsError, ModelFormatError

__all__ = [
    "COVARIANCE_TYPES",
    "DEFAULT_N_ITER",
    "DEFAULT_TOL",
    "DEFAULT_MIN_COVAR",
    "HMMSelection",
    "n_free_parameters",
    "information_criteria",
    "split_runs",
    "restart_seed",
    "fit_hmm",
    "select_hmm",
    "decode_states",
    "model_from_params",
    "model_params",
    "save_model",
    "load_model",
    "SavedModel",
    "SELECTION_COLUMNS",
]

COVARIANCE_TYPES = ("full", "diag")
#: Most EM iterations per fit.
DEFAULT_N_ITER = 1000
#: Convergence threshold: EM stops when the training log-likelihood gains less than
#: ``tol`` nats per training checkpoint in one iteration.
DEFAULT_TOL = 1e-4
#: Floor added to covariance diagonals in the M-step (hmmlearn's ``min_covar``).
DEFAULT_MIN_COVAR = 1e-3

#: Columns of the selection table (selection.csv).
SELECTION_COLUMNS = [
    "n_components", "restart", "seed", "status", "converged", "n_iter", "train_loglik",
    "test_loglik", "n_params", "n_test_obs", "aic", "bic", "best_for_n", "chosen", "error",
]

_MODEL_FORMAT = "trainmap-gaussianhmm-1"
# The most a model.npz can need: covars of 100 states x 100 features in float64 is 8 MB.
_MODEL_MAX_ARRAY_BYTES = 64 << 20
_MODEL_MAX_TOTAL_BYTES = 128 << 20


def n_free_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Free scalar parameters of a Gaussian HMM: start probabilities ``n-1``, transitions
    ``n(n-1)``, means ``n d``, covariances ``n d(d+1)/2`` (full), ``n d`` (diag),
    ``n`` (spherical) or ``d(d+1)/2`` (tied). Equals hmmlearn's count."""
    n, d = n_components, n_features
    cov = {
        "full": n * d * (d + 1) // 2,
        "diag": n * d,
        "spherical": n,
        "tied": d * (d + 1) // 2,
    }
    if covariance_type not in cov:
        raise ValueError(f"unknown covariance_type {covariance_type!r}")
    return (n - 1) + n * (n - 1) + n * d + cov[covariance_type]


def information_criteria(loglik: float, n_params: int, n_obs: int) -> tuple[float, float]:
    """``(AIC, BIC)`` = ``(-2 LL + 2 p, -2 LL + p ln N)``."""
    return -2.0 * loglik + 2.0 * n_params, -2.0 * loglik + n_params * math.log(n_obs)


def split_runs(n_runs: int, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
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


def model_params(model) -> dict[str, np.ndarray]:
    """Every parameter of a fitted ``GaussianHMM`` as plain arrays (covariances in full
    form, shape (n, d, d), whatever the covariance type)."""
    return {
        "startprob": np.asarray(model.startprob_, dtype=float),
        "transmat": np.asarray(model.transmat_, dtype=float),
        "means": np.asarray(model.means_, dtype=float),
        "covars": np.asarray(model.covars_, dtype=float),
        "covariance_type": np.str_(model.covariance_type),
        "min_covar": np.float64(model.min_covar),
    }


def model_from_params(
    startprob, transmat, means, covars, covariance_type: str = "full", min_covar: float = DEFAULT_MIN_COVAR
):
    """A ``GaussianHMM`` with exactly these parameters (``covars`` in full form (n, d, d)).

    Raises :class:`ModelFormatError` on inconsistent shapes or invalid probabilities.
    """
    from hmmlearn.hmm import GaussianHMM

    startprob = np.asarray(startprob, dtype=float)
    transmat = np.asarray(transmat, dtype=float)
    means = np.asarray(means, dtype=float)
    covars = np.asarray(covars, dtype=float)
    covariance_type = str(covariance_type)
    if means.ndim != 2:
        raise ModelFormatError(f"means must be 2-D (n_states, n_features), got shape {means.shape}")
    n, d = means.shape
    if startprob.shape != (n,) or transmat.shape != (n, n) or covars.shape != (n, d, d):
        raise ModelFormatError(
            f"inconsistent shapes: startprob {startprob.shape}, transmat {transmat.shape}, "
            f"means {means.shape}, covars {covars.shape} (expected ({n},), ({n}, {n}), ({n}, {d}, {d}))"
        )
    if covariance_type == "full":
        internal = covars
    elif covariance_type == "diag":
        internal = np.diagonal(covars, axis1=1, axis2=2).copy()
    elif covariance_type == "spherical":
        internal = np.diagonal(covars, axis1=1, axis2=2)[:, 0].copy()
    elif covariance_type == "tied":
        internal = covars[0]
    else:
        raise ModelFormatError(f"unknown covariance_type {covariance_type!r}")
    model = GaussianHMM(n_components=n, covariance_type=covariance_type, min_covar=float(min_covar))
    model.n_features = d
    model.startprob_ = startprob
    model.transmat_ = transmat
    model.means_ = means
    try:
        model.covars_ = internal
        model._check()
    except ValueError as exc:
        raise ModelFormatError(f"invalid HMM parameters: {exc}") from exc
    return model


def _fit_one(
    X_train: np.ndarray,
    len_train: np.ndarray,
    X_test: np.ndarray,
    len_test: np.ndarray,
    n_components: int,
    restart: int,
    seed: int,
    covariance_type: str,
    n_iter: int,
    tol: float,
    min_covar: float,
) -> tuple[dict, dict | None]:
    """Fit and score one (n, restart); never raises for a failed fit (recorded instead)."""
    row = {
        "n_components": n_components,
        "restart": restart,
        "seed": seed,
        "status": "failed",
        "converged": False,
        "n_iter": 0,
        "train_loglik": np.nan,
        "test_loglik": np.nan,
        "n_params": n_free_parameters(n_components, X_train.shape[1], covariance_type),
        "n_test_obs": int(X_test.shape[0]),
        "aic": np.nan,
        "bic": np.nan,
        "error": "",
    }
    # hmmlearn logs "not converging"/"zero-sum transmat" chatter per iteration; the
    # selection table records what matters. Quiet it for this fit only.
    hmm_logger = logging.getLogger("hmmlearn")
    level = hmm_logger.level
    hmm_logger.setLevel(logging.ERROR)
    try:
        return _fit_and_score(row, X_train, len_train, X_test, len_test, n_components, seed,
                              covariance_type, n_iter, tol, min_covar)
    finally:
        hmm_logger.setLevel(level)


def _fit_and_score(row, X_train, len_train, X_test, len_test, n_components, seed,
                   covariance_type, n_iter, tol, min_covar) -> tuple[dict, dict | None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model, converged, iters = fit_hmm(
                X_train, len_train, n_components,
                covariance_type=covariance_type, random_state=seed,
                n_iter=n_iter, tol=tol, min_covar=min_covar,
            )
            row["converged"], row["n_iter"] = converged, iters
            row["train_loglik"] = float(model.monitor_.history[-1]) if model.monitor_.history else np.nan
            problem = _degenerate(model)
            if problem:
                row["error"] = problem
                return row, None
            test_ll = float(model.score(X_test, len_test))
        except Exception as exc:  # noqa: BLE001 - any failed fit is a row, not a crash
            row["error"] = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            return row, None
    if not np.isfinite(test_ll):
        row["error"] = "non-finite held-out log-likelihood"
        return row, None
    row["test_loglik"] = test_ll
    row["aic"], row["bic"] = information_criteria(test_ll, row["n_params"], X_test.shape[0])
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


def _fast_gaussian_hmm_class():
    """``GaussianHMM`` with a vectorised E-step, or plain ``GaussianHMM`` when hmmlearn's
    internals differ from the version this was written against (0.3.x).

    hmmlearn's E-step evaluates the emission densities, posteriors and emission statistics
    one sequence at a time, the full-covariance statistics with a three-operand ``einsum``.
    This subclass evaluates densities (full covariance: one matrix product per state),
    posteriors and statistics for all checkpoints at once with BLAS; the forward-backward
    passes and the start/transition statistics stay hmmlearn's own code, per sequence. It
    computes the same quantities up to rounding (tests/test_analysis_hmm.py compares fits)
    in about half the CPU time.
    """
    from hmmlearn.hmm import GaussianHMM

    try:
        from hmmlearn import _hmmc
        from hmmlearn.base import _AbstractHMM

        needed = (_hmmc.forward_log, _hmmc.backward_log, _AbstractHMM._accumulate_sufficient_statistics,
                  GaussianHMM._compute_log_likelihood, GaussianHMM._initialize_sufficient_statistics,
                  GaussianHMM._needs_sufficient_statistics_for_mean)
        del needed
    except (ImportError, AttributeError):  # pragma: no cover - other hmmlearn versions
        return GaussianHMM

    class FastGaussianHMM(GaussianHMM):
        def _compute_log_likelihood(self, X):
            if self.covariance_type != "full":
                return super()._compute_log_likelihood(X)
            # One GEMM per state with the inverse Cholesky factor instead of a triangular
            # solve on a transposed copy (hmmlearn.stats); same density.
            n, d = X.shape
            out = np.empty((n, self.n_components))
            for k, (mu, cov) in enumerate(zip(self.means_, self.covars_)):
                try:
                    chol = np.linalg.cholesky(cov)
                except np.linalg.LinAlgError:
                    # hmmlearn.stats retries with 1e-7 added to the diagonal (a state stuck
                    # with too few observations); do the same, and fail as it does.
                    try:
                        chol = np.linalg.cholesky(cov + 1e-7 * np.eye(d))
                    except np.linalg.LinAlgError:
                        raise ValueError("'covars' must be symmetric, positive-definite") from None
                inv = linalg.solve_triangular(chol, np.eye(d), lower=True)
                y = (X - mu) @ inv.T
                out[:, k] = -0.5 * (d * np.log(2 * np.pi) + np.einsum("ij,ij->i", y, y)) - np.log(np.diag(chol)).sum()
            return out

        def _do_estep(self, X, lengths):
            if self.implementation != "log":  # pragma: no cover - we always use "log"
                return super()._do_estep(X, lengths)
            stats = self._initialize_sufficient_statistics()
            self._estep_begin()
            # hmmlearn's C++ kernels read their arrays as C-ordered (the diagonal density comes
            # back Fortran-ordered), so every array handed to them is C-contiguous.
            log_frameprob = np.ascontiguousarray(self._compute_log_likelihood(X))
            fwd = np.empty(log_frameprob.shape)
            bwd = np.empty(log_frameprob.shape)
            parts = []
            curr_logprob = 0.0
            start = 0
            for n in lengths:
                part = slice(start, start + int(n))
                start += int(n)
                log_prob, fwd[part] = _hmmc.forward_log(self.startprob_, self.transmat_, log_frameprob[part])
                bwd[part] = _hmmc.backward_log(self.startprob_, self.transmat_, log_frameprob[part])
                curr_logprob += log_prob
                parts.append(part)
            # Posteriors of all checkpoints at once (hmmlearn normalises per sequence).
            log_gamma = fwd + bwd
            log_gamma -= log_gamma.max(axis=1, keepdims=True)
            with np.errstate(under="ignore"):
                posteriors = np.exp(log_gamma)
            posteriors /= posteriors.sum(axis=1, keepdims=True)
            for part in parts:
                # start and transition statistics: hmmlearn's base-class code
                _AbstractHMM._accumulate_sufficient_statistics(
                    self, stats, X[part], log_frameprob[part], posteriors[part], fwd[part], bwd[part])
            if self._needs_sufficient_statistics_for_mean():
                stats["post"] += posteriors.sum(axis=0)
                stats["obs"] += posteriors.T @ X
            if self._needs_sufficient_statistics_for_covars():
                if self.covariance_type in ("spherical", "diag"):
                    stats["obs**2"] += posteriors.T @ X**2
                else:
                    for c in range(self.n_components):
                        stats["obs*obs.T"][c] += (X * posteriors[:, c, None]).T @ X
            return stats, curr_logprob

    return FastGaussianHMM


def _plain_gaussian_hmm():
    from hmmlearn.hmm import GaussianHMM

    return GaussianHMM


def fit_hmm(
    X: np.ndarray,
    lengths: Sequence[int],
    n_components: int,
    *,
    covariance_type: str = "full",
    random_state: int = 0,
    n_iter: int = DEFAULT_N_ITER,
    tol: float = DEFAULT_TOL,
    min_covar: float = DEFAULT_MIN_COVAR,
    fast: bool = True,
):
    """Fit one ``GaussianHMM`` by Baum-Welch (hmmlearn's k-means initialisation).

    ``tol`` is per observation: EM stops when the training log-likelihood gains less than
    ``tol * len(X)`` in an iteration. Returns ``(model, converged, iterations)``, where
    ``converged`` is whether that criterion was met within ``n_iter`` iterations (hmmlearn's
    own flag also says True when it merely ran out of iterations). ``fast`` uses the
    vectorised E-step of :func:`_fast_gaussian_hmm_class` (same result).
    """
    if covariance_type not in ("full", "diag", "spherical", "tied"):
        raise ValueError(f"covariance_type must be 'full', 'diag', 'spherical' or 'tied', not {covariance_type!r}")
    abs_tol = tol * X.shape[0]
    model = (_fast_gaussian_hmm_class() if fast else _plain_gaussian_hmm())(
        n_components=n_components,
        covariance_type=covariance_type,
        min_covar=min_covar,
        n_iter=n_iter,
        tol=abs_tol,
        random_state=random_state,
        implementation="log",
    )
    model.fit(X, np.asarray(lengths))
    history = list(model.monitor_.history)
    converged = len(history) >= 2 and (history[-1] - history[-2]) < abs_tol
    return model, bool(converged), len(history)


@dataclass
class HMMSelection:
    """Result of :func:`select_hmm`.

    Attributes
    ----------
    table : one row per (n_components, restart), columns :data:`SELECTION_COLUMNS`.
    model : the chosen fitted ``GaussianHMM`` (lowest held-out BIC).
    n_components, restart : the chosen fit.
    train_runs, test_runs : indices (or ids, when ``run_ids`` were given) of the split.
    """

    table: pd.DataFrame
    model: object
    n_components: int
    restart: int
    train_runs: list = field(default_factory=list)
    test_runs: list = field(default_factory=list)


def select_hmm(
    sequences: Sequence[np.ndarray],
    *,
    max_components: int = 8,
    n_restarts: int = 5,
    covariance_type: str = "full",
    test_fraction: float = 0.2,
    seed: int = 0,
    n_iter: int = DEFAULT_N_ITER,
    tol: float = DEFAULT_TOL,
    min_covar: float = DEFAULT_MIN_COVAR,
    threads: int = 1,
    run_ids: Sequence[str] | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> HMMSelection:
    """Choose the number of HMM states by held-out BIC (docs/design.md step 2).

    Parameters
    ----------
    sequences : one array (T_i, d) per run (e.g. ``Trajectories.data``).
    max_components : try n = 1..max_components states.
    n_restarts : random restarts per n (different k-means and transition initialisations).
    covariance_type : ``"full"`` or ``"diag"``.
    test_fraction : share of runs held out for scoring (seeded shuffle, :func:`split_runs`).
    seed : master seed of the split and of every restart.
    n_iter, tol, min_covar : EM settings, see :func:`fit_hmm`.
    threads : worker processes fitting restarts in parallel (loky); the result does not
        depend on it.
    run_ids : names of the runs, reported in ``train_runs``/``test_runs``.
    progress : called as ``progress(done, total)`` after each fit.

    A failed fit (exception, non-finite likelihood, degenerate covariance) is a row with
    ``status == "failed"`` and the reason in ``error``; it never stops the selection.
    Raises :class:`AnalysisError` when every fit fails.
    """
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, not {covariance_type!r}")
    if max_components < 1 or n_restarts < 1:
        raise ValueError("max_components and n_restarts must be at least 1")
    threads = cap_workers(threads, "threads")
    sequences = [np.ascontiguousarray(s, dtype=float) for s in sequences]
    if not sequences:
        raise InsufficientRunsError("no sequences to fit")
    d = sequences[0].shape[1]
    if any(s.ndim != 2 or s.shape[1] != d for s in sequences):
        raise ValueError("all sequences must be 2-D arrays with the same number of columns")
    train_idx, test_idx = split_runs(len(sequences), test_fraction, seed)
    X_train = np.concatenate([sequences[i] for i in train_idx])
    len_train = np.array([len(sequences[i]) for i in train_idx])
    X_test = np.concatenate([sequences[i] for i in test_idx])
    len_test = np.array([len(sequences[i]) for i in test_idx])

    jobs = [
        (n, r, restart_seed(seed, n, r))
        for n in range(1, max_components + 1)
        for r in range(n_restarts)
    ]
    args = (covariance_type, n_iter, tol, min_covar)
    results: list[tuple[dict, dict | None]] = []
    if threads == 1:
        for done, (n, r, s) in enumerate(jobs, 1):
            results.append(_fit_one(X_train, len_train, X_test, len_test, n, r, s, *args))
            if progress:
                progress(done, len(jobs))
    else:
        from joblib import Parallel, delayed

        # Big n first so the slowest fits do not end up last.
        order = sorted(range(len(jobs)), key=lambda i: -jobs[i][0])
        parallel = Parallel(n_jobs=threads, backend="loky", return_as="generator")
        out: dict[int, tuple[dict, dict | None]] = {}
        stream = parallel(
            delayed(_fit_one)(X_train, len_train, X_test, len_test, *jobs[i], *args) for i in order
        )
        for done, (i, result) in enumerate(zip(order, stream), 1):
            out[i] = result
            if progress:
                progress(done, len(jobs))
        results = [out[i] for i in range(len(jobs))]

    table = pd.DataFrame([row for row, _ in results])
    ok = table["status"] == "ok"
    if not ok.any():
        reasons = "; ".join(sorted(set(table["error"])))[:500]
        raise AnalysisError(f"every HMM fit failed ({reasons})")
    table["best_for_n"] = False
    for n, group in table[ok].groupby("n_components"):
        table.loc[group["test_loglik"].idxmax(), "best_for_n"] = True
    best = table[table["best_for_n"]].sort_values(["bic", "n_components"], kind="stable").index[0]
    table["chosen"] = False
    table.loc[best, "chosen"] = True
    table = table[SELECTION_COLUMNS]
    params = results[best][1]
    model = model_from_params(**{k: params[k] for k in ("startprob", "transmat", "means", "covars")},
                              covariance_type=covariance_type, min_covar=min_covar)
    names = list(run_ids) if run_ids is not None else list(range(len(sequences)))
    return HMMSelection(
        table=table,
        model=model,
        n_components=int(table.loc[best, "n_components"]),
        restart=int(table.loc[best, "restart"]),
        train_runs=[names[i] for i in train_idx],
        test_runs=[names[i] for i in test_idx],
    )


def decode_states(model, sequences: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Viterbi state path of every sequence (one int array (T_i,) each)."""
    return [np.asarray(model.decode(np.ascontiguousarray(s, dtype=float), algorithm="viterbi")[1], dtype=int)
            for s in sequences]


@dataclass
class SavedModel:
    """A model read by :func:`load_model`: the ``GaussianHMM`` and what decoding needs.

    Attributes
    ----------
    model : the ``GaussianHMM``.
    features : feature (metrics.csv column) names, in model column order.
    zscore_first_n : checkpoints used for per-run z-scoring.
    metadata : other saved fields (train/test runs, seed, chosen restart, ...).
    """

    model: object
    features: list[str]
    zscore_first_n: int
    metadata: dict = field(default_factory=dict)


def save_model(
    path: str | os.PathLike,
    model,
    *,
    features: Sequence[str],
    zscore_first_n: int,
    metadata: dict | None = None,
) -> None:
    """Write a fitted ``GaussianHMM`` to an ``.npz`` file readable without pickle.

    Arrays: ``format``, ``startprob`` (n,), ``transmat`` (n, n), ``means`` (n, d),
    ``covars`` (n, d, d, full form), ``covariance_type``, ``min_covar``, ``features`` (d,
    unicode), ``zscore_first_n``, plus ``meta_<key>`` for every metadata entry (numbers,
    strings, or lists of them). Written atomically.
    """
    params = model_params(model)
    features = [str(f) for f in features]
    if len(features) != params["means"].shape[1]:
        raise ValueError(f"{len(features)} feature names for a model of {params['means'].shape[1]} features")
    arrays = dict(params)
    arrays["format"] = np.str_(_MODEL_FORMAT)
    arrays["features"] = np.array(features, dtype=np.str_)
    arrays["zscore_first_n"] = np.int64(zscore_first_n)
    for key, value in (metadata or {}).items():
        arr = np.asarray(value)
        if arr.dtype == object:
            arr = np.asarray([str(v) for v in value], dtype=np.str_)
        arrays[f"meta_{key}"] = arr
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic.write_bytes(path, buffer.getvalue())


def load_model(path: str | os.PathLike) -> SavedModel:
    """Read a model written by :func:`save_model` (``allow_pickle=False``; arrays larger than
    a model can need are refused before they are read)."""
    from trainmap.fileguard import InputFileError, read_npz

    try:
        arrays = read_npz(path, max_array_bytes=_MODEL_MAX_ARRAY_BYTES, max_total_bytes=_MODEL_MAX_TOTAL_BYTES,
                          what="model file")
    except FileNotFoundError:
        raise
    except InputFileError as exc:  # already names the file
        raise ModelFormatError(str(exc)) from None
    except (ValueError, OSError, EOFError) as exc:
        raise ModelFormatError(f"{path}: not a readable model file ({exc})") from exc
    required = ("startprob", "transmat", "means", "covars", "covariance_type", "features", "zscore_first_n")
    missing = [k for k in required if k not in arrays]
    if missing or str(arrays.get("format", "")) != _MODEL_FORMAT:
        raise ModelFormatError(
            f"{path}: not a trainmap model file"
            + (f" (missing {', '.join(missing)})" if missing else f" (format {arrays.get('format')!s})")
        )
    try:
        model = model_from_params(
            arrays["startprob"], arrays["transmat"], arrays["means"], arrays["covars"],
            covariance_type=str(arrays["covariance_type"]),
            min_covar=float(arrays.get("min_covar", DEFAULT_MIN_COVAR)),
        )
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from exc
    features = [str(f) for f in arrays["features"]]
    if len(features) != model.n_features:
        raise ModelFormatError(f"{path}: {len(features)} feature names for {model.n_features} features")
    metadata = {}
    for key, arr in arrays.items():
        if key.startswith("meta_"):
            metadata[key[5:]] = arr.item() if arr.ndim == 0 else arr.tolist()
    return SavedModel(model=model, features=features, zscore_first_n=int(arrays["zscore_first_n"]), metadata=metadata)

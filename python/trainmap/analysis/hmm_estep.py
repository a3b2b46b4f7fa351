"""The ``GaussianHMM`` classes the analysis fits with: a covariance floor at every EM step,
and a vectorised E-step for hmmlearn's ``GaussianHMM`` (full covariance).

Regularised M-step
------------------
hmmlearn adds ``min_covar`` to the covariances only when it initialises them; its M-step
for full and tied covariances adds the scalar ``covars_prior`` to *every* entry of the
matrix, which does not keep a covariance positive definite. A state that EM leaves with
fewer checkpoints than features (common with 5–20 runs of 20–200 records and 14 features)
then gets a singular covariance and the fit fails. :func:`gaussian_hmm_class` returns a
subclass whose M-step adds a floor ``covar_floor`` (one value per feature) to the diagonal
of every covariance after each update, as scikit-learn's ``GaussianMixture`` adds
``reg_covar``. The selection scales it to the data: ``min_covar`` times each feature's
variance over the fitted checkpoints. A state that EM leaves empty (no posterior mass) keeps
its mean and covariance instead of becoming 0/0, and a transition row with no observed
transition out (an empty state, or one only ever at the end of runs) keeps its previous value.

hmmlearn 0.3's E-step evaluates emission densities, posteriors and emission statistics one
sequence at a time, the full-covariance statistics with a three-operand ``einsum``.
:class:`FastGaussianHMM` (built by :func:`fast_gaussian_hmm_class`) evaluates the densities
(one matrix product per state with the inverse Cholesky factor), the posteriors and the
statistics for all checkpoints at once with BLAS; the forward-backward passes and the
start/transition statistics stay hmmlearn's own code, per sequence. Same quantities up to
rounding (tests/analysis/test_analysis_hmm.py compares whole fits).

Fitting uses it only where it wins: :data:`FAST_COVARIANCE_TYPES`, from
``benchmarks/estep.py``, which times it against plain hmmlearn with
``implementation="log"`` and ``"scaling"`` on the same data (figures in
docs/analysis.md). The
internals it relies on are those of hmmlearn 0.3.x (pyproject bounds it below 0.3.4); with
other versions plain ``GaussianHMM`` is used.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import linalg

__all__ = ["fast_gaussian_hmm_class", "gaussian_hmm_class", "regularized", "FAST_COVARIANCE_TYPES"]

#: Covariance types for which the fast E-step beat hmmlearn in benchmarks/estep.py.
FAST_COVARIANCE_TYPES = ("full", "tied", "diag")
# Posterior mass below which a state counts as empty in an M-step.
_EMPTY_MASS = 1e-10


def gaussian_hmm_class(covariance_type: str, fast: bool = True):
    """The ``GaussianHMM`` class to fit with, regularised (:func:`regularized`): over the
    fast E-step for full covariance (where it is faster), over hmmlearn's own otherwise or
    when ``fast`` is False."""
    from hmmlearn.hmm import GaussianHMM

    base = fast_gaussian_hmm_class() if fast and covariance_type in FAST_COVARIANCE_TYPES else GaussianHMM
    return regularized(base)


@functools.cache
def regularized(base):
    """``base`` (a ``GaussianHMM`` class) with the regularised M-step of the module
    docstring. Set ``covar_floor`` (shape (n_features,), or a scalar) before fitting;
    without it the M-step is ``base``'s."""

    class RegularizedGaussianHMM(base):
        covar_floor = None

        def _do_mstep(self, stats):
            empty = ~(np.asarray(stats["post"]) > _EMPTY_MASS)
            if empty.any():
                stats = self._keep_empty_states(stats, empty)
            transmat = np.array(self.transmat_, copy=True)
            super()._do_mstep(stats)
            # A state never left in any sequence (or empty) has no transition statistics.
            dead = ~(self.transmat_.sum(axis=1) > 0)
            self.transmat_[dead] = transmat[dead]
            if self.covar_floor is not None and "c" in self.params:
                floor = np.broadcast_to(np.asarray(self.covar_floor, dtype=float), (self.n_features,))
                if self.covariance_type == "full":
                    self._covars_ = self._covars_ + np.diag(floor)[None, :, :]
                elif self.covariance_type == "tied":
                    self._covars_ = self._covars_ + np.diag(floor)
                elif self.covariance_type == "diag":
                    self._covars_ = self._covars_ + floor[None, :]
                else:
                    raise ValueError(f"no covariance floor for covariance type {self.covariance_type!r}")

        def _keep_empty_states(self, stats, empty):
            """Statistics in which every empty state has a vanishing mass at its current mean
            and covariance, so that the M-step keeps them (instead of computing 0/0, which
            would also spoil a tied covariance shared with the other states)."""
            stats = {key: np.array(value, dtype=float, copy=True) if isinstance(value, np.ndarray) else value
                     for key, value in stats.items()}
            mass = _EMPTY_MASS
            means, covars = np.asarray(self.means_), np.asarray(self.covars_)  # covars_: full form
            for k in np.nonzero(empty)[0]:
                stats["post"][k] = mass
                if "obs" in stats:
                    stats["obs"][k] = mass * means[k]
                if "obs**2" in stats:
                    stats["obs**2"][k] = mass * (means[k] ** 2 + np.diag(covars[k]))
                if "obs*obs.T" in stats:
                    stats["obs*obs.T"][k] = mass * (covars[k] + np.outer(means[k], means[k]))
            return stats

    RegularizedGaussianHMM.__name__ = RegularizedGaussianHMM.__qualname__ = f"Regularized{base.__name__}"
    return RegularizedGaussianHMM


def _log_density_full(X: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """``log N(x_t; μ_k, Σ_k)``, shape (T, n): one GEMM per state with the inverse Cholesky
    factor instead of a triangular solve on a transposed copy (hmmlearn.stats). ``covars``
    of shape (d, d) is one covariance shared by every state (tied): factorised once."""
    n, d = X.shape[0], X.shape[1]
    out = np.empty((n, len(means)))
    shared = None
    if covars.ndim == 2:
        shared = _inverse_cholesky(covars, d)
    for k, mu in enumerate(means):
        inv, log_det = shared if shared is not None else _inverse_cholesky(covars[k], d)
        y = (X - mu) @ inv.T
        out[:, k] = -0.5 * (d * np.log(2 * np.pi) + np.einsum("ij,ij->i", y, y)) - log_det
    return out


def _log_density_diag(X: np.ndarray, means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """``log N(x_t; μ_k, diag(σ²_k))``, shape (T, n), for every state at once (three matrix
    products instead of a loop over states)."""
    precision = 1.0 / variances
    quad = (X**2) @ precision.T - 2.0 * X @ (means * precision).T + (means**2 * precision).sum(axis=1)
    return -0.5 * (X.shape[1] * np.log(2 * np.pi) + np.log(variances).sum(axis=1) + quad)


def _inverse_cholesky(cov: np.ndarray, d: int) -> tuple[np.ndarray, float]:
    """The inverse of the lower Cholesky factor of ``cov`` and half its log-determinant."""
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        # hmmlearn.stats retries with 1e-7 added to the diagonal (a state stuck with too
        # few observations); do the same, and fail as it does.
        try:
            chol = np.linalg.cholesky(cov + 1e-7 * np.eye(d))
        except np.linalg.LinAlgError:
            raise ValueError("'covars' must be symmetric, positive-definite") from None
    inv = linalg.solve_triangular(chol, np.eye(d), lower=True)
    return inv, float(np.log(np.diag(chol)).sum())


@functools.cache
def fast_gaussian_hmm_class():
    """``GaussianHMM`` with the vectorised full-covariance E-step, or plain ``GaussianHMM``
    when hmmlearn's internals differ from the version this was written against."""
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
            if self.covariance_type == "full":
                return _log_density_full(X, self.means_, self.covars_)
            if self.covariance_type == "tied":
                return _log_density_full(X, self.means_, self._covars_)
            if self.covariance_type == "diag":
                return _log_density_diag(X, self.means_, self._covars_)
            return super()._compute_log_likelihood(X)

        def _do_estep(self, X, lengths):
            if self.implementation != "log":
                return super()._do_estep(X, lengths)
            stats = self._initialize_sufficient_statistics()
            self._estep_begin()
            # hmmlearn's C++ kernels read their arrays as C-ordered: hand them C-contiguous ones.
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
                if self.covariance_type == "diag":
                    stats["obs**2"] += posteriors.T @ X**2
                else:
                    for c in range(self.n_components):
                        stats["obs*obs.T"][c] += (X * posteriors[:, c, None]).T @ X
            return stats, curr_logprob

    return FastGaussianHMM

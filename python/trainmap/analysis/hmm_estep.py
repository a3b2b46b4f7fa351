"""A vectorised E-step for hmmlearn's ``GaussianHMM`` (full and diagonal covariance).

hmmlearn 0.3's E-step evaluates emission densities, posteriors and emission statistics one
sequence at a time, the full-covariance statistics with a three-operand ``einsum``.
:class:`FastGaussianHMM` (built by :func:`fast_gaussian_hmm_class`) evaluates the densities
(one matrix product per state with the inverse Cholesky factor), the posteriors and the
statistics for all checkpoints at once with BLAS; the forward-backward passes and the
start/transition statistics stay hmmlearn's own code, per sequence. Same quantities up to
rounding (tests/test_analysis_hmm.py compares whole fits).

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

__all__ = ["fast_gaussian_hmm_class", "gaussian_hmm_class", "FAST_COVARIANCE_TYPES"]

#: Covariance types for which the fast E-step beat hmmlearn in benchmarks/estep.py.
FAST_COVARIANCE_TYPES = ("full",)


def gaussian_hmm_class(covariance_type: str, fast: bool = True):
    """The ``GaussianHMM`` class to fit with: the fast one for full covariance (where it
    is faster), hmmlearn's own otherwise or when ``fast`` is False."""
    from hmmlearn.hmm import GaussianHMM

    return fast_gaussian_hmm_class() if fast and covariance_type in FAST_COVARIANCE_TYPES else GaussianHMM


def _log_density_full(X: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """``log N(x_t; μ_k, Σ_k)``, shape (T, n): one GEMM per state with the inverse Cholesky
    factor instead of a triangular solve on a transposed copy (hmmlearn.stats)."""
    n, d = X.shape[0], X.shape[1]
    out = np.empty((n, len(means)))
    for k, (mu, cov) in enumerate(zip(means, covars)):
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            # hmmlearn.stats retries with 1e-7 added to the diagonal (a state stuck with
            # too few observations); do the same, and fail as it does.
            try:
                chol = np.linalg.cholesky(cov + 1e-7 * np.eye(d))
            except np.linalg.LinAlgError:
                raise ValueError("'covars' must be symmetric, positive-definite") from None
        inv = linalg.solve_triangular(chol, np.eye(d), lower=True)
        y = (X - mu) @ inv.T
        out[:, k] = -0.5 * (d * np.log(2 * np.pi) + np.einsum("ij,ij->i", y, y)) - np.log(np.diag(chol)).sum()
    return out


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
            if self.covariance_type != "full":
                return super()._compute_log_likelihood(X)
            return _log_density_full(X, self.means_, self.covars_)

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

"""Feature importance of HMM states (paper Section 2.2 and Appendix A).

For a Gaussian HMM with means ``μ_k`` and covariances ``Σ_k``, the gradient of the
filtered log posterior of state k with respect to the current observation is

    ∂ log p(s_t = k | z_1:t) / ∂z_t = Σ_k⁻¹(μ_k − z_t) − Σ_h p(s_t = h | z_1:t) Σ_h⁻¹(μ_h − z_t),

because ``log p(s_t=k | z_1:t) = log p(z_t | s_t=k) + log p(s_t=k, z_1:t-1) − log p(z_1:t)``
and the middle term does not depend on ``z_t``. The importance of feature i for state k
at time t is the absolute value of entry i. The filtered posterior
``p(s_t = h | z_1:t)`` comes from the forward algorithm (:func:`filtered_posterior`).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.special import logsumexp

__all__ = ["log_emission", "filtered_posterior", "posterior_gradient", "posterior_importance", "scaled_importance"]


def _params(model):
    means = np.asarray(model.means_, dtype=float)
    covars = np.asarray(model.covars_, dtype=float)  # full form for every covariance type
    return means, covars


def log_emission(model, Z: np.ndarray) -> np.ndarray:
    """``log N(z_t; μ_k, Σ_k)`` for every t and state k, shape (T, n_states)."""
    Z = np.atleast_2d(np.asarray(Z, dtype=float))
    means, covars = _params(model)
    T, d = Z.shape
    out = np.empty((T, len(means)))
    for k, (mu, cov) in enumerate(zip(means, covars)):
        chol = linalg.cholesky(cov, lower=True)
        sol = linalg.solve_triangular(chol, (Z - mu).T, lower=True)
        out[:, k] = -0.5 * (d * np.log(2 * np.pi) + (sol**2).sum(axis=0)) - np.log(np.diagonal(chol)).sum()
    return out


def filtered_posterior(model, Z: np.ndarray, *, log: bool = False) -> np.ndarray:
    """Forward algorithm: ``p(s_t = k | z_1:t)`` for every t, shape (T, n_states).

    Computed in log space (normalised every step), so long sequences neither underflow
    nor overflow. With ``log=True`` the log posterior is returned.
    """
    log_b = log_emission(model, Z)
    with np.errstate(divide="ignore"):
        log_a = np.log(np.asarray(model.transmat_, dtype=float))
        log_pi = np.log(np.asarray(model.startprob_, dtype=float))
    T, K = log_b.shape
    out = np.empty((T, K))
    cur = log_pi + log_b[0]
    out[0] = cur - logsumexp(cur)
    for t in range(1, T):
        cur = logsumexp(out[t - 1][:, None] + log_a, axis=0) + log_b[t]
        out[t] = cur - logsumexp(cur)
    return out if log else np.exp(out)


def _state_gradients(model, Z: np.ndarray) -> np.ndarray:
    """``g[t, k] = Σ_k⁻¹ (μ_k − z_t)``, shape (T, n_states, n_features)."""
    means, covars = _params(model)
    g = np.empty((Z.shape[0], len(means), Z.shape[1]))
    for k in range(len(means)):
        factor = linalg.cho_factor(covars[k], lower=True)
        g[:, k, :] = linalg.cho_solve(factor, (means[k] - Z).T).T
    return g


def posterior_gradient(model, Z: np.ndarray, log_posterior: np.ndarray | None = None) -> np.ndarray:
    """Signed gradient ``∂ log p(s_t=k | z_1:t) / ∂z_t``, shape (T, n_states, n_features).

    Evaluated as ``Σ_{h≠k} p(s_t=h | z_1:t) (g_k − g_h)`` with ``g_k = Σ_k⁻¹(μ_k − z_t)`` —
    equal to Appendix A's ``g_k − Σ_h p_h g_h`` (the posterior sums to one) but without its
    cancellation when ``p_k`` is close to 1. ``log_posterior`` (T, n_states) may be passed
    to reuse a :func:`filtered_posterior` (``log=True``).
    """
    Z = np.atleast_2d(np.asarray(Z, dtype=float))
    if log_posterior is None:
        log_posterior = filtered_posterior(model, Z, log=True)
    g = _state_gradients(model, Z)
    p = np.exp(log_posterior)
    # out[t, k] = Σ_h p[t, h] (g[t, k] − g[t, h]); the h = k term is zero.
    return np.einsum("th,tkhd->tkd", p, g[:, :, None, :] - g[:, None, :, :])


def posterior_importance(model, Z: np.ndarray, log_posterior: np.ndarray | None = None) -> np.ndarray:
    """Appendix A's importance ``|∂ log p(s_t=k | z_1:t) / ∂z_t|``, shape (T, n_states, n_features).

    Parameters
    ----------
    model : a fitted ``hmmlearn.hmm.GaussianHMM`` (any covariance type).
    Z : one z-scored sequence (T, n_features).
    log_posterior : optional precomputed ``filtered_posterior(model, Z, log=True)``.

    When the posterior is nearly certain the importances are tiny (they vanish as
    ``p(s_t=k | z_1:t) → 1``) and may underflow to zero; :func:`scaled_importance` gives
    the same quantity as scale × direction without underflow.
    """
    return np.abs(posterior_gradient(model, Z, log_posterior))


def scaled_importance(model, Z: np.ndarray, log_posterior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Importance as ``exp(log_scale)[..., None] * direction`` without underflow.

    Returns ``(log_scale, direction)`` with shapes (T, n_states) and (T, n_states,
    n_features): ``log_scale[t, k] = max_{h≠k} log p(s_t=h | z_1:t)`` and
    ``direction[t, k] = |Σ_{h≠k} exp(log p_h − log_scale) (g_k − g_h)|``, so that
    ``posterior_importance == exp(log_scale)[..., None] * direction`` up to rounding. With a
    single state the importance is zero: ``log_scale = -inf``, ``direction = 0``.
    """
    Z = np.atleast_2d(np.asarray(Z, dtype=float))
    if log_posterior is None:
        log_posterior = filtered_posterior(model, Z, log=True)
    g = _state_gradients(model, Z)
    T, K = log_posterior.shape
    if K == 1:
        return np.full((T, 1), -np.inf), np.zeros((T, 1, Z.shape[1]))
    others = np.where(np.eye(K, dtype=bool)[None, :, :], -np.inf, log_posterior[:, None, :])  # (T, k, h)
    log_scale = others.max(axis=2)
    safe = np.where(np.isfinite(log_scale), log_scale, 0.0)
    with np.errstate(invalid="ignore"):
        w = np.exp(others - safe[:, :, None])  # (T, k, h), zero on h = k
    w = np.where(np.isfinite(log_scale)[:, :, None], w, 0.0)
    direction = np.abs(np.einsum("tkh,tkhd->tkd", w, g[:, :, None, :] - g[:, None, :, :]))
    return log_scale, direction

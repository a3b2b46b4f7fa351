"""Baselines of Appendix C (paper Table 4): k-means on the z-scored features and an HMM on
the ``l2`` column alone, each with its number of components chosen by held-out BIC.

Both hold out runs exactly as :func:`trainmap.analysis.hmm_select.select_hmm` does with the
same options (:func:`~trainmap.analysis.hmm_select.run_folds`: folds over runs, or one seeded
split), fit on the training runs and score the held-out runs; with folds the held-out
log-likelihood is summed over them and BIC uses all held-out checkpoints.

k-means BIC
-----------
A k-means clustering is read as a mixture of k spherical Gaussians with one shared
variance and hard assignments. From the training runs (N points, d features): centroids
``μ_c``, weights ``π_c = N_c / N``, variance ``σ² = SSE / (N d)``. The held-out
log-likelihood assigns every held-out point x to its nearest centroid c(x):

    LL = Σ_x [ log π_c(x) − d/2 · log(2π σ²) − ‖x − μ_c(x)‖² / (2σ²) ]

with ``p = k d + (k − 1) + 1`` free parameters and ``BIC = −2 LL + p ln N_test``.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from trainmap.analysis.hmm_select import run_folds, select_hmm
from trainmap.options import BaselineOptions, HMMSelectOptions

__all__ = ["kmeans_bic", "select_kmeans", "select_hmm_l2", "baseline_table", "BASELINE_COLUMNS"]

#: Columns of baselines.csv.
BASELINE_COLUMNS = ["method", "n_components", "test_loglik", "n_params", "n_test_obs", "bic", "chosen", "error"]


def kmeans_bic(X_train: np.ndarray, X_test: np.ndarray, n_clusters: int, *, seed: int = 0, n_init: int = 10) -> dict:
    """Fit k-means on ``X_train``; return held-out ``test_loglik``, ``n_params``,
    ``n_test_obs`` and ``bic`` of the spherical-Gaussian reading (module docstring)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(X_train)
    N, d = X_train.shape
    counts = np.bincount(km.labels_, minlength=n_clusters)
    weights = counts / N
    sigma2 = max(float(km.inertia_) / (N * d), 1e-12)
    dist2 = ((X_test[:, None, :] - km.cluster_centers_[None, :, :]) ** 2).sum(axis=2)
    nearest = dist2.argmin(axis=1)
    with np.errstate(divide="ignore"):
        log_w = np.log(weights[nearest])
    ll = float(np.sum(log_w - 0.5 * d * math.log(2 * math.pi * sigma2) - dist2[np.arange(len(X_test)), nearest] / (2 * sigma2)))
    p = n_clusters * d + (n_clusters - 1) + 1
    return {"test_loglik": ll, "n_params": p, "n_test_obs": len(X_test), "bic": -2 * ll + p * math.log(len(X_test))}


def _mark_chosen(frame: pd.DataFrame) -> pd.DataFrame:
    frame["chosen"] = False
    finite = frame[np.isfinite(frame["bic"].astype(float))]
    if len(finite):
        best = finite.sort_values(["bic", "n_components"], kind="stable").index[0]
        frame.loc[best, "chosen"] = True
    return frame


def select_kmeans(
    sequences: Sequence[np.ndarray],
    *,
    max_components: int = BaselineOptions.max_components,
    folds: int = BaselineOptions.folds,
    test_fraction: float = BaselineOptions.test_fraction,
    seed: int = BaselineOptions.seed,
    n_init: int = 10,
) -> pd.DataFrame:
    """k-means for k = 1..max_components on the pooled checkpoints of the training runs,
    scored on the held-out runs (summed over folds); columns :data:`BASELINE_COLUMNS`
    (method ``kmeans``)."""
    splits = [(np.concatenate([sequences[i] for i in train]), np.concatenate([sequences[i] for i in test]))
              for train, test in run_folds(len(sequences), folds, test_fraction, seed)]
    n_test = sum(len(X_test) for _, X_test in splits)
    rows = []
    for k in range(1, max_components + 1):
        row = {"method": "kmeans", "n_components": k, "error": ""}
        if any(k > len(X_train) for X_train, _ in splits):
            row.update(test_loglik=np.nan, n_params=np.nan, n_test_obs=n_test, bic=np.nan,
                       error="more clusters than training checkpoints")
        else:
            fits = [kmeans_bic(X_train, X_test, k, seed=seed, n_init=n_init) for X_train, X_test in splits]
            ll = float(sum(f["test_loglik"] for f in fits))
            p = fits[0]["n_params"]
            row.update(test_loglik=ll, n_params=p, n_test_obs=n_test, bic=-2 * ll + p * math.log(n_test))
        rows.append(row)
    return _mark_chosen(pd.DataFrame(rows))[BASELINE_COLUMNS]


def select_hmm_l2(
    sequences: Sequence[np.ndarray],
    options: BaselineOptions,
    *,
    progress: Callable[[int, int], object] | None = None,
) -> pd.DataFrame:
    """HMM-1 baseline: :func:`select_hmm` on one-column sequences (the z-scored ``l2``;
    with one feature every covariance type is a variance per state: diag); one row per n
    (summed over folds), columns :data:`BASELINE_COLUMNS` (method ``hmm_l2``)."""
    sel = select_hmm(sequences, HMMSelectOptions(**options.fit_fields(), covariance="diag"), progress=progress)
    rows = [{"method": "hmm_l2", "n_components": int(r.n_components), "test_loglik": r.test_loglik,
             "n_params": r.n_params, "n_test_obs": r.n_test_obs, "bic": r.bic,
             "error": "" if np.isfinite(r.bic) else "every restart of a fold failed"}
            for r in sel.summary.itertuples(index=False)]
    return _mark_chosen(pd.DataFrame(rows))[BASELINE_COLUMNS]


def baseline_table(
    sequences: Sequence[np.ndarray],
    features: Sequence[str],
    options: BaselineOptions | None = None,
    *,
    progress: Callable[[int, int], object] | None = None,
) -> pd.DataFrame:
    """Both baselines for one experiment (rows for every k / n; ``chosen`` marks the lowest
    held-out BIC of each method). When ``l2`` is not among ``features`` the ``hmm_l2`` rows
    are NaN with a warning."""
    options = options or BaselineOptions()
    frames = [select_kmeans(sequences, max_components=options.max_components, folds=options.folds,
                            test_fraction=options.test_fraction, seed=options.seed)]
    features = list(features)
    if "l2" in features:
        j = features.index("l2")
        frames.append(select_hmm_l2([np.asarray(s)[:, [j]] for s in sequences], options, progress=progress))
    else:
        warnings.warn("no usable 'l2' column: the HMM-on-l2 baseline is left empty", RuntimeWarning, stacklevel=2)
        frames.append(pd.DataFrame([{"method": "hmm_l2", "n_components": np.nan, "test_loglik": np.nan,
                                     "n_params": np.nan, "n_test_obs": np.nan, "bic": np.nan, "chosen": False,
                                     "error": "no usable l2 column"}]))
    return pd.concat(frames, ignore_index=True)[BASELINE_COLUMNS]

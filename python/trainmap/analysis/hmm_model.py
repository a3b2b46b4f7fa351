"""Gaussian HMM parameters: validation, pickle-free ``.npz`` model files, Viterbi decoding.

A model file holds plain arrays (``np.load(path, allow_pickle=False)`` reads it). Loading
validates it as a model the rest of the analysis can trust: finite parameters, symmetric
positive-definite covariances, non-negative start and transition probabilities whose rows
sum to one; anything else is a :class:`~trainmap.analysis.errors.ModelFormatError` naming
the file and the parameter.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from trainmap.io import atomic
from trainmap.analysis.errors import ModelFormatError

__all__ = [
    "COVARIANCE_TYPES",
    "MODEL_FORMAT",
    "SavedModel",
    "validate_params",
    "model_params",
    "model_from_params",
    "save_model",
    "load_model",
    "decode_states",
]

#: Covariance types the analysis fits and reads: a full covariance per state, a diagonal one
#: per state, or one full covariance shared by all states (tied).
COVARIANCE_TYPES = ("full", "diag", "tied")
#: The ``format`` entry of a model file.
MODEL_FORMAT = "trainmap-gaussianhmm-1"
# The most a model file can need: covars of 64 states x 100 features in float64 is 5 MB.
_MAX_ARRAY_BYTES = 64 << 20
_MAX_TOTAL_BYTES = 128 << 20
# Rows of probabilities may be off by rounding after EM and a float64 round trip.
_PROBABILITY_TOL = 1e-6


def validate_params(startprob, transmat, means, covars) -> tuple[np.ndarray, ...]:
    """The four parameter arrays as float arrays, checked; raises :class:`ModelFormatError`
    saying which parameter is wrong and how. ``covars`` is in full form (n, d, d)."""
    startprob, transmat, means, covars = (np.asarray(a, dtype=float) for a in (startprob, transmat, means, covars))
    if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
        raise ModelFormatError(f"means must be 2-D (n_states, n_features), got shape {means.shape}")
    n, d = means.shape
    if startprob.shape != (n,) or transmat.shape != (n, n) or covars.shape != (n, d, d):
        raise ModelFormatError(
            f"inconsistent shapes: startprob {startprob.shape}, transmat {transmat.shape}, "
            f"means {means.shape}, covars {covars.shape} (expected ({n},), ({n}, {n}), ({n}, {d}, {d}))"
        )
    for name, array in (("startprob", startprob), ("transmat", transmat), ("means", means), ("covars", covars)):
        if not np.isfinite(array).all():
            raise ModelFormatError(f"{name} has non-finite values")
    if (startprob < 0).any() or abs(startprob.sum() - 1.0) > _PROBABILITY_TOL:
        raise ModelFormatError(f"startprob is not a probability vector (sum {startprob.sum():.9g})")
    row_sums = transmat.sum(axis=1)
    bad_rows = np.nonzero((transmat < 0).any(axis=1) | (np.abs(row_sums - 1.0) > _PROBABILITY_TOL))[0]
    if len(bad_rows):
        k = int(bad_rows[0])
        raise ModelFormatError(f"transmat row {k} is not a probability vector (sum {row_sums[k]:.9g})")
    for k, cov in enumerate(covars):
        if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12):
            raise ModelFormatError(f"covariance of state {k} is not symmetric")
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ModelFormatError(f"covariance of state {k} is not positive definite") from None
    return startprob, transmat, means, covars


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


def model_from_params(startprob, transmat, means, covars, covariance_type: str = "full",
                      min_covar: float | None = None):
    """A ``GaussianHMM`` with exactly these parameters (``covars`` in full form (n, d, d);
    for ``diag`` their diagonals are used, for ``tied`` the one matrix all states share;
    ``min_covar`` matters only for refitting, None keeps hmmlearn's). Raises
    :class:`ModelFormatError` on invalid parameters (:func:`validate_params`), and for tied
    covariances that differ between states."""
    from hmmlearn.hmm import GaussianHMM

    startprob, transmat, means, covars = validate_params(startprob, transmat, means, covars)
    covariance_type = str(covariance_type)
    if covariance_type not in COVARIANCE_TYPES:
        raise ModelFormatError(f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, not {covariance_type!r}")
    n, d = means.shape
    model = GaussianHMM(n_components=n, covariance_type=covariance_type,
                        **({} if min_covar is None else {"min_covar": float(min_covar)}))
    model.n_features = d
    model.startprob_ = startprob
    model.transmat_ = transmat
    model.means_ = means
    if covariance_type == "full":
        model.covars_ = covars
    elif covariance_type == "diag":
        model.covars_ = np.diagonal(covars, axis1=1, axis2=2).copy()
    else:
        if not np.allclose(covars, covars[:1], rtol=1e-10, atol=1e-12):
            raise ModelFormatError("covariance_type tied, but the states' covariances differ")
        model.covars_ = covars[0].copy()
    return model


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


def save_model(path: str | os.PathLike, model, *, features: Sequence[str], zscore_first_n: int,
               metadata: dict | None = None) -> None:
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
    arrays["format"] = np.str_(MODEL_FORMAT)
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
    """Read and validate a model written by :func:`save_model` (``allow_pickle=False``).
    Raises :class:`ModelFormatError` naming ``path`` for an unreadable file, a missing
    entry or invalid parameters, and for arrays larger than a model can need, before they
    are read (a FIFO or a tiny file declaring gigabytes must not hang or exhaust memory)."""
    from trainmap.io.fileguard import InputFileError, read_npz

    try:
        arrays = read_npz(path, max_array_bytes=_MAX_ARRAY_BYTES, max_total_bytes=_MAX_TOTAL_BYTES, what="model file")
    except FileNotFoundError:
        raise
    except InputFileError as exc:  # already names the file
        raise ModelFormatError(str(exc)) from None
    except (ValueError, OSError, EOFError) as exc:
        raise ModelFormatError(f"{path}: not a readable model file ({exc})") from exc
    required = ("startprob", "transmat", "means", "covars", "covariance_type", "features", "zscore_first_n")
    missing = [k for k in required if k not in arrays]
    if missing or str(arrays.get("format", "")) != MODEL_FORMAT:
        raise ModelFormatError(
            f"{path}: not a trainmap model file"
            + (f" (missing {', '.join(missing)})" if missing else f" (format {arrays.get('format')!s})")
        )
    try:
        model = model_from_params(
            arrays["startprob"], arrays["transmat"], arrays["means"], arrays["covars"],
            covariance_type=str(arrays["covariance_type"]),
            min_covar=float(arrays["min_covar"]) if "min_covar" in arrays else None,
        )
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: invalid model: {exc}") from exc
    features = [str(f) for f in arrays["features"]]
    if len(features) != model.n_features:
        raise ModelFormatError(f"{path}: {len(features)} feature names for {model.n_features} features")
    metadata = {key[5:]: arr.item() if arr.ndim == 0 else arr.tolist()
                for key, arr in arrays.items() if key.startswith("meta_")}
    return SavedModel(model=model, features=features, zscore_first_n=int(arrays["zscore_first_n"]), metadata=metadata)


def decode_states(model, sequences: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Viterbi state path of every sequence (one int array (T_i,) each)."""
    return [np.asarray(model.decode(np.ascontiguousarray(s, dtype=float), algorithm="viterbi")[1], dtype=int)
            for s in sequences]

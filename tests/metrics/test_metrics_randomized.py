"""Randomized mode against numpy's exact SVD, within the tolerances of docs/metrics.md:
σ₁ within 1e-4 and mean σ within 1 % (relative); the variance uses the exact Σσ² = ‖W‖²_F,
so its error is −2·mean·(error of the mean)."""

from __future__ import annotations

import numpy as np
import pytest

from checkpoint_factory import reference_metrics, tensor, write_checkpoint
from trainmap.metrics.engine import checkpoint_metrics, trajectory_metrics

THRESHOLD = 256  # exact_max_dim used here, so matrices of a few hundred rows are "large"


def low_rank_plus_noise(rng, m, n, rank, noise):
    signal = rng.standard_normal((m, rank)) * np.linspace(1.0, 0.2, rank) @ rng.standard_normal((rank, n))
    return (signal + noise * rng.standard_normal((m, n))) / np.sqrt(n)


CASES = [  # (m, n, signal rank, noise level)
    (600, 800, 8, 0.1),
    (900, 500, 20, 0.5),
    (700, 700, 5, 1.0),
    (520, 1100, 120, 0.1),  # signal rank above the sketch (k = 64)
]


@pytest.mark.parametrize("transpose", [False, True], ids=["wide", "tall"])
@pytest.mark.parametrize("case", CASES, ids=[f"{m}x{n}-r{r}-noise{s}" for m, n, r, s in CASES])
def test_randomized_within_documented_tolerance(tmp_path, case, transpose):
    m, n, rank, noise = case
    rng = np.random.default_rng(m * n + rank)
    w = low_rank_plus_noise(rng, m, n, rank, noise)
    tensors = [tensor("a.weight", w.T if transpose else w, "F64", "matrix")]
    path = write_checkpoint(tmp_path / "large.safetensors", tensors)
    got = checkpoint_metrics(path, svd="randomized")
    ref = reference_metrics(tensors)
    assert got["spectral"] == pytest.approx(ref["spectral"], rel=1e-4)
    assert got["mean_lambda"] == pytest.approx(ref["mean_lambda"], rel=1e-2)
    # var = ‖W‖²_F / r − mean², so Δvar = −Δmean · (2·mean + Δmean).
    mean_error = got["mean_lambda"] - ref["mean_lambda"]
    assert got["variance_lambda"] - ref["variance_lambda"] == pytest.approx(
        -mean_error * (2 * ref["mean_lambda"] + mean_error), rel=1e-6, abs=1e-12)
    # Statistics that do not involve singular values stay exact.
    for name in ("l1", "l2", "trace", "mean_w", "median_w", "var_w"):
        assert got[name] == pytest.approx(ref[name], rel=1e-9, abs=1e-12)


def test_auto_is_exact_up_to_the_threshold_and_then_picks_the_cheaper_path(tmp_path):
    """At or below exact_max_dim: exact. Above it: the cost model's choice, which for a
    300×900 matrix is exact (the sketch would cost more than the decomposition) and for a
    1400×1400 square with a small rank is randomized (the r³ eigensolver dominates)."""
    rng = np.random.default_rng(0)
    small = [tensor("a.weight", rng.standard_normal((200, 900)), "F32", "matrix")]
    thin = [tensor("a.weight", rng.standard_normal((300, 900)), "F32", "matrix")]
    square = [tensor("a.weight", rng.standard_normal((1400, 1400)), "F32", "matrix")]
    mixed = small + [tensor("b.weight", rng.standard_normal((1400, 1400)), "F32", "matrix")]
    paths = [write_checkpoint(tmp_path / f"{name}.safetensors", t) for name, t in
             (("small", small), ("thin", thin), ("square", square), ("mixed", mixed))]
    frame = trajectory_metrics(paths, exact_max_dim=THRESHOLD, rank=8)
    assert list(frame["svd"]) == ["exact", "exact", "randomized", "mixed"]
    # The same square under a threshold above its side is exact.
    assert trajectory_metrics(paths[2:3], exact_max_dim=1400, rank=8)["svd"].tolist() == ["exact"]


def test_randomized_is_deterministic_per_tensor(tmp_path):
    """Same tensor name and values, same estimate: trajectories vary smoothly, not by reseeding."""
    rng = np.random.default_rng(1)
    w = low_rank_plus_noise(rng, 500, 600, 10, 0.5)
    a = write_checkpoint(tmp_path / "a.safetensors", [tensor("x.weight", w, "F64", "matrix")])
    b = write_checkpoint(tmp_path / "b.safetensors", [tensor("x.weight", w, "F64", "matrix")])
    first = list(checkpoint_metrics(a, svd="randomized").values())
    np.testing.assert_array_equal(list(checkpoint_metrics(a, svd="randomized").values()), first)
    np.testing.assert_array_equal(list(checkpoint_metrics(b, svd="randomized").values()), first)


def test_forcing_randomized_on_a_small_matrix_stays_exact(tmp_path):
    """A Krylov space as wide as the matrix would be no cheaper: the engine computes it exactly."""
    rng = np.random.default_rng(2)
    tensors = [tensor("a.weight", rng.standard_normal((40, 60)), "F64", "matrix")]
    path = write_checkpoint(tmp_path / "small.safetensors", tensors)
    frame = trajectory_metrics([path], svd="randomized")
    assert frame.loc[0, "svd"] == "exact"
    assert frame.loc[0, "mean_lambda"] == pytest.approx(reference_metrics(tensors)["mean_lambda"], rel=1e-9)

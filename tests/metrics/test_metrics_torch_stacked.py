"""The torch path's statistics of many seeds at once (``metrics_torch.stacked_tensors_metrics``,
``engine.stacked_weights_metrics``: a seed sweep's statistics on a GPU) against the same
path one seed at a time, the Rust engine and numpy.

No GPU here: the torch code runs on torch's CPU backend, which runs every line the CUDA
path runs except the device itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from checkpoint_factory import random_model, reference_metrics, tensor, write_checkpoint
from trainmap.metrics import engine, metrics_torch
from trainmap.metrics.engine import METRIC_NAMES, CheckpointError, checkpoint_metrics

CPU = torch.device("cpu")
TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def seeds_of(template, rng: np.random.Generator, seeds: int) -> list[list]:
    """``seeds`` models of ``template``'s names, shapes, dtypes and roles, each with its own
    values (its own scale; now and then a matrix all zero or of rank one)."""
    models = []
    for _ in range(seeds):
        model = []
        for t in template:
            scale = 10.0 ** rng.uniform(-3, 1)
            values = rng.standard_normal(t.values.shape) * scale
            if t.role == "matrix" and rng.random() < 0.1:
                values = np.zeros(t.values.shape)
            elif t.role == "matrix" and t.values.ndim == 2 and rng.random() < 0.15:
                values = np.outer(rng.standard_normal(t.values.shape[0]), rng.standard_normal(t.values.shape[1]))
            model.append(tensor(t.name, values, t.dtype, t.role))
        models.append(model)
    return models


def stacked(models) -> list[tuple[str, torch.Tensor]]:
    return [(t.name, torch.stack([torch.from_numpy(m[i].values).to(TORCH_DTYPES[t.dtype]) for m in models]))
            for i, t in enumerate(models[0])]


def one_seed(model) -> list[tuple[str, torch.Tensor]]:
    return [(t.name, torch.from_numpy(t.values).to(TORCH_DTYPES[t.dtype])) for t in model]


def assert_close(got: dict, want: dict, rtol: float) -> None:
    for name in METRIC_NAMES:
        g, w = got[name], want[name]
        if math.isnan(w):
            assert math.isnan(g), f"{name}: want NaN, got {g}"
        else:
            assert g == pytest.approx(w, rel=rtol, abs=1e-13), f"{name}: {g} vs {w}"


@pytest.mark.parametrize("model_seed", range(12))
def test_each_seed_equals_the_one_seed_path_the_engine_and_numpy(tmp_path, model_seed):
    rng = np.random.default_rng(100 + model_seed)
    template = [t for t in random_model(rng, max_side=50) if t.dtype in TORCH_DTYPES]
    models = seeds_of(template, rng, seeds=5)
    results = metrics_torch.stacked_tensors_metrics(stacked(models), device=CPU)
    assert len(results) == len(models)
    for i, (model, (got, notes)) in enumerate(zip(models, results)):
        alone, alone_notes = metrics_torch.tensors_metrics(one_seed(model), device=CPU)
        assert notes == alone_notes == []
        # The same path up to the order of float64 sums; the medians are exact.
        assert_close(got, alone, rtol=1e-12)
        assert (got["median_w"], got["median_b"]) == pytest.approx((alone["median_w"], alone["median_b"]),
                                                                   rel=0, abs=0, nan_ok=True)
        assert (got["svd"], got["content_hash"]) == (alone["svd"], "")
        path = write_checkpoint(tmp_path / f"{i}.safetensors", model)
        assert_close(got, checkpoint_metrics(path, svd="exact", device="cpu"), rtol=1e-9)
        assert_close(got, reference_metrics(model), rtol=1e-9)
    # The seeds' numbers differ (a result copied to every seed would fail above, but say it).
    assert len({r["l1"] for r, _ in results}) > 1


def test_a_rank_deficient_seed_takes_the_svd_fallback_alone():
    """A low-rank matrix's Gram eigenvalues miss the accuracy bound: that seed's singular
    values come from svdvals, the other seeds' from the batched Gram path."""
    rng = np.random.default_rng(2)
    low_rank = rng.standard_normal((80, 3)) @ rng.standard_normal((3, 120))
    full = rng.standard_normal((80, 120))
    a = torch.from_numpy(np.stack([full, low_rank, full * 3]))
    sigma = metrics_torch._stacked_singular_values(a)
    for i in range(3):
        exact = np.linalg.svd(a[i].numpy(), compute_uv=False)
        assert float(sigma[i].sum()) == pytest.approx(exact.sum(), rel=1e-12)
        assert float(sigma[i].max()) == pytest.approx(exact.max(), rel=1e-12)
    gram = torch.linalg.eigvalsh(a[1] @ a[1].T).clamp_min(0).sqrt()
    exact = np.linalg.svd(low_rank, compute_uv=False)
    assert abs(float(gram.sum()) - exact.sum()) > 1e-9 * exact.sum()  # the fallback was needed


def test_medians_are_exact_over_seeds_and_tensors():
    """Even and odd counts, duplicates, signed zeros, BF16 (few distinct values)."""
    rng = np.random.default_rng(0)
    for shapes in ([(3, 4), (5,)], [(3, 3), (2, 2)], [(7, 2)]):
        values = [np.round(rng.standard_normal((6, *shape)), 1) for shape in shapes]
        values[0][0] = 0.0
        values[0][1].flat[::2] = -0.0
        for dtype in (torch.float64, torch.bfloat16):
            tensors = [(f"l{k}.weight" if len(s) == 2 else f"l{k}.bias", torch.from_numpy(v).to(dtype))
                       for k, (s, v) in enumerate(zip(shapes, values))]
            for i, (got, _) in enumerate(metrics_torch.stacked_tensors_metrics(tensors, device=CPU)):
                weights = np.concatenate([t[i].double().numpy().ravel() for n, t in tensors if n.endswith("weight")])
                assert got["median_w"] == np.median(weights)
                biases = [t[i].double().numpy().ravel() for n, t in tensors if n.endswith("bias")]
                if biases:
                    assert got["median_b"] == np.median(np.concatenate(biases))
                else:
                    assert math.isnan(got["median_b"])


def test_a_seed_with_non_finite_values_gets_its_nan_and_note_alone():
    rng = np.random.default_rng(5)
    w = torch.from_numpy(rng.standard_normal((4, 6, 5)))
    b = torch.from_numpy(rng.standard_normal((4, 6)))
    w[2, 1, 1] = float("inf")
    b[3, 0] = float("nan")
    tensors = [("fc.weight", w), ("fc.bias", b)]
    results = metrics_torch.stacked_tensors_metrics(tensors, device=CPU)
    for i, (got, notes) in enumerate(results):
        alone, alone_notes = metrics_torch.tensors_metrics([(n, t[i]) for n, t in tensors], device=CPU)
        assert notes == alone_notes
        assert_close(got, alone, rtol=1e-12)
    assert math.isnan(results[2][0]["l1"]) and not math.isnan(results[2][0]["mean_b"])
    assert math.isnan(results[3][0]["median_b"]) and not math.isnan(results[3][0]["l1"])
    assert results[0][1] == [] and "fc.weight" in results[2][1][0] and "fc.bias" in results[3][1][0]
    with pytest.warns(RuntimeWarning) as caught:
        checked = engine.stacked_weights_metrics(dict(tensors), device=CPU)
    assert sorted(str(w.message) for w in caught) == sorted(
        note.replace("weights:", "in-memory tensors:") for note in results[2][1] + results[3][1])
    assert math.isnan(checked[2]["l1"]) and checked[0]["l1"] == results[0][0]["l1"]


def test_seeds_in_chunks_give_the_same_numbers(monkeypatch):
    rng = np.random.default_rng(9)
    tensors = [("a.weight", torch.from_numpy(rng.standard_normal((7, 5, 4)))),
               ("a.bias", torch.from_numpy(rng.standard_normal((7, 5))))]
    whole = metrics_torch.stacked_tensors_metrics(tensors, device=CPU)
    monkeypatch.setattr(metrics_torch, "_STACKED_ELEMENTS", 50)  # two seeds (25 values each) at a time
    assert metrics_torch.stacked_tensors_metrics(tensors, device=CPU) == whole


def test_the_engine_facade_checks_like_weights_metrics():
    """Selection and include/exclude as weights_metrics; no counted tensor is one
    CheckpointError; out-of-range statistics are NaN with the same warning."""
    rng = np.random.default_rng(3)
    weights = {"fc.weight": torch.from_numpy(rng.standard_normal((3, 6, 4))).float(),
               "fc.bias": torch.from_numpy(rng.standard_normal((3, 6))).float(),
               "ln_f.weight": torch.ones(3, 4), "embed.weight": torch.ones(3, 5, 4)}
    for include, exclude in [(None, None), (None, "fc.bias"), (r"^(fc|embed)\.", r"^$")]:
        got = engine.stacked_weights_metrics(weights, device=CPU, include=include, exclude=exclude)
        for i in range(3):
            one = {name: t[i] for name, t in weights.items()}
            assert_close(got[i], engine.weights_metrics(one, svd="exact", include=include, exclude=exclude), 1e-9)
    with pytest.raises(CheckpointError, match="in-memory tensors: no tensor counts"):
        engine.stacked_weights_metrics({"ln_f.weight": torch.ones(3, 4)}, device=CPU)
    huge = {"fc.weight": torch.full((2, 3, 3), 1e200, dtype=torch.float64)}
    with pytest.warns(RuntimeWarning, match="too large or too small"):
        got = engine.stacked_weights_metrics(huge, device=CPU)
    with pytest.warns(RuntimeWarning) as caught:  # the engine also says its SVD did not converge
        want = engine.weights_metrics({"fc.weight": huge["fc.weight"][0]}, svd="exact")
    assert any("too large or too small" in str(w.message) for w in caught)
    assert_close(got[0], want, 1e-9)
    assert math.isnan(got[1]["l2"]) and got[1]["l1"] == pytest.approx(9e200)


def test_bad_stacked_input_is_one_clear_error():
    with pytest.raises(ValueError, match="'b.weight' of shape \\(2, 3, 3\\) has no leading seed axis of 3"):
        metrics_torch.stacked_tensors_metrics([("a.weight", torch.ones(3, 2, 2)), ("b.weight", torch.ones(2, 3, 3))],
                                              device=CPU)
    with pytest.raises(CheckpointError, match="'a.weight' has unsupported dtype torch.int32"):
        metrics_torch.stacked_tensors_metrics([("a.weight", torch.ones(3, 2, 2, dtype=torch.int32))], device=CPU)
    with pytest.raises(ValueError, match="at least one tensor"):
        metrics_torch.stacked_tensors_metrics([], device=CPU)


def test_the_svd_is_taken_only_where_the_bound_asks_and_a_failed_eigensolver_falls_back(monkeypatch):
    """Well-conditioned seeds keep the batched Gram eigenvalues (no svdvals call); when the
    batched eigensolver fails, each seed is computed on its own, with the same numbers."""
    rng = np.random.default_rng(11)
    a = torch.from_numpy(rng.standard_normal((4, 30, 50)))
    want = metrics_torch._stacked_singular_values(a)
    calls = []
    svdvals = torch.linalg.svdvals
    monkeypatch.setattr(torch.linalg, "svdvals", lambda m: calls.append(m.shape) or svdvals(m))
    metrics_torch._stacked_singular_values(a)
    assert calls == []  # the error bound holds for every seed here
    eigvalsh = torch.linalg.eigvalsh

    def fails_when_batched(m):
        if m.dim() == 3:
            raise RuntimeError("did not converge")
        return eigvalsh(m)

    monkeypatch.setattr(torch.linalg, "eigvalsh", fails_when_batched)
    got = metrics_torch._stacked_singular_values(a)
    assert torch.allclose(got.sort(dim=1).values, want.sort(dim=1).values, rtol=1e-12, atol=0)


def test_nothing_counted_gives_nan_as_for_one_seed():
    tensors = [("ln.weight", torch.ones(2, 3, 3)), ("embed.weight", torch.ones(2, 4, 3))]
    results = metrics_torch.stacked_tensors_metrics(tensors, device=CPU)
    alone, _ = metrics_torch.tensors_metrics([(n, t[0]) for n, t in tensors], device=CPU)
    assert len(results) == 2 and all(notes == [] for _, notes in results)
    for got, _ in results:
        assert all(math.isnan(got[name]) for name in METRIC_NAMES) and got["svd"] == alone["svd"] == "none"

"""The Rust engine's 14 statistics against an independent numpy reference."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

from checkpoint_factory import (
    EXCLUDED_BIASES,
    EXCLUDED_NAMES,
    random_model,
    reference_metrics,
    tensor,
    write_checkpoint,
)
from trainmap.io.contracts import checkpoint_step
from trainmap.metrics.engine import (
    DEFAULT_EXCLUDE,
    METRIC_NAMES,
    CheckpointError,
    checkpoint_metrics,
    checkpoint_paths,
    trajectory_metrics,
)

DESIGN_ORDER = (
    "l1", "l2", "code_sparsity", "trace", "spectral", "computational_sparsity", "mean_lambda",
    "variance_lambda", "mean_w", "median_w", "var_w", "mean_b", "median_b", "var_b",
)


def assert_matches(got: dict[str, float], expected: dict[str, float], rtol: float = 1e-6) -> None:
    assert list(got)[:14] == list(DESIGN_ORDER)
    for name in DESIGN_ORDER:
        g, e = got[name], expected[name]
        if math.isnan(e):
            assert math.isnan(g), f"{name}: expected NaN, got {g}"
        else:
            # Absolute floor for values that are zero up to rounding (e.g. the mean of a
            # symmetric matrix): far below any real discrepancy.
            assert g == pytest.approx(e, rel=rtol, abs=1e-12), f"{name}: {g} vs reference {e}"


def test_metric_names_follow_design_order():
    assert METRIC_NAMES == DESIGN_ORDER


@pytest.mark.parametrize("seed", range(60))
def test_exact_mode_matches_numpy_on_random_models(tmp_path, seed):
    rng = np.random.default_rng(seed)
    tensors = random_model(rng)
    path = write_checkpoint(tmp_path / "model.safetensors", tensors)
    got = checkpoint_metrics(path, svd="exact")
    assert_matches(got, reference_metrics(tensors))


def test_auto_mode_is_exact_below_the_threshold(tmp_path):
    rng = np.random.default_rng(1)
    tensors = random_model(rng, dtypes=("F32",))
    path = write_checkpoint(tmp_path / "model.safetensors", tensors)
    assert_matches(checkpoint_metrics(path), reference_metrics(tensors))
    frame = trajectory_metrics([path])
    assert frame.loc[0, "svd"] == "exact"


def test_rank_deficient_matrices_are_exact(tmp_path):
    """Low-rank weights (e.g. trained from a zero init) take the engine's SVD fallback."""
    rng = np.random.default_rng(2)
    low_rank = rng.standard_normal((80, 3)) @ rng.standard_normal((3, 120))
    tensors = [tensor("a.weight", low_rank, "F64", "matrix"), tensor("b.weight", np.outer(np.arange(50.0), np.ones(7)), "F64", "matrix")]
    path = write_checkpoint(tmp_path / "lowrank.safetensors", tensors)
    assert_matches(checkpoint_metrics(path, svd="exact"), reference_metrics(tensors), rtol=1e-9)


def test_model_without_biases_has_nan_bias_statistics(tmp_path):
    rng = np.random.default_rng(3)
    tensors = [tensor("fc.weight", rng.standard_normal((5, 6)), "F32", "matrix")]
    got = checkpoint_metrics(write_checkpoint(tmp_path / "x.safetensors", tensors))
    assert all(math.isnan(got[k]) for k in ("mean_b", "median_b", "var_b"))
    assert_matches(got, reference_metrics(tensors))


def test_zero_model(tmp_path):
    tensors = [tensor("fc.weight", np.zeros((4, 9)), "F32", "matrix"), tensor("fc.bias", np.zeros(4), "F32", "bias")]
    got = checkpoint_metrics(write_checkpoint(tmp_path / "zero.safetensors", tensors))
    assert got["l2"] == 0 and got["spectral"] == 0 and got["median_w"] == 0 and got["median_b"] == 0
    # Nothing to average for the ratios: ‖W‖_F = 0 and σ₁ = 0 are skipped.
    assert math.isnan(got["code_sparsity"]) and math.isnan(got["computational_sparsity"])


def test_files_written_by_the_safetensors_package(tmp_path):
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    weights = {
        "conv1.weight": torch.randn(8, 3, 3, 3, generator=gen, dtype=torch.bfloat16),
        "fc.weight": torch.randn(10, 20, generator=gen, dtype=torch.float16),
        "fc.bias": torch.randn(10, generator=gen, dtype=torch.float32),
        "bn1.weight": torch.ones(8),
        "embed.weight": torch.randn(30, 4, generator=gen),
    }
    path = tmp_path / "torch.safetensors"
    save_file(weights, str(path))
    roles = {"conv1.weight": "matrix", "fc.weight": "matrix", "fc.bias": "bias"}
    from checkpoint_factory import Tensor

    tensors = [
        Tensor(name, "", w.to(torch.float64).numpy(), b"", roles.get(name, "ignored")) for name, w in weights.items()
    ]
    assert_matches(checkpoint_metrics(path, svd="exact"), reference_metrics(tensors))


@pytest.mark.parametrize("name", EXCLUDED_NAMES + EXCLUDED_BIASES)
def test_default_selection_excludes_embeddings_and_norm_layers(tmp_path, name):
    assert re.search(DEFAULT_EXCLUDE, name), name
    shape = (3,) if name.endswith("bias") else (3, 4)
    tensors = [tensor(name, np.ones(shape), "F32", "ignored"), tensor("fc.weight", np.eye(3), "F32", "matrix")]
    got = checkpoint_metrics(write_checkpoint(tmp_path / "x.safetensors", tensors))
    assert_matches(got, reference_metrics(tensors))


def test_include_and_exclude_override_the_selection(tmp_path):
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((4, 6)), rng.standard_normal((5, 5))
    written = [tensor("embed.weight", a, "F64", "matrix"), tensor("head.weight", b, "F64", "matrix")]
    path = write_checkpoint(tmp_path / "x.safetensors", written)
    # exclude="" keeps the embedding the default would drop.
    assert_matches(checkpoint_metrics(path, exclude=""), reference_metrics(written))
    only_head = [tensor("head.weight", b, "F64", "matrix")]
    assert_matches(checkpoint_metrics(path, include=r"^head\.", exclude=""), reference_metrics(only_head))
    with pytest.raises(ValueError, match="include"):
        checkpoint_metrics(path, include="(")


def test_non_finite_weights_give_nan_and_a_warning_naming_the_tensor(tmp_path):
    w = np.arange(12.0).reshape(3, 4)
    w[1, 2] = np.nan
    tensors = [tensor("fc.weight", w, "F32", "matrix"), tensor("fc.bias", [1.0, 2.0, 3.0], "F32", "bias"),
               tensor("out.bias", [np.inf, 0.0], "F32", "bias")]
    path = write_checkpoint(tmp_path / "nan.safetensors", tensors)
    with pytest.warns(RuntimeWarning) as record:
        got = checkpoint_metrics(path)
    messages = " ".join(str(w.message) for w in record)
    assert "fc.weight" in messages and "out.bias" in messages and "nan.safetensors" in messages
    assert all(math.isnan(got[k]) for k in METRIC_NAMES)


def test_nan_in_a_matrix_leaves_bias_statistics_finite(tmp_path):
    w = np.ones((2, 2))
    w[0, 0] = np.nan
    tensors = [tensor("fc.weight", w, "F32", "matrix"), tensor("fc.bias", [1.0, 3.0], "F32", "bias")]
    with pytest.warns(RuntimeWarning, match="fc.weight"):
        got = checkpoint_metrics(write_checkpoint(tmp_path / "x.safetensors", tensors))
    assert math.isnan(got["l2"]) and math.isnan(got["median_w"])
    assert (got["mean_b"], got["median_b"], got["var_b"]) == (2.0, 2.0, 1.0)


def test_unsupported_dtype_names_tensor_and_dtype(tmp_path):
    tensors = [tensor("fc.weight", np.ones((2, 2)), "I32", "matrix")]
    path = write_checkpoint(tmp_path / "int.safetensors", tensors)
    with pytest.raises(CheckpointError, match=r"int\.safetensors.*fc\.weight.*I32"):
        checkpoint_metrics(path)
    assert issubclass(CheckpointError, ValueError)


def test_unsupported_dtype_of_an_excluded_tensor_is_ignored(tmp_path):
    tensors = [tensor("embeddings.position_ids", np.arange(4), "I32", "ignored"),
               tensor("fc.weight", np.eye(2), "F32", "matrix")]
    got = checkpoint_metrics(write_checkpoint(tmp_path / "x.safetensors", tensors))
    assert got["l2"] == pytest.approx(math.sqrt(2))


def test_trajectory_rows_follow_the_given_paths(tmp_path):
    rng = np.random.default_rng(5)
    models, paths = [], []
    for step in (0, 200, 1000, 50):
        tensors = random_model(rng, dtypes=("F32", "F64"))
        models.append(tensors)
        paths.append(write_checkpoint(tmp_path / f"step{step:08d}.safetensors", tensors))
    seen = []
    frame = trajectory_metrics(paths, threads=2, svd="exact", progress=seen.append)
    assert list(frame.columns) == ["path", "step", *METRIC_NAMES, "svd", "content_hash"]
    assert list(frame["step"]) == [0, 200, 1000, 50]
    assert list(frame["path"]) == [str(p) for p in paths]
    for row, tensors in zip(frame.itertuples(index=False), models):
        assert_matches({k: getattr(row, k) for k in METRIC_NAMES}, reference_metrics(tensors))
    assert seen and seen[-1] == 4 and seen == sorted(seen)


def test_thread_count_does_not_change_results(tmp_path):
    rng = np.random.default_rng(6)
    paths = [write_checkpoint(tmp_path / f"step{i}.safetensors", random_model(rng, max_side=120)) for i in range(6)]
    one = trajectory_metrics(paths, threads=1)
    two = trajectory_metrics(paths, threads=2)
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(one[name].to_numpy(), two[name].to_numpy())


def test_checkpoint_paths_orders_numerically_by_step(tmp_path):
    for step in (10, 9, 100, 0):
        write_checkpoint(tmp_path / f"step{step}.safetensors", [tensor("fc.weight", np.eye(2), "F32", "matrix")])
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert [checkpoint_step(p) for p in checkpoint_paths(tmp_path)] == [0, 9, 10, 100]
    assert checkpoint_step("run/step00001200.safetensors") == 1200
    assert checkpoint_step("final.safetensors") is None


def test_checkpoint_paths_rejects_unnumbered_files(tmp_path):
    write_checkpoint(tmp_path / "final.safetensors", [tensor("fc.weight", np.eye(2), "F32", "matrix")])
    with pytest.raises(ValueError, match="final.safetensors"):
        checkpoint_paths(tmp_path)


def test_bad_options_are_value_errors(tmp_path):
    path = write_checkpoint(tmp_path / "x.safetensors", [tensor("fc.weight", np.eye(2), "F32", "matrix")])
    with pytest.raises(ValueError, match="svd"):
        checkpoint_metrics(path, svd="fast")
    with pytest.raises(ValueError, match="threads"):
        trajectory_metrics([path], threads=0)
    with pytest.raises(ValueError, match="rank"):
        checkpoint_metrics(path, rank=0)


def test_no_warning_for_a_clean_checkpoint(tmp_path):
    rng = np.random.default_rng(7)
    path = write_checkpoint(tmp_path / "x.safetensors", random_model(rng))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoint_metrics(path)

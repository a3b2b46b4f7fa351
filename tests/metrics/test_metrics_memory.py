"""Statistics of tensors in memory (`weights_metrics`, the engine's `tensor_metrics`) equal
those of the same tensors saved to a safetensors file; the content hash; tensor selection."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import safetensors.numpy
import safetensors.torch
import torch

from checkpoint_factory import random_model, tensor, write_checkpoint
from trainmap import _rust_metrics
from trainmap.options import MetricsOptions
from trainmap.metrics.engine import (
    METRIC_NAMES,
    RESULT_COLUMNS,
    CheckpointError,
    checkpoint_metrics,
    metrics_frame,
    models_weights_metrics,
    select_tensors,
    trajectory_metrics,
    weights_metrics,
)

TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


def model_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """1-D, 2-D and 4-D tensors that count, and tensors the default selection leaves out."""
    return {
        "blocks.0.mlp.weight": rng.standard_normal((24, 17)),
        "blocks.0.mlp.bias": rng.standard_normal(24),
        "conv1.weight": rng.standard_normal((6, 3, 3, 3)),
        "conv1.bias": rng.standard_normal(6) * 0.1,
        "head.proj.weight": rng.standard_normal((5, 40)) * 3.0,
        "embed.weight": rng.standard_normal((50, 8)) * 100.0,
        "blocks.0.ln_1.weight": rng.standard_normal(17),
        "blocks.0.ln_1.bias": rng.standard_normal(17),
        "scale": rng.standard_normal(4),
    }


def assert_same_result(got: dict, expected: dict) -> None:
    assert list(got) == list(RESULT_COLUMNS)
    for name in METRIC_NAMES:
        g, e = got[name], expected[name]
        assert (math.isnan(g) and math.isnan(e)) or g == pytest.approx(e, rel=1e-12, abs=0), name
    assert got["svd"] == expected["svd"]
    assert got["content_hash"] == expected["content_hash"]


@pytest.mark.parametrize("dtype", ["F64", "F32", "F16", "BF16"])
def test_torch_tensors_match_the_saved_file(tmp_path, dtype):
    rng = np.random.default_rng(0)
    state = {name: torch.from_numpy(a).to(TORCH_DTYPES[dtype]) for name, a in model_arrays(rng).items()}
    state["position_ids"] = torch.arange(7)  # an integer buffer that does not count
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(state, path)
    expected = checkpoint_metrics(path, svd="exact")
    assert_same_result(weights_metrics(state, svd="exact"), expected)
    assert_same_result(weights_metrics(path, svd="exact"), expected)


@pytest.mark.parametrize("dtype", ["F64", "F32", "F16"])
def test_numpy_arrays_match_the_saved_file(tmp_path, dtype):
    rng = np.random.default_rng(1)
    arrays = {name: a.astype(NUMPY_DTYPES[dtype]) for name, a in model_arrays(rng).items()}
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file(arrays, path)
    expected = checkpoint_metrics(path)
    assert_same_result(weights_metrics(arrays), expected)
    # The engine's own entry point, with the tensors in another order and memoryviews as data.
    items = [(name, dtype, list(a.shape), memoryview(a)) for name, a in reversed(arrays.items())]
    assert_same_result(_rust_metrics.tensor_metrics(items), expected)


def test_random_models_with_include_and_exclude_match_files(tmp_path):
    """The factory's random models (every dtype, 1×n to 4-D, zero matrices) through the
    engine's in-memory entry point, with selection options, equal the files."""
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        tensors = random_model(rng)
        path = write_checkpoint(tmp_path / f"m{seed}.safetensors", tensors)
        items = [(t.name, t.dtype, list(t.values.shape), t.data) for t in tensors]
        for options in ({}, {"exclude": ""}, {"include": r"\.0\.", "exclude": "bias"}):
            expected = checkpoint_metrics(path, svd="exact", **options)
            assert_same_result(_rust_metrics.tensor_metrics(items, MetricsOptions(svd="exact", **options)), expected)


@pytest.mark.parametrize("threads", [1, 2])
def test_many_models_in_one_call_equal_one_call_each(threads):
    """models_weights_metrics (a sweep's in-loop statistics) gives each model exactly what
    weights_metrics gives it alone, in order, under every selection option and thread count;
    a model's non-finite values give its warning and NaN, not the others'."""
    rng = np.random.default_rng(7)
    models = [{name: torch.from_numpy(values).float() for name, values in model_arrays(rng).items()} for _ in range(6)]
    models.append(torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)))
    models[2]["conv1.weight"][0, 0, 0, 0] = float("nan")
    for options in ({}, {"svd": "exact", "exclude": ""}, {"include": "blocks|conv|0", "exclude": "bias", "svd": "randomized", "rank": 3}):
        with pytest.warns(RuntimeWarning) as caught:
            got = models_weights_metrics(models, threads=threads, **options)
        one = [weights_metrics(m, threads=1, **options) for m in models]
        assert len(got) == len(models)
        for g, e in zip(got, one):
            assert list(g) == list(RESULT_COLUMNS)
            assert all((math.isnan(g[k]) and math.isnan(e[k])) or g[k] == e[k] for k in METRIC_NAMES)
            assert (g["svd"], g["content_hash"]) == (e["svd"], e["content_hash"])
        assert [str(w.message) for w in caught] == ["in-memory tensors: tensor 'conv1.weight' has non-finite "
                                                    "values; its weight statistics are NaN"]
        assert math.isnan(got[2]["l1"]) and not math.isnan(got[1]["l1"]) and got[0]["l1"] != got[1]["l1"]
    with pytest.raises(CheckpointError, match="no tensor counts"):
        models_weights_metrics([models[0], {"ln.weight": torch.ones(3)}])


def test_a_module_is_read_through_its_parameters(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 30), torch.nn.LayerNorm(30), torch.nn.Conv1d(30, 4, 3))
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({k: v.detach() for k, v in model.named_parameters()}, path)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert_same_result(weights_metrics(model, exclude=r"^1\."), checkpoint_metrics(path, exclude=r"^1\."))
    for name, value in model.state_dict().items():  # nothing was modified or moved
        assert torch.equal(value, before[name]) and value.device.type == "cpu"


def test_non_contiguous_tensors_are_read_in_logical_order(tmp_path):
    base = torch.randn(20, 30, dtype=torch.float64)
    transposed = base.t()
    assert not transposed.is_contiguous()
    path = tmp_path / "t.safetensors"
    safetensors.torch.save_file({"fc.weight": transposed.contiguous()}, path)
    assert_same_result(weights_metrics({"fc.weight": transposed}), checkpoint_metrics(path))


def test_unsupported_dtype_of_a_counted_tensor_names_it():
    with pytest.raises(CheckpointError, match=r"fc\.weight.*int32"):
        weights_metrics({"fc.weight": torch.zeros(3, 3, dtype=torch.int32)})
    # The same dtype under an excluded name is not read at all.
    result = weights_metrics({"embed.weight": torch.zeros(3, 3, dtype=torch.int32), "fc.weight": torch.eye(3)})
    assert result["spectral"] == pytest.approx(1.0)


def test_bad_in_memory_input_gives_clear_errors():
    with pytest.raises(CheckpointError, match=r"'fc\.weight'.*36 bytes.*24 bytes"):
        _rust_metrics.tensor_metrics([("fc.weight", "F32", [3, 3], np.zeros(6, np.float32))])
    with pytest.raises(CheckpointError, match="appears twice"):
        a = np.eye(2, dtype=np.float32)
        _rust_metrics.tensor_metrics([("fc.weight", "F32", [2, 2], a), ("fc.weight", "F32", [2, 2], a)])
    with pytest.raises(ValueError, match="C-contiguous"):
        _rust_metrics.tensor_metrics([("fc.weight", "F64", [3, 2], np.ones((2, 3)).T)])
    with pytest.raises(TypeError, match="buffer protocol"):
        _rust_metrics.tensor_metrics([("fc.bias", "F64", [2], [1.0, 2.0])])
    with pytest.raises(TypeError, match="weights must be"):
        weights_metrics(42)


@pytest.mark.slow
def test_no_copy_is_made_of_a_large_cpu_float32_tensor():
    """Peak resident memory of the call stays far below the tensor's size: the engine reads
    the tensor's own memory (a 1-D bias is scanned in small chunks, so any copy of its 256 MB
    would show in the peak). Run in a fresh process so the peak is this call's."""
    script = textwrap.dedent(
        """
        import resource, torch
        from trainmap.metrics.engine import weights_metrics
        bias = torch.rand(64 * 2**20, dtype=torch.float32)  # 256 MiB, pages touched
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = weights_metrics({"big.bias": bias}, threads=1)
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert abs(result["mean_b"] - bias.double().mean().item()) < 1e-6, result
        print(grown_mib)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    grown_mib = float(out.stdout.strip().splitlines()[-1])
    assert grown_mib < 96, f"peak memory grew by {grown_mib:.0f} MiB for a 256 MiB tensor"


def hash_of(path, **options) -> str:
    return checkpoint_metrics(path, **options)["content_hash"]


def test_content_hash_identifies_the_counted_tensors(tmp_path):
    rng = np.random.default_rng(3)
    tensors = random_model(rng, dtypes=("F32", "BF16"))
    tensors.append(tensor("embed.weight", rng.standard_normal((4, 4)), "F32", "ignored"))
    a = write_checkpoint(tmp_path / "a.safetensors", tensors)
    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(a, copy)
    reordered = write_checkpoint(tmp_path / "reordered.safetensors", tensors[::-1])
    assert a.read_bytes() != reordered.read_bytes()
    digest = hash_of(a)
    assert len(digest) == 32 and int(digest, 16) >= 0
    assert hash_of(copy) == digest
    assert hash_of(reordered) == digest

    # One value of one counted tensor changes: a different hash.
    matrix = next(i for i, t in enumerate(tensors) if t.role == "matrix")
    changed = list(tensors)
    values = tensors[matrix].values.copy()
    values.flat[0] += 1.0
    changed[matrix] = tensor(tensors[matrix].name, values, tensors[matrix].dtype, "matrix")
    assert hash_of(write_checkpoint(tmp_path / "changed.safetensors", changed)) != digest

    # A tensor that does not count may change freely; the same values under another dtype may not.
    quiet = [t if t.name != "embed.weight" else tensor(t.name, np.zeros((4, 4)), "F32", "ignored") for t in tensors]
    assert hash_of(write_checkpoint(tmp_path / "quiet.safetensors", quiet)) == digest
    f64 = [tensor(t.name, t.values, "F64", t.role) if t.role == "matrix" else t for t in tensors]
    assert hash_of(write_checkpoint(tmp_path / "f64.safetensors", f64)) != digest
    # Counting another set of tensors is another content.
    assert hash_of(a, exclude="") != digest


def test_select_tensors_is_the_engines_selection():
    entries = [
        ("fc.weight", [3, 4]), ("fc.bias", [3]), ("conv.weight", [8, 3, 3, 3]), ("embed.weight", [10, 4]),
        ("ln_f.weight", [4]), ("ln_f.bias", [4]), ("scale", [4]), ("empty.weight", [0, 3]), ("t", []),
    ]
    assert select_tensors(entries) == [("fc.weight", "matrix"), ("fc.bias", "bias"), ("conv.weight", "matrix")]
    assert select_tensors(entries, include="^fc") == [("fc.weight", "matrix"), ("fc.bias", "bias")]
    assert ("embed.weight", "matrix") in select_tensors(entries, exclude="")
    with pytest.raises(ValueError, match="include"):
        select_tensors(entries, include="(")


def test_metrics_frame_has_the_metrics_csv_columns(tmp_path):
    rng = np.random.default_rng(4)
    paths = [write_checkpoint(tmp_path / f"step{s}.safetensors", random_model(rng)) for s in (0, 5)]
    results = [checkpoint_metrics(p) for p in paths]
    frame = metrics_frame([0, None], results)
    assert list(frame.columns) == ["step", *METRIC_NAMES, "svd", "content_hash"]
    assert frame["step"].dtype == "Int64" and frame["step"].isna().tolist() == [False, True]
    assert all(frame[name].dtype == np.float64 for name in METRIC_NAMES)
    assert list(frame["content_hash"]) == [r["content_hash"] for r in results]
    pd.testing.assert_frame_equal(trajectory_metrics(paths).drop(columns="path").iloc[:1], frame.iloc[:1])
    with pytest.raises(ValueError, match="-5"):
        metrics_frame([-5], results[:1])
    with pytest.raises(ValueError, match="2 steps but 1 results"):
        metrics_frame([0, 1], results[:1])
    with pytest.raises(ValueError, match="content_hash"):
        metrics_frame([0], [{k: v for k, v in results[0].items() if k != "content_hash"}])


def test_the_binding_takes_one_options_value_and_checks_it_again():
    """The three statistics functions take one MetricsOptions (read by attribute), and
    validate it themselves: a caller of the binding that bypasses MetricsOptions' checks
    gets one ValueError, never a panic."""
    import types

    items = [("fc.weight", "F64", [3, 2], np.arange(6, dtype=np.float64))]
    default = _rust_metrics.tensor_metrics(items)
    assert_same_result(_rust_metrics.tensor_metrics(items, MetricsOptions()), default)
    large = [("fc.weight", "F64", [100, 80], np.random.default_rng(0).normal(size=8000))]
    assert _rust_metrics.tensor_metrics(large, MetricsOptions(svd="randomized", rank=4))["svd"] == "randomized"
    assert _rust_metrics.tensor_metrics(large)["svd"] == "exact"
    base = dict(svd="auto", exact_max_dim=2048, rank=64, include=None, exclude=None)
    for change, message in (({"rank": 0}, "rank must be at least 1"),
                            ({"exact_max_dim": 0}, "exact_max_dim must be at least 1"),
                            ({"svd": "fast"}, "svd must be 'exact', 'randomized' or 'auto'"),
                            ({"include": "("}, "include")):
        with pytest.raises(ValueError, match=message):
            _rust_metrics.tensor_metrics(items, types.SimpleNamespace(**{**base, **change}))
    without_rank = types.SimpleNamespace(**{k: v for k, v in base.items() if k != "rank"})
    with pytest.raises((TypeError, AttributeError), match="rank"):
        _rust_metrics.tensor_metrics(items, without_rank)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_computes_after_its_parent_did():
    """The engine keeps idle thread pools for reuse; a child forked after the parent used
    them has none of their threads and must start its own, not wait on them forever."""
    import time

    weights = {"fc.weight": np.arange(12.0).reshape(3, 4), "fc.bias": np.ones(3)}
    expected = weights_metrics(weights, threads=1)
    weights_metrics(weights, threads=2)
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only with the parent's numbers
        try:
            same = weights_metrics(weights, threads=1) == expected and weights_metrics(weights, threads=2) == expected
            os._exit(0 if same else 1)
        except BaseException:
            os._exit(2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's statistics did not finish within 60 s")

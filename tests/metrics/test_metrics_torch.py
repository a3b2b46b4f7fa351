"""The torch (GPU) path of the 14 statistics against the Rust engine.

This machine has no GPU: the torch code runs on torch's CPU backend (``device="cpu"``
passed to ``trainmap.metrics.metrics_torch`` directly), which exercises every line the CUDA path
runs except the device itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from checkpoint_factory import EXCLUDED_BIASES, EXCLUDED_NAMES, random_model, reference_metrics, tensor, write_checkpoint
from trainmap import _rust_metrics
from trainmap.metrics import metrics_torch
from trainmap.cli import main
import trainmap.metrics.engine
from trainmap.metrics.engine import METRIC_NAMES, CheckpointError, checkpoint_metrics, trajectory_metrics, weights_metrics

CPU = torch.device("cpu")
TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def assert_same(got: dict, engine: dict, rtol: float = 1e-9) -> None:
    assert list(got)[:14] == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        g, e = got[name], engine[name]
        if math.isnan(e):
            assert math.isnan(g), f"{name}: engine NaN, torch {g}"
        else:
            # Absolute floor for values that are zero up to rounding (the mean of a
            # symmetric matrix), far below any real discrepancy.
            assert g == pytest.approx(e, rel=rtol, abs=1e-13), f"{name}: torch {g} vs engine {e}"


def as_torch(tensors) -> list[tuple[str, torch.Tensor]]:
    """The factory's tensors as torch tensors of their stored dtype (I32 stays integer)."""
    return [(t.name, torch.from_numpy(t.values).to(TORCH_DTYPES.get(t.dtype, torch.int32))) for t in tensors]


@pytest.mark.parametrize("seed", range(24))
def test_torch_path_equals_the_engine_in_exact_mode(tmp_path, seed):
    tensors = random_model(np.random.default_rng(seed), max_side=60)
    path = write_checkpoint(tmp_path / "model.safetensors", tensors)
    engine = checkpoint_metrics(path, svd="exact", device="cpu")
    from_file, notes = metrics_torch.checkpoint_metrics(path, device=CPU)
    assert_same(from_file, engine)
    in_memory, _ = metrics_torch.tensors_metrics(as_torch(tensors), device=CPU)
    assert_same(in_memory, engine)
    assert notes == []
    assert list(from_file) == list(METRIC_NAMES) + ["svd", "content_hash"]
    assert from_file["svd"] == engine["svd"] == in_memory["svd"]
    assert from_file["content_hash"] == metrics_torch.CONTENT_HASH == ""


def test_rank_deficient_matrices_take_the_svd_fallback(tmp_path):
    rng = np.random.default_rng(2)
    low_rank = rng.standard_normal((80, 3)) @ rng.standard_normal((3, 120))
    tensors = [tensor("a.weight", low_rank, "F64", "matrix"), tensor("b.weight", np.outer(np.arange(50.0), np.ones(7)), "F64", "matrix")]
    path = write_checkpoint(tmp_path / "lowrank.safetensors", tensors)
    got, _ = metrics_torch.checkpoint_metrics(path, device=CPU)
    assert_same(got, checkpoint_metrics(path, svd="exact", device="cpu"))
    assert_same(got, reference_metrics(tensors))
    # The Gram path alone would miss this accuracy: its error bound must trigger the fallback.
    a = torch.from_numpy(tensors[0].values)
    gram_sigma = torch.linalg.eigvalsh(a @ a.T).clamp_min(0).sqrt()
    exact = np.linalg.svd(tensors[0].values, compute_uv=False)
    assert abs(float(gram_sigma.sum()) - exact.sum()) > 1e-9 * exact.sum()
    assert float(metrics_torch.singular_values(a).sum()) == pytest.approx(exact.sum(), rel=1e-12)


@pytest.mark.parametrize("gather_limit", [0, 7, 1 << 22])
def test_median_radix_selection_matches_numpy(monkeypatch, gather_limit):
    """Duplicates, signed zeros, negative values, even and odd counts, BF16 (few distinct
    values), spread over several tensors; a gather limit of 0 forces all four 16-bit passes."""
    monkeypatch.setattr(metrics_torch, "_GATHER_LIMIT", gather_limit)
    rng = np.random.default_rng(0)
    cases = [
        [np.array([-0.0, 0.0, 0.0, -0.0]), np.array([1.0, -1.0])],
        [rng.standard_normal(101), rng.standard_normal(50) * 1e-30, -np.abs(rng.standard_normal(12))],
        [np.round(rng.standard_normal(400), 1), np.full(7, 0.1)],
        [np.array([5.0]), np.array([-3.0])],
        [np.array([2.5])],
        [torch.randn(333, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16).double().numpy()],
    ]
    for parts in cases:
        got = metrics_torch._median(lambda: (torch.from_numpy(p) for p in parts), sum(p.size for p in parts), CPU)
        assert got == np.median(np.concatenate(parts)), parts


def test_selection_is_the_engines(tmp_path):
    """Excluded names, include/exclude overrides and unsupported dtypes of excluded tensors
    behave as in the engine; the roles come from the engine's select_tensors."""
    rng = np.random.default_rng(4)
    tensors = [tensor(name, rng.standard_normal(4 if name.endswith("bias") else (3, 4)), "F32", "ignored")
               for name in EXCLUDED_NAMES + EXCLUDED_BIASES]
    tensors += [tensor("embeddings.position_ids", np.arange(4), "I32", "ignored"),
                tensor("head.weight", rng.standard_normal((5, 5)), "F64", "matrix"),
                tensor("head.bias", rng.standard_normal(5), "F16", "bias"),
                tensor("layers.scale", rng.standard_normal(5), "F32", "ignored")]
    path = write_checkpoint(tmp_path / "x.safetensors", tensors)
    entries = [(t.name, list(t.values.shape)) for t in tensors]
    assert dict(_rust_metrics.select_tensors(entries)) == {"head.weight": "matrix", "head.bias": "bias"}
    for include, exclude in [(None, None), (None, "head"), (r"^head\.", None), (r"^(head|lm_head)\.", r"^$")]:
        kept = [t for t in tensors if t.dtype != "I32"]
        path_kept = write_checkpoint(tmp_path / "kept.safetensors", kept)
        got, _ = metrics_torch.checkpoint_metrics(path_kept, device=CPU, include=include, exclude=exclude)
        assert_same(got, checkpoint_metrics(path_kept, svd="exact", include=include, exclude=exclude, device="cpu"))
    got, _ = metrics_torch.checkpoint_metrics(path, device=CPU)
    assert_same(got, reference_metrics(tensors))


def test_counted_tensor_of_unsupported_dtype_names_it(tmp_path):
    path = write_checkpoint(tmp_path / "int.safetensors", [tensor("fc.weight", np.ones((2, 2)), "I32", "matrix")])
    with pytest.raises(CheckpointError, match=r"int\.safetensors.*fc\.weight.*int32"):
        metrics_torch.checkpoint_metrics(path, device=CPU)


def test_non_finite_values_give_nan_and_warnings_like_the_engine(tmp_path):
    w = np.ones((2, 3))
    w[0, 0] = np.nan
    tensors = [tensor("fc.weight", w, "F32", "matrix"), tensor("ok.weight", np.eye(3), "F32", "matrix"),
               tensor("fc.bias", [1.0, 3.0], "F32", "bias")]
    path = write_checkpoint(tmp_path / "nan.safetensors", tensors)
    with pytest.warns(RuntimeWarning, match="fc.weight"):
        engine = checkpoint_metrics(path, svd="exact", device="cpu")
    got, notes = metrics_torch.checkpoint_metrics(path, device=CPU)
    assert_same(got, engine)
    assert math.isnan(got["l1"]) and got["median_b"] == 2.0
    assert len(notes) == 1 and "fc.weight" in notes[0] and "nan.safetensors" in notes[0]


def test_bad_device_is_one_clear_error(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "x.safetensors", [tensor("fc.weight", np.eye(2), "F32", "matrix")])
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda.*'gpu'"):
        checkpoint_metrics(path, device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda'.*no CUDA device"):
        trajectory_metrics([path], device="cuda")
    assert metrics_torch.resolve_device("auto") is None  # no GPU: the engine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert metrics_torch.resolve_device("auto") == torch.device("cuda")
    assert metrics_torch.resolve_device("auto", svd="randomized") is None
    assert metrics_torch.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match="randomized.*CPU engine"):
        metrics_torch.resolve_device("cuda", svd="randomized")
    assert metrics_torch.resolve_device("cpu") is None


def test_public_api_dispatches_to_the_torch_path(tmp_path, monkeypatch):
    """trajectory_metrics(device="cuda") runs the torch code (here on CPU) and returns the
    engine's frame, column for column."""
    rng = np.random.default_rng(5)
    paths = [write_checkpoint(tmp_path / f"step{s:08d}.safetensors", random_model(rng)) for s in (0, 10, 20)]
    monkeypatch.setattr(metrics_torch, "resolve_device", lambda device, svd="auto": CPU)
    seen = []
    torch_frame = trajectory_metrics(paths, device="cuda", svd="exact", progress=seen.append)
    engine_frame = trajectory_metrics(paths, device="cpu", svd="exact")
    assert list(torch_frame.columns) == list(engine_frame.columns)
    assert torch_frame["path"].tolist() == engine_frame["path"].tolist()
    assert torch_frame["step"].tolist() == [0, 10, 20] and seen == [1, 2, 3]
    assert torch_frame["svd"].tolist() == engine_frame["svd"].tolist()
    assert torch_frame["content_hash"].tolist() == [""] * 3
    for row_t, row_e in zip(torch_frame.to_dict("records"), engine_frame.to_dict("records")):
        assert_same({k: row_t[k] for k in METRIC_NAMES}, {k: row_e[k] for k in METRIC_NAMES})
    assert_same(checkpoint_metrics(paths[0], device="cuda"), checkpoint_metrics(paths[0], svd="exact", device="cpu"))


def test_weights_on_a_cuda_device_take_the_torch_path(monkeypatch):
    """weights_metrics sends tensors already on a GPU to metrics_torch on that device (no
    GPU here: the tensors' device is faked and the torch path runs on the CPU)."""
    rng = np.random.default_rng(8)
    weights = {"fc.weight": torch.from_numpy(rng.standard_normal((6, 4))).float(),
               "fc.bias": torch.from_numpy(rng.standard_normal(6)).float(),
               "ln_f.weight": torch.ones(4)}
    on_gpu = torch.device("cuda:0")
    monkeypatch.setattr(trainmap.metrics.engine, "_cuda_device", lambda values: on_gpu if list(values) else None)
    calls, compute = [], metrics_torch.tensors_metrics

    def on_device(tensors, *, device, **options):
        calls.append((sorted(name for name, _ in tensors), device))
        return compute(tensors, device=CPU, **options)

    monkeypatch.setattr(metrics_torch, "tensors_metrics", on_device)
    got = weights_metrics(weights, svd="exact")
    assert calls == [(["fc.bias", "fc.weight"], on_gpu)]
    monkeypatch.undo()
    assert_same(got, weights_metrics(weights, svd="exact"))
    assert trainmap.metrics.engine._cuda_device([torch.ones(2), np.ones(2)]) is None


def test_cli_device_option(tmp_path, capsys):
    path = write_checkpoint(tmp_path / "step1.safetensors", [tensor("fc.weight", np.eye(2), "F32", "matrix")])
    out = tmp_path / "m.csv"
    assert main(["metrics", str(path), "-o", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert out.exists()
    assert main(["metrics", str(path), "-o", str(tmp_path / "n.csv"), "--device", "tpu", "--no-progress"]) == 2
    assert "device" in capsys.readouterr().err and not (tmp_path / "n.csv").exists()

"""Per-checkpoint weight statistics (Hu et al. 2023, Appendix B), computed by the Rust
engine ``trainmap._rust_metrics``.

The engine reads ``.safetensors`` checkpoints one tensor at a time, or tensors already in
memory (a model, a state dict) in place, in float64, in parallel over tensors and
checkpoints, with the GIL released. Which tensors count, and the exact definition of each
column, are in ``docs/metrics.md``.

Example
-------
>>> from trainmap.metrics import trajectory_metrics, checkpoint_paths, weights_metrics
>>> frame = trajectory_metrics(checkpoint_paths("runs/0/checkpoints"), threads=4)
>>> weights_metrics(model)["spectral"]
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from trainmap import _rust_metrics as _engine
from trainmap.contracts import CONTENT_HASH, PATH, STEP, SVD, checkpoint_step
from trainmap.contracts import parse_step as _valid_step

__all__ = [
    "METRIC_NAMES",
    "DEFAULT_EXCLUDE",
    "DEFAULT_EXACT_MAX_DIM",
    "DEFAULT_DEVICE",
    "ENGINE_FINGERPRINT",
    "CheckpointError",
    "RESULT_COLUMNS",
    "checkpoint_metrics",
    "weights_metrics",
    "select_tensors",
    "metrics_frame",
    "trajectory_metrics",
    "checkpoint_paths",
    "parse_step",
]

#: The 14 statistic columns, in docs/design.md order (names kept from the authors' code).
METRIC_NAMES: tuple[str, ...] = tuple(_engine.METRIC_NAMES)
#: Regular expression of tensor names left out by default (embeddings, normalisation layers).
DEFAULT_EXCLUDE: str = _engine.DEFAULT_EXCLUDE
#: In ``svd="auto"`` mode, matrices whose smaller side is at most this are computed exactly;
#: above it, by whichever path the engine's cost model predicts cheaper.
DEFAULT_EXACT_MAX_DIM: int = _engine.DEFAULT_EXACT_MAX_DIM
#: SHA-256 of the engine sources this extension was built from (see
#: ``trainmap.workflow.engine_fingerprint``); the workflow's metrics jobs depend on it.
ENGINE_FINGERPRINT: str = _engine.ENGINE_FINGERPRINT
#: Raised (a ``ValueError``) for a file that is not a valid safetensors checkpoint, or a
#: counted tensor of unsupported dtype. Missing files raise ``FileNotFoundError``.
CheckpointError = _engine.CheckpointError
#: Keys of every per-checkpoint result and columns of metrics.csv after ``step``: the 14
#: statistics, ``svd`` (how singular values were obtained) and ``content_hash`` (hex
#: xxh3-128 of the counted tensors' names, dtypes, shapes and bytes, in name order).
RESULT_COLUMNS: tuple[str, ...] = (*METRIC_NAMES, SVD, CONTENT_HASH)

_SVD_MODES = ("exact", "randomized", "auto")
#: Where the statistics are computed: "auto" (a CUDA GPU when torch sees one, else the
#: engine), "cpu" (the Rust engine) or "cuda" / "cuda:N" (torch on that GPU).
DEFAULT_DEVICE = "auto"


#: Training step encoded in a checkpoint's file name (``step00001200.safetensors`` → 1200),
#: None when the stem does not end in digits: :func:`trainmap.contracts.checkpoint_step`.
parse_step = checkpoint_step


def checkpoint_paths(directory: str | os.PathLike) -> list[Path]:
    """All ``*.safetensors`` files of ``directory``, ordered by step.

    Raises ``FileNotFoundError`` if the directory does not exist and ``ValueError`` if it
    holds no checkpoints or a checkpoint whose name carries no step number.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    paths = sorted(directory.glob("*.safetensors"))
    if not paths:
        raise ValueError(f"{directory}: no *.safetensors checkpoints in this directory")
    unnumbered = [p.name for p in paths if parse_step(p) is None]
    if unnumbered:
        raise ValueError(
            f"{directory}: cannot order checkpoints by step: no step number in "
            f"{', '.join(unnumbered[:3])} (expected names like step00001200.safetensors)"
        )
    return sorted(paths, key=parse_step)


def _check_svd(svd: str) -> None:
    if svd not in _SVD_MODES:
        raise ValueError(f"svd must be one of {', '.join(_SVD_MODES)}, not {svd!r}")


def _torch_device(device: str, svd: str):
    """The torch device to compute on, or None for the Rust engine (see
    :func:`trainmap.metrics_torch.resolve_device`). torch is imported only when needed."""
    if device == "cpu":
        return None
    from trainmap import metrics_torch

    return metrics_torch.resolve_device(device, svd)


def _emit(warning_messages: Iterable[str]) -> None:
    for message in warning_messages:
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def checkpoint_metrics(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    svd: str = "auto",
    include: str | None = None,
    exclude: str | None = None,
    exact_max_dim: int | None = None,
    rank: int | None = None,
    threads: int | None = None,
    device: str = DEFAULT_DEVICE,
) -> dict[str, Any]:
    """The statistics of one checkpoint: ``{column: value}`` for the :data:`RESULT_COLUMNS`
    (the 14 :data:`METRIC_NAMES` as floats, then ``svd`` and ``content_hash`` as strings).

    Parameters
    ----------
    path : a ``.safetensors`` file (F64, F32, F16 or BF16 tensors), or the shard files of
        one sharded checkpoint (a sequence: their tensors together, a name in two shards is
        an error).
    svd : ``"exact"``, ``"randomized"`` or ``"auto"`` (exact when a matrix's smaller side
        is at most ``exact_max_dim``; above it, whichever path a cost model predicts
        cheaper for that matrix: see docs/metrics.md).
    include : regex; when given, only tensors whose name matches count.
    exclude : regex replacing :data:`DEFAULT_EXCLUDE`; ``""`` excludes nothing.
    exact_max_dim : threshold of ``svd="auto"`` (default :data:`DEFAULT_EXACT_MAX_DIM`).
    rank : leading singular values computed in randomized mode (default 64).
    threads : worker threads (default, and at most: all CPUs available to this process;
        more gives a ``RuntimeWarning`` and is capped).
    device : ``"auto"`` (a CUDA GPU when torch sees one, else the engine), ``"cpu"`` (the
        Rust engine) or ``"cuda"``/``"cuda:N"`` (``trainmap.metrics_torch``). On a GPU
        singular values are always exact (``exact_max_dim``, ``rank`` and ``threads`` do
        not apply; ``svd="randomized"`` is an error there and makes ``"auto"`` choose the
        engine).

    A statistic with nothing to average (e.g. a model without biases) is NaN. Tensors with
    non-finite values make the statistics they enter NaN and raise a ``RuntimeWarning``
    naming them.
    """
    _check_svd(svd)
    torch_device = _torch_device(device, svd)
    if torch_device is not None:
        from trainmap import metrics_torch

        result, notes = metrics_torch.checkpoint_metrics(path, device=torch_device, include=include, exclude=exclude)
        _emit(notes)
        return result
    files = os.fspath(path) if isinstance(path, (str, os.PathLike)) else [os.fspath(p) for p in path]
    stats = _engine.checkpoint_stats(
        files,
        svd=svd,
        exact_max_dim=exact_max_dim,
        rank=rank,
        threads=_threads(threads),
        include=include,
        exclude=exclude,
    )
    _emit(stats.warnings)
    return _result(stats)


def trajectory_metrics(
    paths: Sequence[str | os.PathLike],
    *,
    threads: int | None = None,
    svd: str = "auto",
    include: str | None = None,
    exclude: str | None = None,
    exact_max_dim: int | None = None,
    rank: int | None = None,
    progress: Callable[[int], object] | None = None,
    device: str = DEFAULT_DEVICE,
) -> pd.DataFrame:
    """Statistics of many checkpoints, computed in parallel, one row per path in order.

    Columns: ``path``, then :func:`metrics_frame`'s: ``step`` (parsed from the file name,
    ``<NA>`` when absent), the 14 :data:`METRIC_NAMES`, ``svd`` (``exact``, ``randomized``,
    ``mixed`` or ``none``: how the singular values of that checkpoint were obtained) and
    ``content_hash``. ``progress``, if given, is
    called with the number of finished checkpoints. Other parameters as in
    :func:`checkpoint_metrics`. The first bad file stops the computation with an exception
    naming it.
    """
    _check_svd(svd)
    paths = [os.fspath(p) for p in paths]
    torch_device = _torch_device(device, svd)
    if torch_device is not None:
        from trainmap import metrics_torch

        results = metrics_torch.trajectory_results(
            paths, device=torch_device, include=include, exclude=exclude, progress=progress
        )
        return _trajectory_frame(paths, results)
    results = _engine.trajectory_stats(
        paths,
        svd=svd,
        exact_max_dim=exact_max_dim,
        rank=rank,
        threads=_threads(threads),
        include=include,
        exclude=exclude,
        progress=progress,
    )
    for stats in results:
        _emit(stats.warnings)
    return _trajectory_frame(paths, [_result(stats) for stats in results])


def _trajectory_frame(paths: list[str], results: list[dict[str, Any]]) -> pd.DataFrame:
    frame = metrics_frame([parse_step(p) for p in paths], results)
    frame.insert(0, PATH, paths)
    return frame


def metrics_frame(steps: Sequence[int | None], results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """metrics.csv's frame from per-checkpoint results (as :func:`checkpoint_metrics` and
    :func:`weights_metrics` return them): columns ``step`` (nullable integer), then the
    :data:`RESULT_COLUMNS`, one row per result in order.

    Raises ``ValueError`` when the lengths differ or a result lacks a column, and
    ``trainmap.contracts.StepError`` (a ``ValueError``) for a step that is not a
    non-negative int64 (None is allowed: a checkpoint without a step number).
    """
    steps, results = list(steps), list(results)
    if len(steps) != len(results):
        raise ValueError(f"metrics_frame: {len(steps)} steps but {len(results)} results")
    for i, result in enumerate(results):
        missing = [c for c in RESULT_COLUMNS if c not in result]
        if missing:
            raise ValueError(f"metrics_frame: result {i} (step {steps[i]}) lacks {', '.join(missing)}")
    frame = pd.DataFrame(
        [[r[name] for name in METRIC_NAMES] for r in results], columns=list(METRIC_NAMES), dtype="float64"
    )
    frame.insert(0, STEP, pd.array([None if s is None else _valid_step(s) for s in steps], dtype="Int64"))
    frame[SVD] = pd.Series([str(r[SVD]) for r in results], dtype="object")
    frame[CONTENT_HASH] = pd.Series([str(r[CONTENT_HASH]) for r in results], dtype="object")
    return frame


def select_tensors(
    entries: Iterable[tuple[str, Sequence[int]]], include: str | None = None, exclude: str | None = None
) -> list[tuple[str, str]]:
    """The tensors that count among ``(name, shape)`` entries, in order, as ``(name, role)``
    with role ``"matrix"`` or ``"bias"``: the engine's one definition of tensor selection
    (docs/metrics.md, "Which tensors count")."""
    return _engine.select_tensors([(name, [int(d) for d in shape]) for name, shape in entries], include, exclude)


def weights_metrics(
    weights: Any,
    *,
    svd: str = "auto",
    include: str | None = None,
    exclude: str | None = None,
    exact_max_dim: int | None = None,
    rank: int | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """The statistics of weights in memory, as :func:`checkpoint_metrics` gives them for the
    same tensors saved to a safetensors file (same numbers, same ``content_hash``).

    ``weights`` is a ``torch.nn.Module`` (its ``named_parameters()``: the weights
    ``trainmap train`` saves), a mapping of name to ``torch.Tensor`` or numpy array, or the
    path of a ``.safetensors`` file. Only the tensors that count are read. CPU tensors and
    numpy arrays are read in place, without a copy (bfloat16 through a 16-bit integer view).
    When a counted tensor lives on a CUDA GPU the statistics are computed there by
    :mod:`trainmap.metrics_torch` (exact singular values, float64 on the device, one tensor
    at a time; ``content_hash`` empty), unless ``svd="randomized"``; tensors on another
    device are copied to the host one by one (the model is not moved), so host memory grows
    by the size of the counted tensors for the call. Non-contiguous or
    big-endian arrays are copied to C order first. Options as in :func:`checkpoint_metrics`.
    Do not modify the tensors from another thread during the call.
    """
    _check_svd(svd)
    if isinstance(weights, (str, os.PathLike)):
        return checkpoint_metrics(
            weights, svd=svd, include=include, exclude=exclude, exact_max_dim=exact_max_dim, rank=rank,
            threads=threads,
        )
    named = _named_tensors(weights)
    counted = {name for name, _ in select_tensors(((n, _shape(t)) for n, t in named), include, exclude)}
    gpu = _cuda_device(value for name, value in named if name in counted)
    if gpu is not None and svd != "randomized":
        from trainmap import metrics_torch

        result, notes = metrics_torch.tensors_metrics(
            [(name, value) for name, value in named if name in counted], device=gpu, include=include, exclude=exclude
        )
        _emit(notes)
        return result
    tensors = [_engine_tensor(name, value) for name, value in named if name in counted]
    return _engine.tensor_metrics(
        tensors, include=include, exclude=exclude, svd=svd, exact_max_dim=exact_max_dim, rank=rank,
        threads=_threads(threads),
    )


def _cuda_device(values: Iterable[Any]):
    """The device of the first tensor among ``values`` that lives on a CUDA GPU, or None."""
    for value in values:
        device = getattr(value, "device", None)
        if getattr(device, "type", None) == "cuda":
            return device
    return None


def _named_tensors(weights: Any) -> list[tuple[str, Any]]:
    """``(name, tensor)`` pairs of a module (its parameters) or a mapping."""
    if hasattr(weights, "named_parameters") and callable(weights.named_parameters):
        return list(weights.named_parameters())
    if isinstance(weights, Mapping):
        pairs = list(weights.items())
        bad = [name for name, _ in pairs if not isinstance(name, str)]
        if bad:
            raise TypeError(f"weights: tensor names must be strings, not {bad[0]!r}")
        return pairs
    raise TypeError(
        "weights must be a torch.nn.Module, a mapping of name to tensor or array, or a .safetensors path; "
        f"not {type(weights).__name__}"
    )


def _shape(value: Any) -> list[int]:
    shape = getattr(value, "shape", None)
    if shape is None:
        raise TypeError(f"weights: expected tensors or arrays, not {type(value).__name__}")
    return [int(d) for d in shape]


#: safetensors names of the element types the engine reads, by numpy / torch name.
_ENGINE_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def _engine_tensor(name: str, value: Any) -> tuple[str, str, list[int], Any]:
    """``(name, dtype, shape, buffer)`` for the engine: the memory of ``value`` itself where
    possible (CPU tensors, C-ordered little-endian arrays), else a C-ordered host copy. A
    dtype the engine does not read is passed by name with no data: the engine reports it."""
    shape = _shape(value)
    if isinstance(value, np.ndarray):
        dtype_name = value.dtype.name
    else:
        dtype_name = str(getattr(value, "dtype", type(value).__name__)).removeprefix("torch.")
    dtype = _ENGINE_DTYPES.get(dtype_name)
    if dtype is None:
        return name, dtype_name, shape, b""
    array = value if isinstance(value, np.ndarray) else _torch_host_array(name, value)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return name, dtype, shape, np.ascontiguousarray(array)


def _torch_host_array(name: str, tensor: Any) -> np.ndarray:
    """A numpy view of a CPU torch tensor's memory (bfloat16 as int16), or of a host copy of
    a tensor on another device."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"weights: tensor '{name}' is a {type(tensor).__name__}, not a torch.Tensor or numpy array")
    if tensor.layout != torch.strided:
        raise ValueError(f"weights: tensor '{name}' has layout {tensor.layout}; only dense tensors are read")
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.to("cpu")
    tensor = tensor.contiguous()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.int16)
    return tensor.numpy()


def _result(stats: Any) -> dict[str, Any]:
    """One checkpoint's result dict from the engine's CheckpointStats."""
    result: dict[str, Any] = dict(zip(METRIC_NAMES, stats.values))
    result[SVD] = stats.svd
    result[CONTENT_HASH] = stats.content_hash
    return result


def _threads(threads: int | None) -> int | None:
    """Validated thread count; None lets the engine use every CPU this process may use."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    return threads

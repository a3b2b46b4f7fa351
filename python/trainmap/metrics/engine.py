"""Per-checkpoint weight statistics (Hu et al. 2023, Appendix B), computed by the Rust
engine ``trainmap._rust_metrics``.

The engine reads ``.safetensors`` checkpoints one tensor at a time, or tensors already in
memory (a model, a state dict) in place, in float64, in parallel over tensors and
checkpoints, with the GIL released. Which tensors count, and the exact definition of each
column, are in ``docs/metrics.md``.

Example
-------
>>> from trainmap.metrics.engine import trajectory_metrics, checkpoint_paths, weights_metrics
>>> frame = trajectory_metrics(checkpoint_paths("runs/0/checkpoints"), threads=4)
>>> weights_metrics(model)["spectral"]
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from trainmap import _rust_metrics as _engine
from trainmap.io.contracts import CONTENT_HASH, PATH, STEP, SVD, checkpoint_step
from trainmap.io.contracts import parse_step
from trainmap.metrics.tensors import CheckpointError, select_tensors
from trainmap.options import MetricsOptions

__all__ = [
    "METRIC_NAMES",
    "DEFAULT_EXCLUDE",
    "DEFAULT_EXACT_MAX_DIM",
    "DEFAULT_DEVICE",
    "ENGINE_FINGERPRINT",
    "CheckpointError",
    "RESULT_COLUMNS",
    "SQUARED_STATISTICS",
    "checkpoint_metrics",
    "weights_metrics",
    "stacked_weights_metrics",
    "models_weights_metrics",
    "select_tensors",
    "file_entries",
    "check_countable",
    "counted_layout",
    "layout_warning",
    "metrics_frame",
    "trajectory_metrics",
    "checkpoint_paths",
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
#: Keys of every per-checkpoint result and columns of metrics.csv after ``step``: the 14
#: statistics, ``svd`` (how singular values were obtained) and ``content_hash`` (hex
#: xxh3-128 of the counted tensors' names, dtypes, shapes and bytes, in name order).
RESULT_COLUMNS: tuple[str, ...] = (*METRIC_NAMES, SVD, CONTENT_HASH)

_SVD_MODES = ("exact", "randomized", "auto")
# File names of the shards of one checkpoint (Hugging Face: model-00001-of-00004.safetensors).
_SHARD_NAME = re.compile(r"-\d+-of-\d+$")
# How warnings and errors name tensors passed from memory (as the engine does).
_MEMORY = "in-memory tensors"
#: Where the statistics are computed: "auto" (a CUDA GPU when torch sees one, else the
#: engine), "cpu" (the Rust engine) or "cuda" / "cuda:N" (torch on that GPU).
DEFAULT_DEVICE = "auto"


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
    shards = [p.name for p in paths if _SHARD_NAME.search(p.stem)]
    if shards:
        raise ValueError(
            f"{directory}: {', '.join(shards[:3])} {'is a shard' if len(shards) == 1 else 'are shards'} of a sharded "
            "checkpoint, not a checkpoint of its own: give the checkpoint's directory (with its "
            "model.safetensors.index.json) to `trainmap series-metrics`, which reads the shards together"
        )
    unnumbered = [p.name for p in paths if checkpoint_step(p) is None]
    if unnumbered:
        raise ValueError(
            f"{directory}: cannot order checkpoints by step: no step number in "
            f"{', '.join(unnumbered[:3])} (expected names like step00001200.safetensors)"
        )
    by_step: dict[int, Path] = {}
    for path in paths:
        step = checkpoint_step(path)
        if step in by_step:
            raise ValueError(f"{by_step[step]} and {path} both stand for step {step}; keep one of them")
        by_step[step] = path
    return [by_step[step] for step in sorted(by_step)]


def _check_svd(svd: str) -> None:
    if svd not in _SVD_MODES:
        raise ValueError(f"svd must be one of {', '.join(_SVD_MODES)}, not {svd!r}")


def _engine_options(svd: str, include: str | None, exclude: str | None, exact_max_dim: int | None,
                    rank: int | None) -> MetricsOptions:
    """The binding's one options argument from this module's keyword arguments (None: the
    engine's default)."""
    return MetricsOptions(svd=svd, include=include, exclude=exclude,
                          exact_max_dim=DEFAULT_EXACT_MAX_DIM if exact_max_dim is None else exact_max_dim,
                          rank=_engine.DEFAULT_RANK if rank is None else rank)


def _torch_device(device: str, svd: str):
    """The torch device to compute on, or None for the Rust engine (see
    :func:`trainmap.metrics.metrics_torch.resolve_device`). torch is imported only when needed."""
    if device == "cpu":
        return None
    from trainmap.metrics import metrics_torch

    return metrics_torch.resolve_device(device, svd)


def _emit(warning_messages: Iterable[str]) -> None:
    for message in warning_messages:
        warnings.warn(message, RuntimeWarning, stacklevel=3)


# --- checks of what is computed (docs/metrics.md, "When the numbers would mean nothing") ------

#: Statistics built on squares and singular values of the weight matrices: out of float64's
#: range when the weights are (magnitudes beyond about 1e150, or below about 1e-150).
SQUARED_STATISTICS: tuple[str, ...] = (
    "l2", "code_sparsity", "spectral", "computational_sparsity", "mean_lambda", "variance_lambda", "var_w",
)
# Statistics that are positive whenever l1 is (some matrix is not all zero).
_POSITIVE_WITH_L1 = ("l2", "spectral", "mean_lambda")
# How many tensor names a message lists before "...".
_NAMES_SHOWN = 6


def _checked_range(result: dict[str, Any], origin: str) -> dict[str, Any]:
    """``result`` with the statistics that over- or underflowed float64 set to NaN, and a
    ``RuntimeWarning`` naming ``origin`` and them. A statistic is infinite though the weights
    are finite, or ``l2``/``spectral``/``mean_lambda`` is 0 though ``l1`` is positive
    (squares that underflowed to 0; singular values lost to an overflow): such numbers are
    made up, and a NaN leaves the run out of the HMM with a message instead."""
    values = {name: result[name] for name in METRIC_NAMES}
    infinite = [name for name, value in values.items() if isinstance(value, float) and math.isinf(value)]
    l1 = values["l1"]
    lost = isinstance(l1, float) and math.isfinite(l1) and l1 > 0 and any(values[n] == 0 for n in _POSITIVE_WITH_L1)
    if not infinite and not lost:
        return result
    matrices_hit = lost or any(name in infinite for name in METRIC_NAMES[:11])
    cleared = [name for name in METRIC_NAMES if name in infinite or (matrices_hit and name in SQUARED_STATISTICS)]
    cleared = [name for name in cleared if not math.isnan(values[name])]
    warnings.warn(
        f"{origin}: weights too large or too small for float64 arithmetic (l1 = {l1:.3g}): {', '.join(cleared)} "
        "over- or underflow, so they are NaN (squares of magnitudes beyond about 1e150 or below about 1e-150 are "
        "out of range)", RuntimeWarning, stacklevel=3,
    )
    return {**result, **dict.fromkeys(cleared, float("nan"))}


def file_entries(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[tuple[str, list[int]]] | None:
    """``(name, shape)`` of every tensor of a safetensors file (or of every shard of one
    checkpoint), read from the headers; None when a header cannot be read (the engine then
    says why)."""
    from trainmap.io.fileguard import InputFileError, read_safetensors_header

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    try:
        return [(name, shape) for p in paths for name, (_, shape) in read_safetensors_header(p).items()]
    except (InputFileError, OSError):
        return None


def check_countable(entries: Sequence[tuple[str, Sequence[int]]], origin: str, include: str | None,
                    exclude: str | None) -> list[tuple[str, str]]:
    """The counted tensors among ``entries`` (:func:`select_tensors`); a ``CheckpointError``
    naming ``origin``, the options and what it does hold when none counts: its statistics
    would all be NaN, a row that means nothing."""
    counted = select_tensors(entries, include, exclude)
    if counted:
        return counted
    shown = ", ".join(f"{name} {list(shape)}" for name, shape in entries[:_NAMES_SHOWN])
    more = f" and {len(entries) - _NAMES_SHOWN} more" if len(entries) > _NAMES_SHOWN else ""
    held = f"{len(entries)} tensors ({shown}{more})" if entries else "no tensors at all"
    raise CheckpointError(
        f"{origin}: no tensor counts under include={include!r}, exclude={exclude if exclude is not None else 'default'!r}"
        f"; it holds {held}. Counted are tensors with >= 2 dimensions and 1-D tensors named '*bias' that match "
        "--include and not --exclude (docs/metrics.md)"
    )


def counted_layout(entries: Sequence[tuple[str, Sequence[int]]], include: str | None,
                   exclude: str | None) -> dict[str, Any]:
    """What the counted tensors of a checkpoint are, to compare checkpoints of a series:
    ``{"tensors": count, "values": total entries, "digest": hash of their names and shapes}``."""
    import hashlib

    shapes = dict(entries)
    counted = sorted((name, [int(n) for n in shapes[name]]) for name, _ in select_tensors(entries, include, exclude))
    digest = hashlib.sha256(repr(counted).encode()).hexdigest()
    return {"tensors": len(counted), "values": sum(math.prod(shape) for _, shape in counted), "digest": digest}


def layout_warning(names: Sequence[str], layouts: Sequence[Mapping[str, Any] | None]) -> str | None:
    """One line naming the checkpoints whose counted tensors differ from those of most
    checkpoints of the series (a checkpoint of another model in the middle), or None."""
    known = [(name, layout) for name, layout in zip(names, layouts) if layout]
    counts = Counter(layout["digest"] for _, layout in known)
    if len(counts) < 2:
        return None
    def described(items):
        shown = "; ".join(f"{name} ({layout['tensors']} tensors of {layout['values']} values)" for name, layout in items[:5])
        return shown + (f" and {len(items) - 5} more" if len(items) > 5 else "")

    most = max(counts.values())
    if 2 * most <= len(known):  # no layout most checkpoints share
        return (f"the checkpoints count {len(counts)} different sets of tensors ({described(known)}): checkpoints of "
                "different models in one series? Their statistics are not comparable")
    usual = next(layout for _, layout in known if counts[layout["digest"]] == most)
    odd = [(name, layout) for name, layout in known if layout["digest"] != usual["digest"]]
    return (f"{described(odd)}: count other tensors than the other {most} checkpoints ({usual['tensors']} tensors of "
            f"{usual['values']} values): a checkpoint of another model in the series? Its statistics are not "
            "comparable with theirs")


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
        Rust engine) or ``"cuda"``/``"cuda:N"`` (``trainmap.metrics.metrics_torch``). On a GPU
        singular values are always exact (``exact_max_dim``, ``rank`` and ``threads`` do
        not apply; ``svd="randomized"`` is an error there and makes ``"auto"`` choose the
        engine).

    A statistic with nothing to average (e.g. a model without biases) is NaN. Tensors with
    non-finite values make the statistics they enter NaN and raise a ``RuntimeWarning``
    naming them.
    """
    _check_svd(svd)
    files = os.fspath(path) if isinstance(path, (str, os.PathLike)) else [os.fspath(p) for p in path]
    origin = files if isinstance(files, str) else (os.path.dirname(files[0]) or files[0]) if files else ""
    torch_device = _torch_device(device, svd)
    if torch_device is not None:
        from trainmap.metrics import metrics_torch

        result, notes = metrics_torch.checkpoint_metrics(path, device=torch_device, include=include, exclude=exclude)
        _check_files_countable(files, origin, include, exclude)
        _emit(notes)
        return _checked_range(result, origin)
    stats = _engine.checkpoint_stats(files, _engine_options(svd, include, exclude, exact_max_dim, rank),
                                     threads=_threads(threads))
    _check_files_countable(files, origin, include, exclude)  # (after the engine has found the files valid)
    _emit(stats.warnings)
    return _checked_range(_result(stats), origin)


def _check_files_countable(files: str | list[str], origin: str, include: str | None,
                           exclude: str | None) -> dict[str, Any] | None:
    """:func:`check_countable` of a checkpoint's files (read from their headers); its
    :func:`counted_layout`, or None when a header cannot be read."""
    entries = file_entries(files)
    if entries is None:
        return None
    check_countable(entries, origin, include, exclude)
    return counted_layout(entries, include, exclude)


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
        from trainmap.metrics import metrics_torch

        results = metrics_torch.trajectory_results(
            paths, device=torch_device, include=include, exclude=exclude, progress=progress
        )
        _check_series(paths, include, exclude)
        return _trajectory_frame(paths, [_checked_range(r, p) for p, r in zip(paths, results)])
    results = _engine.trajectory_stats(paths, _engine_options(svd, include, exclude, exact_max_dim, rank),
                                       threads=_threads(threads), progress=progress)
    _check_series(paths, include, exclude)
    for stats in results:
        _emit(stats.warnings)
    return _trajectory_frame(paths, [_checked_range(_result(stats), path) for path, stats in zip(paths, results)])


def _check_series(paths: Sequence[str], include: str | None, exclude: str | None) -> None:
    """A checkpoint of which no tensor counts is an error; checkpoints counting other
    tensors than most of the series give one warning naming them."""
    layouts = [_check_files_countable(path, path, include, exclude) for path in paths]
    message = layout_warning(paths, layouts)
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _trajectory_frame(paths: list[str], results: list[dict[str, Any]]) -> pd.DataFrame:
    frame = metrics_frame([checkpoint_step(p) for p in paths], results)
    frame.insert(0, PATH, paths)
    return frame


def metrics_frame(steps: Sequence[int | None], results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """metrics.csv's frame from per-checkpoint results (as :func:`checkpoint_metrics` and
    :func:`weights_metrics` return them): columns ``step`` (nullable integer), then the
    :data:`RESULT_COLUMNS`, one row per result in order.

    Raises ``ValueError`` when the lengths differ or a result lacks a column, and
    ``trainmap.io.contracts.StepError`` (a ``ValueError``) for a step that is not a
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
    frame.insert(0, STEP, pd.array([None if s is None else parse_step(s) for s in steps], dtype="Int64"))
    frame[SVD] = pd.Series([str(r[SVD]) for r in results], dtype="object")
    frame[CONTENT_HASH] = pd.Series([str(r[CONTENT_HASH]) for r in results], dtype="object")
    return frame


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
    :mod:`trainmap.metrics.metrics_torch` (exact singular values, float64 on the device, one tensor
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
    counted = {name for name, _ in check_countable([(n, _shape(t)) for n, t in named], _MEMORY, include, exclude)}
    gpu = _cuda_device(value for name, value in named if name in counted)
    if gpu is not None and svd != "randomized":
        from trainmap.metrics import metrics_torch

        result, notes = metrics_torch.tensors_metrics(
            [(name, value) for name, value in named if name in counted], device=gpu, include=include, exclude=exclude
        )
        _emit(notes)
        return _checked_range(result, _MEMORY)
    tensors = [_engine_tensor(name, value) for name, value in named if name in counted]
    return _checked_range(_engine.tensor_metrics(
        tensors, _engine_options(svd, include, exclude, exact_max_dim, rank), threads=_threads(threads),
    ), _MEMORY)


def models_weights_metrics(
    models: Sequence[Any],
    *,
    svd: str = "auto",
    include: str | None = None,
    exclude: str | None = None,
    exact_max_dim: int | None = None,
    rank: int | None = None,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """:func:`weights_metrics` of each of several models in memory, in order, computed by
    the engine in one call (the same numbers as one call per model, without each call's
    fixed costs: a seed sweep's statistics in the loop, every seed at every checkpoint
    step). ``models``: modules or mappings of name to tensor, as :func:`weights_metrics`
    takes them. A model with a counted tensor on a GPU is computed by :func:`weights_metrics`
    alone (the torch path)."""
    _check_svd(svd)
    results: list[dict[str, Any] | None] = [None] * len(models)
    held: list[tuple[int, list[Any]]] = []
    for index, weights in enumerate(models):
        named = _named_tensors(weights)
        counted = {name for name, _ in check_countable([(n, _shape(t)) for n, t in named], _MEMORY, include, exclude)}
        if svd != "randomized" and _cuda_device(value for name, value in named if name in counted) is not None:
            results[index] = weights_metrics(weights, svd=svd, include=include, exclude=exclude)
        else:
            held.append((index, [_engine_tensor(name, value) for name, value in named if name in counted]))
    if held:
        computed = _engine.models_metrics([tensors for _, tensors in held],
                                          _engine_options(svd, include, exclude, exact_max_dim, rank),
                                          threads=_threads(threads))
        for (index, _), result in zip(held, computed):
            results[index] = _checked_range(result, _MEMORY)
    return results  # type: ignore[return-value]


def stacked_weights_metrics(
    weights: Mapping[str, Any],
    *,
    device: Any,
    include: str | None = None,
    exclude: str | None = None,
) -> list[dict[str, Any]]:
    """:func:`weights_metrics` of each seed of stacked weights, computed for all seeds at
    once by :func:`trainmap.metrics.metrics_torch.stacked_tensors_metrics` on the torch
    ``device`` (a seed sweep's GPU; the exact spectrum, ``content_hash`` empty).

    ``weights`` maps each name to a tensor with a leading seed axis (a seed sweep's stacked
    parameters); entry ``i`` of the result is what ``weights_metrics({name: t[i]})`` gives on
    that device, up to the order of float64 sums, with the same checks (a model in which no
    tensor counts is a ``CheckpointError``; non-finite values and out-of-range statistics
    are NaN with a warning).
    """
    from trainmap.metrics import metrics_torch

    named = _named_tensors(weights)
    counted = {name for name, _ in check_countable([(n, _shape(t)[1:]) for n, t in named], _MEMORY, include, exclude)}
    results = metrics_torch.stacked_tensors_metrics(
        [(name, value) for name, value in named if name in counted], device=device, include=include,
        exclude=exclude, source=_MEMORY,
    )
    checked = []
    for result, notes in results:
        _emit(notes)
        checked.append(_checked_range(result, _MEMORY))
    return checked


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

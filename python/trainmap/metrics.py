"""Per-checkpoint weight statistics (Hu et al. 2023, Appendix B), computed by the Rust
engine ``trainmap._rust_metrics``.

The engine reads ``.safetensors`` checkpoints through a memory map, one tensor at a time,
in float64, in parallel over tensors and checkpoints, with the GIL released. Which tensors
count, and the exact definition of each column, are in ``docs/metrics.md``.

Example
-------
>>> from trainmap.metrics import trajectory_metrics, checkpoint_paths
>>> frame = trajectory_metrics(checkpoint_paths("runs/0/checkpoints"), threads=4)
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

from trainmap import _rust_metrics as _engine

__all__ = [
    "METRIC_NAMES",
    "DEFAULT_EXCLUDE",
    "DEFAULT_EXACT_MAX_DIM",
    "DEFAULT_DEVICE",
    "ENGINE_FINGERPRINT",
    "CheckpointError",
    "checkpoint_metrics",
    "trajectory_metrics",
    "checkpoint_paths",
    "parse_step",
]

#: The 14 statistic columns, in docs/design.md order (names kept from the authors' code).
METRIC_NAMES: tuple[str, ...] = tuple(_engine.METRIC_NAMES)
#: Regular expression of tensor names left out by default (embeddings, normalisation layers).
DEFAULT_EXCLUDE: str = _engine.DEFAULT_EXCLUDE
#: In ``svd="auto"`` mode, matrices whose smaller side exceeds this use randomized SVD.
DEFAULT_EXACT_MAX_DIM: int = _engine.DEFAULT_EXACT_MAX_DIM
#: SHA-256 of the engine sources this extension was built from (see
#: ``trainmap.workflow.engine_fingerprint``); the workflow's metrics jobs depend on it.
ENGINE_FINGERPRINT: str = _engine.ENGINE_FINGERPRINT
#: Raised (a ``ValueError``) for a file that is not a valid safetensors checkpoint, or a
#: counted tensor of unsupported dtype. Missing files raise ``FileNotFoundError``.
CheckpointError = _engine.CheckpointError

_STEP = re.compile(r"(\d+)$")
_SVD_MODES = ("exact", "randomized", "auto")
#: Where the statistics are computed: "auto" (a CUDA GPU when torch sees one, else the
#: engine), "cpu" (the Rust engine) or "cuda" / "cuda:N" (torch on that GPU).
DEFAULT_DEVICE = "auto"


def parse_step(path: str | os.PathLike) -> int | None:
    """Training step encoded in a checkpoint's file name (``step00001200.safetensors`` → 1200):
    the trailing integer of the stem, or None when there is none."""
    match = _STEP.search(Path(path).stem)
    return int(match.group(1)) if match else None


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
    path: str | os.PathLike,
    *,
    svd: str = "auto",
    include: str | None = None,
    exclude: str | None = None,
    exact_max_dim: int | None = None,
    rank: int | None = None,
    threads: int | None = None,
    device: str = DEFAULT_DEVICE,
) -> dict[str, float]:
    """The 14 statistics of one checkpoint, as ``{name: value}`` in :data:`METRIC_NAMES` order.

    Parameters
    ----------
    path : a ``.safetensors`` file (F64, F32, F16 or BF16 tensors).
    svd : ``"exact"``, ``"randomized"`` or ``"auto"`` (exact when a matrix's smaller side
        is at most ``exact_max_dim``, randomized above it).
    include : regex; when given, only tensors whose name matches count.
    exclude : regex replacing :data:`DEFAULT_EXCLUDE`; ``""`` excludes nothing.
    exact_max_dim : threshold of ``svd="auto"`` (default :data:`DEFAULT_EXACT_MAX_DIM`).
    rank : leading singular values computed in randomized mode (default 64).
    threads : worker threads (default: all CPUs available to this process).
    device : ``"auto"`` (a CUDA GPU when torch sees one, else the engine), ``"cpu"`` (the
        Rust engine) or ``"cuda"``/``"cuda:N"``. On a GPU singular values are always exact
        (``exact_max_dim``, ``rank`` and ``threads`` do not apply; ``svd="randomized"`` is
        an error there and makes ``"auto"`` choose the engine).

    A statistic with nothing to average (e.g. a model without biases) is NaN. Tensors with
    non-finite values make the statistics they enter NaN and raise a ``RuntimeWarning``
    naming them.
    """
    _check_svd(svd)
    torch_device = _torch_device(device, svd)
    if torch_device is not None:
        from trainmap import metrics_torch

        values, _, notes = metrics_torch.checkpoint_metrics(path, device=torch_device, include=include, exclude=exclude)
        _emit(notes)
        return values
    stats = _engine.checkpoint_stats(
        os.fspath(path),
        svd=svd,
        exact_max_dim=exact_max_dim,
        rank=rank,
        threads=_threads(threads),
        include=include,
        exclude=exclude,
    )
    _emit(stats.warnings)
    return dict(zip(METRIC_NAMES, stats.values))


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

    Columns: ``path``, ``step`` (parsed from the file name, ``<NA>`` when absent), the 14
    :data:`METRIC_NAMES`, and ``svd`` (``exact``, ``randomized``, ``mixed`` or ``none``:
    how the singular values of that checkpoint were obtained). ``progress``, if given, is
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
        return _frame(paths, [list(values.values()) for values, _ in results], [label for _, label in results])
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
    return _frame(paths, [stats.values for stats in results], [stats.svd for stats in results])


def _frame(paths: list[str], values: list[list[float]], svd_labels: list[str]) -> pd.DataFrame:
    """trajectory_metrics' frame: path, step, the 14 statistics, svd."""
    frame = pd.DataFrame(values, columns=list(METRIC_NAMES), dtype="float64")
    frame.insert(0, "step", pd.array([parse_step(p) for p in paths], dtype="Int64"))
    frame.insert(0, "path", paths)
    frame["svd"] = svd_labels
    return frame


def _threads(threads: int | None) -> int:
    """Explicit thread count for the engine (0 is never passed: it would ignore CPU affinity)."""
    if threads is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    return threads

"""Which tensors count and the engine's error type: the ground both metric backends stand on.

The Rust engine (:mod:`trainmap.metrics.engine`) and the torch/GPU backend
(:mod:`trainmap.metrics.metrics_torch`) both import from here, so neither imports the other
for these (docs/design.md, "Floors").
"""

from __future__ import annotations

from typing import Iterable, Sequence

from trainmap import _rust_metrics as _engine

__all__ = ["CheckpointError", "select_tensors"]

#: Raised (a ``ValueError``) for a file that is not a valid safetensors checkpoint, or a
#: counted tensor of unsupported dtype. Missing files raise ``FileNotFoundError``.
CheckpointError = _engine.CheckpointError


def select_tensors(
    entries: Iterable[tuple[str, Sequence[int]]], include: str | None = None, exclude: str | None = None
) -> list[tuple[str, str]]:
    """The tensors that count among ``(name, shape)`` entries, in order, as ``(name, role)``
    with role ``"matrix"`` or ``"bias"``: the engine's one definition of tensor selection
    (docs/metrics.md, "Which tensors count")."""
    return _engine.select_tensors([(name, [int(d) for d in shape]) for name, shape in entries], include, exclude)

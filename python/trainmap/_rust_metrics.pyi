"""Type stubs of the compiled metrics engine (`rust_metrics/src/python.rs`).

Use it through `trainmap.metrics`; these are the engine's raw entry points. Every function
releases the GIL while it computes and turns Ctrl-C into `KeyboardInterrupt`.
"""

from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from typing import Any, Final

from typing_extensions import Buffer

# `options` of the three statistics functions: a MetricsOptions, read by attribute (svd,
# exact_max_dim, rank, include, exclude) and validated again; None gives the defaults.
from trainmap.options import MetricsOptions

#: The 14 statistic names, in column order (docs/design.md): the fields of the engine's
#: `Statistics` (rust_metrics/src/engine.rs), their one definition.
METRIC_NAMES: Final[list[str]]
#: Regular expression of tensor names left out by default (embeddings, normalisation layers).
DEFAULT_EXCLUDE: Final[str]
#: Default threshold of svd="auto" (a matrix's smaller side).
DEFAULT_EXACT_MAX_DIM: Final[int]
#: Default rank (k) of the randomized path (read by trainmap.options' test of its defaults).
DEFAULT_RANK: Final[int]
#: SHA-256 of the crate sources this extension was built from.
ENGINE_FINGERPRINT: Final[str]

class CheckpointError(ValueError):
    """A checkpoint that is not a valid safetensors file, or holds a tensor of an unsupported dtype."""

class CheckpointStats:
    """Statistics of one checkpoint."""

    @property
    def values(self) -> list[float]:
        """The 14 statistics, in METRIC_NAMES order."""
    @property
    def svd(self) -> str:
        """"exact", "randomized", "mixed" or "none"."""
    @property
    def content_hash(self) -> str:
        """Hex xxh3-128 digest of the counted tensors (name, dtype, shape, bytes; name order)."""
    @property
    def warnings(self) -> list[str]:
        """Messages about non-finite tensors or unconverged decompositions."""

def checkpoint_stats(
    path: str | PathLike[str] | Sequence[str | PathLike[str]],
    options: MetricsOptions | None = None,
    *,
    threads: int | None = None,
) -> CheckpointStats:
    """Statistics of one .safetensors file, or of the shard files of one checkpoint together."""

def trajectory_stats(
    paths: Sequence[str | PathLike[str]],
    options: MetricsOptions | None = None,
    *,
    threads: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[CheckpointStats]:
    """Statistics of many files in parallel, in order; progress(n_done) as they finish."""

def tensor_metrics(
    tensors: Iterable[tuple[str, str, Sequence[int], Buffer]],
    options: MetricsOptions | None = None,
    *,
    threads: int | None = None,
) -> dict[str, Any]:
    """Statistics of (name, dtype, shape, data) tensors read in place from C-contiguous
    buffers: the 14 METRIC_NAMES (float), "svd" and "content_hash" (str)."""

def models_metrics(
    models: Iterable[Iterable[tuple[str, str, Sequence[int], Buffer]]],
    options: MetricsOptions | None = None,
    *,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """tensor_metrics of each model (its tensors as tensor_metrics takes them), in order,
    in one call."""

def select_tensors(
    entries: Iterable[tuple[str, Sequence[int]]],
    include: str | None = None,
    exclude: str | None = None,
) -> list[tuple[str, str]]:
    """(name, "matrix" | "bias") for the counted tensors among (name, shape) entries."""

"""One run's checkpoints split into chunks of N, each chunk's metrics a job of its own
(config ``metrics: {chunk: N}``), gathered into the run's metrics.csv by ``series-metrics
--from-chunks``: so a long series (154 released checkpoints) spreads over cluster nodes and
a changed checkpoint recomputes only its chunk.

A chunk file is JSON: the source, engine, resolved options, chunk index and size, and the
steps and per-checkpoint results (the engine's result dicts; NaN written as null). The
gathered metrics.csv is byte for byte the unchunked one: JSON round-trips every float
exactly and the frame is built by the same ``metrics_frame``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from trainmap.io import atomic
from trainmap.metrics import series as series_reader
from trainmap.metrics.series import Checkpoint, Series, SeriesError

__all__ = ["chunk_count", "chunk_of", "chunk_input_files", "write_chunk", "gathered_frame"]


def chunk_count(n_checkpoints: int, size: int) -> int:
    """Number of chunks of at most ``size`` checkpoints."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, not {size}")
    return -(-n_checkpoints // size)


def chunk_of(series: Series, index: int, size: int) -> tuple[Checkpoint, ...]:
    """The checkpoints of chunk ``index`` (0-based, in step order)."""
    count = chunk_count(len(series.checkpoints), size)
    if not 0 <= index < count:
        raise ValueError(f"{series.source}: chunk {index} does not exist ({len(series.checkpoints)} checkpoints "
                         f"make {count} chunks of {size})")
    return series.checkpoints[index * size:(index + 1) * size]


def chunk_input_files(series: Series, index: int, size: int) -> list[str]:
    """The files chunk ``index`` reads (its checkpoints' files and shard indexes)."""
    files: list[Path] = []
    for checkpoint in chunk_of(series, index, size):
        files += [*checkpoint.files, *([checkpoint.index] if checkpoint.index else [])]
    return [str(path) for path in dict.fromkeys(files)]


def write_chunk(
    src: str | os.PathLike,
    output: str | os.PathLike,
    *,
    index: int,
    size: int,
    options: Mapping[str, Any],
    threads: int | None = None,
    device: str = "auto",
    progress: Callable[[int, int], object] | None = None,
) -> dict[str, Any]:
    """Compute the metrics of chunk ``index`` of the series at ``src`` (on ``device``, as in
    :func:`trainmap.metrics.engine.checkpoint_metrics`) and write them to ``output`` (JSON,
    atomically); return what was written."""
    from trainmap.metrics import engine as metrics
    from trainmap.metrics.checkpoint_results import checkpoint_result, resolved_options

    series = series_reader.discover(src)
    checkpoints = chunk_of(series, index, size)
    results = []
    for done, checkpoint in enumerate(checkpoints, start=1):
        results.append(checkpoint_result(checkpoint, options, threads, device))
        if progress is not None:
            progress(done, len(checkpoints))
    record = {
        "source": str(Path(src).resolve()),
        "engine": metrics.ENGINE_FINGERPRINT,
        "options": resolved_options(options),
        "index": index,
        "size": size,
        "steps": [c.step for c in checkpoints],
        "results": results,
    }
    atomic.write_json(output, record)
    return record


def _read_chunk(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SeriesError(f"{path}: unreadable metrics chunk ({exc})") from None
    missing = [key for key in ("source", "engine", "options", "index", "steps", "results") if key not in record]
    if missing:
        raise SeriesError(f"{path}: not a metrics chunk (no {', '.join(missing)})")
    return record


def gathered_frame(series: Series, chunk_files: Sequence[str | os.PathLike], options: Mapping[str, Any]) -> pd.DataFrame:
    """metrics.csv's frame from chunk files, checked to cover the series' checkpoints in
    order, from this source, engine and options; a stale chunk is an error naming it."""
    from trainmap.metrics import engine as metrics
    from trainmap.metrics.checkpoint_results import resolved_options, warn_of_other_models

    records = sorted(((Path(p), _read_chunk(Path(p))) for p in chunk_files), key=lambda item: item[1]["index"])
    expected = {"source": str(series.source.resolve()), "engine": metrics.ENGINE_FINGERPRINT,
                "options": resolved_options(options)}
    steps: list[int] = []
    results: list[dict[str, Any]] = []
    for path, record in records:
        for key, value in expected.items():
            if record[key] != value:
                raise SeriesError(f"{path}: computed with another {key} ({record[key]!r}, now {value!r}); delete it "
                                  "to recompute")
        steps += record["steps"]
        results += record["results"]
    if steps != series.steps:
        raise SeriesError(f"{series.source}: the metrics chunks ({', '.join(str(p) for p, _ in records)}) hold steps "
                          f"{_span(steps)}, the series has {_span(series.steps)}; recompute the chunks")
    warn_of_other_models(series, results)
    return metrics.metrics_frame(steps, results)


def _span(steps: Sequence[int]) -> str:
    return f"{len(steps)} steps" + (f" ({steps[0]}..{steps[-1]})" if steps else "")

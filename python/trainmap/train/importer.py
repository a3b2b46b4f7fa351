"""Import a series of released checkpoints (MultiBERTs, Pythia, Hugging Face Trainer
style) into the run layout: a copy, for people who want one. The workflow reads such series
in place instead (config ``runs:``/``sources:``, :mod:`trainmap.series_metrics`).

The source is a directory with one sub-directory per training step, read by
:mod:`trainmap.series` (the one reader of checkpoint series: step names such as
``step_20k``, ``step143000``, ``checkpoint-500``; ``model.safetensors``, sharded safetensors
with their index, or ``pytorch_model.bin`` loaded with ``torch.load(weights_only=True)``).

Output: ``checkpoints/step{N:08d}.safetensors`` with the floating-point tensors of each
step in their original dtype (integer buffers such as ``position_ids`` are dropped),
``log.csv`` with the columns the source provides at the checkpoint steps (from
``trainer_state.json`` or a ``log.csv`` with a ``step`` column, :func:`trainmap.series.read_log`),
and ``run.json`` last. An interrupted import started again skips the checkpoints already written.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save as safetensors_bytes

from trainmap import atomic, series as series_reader
from trainmap.train import layout

__all__ = ["import_series"]

def _write_imported(path: Path, tensors: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Write the floating-point tensors (original dtype, keys sorted) atomically; return
    (kept names, dropped names)."""
    kept = {
        name: tensors[name].detach().contiguous().clone()
        for name in sorted(tensors)
        if tensors[name].is_floating_point()
    }
    atomic.write_bytes(path, safetensors_bytes(kept))
    return list(kept), sorted(set(tensors) - set(kept))


def _log_columns(metrics: Mapping[int, Mapping[str, Any]]) -> list[str]:
    """``step``, then the training log's columns the source has, then the rest by name."""
    present = {key for values in metrics.values() for key in values}
    known = [c for c in layout.LOG_COLUMNS[1:] if c in present]
    return ["step", *known, *sorted(present - set(known))]


def import_series(src: str | os.PathLike, out: str | os.PathLike, *, progress: bool = True) -> dict[str, Any]:
    """Import the checkpoint series in ``src`` as a run in ``out``; return run.json's content.

    A finished import (run.json present) of the same source is returned untouched.
    """
    from tqdm import tqdm

    from trainmap import __version__

    src, out = Path(src), Path(out)
    source = str(src.resolve())
    finished = layout.read_run_json(out)
    if finished is not None:
        if finished.get("source") != source:
            raise ValueError(
                f"{out / 'run.json'} belongs to another run (source {finished.get('source')!r}); "
                "use another output directory"
            )
        return finished
    checkpoints = series_reader.find_step_dirs(src)
    log = series_reader.read_log(series_reader.discover(src))
    metrics = {c.step: log.get(c.step, {}) for c in checkpoints}
    layout.ensure_writable(out)
    started = time.perf_counter()
    dropped: set[str] = set()
    bar = tqdm(checkpoints, desc=f"import {src.name}", unit="ckpt", disable=not progress, file=sys.stderr)
    for checkpoint in bar:
        dest = layout.checkpoint_path(out, checkpoint.step)
        if dest.exists():  # written, atomically, by an interrupted earlier import
            continue
        _, dropped_here = _write_imported(dest, series_reader.load_checkpoint(checkpoint))
        dropped.update(dropped_here)
    columns = _log_columns(metrics)
    layout.write_log(out / "log.csv", [{"step": c.step, **metrics[c.step]} for c in checkpoints], columns)
    record = {
        "task": "import",
        "seed": None,
        "status": "complete",
        "source": source,
        "source_files": {str(c.step): str((c.index or c.files[0]).relative_to(src)) for c in checkpoints},
        "checkpoints": len(checkpoints),
        "last_checkpoint_step": checkpoints[-1].step,
        "log_columns": columns,
        "dropped_tensors": sorted(dropped),
        "torch_version": torch.__version__,
        "trainmap_version": __version__,
        "wall_time_s": time.perf_counter() - started,
    }
    layout.write_run_json(out, record)
    return record

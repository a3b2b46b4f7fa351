"""Import a series of released checkpoints (MultiBERTs, Pythia, Hugging Face Trainer
style) into the run layout: a copy, for people who want one. The workflow reads such series
in place instead (config ``runs:``/``sources:``, :mod:`trainmap.metrics.series_metrics`).

The source is a directory with one sub-directory per training step, read by
:mod:`trainmap.metrics.series` (the one reader of checkpoint series: step names such as
``step_20k``, ``step143000``, ``checkpoint-500``; ``model.safetensors``, sharded safetensors
with their index, or ``pytorch_model.bin`` loaded with ``torch.load(weights_only=True)``).

Output: ``checkpoints/step{N:08d}.safetensors`` with the floating-point tensors of each
step in their original dtype (integer buffers such as ``position_ids`` are dropped),
``log.csv`` with the columns the source provides at the checkpoint steps (from
``trainer_state.json`` or a ``log.csv`` with a ``step`` column, :func:`trainmap.metrics.series.read_log`),
and ``run.json`` last. An interrupted import started again skips the checkpoints already written;
from another source it is refused (the owner file records the source), as is an output
directory holding anything else, and a second import into the same directory while one runs
(:class:`trainmap.io.runlock.RunLock`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save as safetensors_bytes

from trainmap.io import atomic
from trainmap.io.contracts import RunPaths
from trainmap.metrics import series as series_reader
from trainmap.io.runlock import RunLock
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

    A finished import (run.json present) of the same source is returned untouched. ``out``
    must be empty or hold an import of the same source (finished or interrupted); another
    process importing into it makes this raise :class:`trainmap.io.runlock.RunLockedError`.
    """
    src, out = Path(src), Path(out)
    source = str(src.resolve())
    finished = layout.read_run_json(out)
    if finished is not None:
        _check_same_source(finished, source, RunPaths(out).run_json)
        return finished
    series = series_reader.find_step_dirs(src)
    log = series_reader.read_log(series_reader.discover(src))
    metrics = {c.step: log.get(c.step, {}) for c in series}
    _check_claim(out, source)  # before the lock: a refused directory gains no lock file
    layout.ensure_writable(out)
    with RunLock(out, purpose=f"trainmap import {source}"):
        finished = layout.read_run_json(out)
        if finished is not None:
            _check_same_source(finished, source, RunPaths(out).run_json)
            return finished
        written = _check_claim(out, source)
        layout.write_owner(out, _identity(source), written)
        layout.remove_temporaries(out, written)  # what a killed session left half-written
        return _import_locked(src, out, series, metrics, progress, written)


def _identity(source: str) -> dict[str, Any]:
    """What the owner file of an import directory records."""
    return {"kind": "import", "source": source}


def _check_claim(out: Path, source: str) -> set[str]:
    """Refuse ``out`` unless it is empty or holds an (interrupted) import of ``source`` and
    only files trainmap wrote; return those (:mod:`trainmap.io.owner`)."""
    owner = layout.read_owner(out)
    if owner is None:
        layout.refuse_foreign(out, "import")
        return set()
    _check_same_source(owner, source, out / layout.OWNER_NAME)
    listed = layout.listed_files(owner)
    written = layout.run_files(out) if listed is None else listed
    layout.refuse_unlisted(out, written)
    return written


def _check_same_source(record: Mapping[str, Any], source: str, where: Path) -> None:
    """Refuse a run record (run.json or owner file) that is not an import of ``source``."""
    if record.get("kind", "import") != "import" or record.get("task", "import") != "import":
        raise ValueError(f"{where}: this directory holds a training run, not an import; use another --out")
    if record.get("source") != source:
        raise ValueError(
            f"{where} belongs to an import of another source ({record.get('source')!r}, not {source!r}); "
            "its checkpoints must not be mixed with this one's: use another --out"
        )


def _import_locked(src: Path, out: Path, series, metrics, progress: bool, written: set[str]) -> dict[str, Any]:
    """Write the checkpoints, log.csv and run.json of a claimed import directory, each
    listed in its owner file (with the ``written`` ones) before it is written."""
    from tqdm import tqdm

    from trainmap import __version__

    source = str(src.resolve())
    started = time.perf_counter()
    dropped: set[str] = set()
    bar = tqdm(series, desc=f"import {src.name}", unit="ckpt", disable=not progress, file=sys.stderr)
    def listed(path: Path) -> Path:
        written.add(path.relative_to(out).as_posix())
        layout.write_owner(out, _identity(source), written)
        return path

    for checkpoint in bar:
        dest = layout.checkpoint_path(out, checkpoint.step)
        if dest.exists():  # written, atomically, by an interrupted earlier import
            continue
        tensors = series_reader.load_checkpoint(checkpoint)
        _, dropped_here = _write_imported(listed(dest), tensors)
        dropped.update(dropped_here)
    listed(RunPaths(out).log_csv), listed(RunPaths(out).run_json)
    columns = _log_columns(metrics)
    layout.write_log(RunPaths(out).log_csv, [{"step": c.step, **metrics[c.step]} for c in series], columns)
    record = {
        "task": "import",
        "seed": None,
        "status": "complete",
        "source": source,
        "source_files": {str(c.step): str((c.index or c.files[0]).relative_to(src)) for c in series},
        "checkpoints": len(series),
        "last_checkpoint_step": series[-1].step,
        "log_columns": columns,
        "dropped_tensors": sorted(dropped),
        "torch_version": torch.__version__,
        "trainmap_version": __version__,
        "wall_time_s": time.perf_counter() - started,
    }
    layout.write_run_json(out, record)
    return record

"""The files of a run directory, and how each is written (atomically) and read back.

::

    DIR/checkpoints/step{N:08d}.safetensors   model parameters at step N (float32, keys sorted)
    DIR/log.csv                               one row per checkpoint
    DIR/run.json                              written last, only when the run has ended
    DIR/resume/state.safetensors              resume state while the run is unfinished
    DIR/.trainmap-run.json                    whose run this is (task, seed, settings or source)
                                              and every file trainmap wrote here (trainmap.io.owner),
                                              written before anything else
    DIR/.trainmap.lock                        held by the one process writing DIR (trainmap.io.runlock)

The names (``LOG_COLUMNS``, ``checkpoint_path``, ``checkpoint_steps``) are
:mod:`trainmap.io.contracts`'s, re-exported for the training code. Nothing here is pickled:
tensors go to safetensors, everything else to JSON or CSV. A directory is only written into
when it is empty or its owner file says it holds the same run and lists every file in it
(:mod:`trainmap.io.owner`): trainmap never mixes its files with, or deletes, files it did not write.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from trainmap.io import atomic
from trainmap.io.contracts import (
    CHECKPOINTS_DIR,
    LOG_COLUMNS,
    LOG_CSV,
    METRICS_CSV,
    RUN_JSON,
    RunPaths,
    checkpoint_name,
    checkpoint_path,
    checkpoint_steps,
)
from trainmap.io.fileguard import input_file
from trainmap.io.owner import (
    OWNER_NAME,
    ForeignDirectoryError,
    listed_files,
    owner_bytes,
    read_owner,
    read_record,
    refuse_foreign,
    refuse_unlisted,
    remove_listed,
    remove_temporaries,
    write_owner,
)

__all__ = [
    "LOG_COLUMNS",
    "ResumeError",
    "checkpoint_path",
    "checkpoint_steps",
    "checkpoint_bytes",
    "write_checkpoint",
    "log_text",
    "write_log",
    "read_run_json",
    "write_run_json",
    "resume_path",
    "resume_bytes",
    "read_resume",
    "ensure_writable",
    "run_files",
    "OWNER_NAME",
    "read_owner",
    "write_owner",
    "listed_files",
    "owner_bytes",
    "refuse_foreign",
    "refuse_unlisted",
    "remove_listed",
    "remove_temporaries",
    "ForeignDirectoryError",
]

_RESUME_KEY = "trainmap_resume"


class ResumeError(ValueError):
    """A resume state that cannot be used (unreadable, or of another run)."""


def checkpoint_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """``tensors`` as float32 safetensors, keys sorted, no metadata: equal tensors give
    equal bytes.

    The bytes ``safetensors.torch.save`` writes for them (tested), built here directly: a
    sweep writes a checkpoint of every seed at every epoch (20,000 for 40 parities seeds),
    and the library's conversions cost four times this for a small model.
    """
    if sys.byteorder != "little":  # the format is little-endian: let the library convert
        return safetensors_bytes({name: tensors[name].detach().to("cpu", torch.float32).contiguous()
                                  for name in sorted(tensors)})
    header: dict[str, Any] = {}
    data: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        values = tensors[name].detach().to("cpu", torch.float32).contiguous()
        raw = values.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(values.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data.append(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    return struct.pack("<Q", len(text)) + text + b"".join(data)


def write_checkpoint(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Atomically write a checkpoint file (:func:`checkpoint_bytes`)."""
    atomic.write_bytes(path, checkpoint_bytes(tensors))


def _csv_field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def log_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = LOG_COLUMNS) -> str:
    """CSV text: a header of ``columns`` and one line per row (floats in their shortest
    exact form, missing values empty)."""
    lines = [",".join(columns)]
    lines += [",".join(_csv_field(row.get(column)) for column in columns) for row in rows]
    return "\n".join(lines) + "\n"


def write_log(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = LOG_COLUMNS) -> None:
    """Atomically (re)write the CSV log (:func:`log_text`)."""
    atomic.write_text(path, log_text(rows, columns))


def read_run_json(out: Path) -> dict[str, Any] | None:
    """The finished run's run.json, or None when the run has not finished."""
    return read_record(RunPaths(Path(out)).run_json, "delete it to train the run again")


def run_files(out: Path) -> set[str]:
    """The files of ``out`` named as a run's (checkpoints, log.csv, metrics.csv, run.json,
    resume state): what a run directory whose owner file predates the list of written files
    is taken to hold of trainmap's (:func:`trainmap.io.owner.listed_files` is None for it)."""
    names = {f"{CHECKPOINTS_DIR}/{checkpoint_name(step)}" for step in checkpoint_steps(out)}
    names |= {LOG_CSV, METRICS_CSV, RUN_JSON, resume_path(Path(".")).as_posix()}
    return names


def write_run_json(out: Path, record: Mapping[str, Any]) -> None:
    """Atomically write run.json (the marker of a finished run)."""
    atomic.write_json(RunPaths(Path(out)).run_json, dict(record))


def resume_path(out: Path) -> Path:
    """``out/resume/state.safetensors``."""
    return Path(out) / "resume" / "state.safetensors"


def resume_bytes(tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> bytes:
    """The resume state as one safetensors file: ``tensors`` (model, optimiser, RNG) and the
    JSON ``state`` (step, log rows, settings…) in its metadata, so the two never disagree."""
    payload = {name: tensors[name].detach().cpu().contiguous() for name in sorted(tensors)}
    return safetensors_bytes(payload, metadata={_RESUME_KEY: json.dumps(state, sort_keys=True)})


def read_resume(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The resume state (:func:`resume_bytes`) as (tensors, state), or None when there is none."""
    path = resume_path(out)
    if input_file(path, required=False, what="resume state") is None:
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            state = json.loads((handle.metadata() or {})[_RESUME_KEY])
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as exc:
        raise ResumeError(
            f"{path}: unreadable resume state ({type(exc).__name__}: {exc}); delete {path.parent} to start the run over"
        ) from None
    return tensors, state


def remove_files(paths: Iterable[Path]) -> None:
    """Delete ``paths`` that exist."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


def ensure_writable(out: Path) -> None:
    """Create ``out`` and prove that files can be written in it, or raise an
    :class:`OSError` that names it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OSError(f"{out}: output directory is a file; refusing to touch it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OSError(f"{out}: output directory cannot be written ({exc.strerror or exc})") from None

"""Import a series of released checkpoints (MultiBERTs, Pythia, Hugging Face Trainer
style) into the run layout, so it goes through the rest of the workflow like a trained run.

The source is a directory with one sub-directory per training step, named so that the step
can be read from it: ``step_20k`` (MultiBERTs: 20 000), ``step143000`` (Pythia),
``checkpoint-500`` (Trainer), or a plain number. Each holds ``model.safetensors`` or
``pytorch_model.bin`` (or their sharded forms with an ``.index.json``). ``.bin`` files are
loaded with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.

Output: ``checkpoints/step{N:08d}.safetensors`` with the floating-point tensors of each
step in their original dtype (integer buffers such as ``position_ids`` are dropped),
``log.csv`` with the columns the source provides (from ``trainer_state.json`` in the step
directories or a ``log.csv``/``metrics.csv`` with a ``step`` column next to them), and
``run.json`` last. An interrupted import started again skips the checkpoints already written;
from another source it is refused (the owner file records the source), as is an output
directory holding anything else, and a second import into the same directory while one runs
(:class:`trainmap.runlock.RunLock`).
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from trainmap import atomic
from trainmap.contracts import parse_step
from trainmap.fileguard import input_file
from trainmap.runlock import RunLock
from trainmap.train import layout
from trainmap.train.datafiles import DataFileError

__all__ = ["import_series", "find_series", "step_of", "load_released_checkpoint"]

_STEP_PATTERNS = (
    re.compile(r"step[_-]?(\d+)(k?)(?![0-9])", re.IGNORECASE),
    re.compile(r"checkpoint[_-](\d+)()(?![0-9])", re.IGNORECASE),
    re.compile(r"^(\d+)()$"),
)
_MODEL_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_SOURCE_LOGS = ("log.csv", "metrics.csv")
# Largest JSON/CSV side file (shard index, trainer_state.json, source log) read whole.
_MAX_TEXT_BYTES = 256 << 20
# Source metric names that mean our log columns.
_RENAME = {
    "loss": "train_loss",
    "accuracy": "train_accuracy",
    "train_acc": "train_accuracy",
    "eval_acc": "eval_accuracy",
}


def step_of(name: str) -> int | None:
    """Training step a checkpoint directory's name stands for, or None.

    ``step_20k`` → 20000, ``multiberts-seed_1-step_2000k`` → 2000000, ``step143000`` →
    143000, ``checkpoint-500`` → 500, ``1200`` → 1200. A step beyond int64 raises
    :class:`trainmap.contracts.StepError` naming the directory.
    """
    for pattern in _STEP_PATTERNS:
        matches = list(pattern.finditer(name))
        if matches:
            number, thousands = matches[-1].groups()
            return parse_step(int(number) * (1000 if thousands else 1), name)
    return None


def _model_file(folder: Path) -> Path | None:
    for name in _MODEL_FILES:
        if input_file(folder / name, required=False, what="checkpoint") is not None:
            return folder / name
    return None


def find_series(src: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, model file)`` of every checkpoint directory in ``src``, by step.

    Sub-directories whose name holds no step are ignored; one that does but holds no model
    file, or two that claim the same step, raise :class:`DataFileError` naming them.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such source directory")
    series: dict[int, Path] = {}
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        step = step_of(folder.name)
        if step is None:
            continue
        model_file = _model_file(folder)
        if model_file is None:
            raise DataFileError(f"{folder}: no {' or '.join(_MODEL_FILES)} in this checkpoint directory")
        if step in series:
            raise DataFileError(f"{folder} and {series[step].parent} both stand for step {step}")
        series[step] = model_file
    if not series:
        raise DataFileError(
            f"{src}: no checkpoint directories (expected sub-directories such as step_20k/, step143000/ "
            "or checkpoint-500/ holding model.safetensors or pytorch_model.bin)"
        )
    return sorted(series.items())


def _load_single(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files and refused pickles surface as many exception types
        raise DataFileError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model"):  # some .bin files wrap the state dict
        if isinstance(loaded, dict) and set(loaded) == {key} and isinstance(loaded[key], dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise DataFileError(f"{path}: expected a state dict of named tensors")
    return loaded


def load_released_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of one released checkpoint (one file, or the shards its index names)."""
    path = input_file(path, what="checkpoint")
    if not path.name.endswith(".index.json"):
        return _load_single(path)
    input_file(path, max_bytes=_MAX_TEXT_BYTES, what="shard index")
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: not a shard index ({type(exc).__name__}: {exc})") from None
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        shard_path = path.parent / shard
        if not shard_path.exists():
            raise DataFileError(f"{path}: names shard {shard}, which is missing")
        tensors.update(_load_single(input_file(shard_path, what="checkpoint shard")))
    return tensors


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


def _number(text: Any) -> Any:
    """CSV text → int or float when it is one, else unchanged."""
    if not isinstance(text, str):
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text if text != "" else None


def _source_metrics(src: Path, series: list[tuple[int, Path]]) -> dict[int, dict[str, Any]]:
    """Per-step metrics the source provides: a log.csv/metrics.csv with a ``step`` column,
    and each step directory's trainer_state.json log entries for that step."""
    metrics: dict[int, dict[str, Any]] = {step: {} for step, _ in series}
    for name in _SOURCE_LOGS:
        path = src / name
        if input_file(path, required=False, max_bytes=_MAX_TEXT_BYTES, what="source log") is None:
            continue
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if "step" not in (reader.fieldnames or []):
                raise DataFileError(f"{path}: no 'step' column")
            for row in reader:
                step = _number(row.pop("step"))
                if step in metrics:
                    metrics[step].update({k: _number(v) for k, v in row.items() if k})
    for step, model_file in series:
        state_file = model_file.parent / "trainer_state.json"
        if input_file(state_file, required=False, max_bytes=_MAX_TEXT_BYTES, what="trainer state") is None:
            continue
        try:
            history = json.loads(state_file.read_text(encoding="utf-8")).get("log_history", [])
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise DataFileError(f"{state_file}: unreadable ({exc})") from None
        for entry in history:
            if isinstance(entry, dict) and entry.get("step") == step:
                metrics[step].update({k: v for k, v in entry.items() if k != "step" and isinstance(v, (int, float))})
    return {step: {_RENAME.get(k, k): v for k, v in values.items()} for step, values in metrics.items()}


def _log_columns(metrics: Mapping[int, Mapping[str, Any]]) -> list[str]:
    """``step``, then the training log's columns the source has, then the rest by name."""
    present = {key for values in metrics.values() for key in values}
    known = [c for c in layout.LOG_COLUMNS[1:] if c in present]
    return ["step", *known, *sorted(present - set(known))]


def import_series(src: str | os.PathLike, out: str | os.PathLike, *, progress: bool = True) -> dict[str, Any]:
    """Import the checkpoint series in ``src`` as a run in ``out``; return run.json's content.

    A finished import (run.json present) of the same source is returned untouched. ``out``
    must be empty or hold an import of the same source (finished or interrupted); another
    process importing into it makes this raise :class:`trainmap.runlock.RunLockedError`.
    """
    src, out = Path(src), Path(out)
    source = str(src.resolve())
    finished = layout.read_run_json(out)
    if finished is not None:
        _check_same_source(finished, source, out / "run.json")
        return finished
    series = find_series(src)
    metrics = _source_metrics(src, series)
    _check_claim(out, source)  # before the lock: a refused directory gains no lock file
    layout.ensure_writable(out)
    with RunLock(out, purpose=f"trainmap import {source}"):
        finished = layout.read_run_json(out)
        if finished is not None:
            _check_same_source(finished, source, out / "run.json")
            return finished
        _check_claim(out, source)
        layout.write_owner(out, {"kind": "import", "source": source})
        return _import_locked(src, out, series, metrics, progress)


def _check_claim(out: Path, source: str) -> None:
    """Refuse ``out`` unless it is empty or holds an (interrupted) import of ``source``."""
    owner = layout.read_owner(out)
    if owner is None:
        layout.refuse_foreign(out, "import")
    else:
        _check_same_source(owner, source, out / layout.OWNER_NAME)


def _check_same_source(record: Mapping[str, Any], source: str, where: Path) -> None:
    """Refuse a run record (run.json or owner file) that is not an import of ``source``."""
    if record.get("kind", "import") != "import" or record.get("task", "import") != "import":
        raise ValueError(f"{where}: this directory holds a training run, not an import; use another --out")
    if record.get("source") != source:
        raise ValueError(
            f"{where} belongs to an import of another source ({record.get('source')!r}, not {source!r}); "
            "its checkpoints must not be mixed with this one's: use another --out"
        )


def _import_locked(src: Path, out: Path, series, metrics, progress: bool) -> dict[str, Any]:
    """Write the checkpoints, log.csv and run.json of a claimed import directory."""
    from tqdm import tqdm

    from trainmap import __version__

    source = str(src.resolve())
    started = time.perf_counter()
    dropped: set[str] = set()
    for step, model_file in tqdm(series, desc=f"import {src.name}", unit="ckpt", disable=not progress, file=sys.stderr):
        dest = layout.checkpoint_path(out, step)
        if dest.exists():  # written, atomically, by an interrupted earlier import
            continue
        _, dropped_here = _write_imported(dest, load_released_checkpoint(model_file))
        dropped.update(dropped_here)
    columns = _log_columns(metrics)
    layout.write_log(out / "log.csv", [{"step": step, **metrics[step]} for step, _ in series], columns)
    record = {
        "task": "import",
        "seed": None,
        "status": "complete",
        "source": source,
        "source_files": {str(step): str(path.relative_to(src)) for step, path in series},
        "checkpoints": len(series),
        "last_checkpoint_step": series[-1][0],
        "log_columns": columns,
        "dropped_tensors": sorted(dropped),
        "torch_version": torch.__version__,
        "trainmap_version": __version__,
        "wall_time_s": time.perf_counter() - started,
    }
    layout.write_run_json(out, record)
    return record

"""Reading a checkpoint series where it lies: which layout a run directory has, the step
of each checkpoint, which files make up each checkpoint, its tensors, and the training log.

The one reader of checkpoint series, used by ``trainmap import`` (which copies a series into
the run layout) and by the in-place metrics of :mod:`trainmap.metrics.series_metrics`. Layouts of a
run directory ``DIR`` (docs/your-runs.md):

``recorder``
    ``DIR/run.json`` with ``"kind": "recorder"`` (written by ``trainmap.Recorder``):
    ``metrics.csv``, ``log.csv`` and, when kept, ``checkpoints/step{N:08d}.safetensors``.
``files``
    ``step*.safetensors`` files (``step1200.safetensors``, ``step00001200.safetensors``)
    directly in ``DIR`` or in ``DIR/checkpoints/``.
``dirs``
    one sub-directory per step, its name holding the step (``checkpoint-500``, ``step_20k``
    = 20 000, ``step143000``, ``1200``), with ``model.safetensors``, sharded
    ``*.safetensors`` named by ``model.safetensors.index.json``, or ``pytorch_model.bin``
    (or shards named by ``pytorch_model.bin.index.json``).

``lightning``
    the checkpoints of Lightning's ``ModelCheckpoint`` in its logger's version directories:
    ``DIR/lightning_logs/version_N/checkpoints/*.ckpt`` (any logger name, or ``DIR`` itself a
    ``version_N`` directory), every version together.
``torch``
    files written by ``torch.save`` (``.pt``, ``.pth``, ``.ckpt``, ``.tar``), one per step,
    directly in ``DIR`` or in ``DIR/checkpoints/``: a state dict, or a dict holding one under
    ``state_dict``, ``model``, ``model_state_dict`` or ``module``; the step recorded in the
    file (``global_step``, ``step``), else in its name (``step=400``, ``ckpt_400``,
    ``epoch_12`` in epochs).

The training log (:class:`LogSource`, the first kind found): ``DIR/log.csv`` (a ``step``
column) and/or the Hugging Face Trainer's ``trainer_state.json`` (``log_history``) in the
step directories or in ``DIR``; else Lightning's ``CSVLogger`` ``metrics.csv``; else
TensorBoard event files; or the file the experiment names (``log: {path, step}``). Nothing
is unpickled: ``.bin`` and ``torch.save`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence


from trainmap.io.contracts import (
    CHECKPOINTS_DIR,
    LOG_CSV,
    MAX_STEP,
    METRICS_CSV,
    RUN_JSON,
    STEP,
    STEP_DIR_NAMES,
    STEP_FILE_NAMES,
    TORCH_FILE_NAMES,
    name_step,
    parse_step,
)
from trainmap.io.fileguard import InputFileError, input_file, read_safetensors_header
from trainmap.io.errors import SeriesError

__all__ = [
    "Checkpoint",
    "LogSource",
    "LOG_KINDS",
    "STATE_DICT_KEYS",
    "TORCH_SUFFIXES",
    "MAX_EVENT_FILE_BYTES",
    "MAX_TENSORBOARD_VALUES",
    "Series",
    "SeriesError",
    "step_of",
    "discover",
    "find_step_dirs",
    "load_checkpoint",
    "read_log",
    "named_log",
    "lightning_versions",
    "torch_name_step",
    "trainer_global_step",
    "RENAMED_LOG_COLUMNS",
]


# Model files of a step directory, by preference.
_MODEL_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TRAINER_STATE = "trainer_state.json"
# Largest JSON/CSV side file (shard index, trainer_state.json, log) read.
_MAX_TEXT_BYTES = 256 << 20
# Characters of a trainer_state.json read at a time (it is streamed, never read whole).
_CHUNK = 1 << 20
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
#: Log names of the Hugging Face Trainer (and others) that mean trainmap's log columns.
RENAMED_LOG_COLUMNS: Mapping[str, str] = {
    "loss": "train_loss",
    "accuracy": "train_accuracy",
    "train_acc": "train_accuracy",
    "eval_acc": "eval_accuracy",
}


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a series.

    Attributes
    ----------
    step : training step (from the file or directory name).
    files : the files holding its tensors (one file, or every shard).
    format : ``"safetensors"`` (one file), ``"sharded"`` (safetensors shards), ``"bin"``
        (``pytorch_model.bin``, possibly sharded) or ``"torch"`` (a ``torch.save`` file:
        ``.pt``, ``.pth``, ``.ckpt``, ``.tar``).
    index : the shard index (``*.index.json``), when sharded.
    folder : its step directory (``dirs`` layout), else None.
    unit : what ``step`` counts: ``"step"`` (optimiser steps) or ``"epoch"`` (a ``torch``
        file whose name and content give only an epoch).
    named_step : the step in a ``torch`` file's name when the file records one too (``step``
        is then the recorded one; the integrity report compares them), else None.
    """

    step: int
    files: tuple[Path, ...]
    format: str
    index: Path | None = None
    folder: Path | None = None
    unit: str = "step"
    named_step: int | None = None

    @property
    def name(self) -> str:
        """How the checkpoint is named in messages: its directory or file."""
        return str(self.folder if self.folder is not None else self.files[0])


#: Kinds of log file (:attr:`LogSource.kind`) and what each is.
LOG_KINDS: Mapping[str, str] = {
    "log_csv": "log.csv with a step column",
    "trainer_state": "the Hugging Face Trainer's trainer_state.json (log_history)",
    "lightning_csv": "Lightning's CSVLogger metrics.csv (steps + 1: Lightning logs global_step - 1)",
    "tensorboard": "TensorBoard event file",
    "lightning_tensorboard": "Lightning's TensorBoardLogger event file (steps + 1: Lightning logs global_step - 1)",
    "csv": "CSV named by the experiment's log: (its step column given there)",
}


@dataclass(frozen=True)
class LogSource:
    """One file of a run's training log.

    Attributes
    ----------
    path : the file.
    kind : one of :data:`LOG_KINDS`.
    step_column : the CSV column holding the step (CSV kinds).
    step_offset : added to the file's steps so they count as the checkpoints do: 1 for
        Lightning's loggers, which log at ``global_step - 1`` what ``ModelCheckpoint`` saves
        as ``global_step`` (the weights after that optimiser step).
    """

    path: Path
    kind: str
    step_column: str = STEP
    step_offset: int = 0

    def __str__(self) -> str:
        return f"{self.path} ({self.kind})"


@dataclass(frozen=True)
class Series:
    """A run directory as found on disk.

    Attributes
    ----------
    source : the run directory.
    layout : ``"recorder"``, ``"files"``, ``"dirs"``, ``"lightning"`` or ``"torch"``.
    checkpoints : ordered by step (may be empty for a Recorder run without checkpoints).
    logs : the log files read, oldest first (:class:`LogSource`: path and kind).
    recorder : a Recorder run's run.json, else None.
    """

    source: Path
    layout: str
    checkpoints: tuple[Checkpoint, ...]
    logs: tuple[LogSource, ...]
    recorder: Mapping[str, Any] | None = None

    @property
    def steps(self) -> list[int]:
        return [c.step for c in self.checkpoints]

    @property
    def step_unit(self) -> str:
        """What the steps count: ``"step"`` or ``"epoch"`` (:attr:`Checkpoint.unit`)."""
        return self.checkpoints[0].unit if self.checkpoints else "step"

    def input_files(self) -> list[str]:
        """Every file the series' metrics depend on (checkpoint files, indexes, logs, and a
        Recorder's metrics.csv and run.json): the inputs of its Snakemake job, so that a new
        or changed one makes that job stale."""
        files: list[Path] = []
        if self.recorder is not None:
            files += [self.source / RUN_JSON, self.source / METRICS_CSV]
        for checkpoint in self.checkpoints:
            files += [*checkpoint.files, *([checkpoint.index] if checkpoint.index else [])]
        files += [log.path for log in self.logs]
        return [str(path) for path in dict.fromkeys(files) if path.is_file()]


def step_of(name: str) -> int | None:
    """Training step a checkpoint directory's (or file stem's) name stands for, or None.

    ``step_20k`` → 20000, ``multiberts-seed_1-step_2000k`` → 2000000, ``step143000`` →
    143000, ``checkpoint-500`` → 500, ``1200`` → 1200. Steps beyond int64 raise
    :class:`trainmap.io.contracts.StepError` naming ``name``.
    """
    found = name_step(name, STEP_DIR_NAMES)
    return found[0] if found else None


def _read_json(path: Path) -> Any:
    input_file(path, max_bytes=_MAX_TEXT_BYTES, what="JSON side file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise SeriesError(f"{path}: unreadable JSON ({exc})") from None


def _shards(index: Path) -> tuple[Path, ...]:
    """The shard files a ``*.index.json`` names, each checked to exist.

    An index is data from wherever the checkpoint came from, so what it names is read only
    when it is a plain file name that resolves (through any symlink) inside the index's own
    directory; a safetensors index must also name exactly the tensors its shards hold.
    Anything else raises :class:`SeriesError` naming the index and the entry.
    """
    try:
        weight_map = _read_json(index)["weight_map"]
        names = sorted(set(weight_map.values()))
    except (KeyError, TypeError, AttributeError) as exc:
        raise SeriesError(f"{index}: not a shard index (no weight_map: {exc})") from None
    shards = tuple(_shard_path(index, name) for name in names)
    for shard in shards:
        if input_file(shard, required=False, what="checkpoint shard") is None:
            raise SeriesError(f"{index}: names shard {shard.name}, which is missing")
    if index.name.endswith(".safetensors.index.json"):
        _check_shard_tensors(index, weight_map, shards)
    return shards


def _shard_path(index: Path, name: Any) -> Path:
    """The shard ``name`` of ``index``, refused unless it is a plain file name whose file
    lies in the index's directory (not ``..``, absolute, with a separator, or a symlink
    leading out of it)."""
    plain = isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in ("/", "\\", "\0"))
    if not plain:
        raise SeriesError(
            f"{index}: shard entry {name!r} is not a plain file name in {index.parent}; refusing to read it "
            "(an index may name only files beside it)"
        )
    path = index.parent / name
    target = path.resolve()
    if path.is_symlink() and target.parent != index.parent.resolve():
        raise SeriesError(
            f"{index}: shard entry {name!r} is a link to {target}, outside {index.parent}; refusing to read it "
            "(an index may name only files beside it)"
        )
    return path


def _check_shard_tensors(index: Path, weight_map: Mapping[str, Any], shards: Sequence[Path]) -> None:
    """Refuse a safetensors index whose ``weight_map`` and its shards' headers disagree."""
    held = {}
    for shard in shards:
        try:
            held[shard.name] = set(read_safetensors_header(shard, what="checkpoint shard"))
        except InputFileError as exc:
            raise SeriesError(str(exc)) from None
    _compare_shards(index, weight_map, held)


def _compare_shards(index: Path, weight_map: Mapping[str, Any], held: Mapping[str, set[str]]) -> None:
    """Raise :class:`SeriesError` naming the first shard whose tensors (``held``, by shard
    file name) are not exactly those ``weight_map`` puts there."""
    claimed: dict[str, set[str]] = {}
    for tensor, shard in weight_map.items():
        claimed.setdefault(shard, set()).add(tensor)
    first_shard: dict[str, str] = {}
    for shard, names in held.items():
        for name in sorted(names):
            if name in first_shard:
                raise SeriesError(f"{index.parent / shard}: tensor '{name}' is also in {index.parent / first_shard[name]}")
            first_shard[name] = shard
    for shard, names in held.items():
        missing, unlisted = claimed.get(shard, set()) - names, names - claimed.get(shard, set())
        if missing or unlisted:
            problems = [f"the index puts {_listed(missing)} there, which it does not hold"] if missing else []
            problems += [f"it holds {_listed(unlisted)}, which the index does not list"] if unlisted else []
            raise SeriesError(f"{index}: shard {shard} and the index disagree: {'; '.join(problems)}; "
                              "refusing a checkpoint whose index does not describe it")


def _listed(names: set[str], shown: int = 5) -> str:
    ordered = sorted(names)
    return ", ".join(ordered[:shown]) + (f" and {len(ordered) - shown} more" if len(ordered) > shown else "")


def _step_dir_checkpoint(folder: Path, step: int) -> Checkpoint:
    """The checkpoint held by one step directory."""
    for name in _MODEL_FILES:
        path = folder / name
        if input_file(path, required=False, what="checkpoint") is None:
            continue
        if name.endswith(".index.json"):
            return Checkpoint(step, _shards(path), "sharded" if "safetensors" in name else "bin", path, folder)
        return Checkpoint(step, (path,), "safetensors" if name.endswith(".safetensors") else "bin", None, folder)
    loose = sorted(folder.glob("*.safetensors"))
    if loose:
        raise SeriesError(f"{folder}: {len(loose)} safetensors shards but no model.safetensors.index.json naming them")
    raise SeriesError(f"{folder}: no {' or '.join(_MODEL_FILES)} in this checkpoint directory")


def find_step_dirs(src: str | os.PathLike) -> list[Checkpoint]:
    """The checkpoints of ``src``'s step directories, by step.

    Sub-directories whose name holds no step are ignored; one that does but holds no model
    file, or two that claim the same step, raise :class:`SeriesError` naming them.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such source directory")
    found: dict[int, Checkpoint] = {}
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        step = step_of(folder.name)
        if step is None:
            continue
        if step in found:
            raise SeriesError(f"{folder} and {found[step].folder} both stand for step {step}")
        found[step] = _step_dir_checkpoint(folder, step)
    if not found:
        raise SeriesError(
            f"{src}: no checkpoint directories (expected sub-directories such as step_20k/, step143000/ "
            "or checkpoint-500/ holding model.safetensors or pytorch_model.bin)"
        )
    return [found[step] for step in sorted(found)]


def _step_files(folder: Path) -> list[Checkpoint]:
    """``step*.safetensors`` files directly in ``folder``, by step."""
    found: dict[int, Checkpoint] = {}
    for path in sorted(folder.glob("*.safetensors")):
        named = name_step(path.name, STEP_FILE_NAMES, path)
        if named is None:
            continue
        step = named[0]
        if step in found:
            raise SeriesError(f"{path} and {found[step].files[0]} both stand for step {step}")
        found[step] = Checkpoint(step, (input_file(path, what="checkpoint"),), "safetensors")
    return [found[step] for step in sorted(found)]


def _logs(src: Path, checkpoints: Sequence[Checkpoint]) -> tuple[LogSource, ...]:
    """The log files of a series, the first kind found: ``log.csv`` and every
    ``trainer_state.json`` (the run directory's, then the step directories' by step, so the
    newest comes last); else Lightning CSVLogger's ``metrics.csv``; else TensorBoard event
    files (:func:`_lightning_csv_logs`, :func:`_tensorboard_logs`)."""
    candidates = [src / LOG_CSV, src / _TRAINER_STATE]
    candidates += [c.folder / _TRAINER_STATE for c in checkpoints if c.folder is not None]
    found = tuple(LogSource(path, "log_csv" if path.name == LOG_CSV else "trainer_state") for path in candidates
                  if input_file(path, required=False, max_bytes=_MAX_TEXT_BYTES, what="training log") is not None)
    return found or _lightning_csv_logs(src) or _tensorboard_logs(src)


def discover(src: str | os.PathLike, log_path: str | os.PathLike | None = None, log_step: str | None = None) -> Series:
    """Find the layout, checkpoints and logs of the run directory ``src`` (no tensor is read;
    ``torch.save`` files are opened, memory-mapped, for the step they record).

    ``log_path`` (relative to ``src``) names the log instead of the files found
    automatically, with ``log_step`` its step column when it is a CSV
    (:func:`named_log`; config ``log: {path, step}``).

    Raises ``FileNotFoundError`` for a missing directory and :class:`SeriesError` for one
    that holds no checkpoints in any known layout (and is no Recorder run).
    """
    series = _discover_layout(Path(src))
    if log_path is not None:
        series = dataclasses.replace(series, logs=named_log(series.source, log_path, log_step))
    elif log_step is not None:
        raise SeriesError(f"{src}: a log step column ({log_step!r}) without a log path")
    return series


def _discover_layout(src: Path) -> Series:
    """:func:`discover` with the logs found automatically."""
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such run directory")
    run_json = src / RUN_JSON
    if run_json.is_file():
        record = _read_json(run_json)
        if isinstance(record, dict) and record.get("kind") == "recorder":
            folder = src / CHECKPOINTS_DIR
            checkpoints = _step_files(folder) if folder.is_dir() else []
            return Series(src, "recorder", tuple(checkpoints), _logs(src, checkpoints), record)
    for folder in (src, src / CHECKPOINTS_DIR):
        if folder.is_dir():
            checkpoints = _step_files(folder)
            if checkpoints:
                return Series(src, "files", tuple(checkpoints), _logs(src, checkpoints))
    has_step_dirs = any(p.is_dir() and step_of(p.name) is not None for p in src.iterdir())
    if has_step_dirs:
        checkpoints = find_step_dirs(src)
        return Series(src, "dirs", tuple(checkpoints), _logs(src, checkpoints))
    checkpoints = _lightning_checkpoints(src)
    if checkpoints:
        return Series(src, "lightning", tuple(checkpoints), _logs(src, checkpoints))
    for folder in (src, src / CHECKPOINTS_DIR):
        checkpoints = _torch_files(folder)
        if checkpoints:
            return Series(src, "torch", tuple(checkpoints), _logs(src, checkpoints))
    raise SeriesError(
        f"{src}: no checkpoints found (expected step*.safetensors files, here or in checkpoints/, "
        "sub-directories per step such as checkpoint-500/ or step_20k/, torch.save files (.pt, .pth, .ckpt, "
        ".tar) with a step in their name or content, here, in checkpoints/ or in Lightning's "
        "lightning_logs/version_N/checkpoints/, or a trainmap.Recorder run)"
    )


# --- torch.save files: the torch and lightning layouts ---------------------------------------

#: Suffixes of the files ``torch.save`` writes that the ``torch`` layout reads (one checkpoint
#: each; ``checkpoint.pth.tar`` too).
TORCH_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".ckpt", ".tar")
#: Keys under which a ``torch.save`` dict holds the model's state dict, by preference
#: (Lightning and many loops: ``state_dict``; ``model``; PyTorch's tutorial:
#: ``model_state_dict``; DeepSpeed: ``module``); else the top level when it holds tensors.
STATE_DICT_KEYS: tuple[str, ...] = ("state_dict", "model", "model_state_dict", "module")
# Keys of a torch.save dict recording its optimiser step (Lightning: global_step), by preference.
_RECORDED_STEP_KEYS = ("global_step", "step")
# A Lightning logger's version directory; TensorBoardLogger always writes hparams.yaml into
# it, CSVLogger only when the module saved hyper-parameters.
_LIGHTNING_VERSION = re.compile(r"^version_(\d+)$")
_LIGHTNING_HPARAMS = "hparams.yaml"


def _torch_stem(name: str) -> str:
    """A torch file's name without its TORCH_SUFFIXES (``checkpoint_3.pth.tar`` → ``checkpoint_3``)."""
    stem = name
    while Path(stem).suffix.lower() in TORCH_SUFFIXES:
        stem = stem[: -len(Path(stem).suffix)]
    return stem


def torch_name_step(name: str) -> tuple[int, str] | None:
    """``(number, unit)`` a torch file's name stands for, unit ``"step"`` or ``"epoch"``, or None.

    ``epoch=3-step=400.ckpt`` → (400, "step"), ``model_step=1000.pt`` → (1000, "step"),
    ``ckpt_400.pt`` → (400, "step"), ``checkpoint_7.pth.tar`` → (7, "step"), ``1200.pt`` →
    (1200, "step"), ``epoch_12.pth`` → (12, "epoch"), ``last.ckpt`` → None.
    """
    return name_step(_torch_stem(name), TORCH_FILE_NAMES, name)


def _recorded(loaded: Any, path: Path) -> tuple[int, str] | None:
    """``(number, unit)`` a loaded torch file records: ``global_step`` or ``step`` (steps;
    an int or a one-element integer tensor, anything else an error naming the file), else
    an integer ``epoch`` (epochs; a fractional one is no checkpoint number); else None."""
    import torch

    if not isinstance(loaded, Mapping):
        return None
    values = {}
    for key in (*_RECORDED_STEP_KEYS, "epoch"):
        value = loaded.get(key)
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = value.item()
        values[key] = value
    for key in _RECORDED_STEP_KEYS:
        if values[key] is not None:
            return parse_step(values[key], f"{path}: {key!r}"), "step"
    epoch = values["epoch"]
    if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0:
        return parse_step(epoch, f"{path}: 'epoch'"), "epoch"
    return None


def _torch_checkpoint(path: Path) -> tuple[Checkpoint, bool] | None:
    """The checkpoint a torch file holds and whether its name gives a number; None for a
    file whose name gives none and that records no step or holds no state dict (an
    ``optimizer.pt``).

    The step is the one the file records (``global_step``, ``step``), else its name's
    (steps before epochs), else the epoch it records. Where the name gives another step
    than the file records, the integrity report says so (:attr:`Checkpoint.named_step`).
    """
    named = torch_name_step(path.name)
    loaded = _torch_load(path)  # memory-mapped: no tensor is read here
    if _state_dict(loaded) is None:
        if named is None:
            return None
        raise SeriesError(f"{path}: {_no_state_dict(loaded)}")
    recorded = _recorded(loaded, path)
    if recorded is not None and recorded[1] == "step":
        step, unit = recorded
    elif named is not None:
        step, unit = named
    elif recorded is not None:
        step, unit = recorded
    else:
        return None
    compared = named is not None and recorded is not None and named[1] == recorded[1] == "step"
    named_step = named[0] if compared else None
    return Checkpoint(step, (path,), "torch", unit=unit, named_step=named_step), named is not None


def _torch_files(folder: Path) -> list[Checkpoint]:
    """The ``torch.save`` files directly in ``folder`` (:data:`TORCH_SUFFIXES`), by step.

    Each file is opened (:func:`_torch_load`: memory-mapped, so no tensor is read) for the
    step it records. Two files standing for one step are an error naming both, except that
    a file whose name gives no number and that records the step of a named file is a copy
    of it (Lightning's ``last.ckpt``, a ``best.pt``) and is left out. One series counts
    steps or epochs, not both.
    """
    if not folder.is_dir():
        return []
    found: dict[int, tuple[Checkpoint, bool]] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in TORCH_SUFFIXES and not p.is_dir()):
        input_file(path, what="checkpoint")
        result = _torch_checkpoint(path)
        if result is None:
            continue
        checkpoint, named = result
        if checkpoint.step in found:
            other, other_named = found[checkpoint.step]
            if named != other_named:  # the unnamed one is a copy of the named one
                if named:
                    found[checkpoint.step] = result
                continue
            raise SeriesError(f"{path} and {other.files[0]} both stand for {other.unit} {checkpoint.step}")
        found[checkpoint.step] = result
    checkpoints = [found[step][0] for step in sorted(found)]
    units = {c.unit: c for c in checkpoints}
    if len(units) > 1:
        raise SeriesError(f"{folder}: some checkpoints count steps ({units['step'].files[0].name}: step "
                          f"{units['step'].step}) and some epochs ({units['epoch'].files[0].name}: epoch "
                          f"{units['epoch'].step}); save the step in every file (global_step or step)")
    return checkpoints


def lightning_versions(src: str | os.PathLike) -> list[Path]:
    """Lightning logger version directories of ``src``, by version number: ``src`` itself when
    it is one, ``src/version_N`` and ``src/NAME/version_N`` (``lightning_logs/version_0``):
    directories named ``version_N``."""
    src = Path(src)
    found = {path for path in (src, *src.glob("version_*"), *src.glob("*/version_*")) if _is_lightning_version(path)}
    return sorted(found, key=lambda path: (int(_LIGHTNING_VERSION.match(path.name).group(1)), str(path)))


def _is_lightning_version(path: Path) -> bool:
    """Whether ``path`` is a Lightning logger's version directory (a directory ``version_N``)."""
    return _LIGHTNING_VERSION.match(path.name) is not None and path.is_dir()


def _lightning_checkpoints(src: Path) -> list[Checkpoint]:
    """The ``torch.save`` files in the ``checkpoints/`` of every Lightning version directory
    of ``src`` together (a resumed run continues in a new version), by step; a step saved in
    two versions is an error naming both."""
    found: dict[int, Checkpoint] = {}
    for version in lightning_versions(src):
        for checkpoint in _torch_files(version / CHECKPOINTS_DIR):
            if checkpoint.step in found:
                raise SeriesError(
                    f"{checkpoint.files[0]} and {found[checkpoint.step].files[0]} both stand for {checkpoint.unit} "
                    f"{checkpoint.step} (two Lightning runs in one directory? name one version directory as the run)")
            found[checkpoint.step] = checkpoint
    checkpoints = [found[step] for step in sorted(found)]
    if len({c.unit for c in checkpoints}) > 1:
        raise SeriesError(f"{src}: Lightning versions count steps in some checkpoints and epochs in others")
    return checkpoints


# --- tensors ---------------------------------------------------------------------------------


def load_checkpoint(checkpoint: Checkpoint) -> dict:
    """The model's tensors of a checkpoint as ``{name: torch.Tensor}`` (every shard together).

    ``.bin`` and ``torch.save`` files are read with ``torch.load(weights_only=True)``,
    memory-mapped (:func:`_torch_load`: anything but tensors and plain containers is
    refused); of what they hold, only the tensors of the state dict are returned
    (:func:`_state_dict`): optimiser state and other entries are left alone, memory-mapped
    and never read.
    """
    tensors: dict = {}
    held: dict[str, set[str]] = {}
    for path in checkpoint.files:
        loaded = _load_file(path)
        held[path.name] = set(loaded)
        for name, value in loaded.items():
            if name in tensors:
                raise SeriesError(f"tensor {name!r} appears in more than one shard of {checkpoint.name}")
            tensors[name] = value
    if checkpoint.index is not None and checkpoint.format == "bin":  # (safetensors shards: checked from headers)
        _compare_shards(checkpoint.index, _read_json(checkpoint.index)["weight_map"], held)
    return tensors


def _load_file(path: Path) -> dict:
    from safetensors.torch import load_file

    input_file(path, what="checkpoint")
    if path.suffix != ".safetensors":
        loaded = _torch_load(path)
        found = _state_dict(loaded)
        if found is None:
            raise SeriesError(f"{path}: {_no_state_dict(loaded)}")
        return found[1]
    try:
        return load_file(str(path))
    except Exception as exc:  # corrupt files surface as many exception types
        raise SeriesError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None


def _torch_load(path: Path) -> Any:
    """What ``torch.load(path, weights_only=True)`` returns, memory-mapped where the format
    allows (tensors are read only when used; the legacy pre-zip format is read whole).

    A file that needs full unpickling (a pickled ``nn.Module``, any other Python object)
    is refused with a message saying why and how to convert it; it is never unpickled.
    """
    import pickle

    import torch

    input_file(path, what="checkpoint")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # the legacy (pre-zip) format cannot be memory-mapped
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise SeriesError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"the Python object {found.group(1)}" if found else "Python objects other than tensors"
        raise SeriesError(
            f"{path}: cannot read checkpoint without unpickling {what}, which can run arbitrary code; trainmap "
            "reads checkpoints with torch.load(weights_only=True) only. If you trust the file, convert it once: "
            "load it with torch.load(path, weights_only=False) and save the model's state dict alone "
            "(torch.save(model.state_dict(), path), or safetensors.torch.save_file(state_dict, path))"
        ) from None
    except Exception as exc:  # corrupt files surface as many exception types
        raise SeriesError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None


def _state_dict(loaded: Any) -> tuple[str | None, dict] | None:
    """``(key, tensors)`` of the model's state dict in what ``torch.load`` returned: the first
    of :data:`STATE_DICT_KEYS` holding a mapping with tensors (key), else the top level when
    it holds tensors (key None); only its tensor entries. None when there is no state dict."""
    import torch

    def tensors(value: Any) -> dict | None:
        if not isinstance(value, Mapping):
            return None
        found = {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        return found or None

    if isinstance(loaded, Mapping):
        for key in STATE_DICT_KEYS:
            found = tensors(loaded.get(key))
            if found is not None:
                return key, found
    found = tensors(loaded)
    return (None, found) if found is not None else None


def _no_state_dict(loaded: Any) -> str:
    """Why a loaded torch file holds no state dict, naming what it holds."""
    if isinstance(loaded, Mapping):
        keys = ", ".join(repr(k) for k in list(loaded)[:8]) + (", ..." if len(loaded) > 8 else "")
        holds = f"a dict with keys {keys}"
    else:
        holds = type(loaded).__name__
    return (f"no state dict (tensors by name) at the top level or under {', '.join(STATE_DICT_KEYS)}; "
            f"the file holds {holds}")


# --- the training log ------------------------------------------------------------------------


def _number(text: Any) -> Any:
    """CSV text → int or float when it is one, empty → None, else unchanged."""
    if not isinstance(text, str):
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text if text != "" else None


def _csv_log(path: Path, step_column: str = STEP) -> dict[int, dict[str, Any]]:
    """Rows of a CSV log by the step in ``step_column``; rows of one step are merged, an
    empty cell not replacing a value (Lightning writes validation metrics on rows of their own)."""
    rows: dict[int, dict[str, Any]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        try:
            if step_column not in (reader.fieldnames or []):
                raise SeriesError(f"{path}: no '{step_column}' column")
            for row in reader:
                step = parse_step(row.pop(step_column), f"{path}, line {reader.line_num}")
                _merge_values(rows.setdefault(step, {}), {k: _number(v) for k, v in row.items() if k})
        except csv.Error as exc:  # a field over the csv module's limit, a NUL byte...
            raise SeriesError(f"{path}, line {reader.line_num + 1}: not a readable CSV log ({exc})") from None
        except UnicodeDecodeError as exc:
            raise SeriesError(f"{path}: not a readable CSV log (not UTF-8 text: {exc})") from None
    return rows


def _merge_values(into: dict[str, Any], values: Mapping[str, Any]) -> None:
    """``into.update(values)``, except that an empty value (None) does not replace one."""
    for key, value in values.items():
        if value is not None or key not in into:
            into[key] = value


class _NotATrainerState(Exception):
    """A trainer_state.json that is JSON, but not of the Trainer's shape (the message says how)."""


class _JsonStream:
    """A JSON file read one value at a time, ``_CHUNK`` characters of it at a time, so a
    large member (a Trainer's ``log_history`` of a million entries) is never held whole."""

    def __init__(self, handle, path: Path):
        self.handle, self.path = handle, path
        self.text, self.pos, self.offset, self.eof = "", 0, 0, False
        self.batch_failed = False  # decoding this text's objects together failed: one at a time until more is read

    def _more(self) -> None:
        chunk = self.handle.read(max(_CHUNK, len(self.text) - self.pos))  # doubling: a long value is re-read O(log n) times
        self.eof, self.batch_failed = not chunk, False
        self.offset += self.pos
        self.text, self.pos = self.text[self.pos:] + chunk, 0

    def _broken(self, what: str) -> SeriesError:
        return SeriesError(f"{self.path}: unreadable JSON ({what} at character {self.offset + self.pos})")

    def peek(self) -> str:
        """The next character that is not white space (without taking it)."""
        while True:
            self.pos = _WHITESPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if self.eof:
                raise self._broken("the file ends early")
            self._more()

    def take(self, allowed: str) -> str:
        char = self.peek()
        if char not in allowed:
            raise self._broken(f"expected {' or '.join(map(repr, allowed))}")
        self.pos += 1
        return char

    def value(self) -> Any:
        """The next JSON value."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
                if end < len(self.text) or self.eof:  # a number at the end of the text may go on
                    self.pos = end
                    return value
            except json.JSONDecodeError as exc:
                if self.eof:
                    raise SeriesError(f"{self.path}: unreadable JSON ({exc.msg} at character "
                                      f"{self.offset + exc.pos})") from None
            self._more()

    def items(self) -> Iterator[Any]:
        """The values of the array that comes next, one at a time."""
        self.take("[")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            batch = self._whole_objects()
            if batch:
                yield from batch
                continue
            yield self.value()
            if self.take(",]") == "]":
                return

    def _whole_objects(self) -> list[Any]:
        """The array's values that lie whole in the text read so far, when they are objects,
        decoded together (one call for a megabyte of log entries, not one per entry); empty
        when none can be. The text up to the last ``}`` followed by ``,`` is decoded as an
        array: were that ``}`` inside a string or a nested value, it would not decode."""
        cut = -1 if self.batch_failed else self.text.rfind("}", self.pos)
        while cut > self.pos:
            after = _WHITESPACE.match(self.text, cut + 1).end()
            if after < len(self.text) and self.text[after] == ",":
                try:
                    values = json.loads("[" + self.text[self.pos:cut + 1] + "]")
                except json.JSONDecodeError:  # (entries with nested objects, say)
                    self.batch_failed = True
                    return []
                self.pos = after + 1
                return values
            cut = self.text.rfind("}", self.pos, cut)
        return []


def _trainer_state_members(path: Path) -> Iterator[tuple[str, Any]]:
    """``(key, value)`` of a trainer_state.json's top-level object, in file order; the value
    of a ``log_history`` array is an iterator over its entries, to be used up before the
    next member. Raises :class:`_NotATrainerState` when the file is JSON but no object,
    :class:`SeriesError` when it is not JSON."""
    input_file(path, max_bytes=_MAX_TEXT_BYTES, what="JSON side file")
    try:
        with open(path, encoding="utf-8") as handle:
            stream = _JsonStream(handle, path)
            first = stream.peek()
            if first != "{":
                kind = {"[": "list", '"': "string", "t": "boolean", "f": "boolean", "n": "null"}.get(first, "number")
                raise _NotATrainerState(f"it holds a JSON {kind}, not an object")
            stream.take("{")
            if stream.peek() == "}":
                return
            while True:
                key = stream.value()
                if not isinstance(key, str):
                    raise stream._broken("expected a key")
                stream.take(":")
                yield key, (stream.items() if key == "log_history" and stream.peek() == "[" else stream.value())
                if stream.take(",}") == "}":
                    return
    except (UnicodeDecodeError, OSError) as exc:
        raise SeriesError(f"{path}: unreadable JSON ({exc})") from None


def _trainer_log(path: Path) -> dict[int, dict[str, Any]]:
    """``log_history`` of a trainer_state.json, merged per step (numbers only), read one
    entry at a time. A file of another shape gives a warning saying what is wrong with it
    (and no rows)."""
    rows: dict[int, dict[str, Any]] = {}
    problem = "has no 'log_history'"
    try:
        for key, value in _trainer_state_members(path):
            if key != "log_history":
                continue
            if not isinstance(value, Iterator):
                problem = f"its 'log_history' is a JSON {type(value).__name__}, not a list of log entries"
                continue
            entries = unstepped = 0
            for entry in value:  # (a million entries: kept to plain type tests)
                entries += 1
                step = entry.get(STEP) if type(entry) is dict else None
                if type(step) is not int:  # (not a bool either)
                    unstepped += 1
                    continue
                if not 0 <= step <= MAX_STEP:
                    parse_step(step, path)  # raises, naming the file
                values = {k: v for k, v in entry.items() if type(v) in (int, float) and k != STEP}
                rows.setdefault(step, {}).update(values)
            problem = (f"{unstepped} of its {entries} 'log_history' entries have no integer '{STEP}'"
                       if unstepped else None)
    except _NotATrainerState as exc:
        problem = str(exc)
    if problem is not None:
        left_out = "those entries are left out" if rows else "its log is not used"
        warnings.warn(f"{path}: not a Hugging Face Trainer state as expected: {problem}; {left_out}",
                      RuntimeWarning, stacklevel=3)
    return rows


def _step_dir_logs(series: Series) -> Iterator[dict[int, dict[str, Any]]]:
    """The logs of the step directories' trainer_state.json files, newest first. The
    Trainer's history is cumulative (each checkpoint's file repeats every earlier entry), so
    an older file is read only when its step comes before the earliest step the newer ones
    log: a long run's many large copies of one history are not each read."""
    steps = {c.folder / _TRAINER_STATE: c.step for c in series.checkpoints if c.folder is not None}
    earliest = None
    for path in reversed([source.path for source in series.logs if source.path in steps]):
        if earliest is not None and steps[path] >= earliest:
            continue
        rows = _trainer_log(path)
        if rows:
            earliest = min(rows) if earliest is None else min(earliest, min(rows))
        yield rows


def read_log(series: Series) -> dict[int, dict[str, Any]]:
    """The training log of a series, ``{step: {column: value}}`` by step.

    Rows of every :class:`LogSource` of the series are merged by step (its steps plus its
    ``step_offset``); where two give the same column for a step, the later source wins (a
    later checkpoint's trainer_state.json, a newer event file), and an empty value never
    replaces one. So the Trainer's cumulative history in the newest checkpoint decides; the
    step directories' trainer_state.json files are read newest first and an older one only
    where it reaches back further (:func:`_step_dir_logs`). Trainer names are renamed to
    trainmap's (``loss`` → ``train_loss``, :data:`RENAMED_LOG_COLUMNS`). Empty when the
    series has no log.
    """
    merged: dict[int, dict[str, Any]] = {}
    tensorboard_budget = MAX_TENSORBOARD_VALUES
    in_steps = {c.folder / _TRAINER_STATE for c in series.checkpoints if c.folder is not None}
    sourced = []
    for source in series.logs:
        if source.path in in_steps:
            continue
        if source.kind in ("tensorboard", "lightning_tensorboard"):
            rows = _tensorboard_log(source.path, tensorboard_budget)
            tensorboard_budget -= sum(len(values) for values in rows.values())
        elif source.kind == "trainer_state":
            rows = _trainer_log(source.path)
        else:
            rows = _csv_log(source.path, source.step_column)
        sourced.append((source, rows))
    sourced += [(None, rows) for rows in reversed(list(_step_dir_logs(series)))]  # oldest first: the newer wins
    for source, rows in sourced:
        for step, values in rows.items():
            if source is not None and source.step_offset:
                step = parse_step(step + source.step_offset, source.path)
            _merge_values(merged.setdefault(step, {}), values)
    return {
        step: {RENAMED_LOG_COLUMNS.get(k, k): v for k, v in merged[step].items()} for step in sorted(merged)
    }


# --- logs of other tools: Lightning's CSVLogger, TensorBoard, a log the experiment names -------

#: Largest TensorBoard event file read. The reader holds one record at a time (at most the
#: file's size, for a file crafted to claim one huge record) plus the scalars it keeps.
MAX_EVENT_FILE_BYTES = 2 << 30
#: Most scalar values read from a run's TensorBoard files together (~100 bytes each in memory).
MAX_TENSORBOARD_VALUES = 5_000_000
_LIGHTNING_METRICS = "metrics.csv"
_EVENT_FILE = "events.out.tfevents."
# The HF Trainer's and torch's SummaryWriter()'s default log directory: runs/<date>_<host>/.
_TENSORBOARD_RUNS = "runs"


def _lightning_csv_logs(src: Path) -> tuple[LogSource, ...]:
    """Lightning CSVLogger's ``metrics.csv`` of every version directory of ``src``, oldest first."""
    return tuple(LogSource(version / _LIGHTNING_METRICS, "lightning_csv", STEP, 1)
                 for version in lightning_versions(src)
                 if input_file(version / _LIGHTNING_METRICS, required=False, max_bytes=_MAX_TEXT_BYTES,
                               what="training log") is not None)


def _event_files(folder: Path, recursive: bool = False) -> list[Path]:
    """TensorBoard event files (``events.out.tfevents.*``) in ``folder``."""
    pattern = f"{_EVENT_FILE}*"
    found = folder.rglob(pattern) if recursive else folder.glob(pattern)
    return [path for path in found if path.is_file()]


def _event_file_time(path: Path) -> int:
    """The creation time in an event file's name (``events.out.tfevents.<time>.<host>...``)."""
    field = path.name[len(_EVENT_FILE):].split(".", 1)[0]
    return int(field) if field.isdigit() else 0


def _tensorboard_source(path: Path) -> LogSource:
    """An event file as a log source: Lightning TensorBoardLogger's (steps + 1) in a version
    directory with the ``hparams.yaml`` that logger writes."""
    if _is_lightning_version(path.parent) and (path.parent / _LIGHTNING_HPARAMS).is_file():
        return LogSource(path, "lightning_tensorboard", STEP, 1)
    return LogSource(path, "tensorboard")


def _by_time(sources: Sequence[LogSource]) -> tuple[LogSource, ...]:
    """Event file sources oldest first (by the time in their names), so newer ones win."""
    return tuple(sorted(dict.fromkeys(sources), key=lambda s: (_event_file_time(s.path), str(s.path))))


def _tensorboard_logs(src: Path) -> tuple[LogSource, ...]:
    """The TensorBoard event files of ``src``: in its Lightning version directories, in
    ``src`` itself and in ``src/runs/*/`` (the HF Trainer's and ``SummaryWriter()``'s
    default), oldest first."""
    folders = [*lightning_versions(src), src]
    runs = src / _TENSORBOARD_RUNS
    if runs.is_dir():
        folders += sorted(p for p in runs.iterdir() if p.is_dir())
    return _by_time([_tensorboard_source(path) for folder in folders for path in _event_files(folder)])


def named_log(src: str | os.PathLike, path: str | os.PathLike, step: str | None = None) -> tuple[LogSource, ...]:
    """The log a configuration names (``log: {path, step}``), ``path`` relative to ``src``:

    * a CSV file, its steps in column ``step`` (default ``step``; ``_step`` for a W&B
      history export); Lightning's ``metrics.csv`` in a version directory is read as Lightning's;
    * a TensorBoard event file;
    * a directory: a Lightning version directory's ``metrics.csv`` (else its event files),
      or every event file under it.

    Raises :class:`SeriesError` naming the path when there is no such log, and for a step
    column given with a TensorBoard log (its events carry their steps).
    """
    src = Path(src)
    target = src / path  # an absolute path stays itself
    if target.is_dir():
        if _is_lightning_version(target):
            sources = _lightning_csv_logs(target) or _by_time([_tensorboard_source(p) for p in _event_files(target)])
        else:
            sources = _by_time([_tensorboard_source(p) for p in _event_files(target, recursive=True)])
        if not sources:
            raise SeriesError(f"{target}: the log named by log.path holds no TensorBoard event files "
                              f"({_EVENT_FILE}*) or Lightning metrics.csv")
    elif input_file(target, required=False, what="training log") is None:
        raise SeriesError(f"{target}: no such log (log.path {os.fspath(path)!r} of run directory {src})")
    elif target.name.startswith(_EVENT_FILE):
        sources = (_tensorboard_source(target),)
    elif target.name == _LIGHTNING_METRICS and step is None and _is_lightning_version(target.parent):
        sources = _lightning_csv_logs(target.parent)
    else:
        sources = (LogSource(target, "csv", step or STEP),)
    if step is not None and any(s.kind not in ("csv", "lightning_csv", "log_csv") for s in sources):
        raise SeriesError(f"{target}: a TensorBoard log carries its steps; log.step ({step!r}) applies to CSV logs")
    return tuple(sources)


def _tensorboard_log(path: Path, max_values: int = MAX_TENSORBOARD_VALUES) -> dict[int, dict[str, float]]:
    """The scalars of one TensorBoard event file, ``{step: {tag: value}}`` (a later event of
    a step and tag wins).

    Read with the ``tensorboard`` package's record reader, one record at a time; events
    are parsed by its ``Event`` protobuf class. Scalars are ``simple_value`` summaries
    (``SummaryWriter.add_scalar``, Lightning, the HF Trainer) and one-element tensors of
    the ``scalars`` plugin (TensorFlow 2, ``add_scalar(new_style=True)``); histograms,
    images, text and the rest are skipped. float32 values are written as the shortest
    decimal that is the same float32 (0.1, not 0.10000000149011612). A file that stops
    in a truncated or corrupt record gives a warning (a run still writing it ends in a
    partial record); more than ``max_values`` scalars is an error naming the file.
    """
    from google.protobuf.message import DecodeError
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    input_file(path, max_bytes=MAX_EVENT_FILE_BYTES, what="TensorBoard event file")
    size = path.stat().st_size
    rows: dict[int, dict[str, float]] = {}
    plugins: dict[str, str] = {}  # tag -> plugin, from the first event that names it
    consumed = kept = 0
    try:
        for number, record in enumerate(RawEventFileLoader(str(path)).Load(), start=1):
            consumed += len(record) + 16  # length (8), its CRC (4), data, data CRC (4)
            event = event_pb2.Event.FromString(record)
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                if value.HasField("metadata") and value.tag not in plugins:
                    plugins[value.tag] = value.metadata.plugin_data.plugin_name
                scalar = _tensorboard_scalar(value, plugins.get(value.tag, ""), path)
                if scalar is None:
                    continue
                kept += 1
                if kept > max_values:
                    raise SeriesError(
                        f"{path}: more than {MAX_TENSORBOARD_VALUES} TensorBoard scalars in this run; refusing to "
                        "read them all (log less often, or export the columns you need to a CSV and name it with "
                        "the experiment's log: {path, step})")
                step = parse_step(event.step, f"{path}, event {number}")
                rows.setdefault(step, {})[value.tag] = scalar
    except DecodeError as exc:
        raise SeriesError(f"{path}: not a TensorBoard event file (undecodable event: {exc})") from None
    if consumed < size:
        warnings.warn(f"{path}: TensorBoard event file read up to byte {consumed} of {size} (a truncated or "
                      "corrupt record, or a run still writing it): later scalars are not read",
                      RuntimeWarning, stacklevel=3)
    return rows


def _tensorboard_scalar(value: Any, plugin: str, path: Path) -> float | None:
    """The number a TensorBoard ``Summary.Value`` holds when it is a scalar, else None; a
    scalar tensor whose content does not match its declared type and shape is an error
    naming ``path``."""
    import numpy as np

    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(str(np.float32(value.simple_value)))
    if kind != "tensor" or plugin != "scalars" or any(d.size != 1 for d in value.tensor.tensor_shape.dim):
        return None
    from tensorboard.util import tensor_util

    try:
        array = tensor_util.make_ndarray(value.tensor)
    except (ValueError, TypeError) as exc:
        raise SeriesError(f"{path}: malformed TensorBoard scalar {value.tag!r} ({exc})") from None
    if array.size != 1 or array.dtype.kind not in "fiu":
        return None
    number = array.reshape(()).item()
    return float(str(np.float32(number))) if array.dtype == np.float32 else float(number)


def trainer_global_step(folder: Path) -> int | None:
    """``global_step`` of a step directory's trainer_state.json, or None without one. The
    Trainer writes its keys sorted, so the file is read only up to ``global_step``, not
    through the ``log_history`` that follows it."""
    path = folder / _TRAINER_STATE
    if not path.is_file():
        return None
    try:
        for key, value in _trainer_state_members(path):
            if key == "global_step":
                return value if isinstance(value, int) and not isinstance(value, bool) else None
            if isinstance(value, Iterator):
                for _ in value:  # a log_history before global_step: skipped entry by entry
                    pass
    except _NotATrainerState:
        return None
    return None

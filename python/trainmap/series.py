"""Reading a checkpoint series where it lies: which layout a run directory has, the step
of each checkpoint, which files make up each checkpoint, its tensors, and the training log.

The one reader of checkpoint series, used by ``trainmap import`` (which copies a series into
the run layout) and by the in-place metrics of :mod:`trainmap.series_metrics`. Layouts of a
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

The training log is ``DIR/log.csv`` (a ``step`` column) and/or the Hugging Face Trainer's
``trainer_state.json`` (``log_history``) in the step directories or in ``DIR``. Nothing is
pickled: ``.bin`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence


from trainmap.contracts import CHECKPOINTS_DIR, LOG_CSV, METRICS_CSV, RUN_JSON, STEP, parse_step
from trainmap.fileguard import InputFileError, input_file, read_safetensors_header
from trainmap.train.datafiles import DataFileError

__all__ = [
    "Checkpoint",
    "Series",
    "SeriesError",
    "step_of",
    "discover",
    "find_step_dirs",
    "load_checkpoint",
    "read_log",
    "trainer_global_step",
    "RENAMED_LOG_COLUMNS",
]

#: A problem with a series on disk (missing shard, two directories for one step...);
#: the message names the file or directory.
SeriesError = DataFileError

_STEP_PATTERNS = (
    re.compile(r"step[_-]?(\d+)(k?)(?![0-9])", re.IGNORECASE),
    re.compile(r"checkpoint[_-](\d+)()(?![0-9])", re.IGNORECASE),
    re.compile(r"^(\d+)()$"),
)
_STEP_FILE = re.compile(r"^step[_-]?(\d+)(k?)\.safetensors$", re.IGNORECASE)
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
_MAX_STEP = 2**63 - 1
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
    format : ``"safetensors"`` (one file), ``"sharded"`` (safetensors shards) or ``"bin"``
        (``pytorch_model.bin``, possibly sharded).
    index : the shard index (``*.index.json``), when sharded.
    folder : its step directory (``dirs`` layout), else None.
    """

    step: int
    files: tuple[Path, ...]
    format: str
    index: Path | None = None
    folder: Path | None = None

    @property
    def name(self) -> str:
        """How the checkpoint is named in messages: its directory or file."""
        return str(self.folder if self.folder is not None else self.files[0])


@dataclass(frozen=True)
class Series:
    """A run directory as found on disk.

    Attributes
    ----------
    source : the run directory.
    layout : ``"recorder"``, ``"files"`` or ``"dirs"``.
    checkpoints : ordered by step (may be empty for a Recorder run without checkpoints).
    logs : the log files that exist (``log.csv``, every ``trainer_state.json``), oldest first.
    recorder : a Recorder run's run.json, else None.
    """

    source: Path
    layout: str
    checkpoints: tuple[Checkpoint, ...]
    logs: tuple[Path, ...]
    recorder: Mapping[str, Any] | None = None

    @property
    def steps(self) -> list[int]:
        return [c.step for c in self.checkpoints]

    def input_files(self) -> list[str]:
        """Every file the series' metrics depend on (checkpoint files, indexes, logs, and a
        Recorder's metrics.csv and run.json): the inputs of its Snakemake job, so that a new
        or changed one makes that job stale."""
        files: list[Path] = []
        if self.recorder is not None:
            files += [self.source / RUN_JSON, self.source / METRICS_CSV]
        for checkpoint in self.checkpoints:
            files += [*checkpoint.files, *([checkpoint.index] if checkpoint.index else [])]
        files += list(self.logs)
        return [str(path) for path in dict.fromkeys(files) if path.is_file()]


def step_of(name: str) -> int | None:
    """Training step a checkpoint directory's (or file stem's) name stands for, or None.

    ``step_20k`` → 20000, ``multiberts-seed_1-step_2000k`` → 2000000, ``step143000`` →
    143000, ``checkpoint-500`` → 500, ``1200`` → 1200. Steps beyond int64 raise
    :class:`trainmap.contracts.StepError` naming ``name``.
    """
    for pattern in _STEP_PATTERNS:
        matches = list(pattern.finditer(name))
        if matches:
            number, thousands = matches[-1].groups()
            return parse_step(int(number) * (1000 if thousands else 1), name)
    return None


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
        match = _STEP_FILE.match(path.name)
        if match is None:
            continue
        step = parse_step(int(match.group(1)) * (1000 if match.group(2) else 1), path)
        if step in found:
            raise SeriesError(f"{path} and {found[step].files[0]} both stand for step {step}")
        found[step] = Checkpoint(step, (input_file(path, what="checkpoint"),), "safetensors")
    return [found[step] for step in sorted(found)]


def _logs(src: Path, checkpoints: Sequence[Checkpoint]) -> tuple[Path, ...]:
    """The log files of a series: ``log.csv``, then every ``trainer_state.json`` (the run
    directory's, then the step directories' by step, so the newest comes last)."""
    candidates = [src / LOG_CSV, src / _TRAINER_STATE]
    candidates += [c.folder / _TRAINER_STATE for c in checkpoints if c.folder is not None]
    return tuple(path for path in candidates
                 if input_file(path, required=False, max_bytes=_MAX_TEXT_BYTES, what="training log") is not None)


def discover(src: str | os.PathLike) -> Series:
    """Find the layout, checkpoints and logs of the run directory ``src`` (no tensor is read).

    Raises ``FileNotFoundError`` for a missing directory and :class:`SeriesError` for one
    that holds no checkpoints in any known layout (and is no Recorder run).
    """
    src = Path(src)
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
    raise SeriesError(
        f"{src}: no checkpoints found (expected step*.safetensors files, here or in checkpoints/, "
        "sub-directories per step such as checkpoint-500/ or step_20k/, or a trainmap.Recorder run)"
    )


# --- tensors ---------------------------------------------------------------------------------


def load_checkpoint(checkpoint: Checkpoint) -> dict:
    """All tensors of a checkpoint as ``{name: torch.Tensor}`` (every shard together).

    ``.bin`` files are read with ``torch.load(weights_only=True, mmap=True)`` (arbitrary
    pickled objects are refused); a state dict wrapped in ``{"state_dict": ...}`` or
    ``{"model": ...}`` is unwrapped.
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
    import torch
    from safetensors.torch import load_file

    input_file(path, what="checkpoint")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # the legacy (pre-zip) format cannot be memory-mapped
                raise
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files and refused pickles surface as many exception types
        raise SeriesError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model"):  # some .bin files wrap the state dict
        if isinstance(loaded, dict) and set(loaded) == {key} and isinstance(loaded[key], dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise SeriesError(f"{path}: expected a state dict of named tensors")
    return loaded


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


def _csv_log(path: Path) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        try:
            if STEP not in (reader.fieldnames or []):
                raise SeriesError(f"{path}: no '{STEP}' column")
            for row in reader:
                step = parse_step(row.pop(STEP), f"{path}, line {reader.line_num}")
                rows.setdefault(step, {}).update({k: _number(v) for k, v in row.items() if k})
        except csv.Error as exc:  # a field over the csv module's limit, a NUL byte...
            raise SeriesError(f"{path}, line {reader.line_num + 1}: not a readable CSV log ({exc})") from None
        except UnicodeDecodeError as exc:
            raise SeriesError(f"{path}: not a readable CSV log (not UTF-8 text: {exc})") from None
    return rows


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
                if not 0 <= step <= _MAX_STEP:
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
    for path in reversed([p for p in series.logs if p in steps]):
        if earliest is not None and steps[path] >= earliest:
            continue
        rows = _trainer_log(path)
        if rows:
            earliest = min(rows) if earliest is None else min(earliest, min(rows))
        yield rows


def read_log(series: Series) -> dict[int, dict[str, Any]]:
    """The training log of a series, ``{step: {column: value}}`` by step.

    Rows of ``log.csv``, of the run directory's ``trainer_state.json`` and of the step
    directories' ones (:func:`_step_dir_logs`) are merged by step; where two give the same
    column for a step, the newer file (a later checkpoint's state) wins, so the Trainer's
    cumulative history in the newest checkpoint decides. Trainer names are renamed to
    trainmap's (``loss`` → ``train_loss``, :data:`RENAMED_LOG_COLUMNS`). Empty when the series
    has no log.
    """
    merged: dict[int, dict[str, Any]] = {}
    in_steps = {c.folder / _TRAINER_STATE for c in series.checkpoints if c.folder is not None}
    for path in series.logs:
        if path not in in_steps:
            rows = _csv_log(path) if path.suffix == ".csv" else _trainer_log(path)
            for step, values in rows.items():
                merged.setdefault(step, {}).update(values)
    for rows in reversed(list(_step_dir_logs(series))):  # oldest first: the newer wins
        for step, values in rows.items():
            merged.setdefault(step, {}).update(values)
    return {
        step: {RENAMED_LOG_COLUMNS.get(k, k): v for k, v in merged[step].items()} for step in sorted(merged)
    }


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

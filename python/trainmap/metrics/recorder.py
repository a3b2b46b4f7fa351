"""Record the weight statistics of a training run from inside the researcher's own loop.

>>> from trainmap import Recorder
>>> with Recorder("runs/seed3", seed=3) as rec:
...     for step in range(n_steps):
...         ...  # the user's own training step
...         if step % 100 == 0:
...             rec.record(step, model, eval_accuracy=acc, eval_loss=loss)

The run directory (docs/design.md "The researcher's own runs", docs/your-runs.md)::

    DIR/metrics.csv        one row per recorded step: the columns and numbers of `trainmap metrics`
    DIR/log.csv            `step` and every scalar ever recorded (union of the columns)
    DIR/run.json           {"kind": "recorder", "status": "running" | "complete", ...}
    DIR/checkpoints/step{N:08d}.safetensors   with keep_checkpoints=True

Every file is rewritten atomically at every ``record`` call, so a killed script loses at
most the record in progress (flushed to disk with fsync at ``close()``, and at every record
for kept checkpoints). A new Recorder on the same directory continues the run: the
first step it records replaces every row at that step or later (the script restarted from
an earlier checkpoint of its own), in both CSV files and among the kept checkpoints. One
Recorder at a time writes a directory: it holds the run lock of ``trainmap train`` and
``import`` (:class:`trainmap.io.runlock.RunLock`) from its creation to ``close()``, and a second
one, in this process or another, raises :class:`trainmap.io.runlock.RunLockedError` naming the
holder's PID and host.

This module imports neither torch nor pandas at import time: ``from trainmap import
Recorder`` stays cheap; the engine and pandas load when a Recorder is made.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import shutil
import struct
import sys
import warnings
import weakref
from pathlib import Path
from typing import Any, Mapping

from trainmap.io import atomic
from trainmap.io.contracts import (
    LOG_CSV,
    METRICS_CSV,
    RUN_JSON,
    STEP,
    StepError,
    checkpoint_path,
    checkpoint_steps,
    parse_step,
)
from trainmap.io.runlock import RunLock

__all__ = ["Recorder", "RecorderError", "RUN_KIND"]

#: ``kind`` of a Recorder's run.json.
RUN_KIND = "recorder"
# How many tensor names an error message lists before "...".
_NAMES_SHOWN = 6


class RecorderError(ValueError):
    """A run directory the Recorder may not continue, or a ``record`` call it refuses."""


class Recorder:
    """Writes a run directory of per-step weight statistics (see the module docstring).

    Parameters
    ----------
    directory : the run directory; created when missing, continued when it holds a
        Recorder run of the same seed and options, refused otherwise.
    seed : the run's random seed, stored in run.json (None when unknown).
    include, exclude, svd, exact_max_dim, rank, threads : tensor selection and SVD
        options, as in ``trainmap metrics`` (:func:`trainmap.metrics.engine.checkpoint_metrics`).
    keep_checkpoints : also write ``checkpoints/step{N:08d}.safetensors`` at every record.
    model : a fitted ``model.npz`` (``results/EXP/hmm/model.npz``): after each record the run
        so far is forward-filtered with it (:mod:`trainmap.analysis.live`) and log.csv gains
        ``live_state``, ``live_probability`` and ``live_detour``; entering a detour state of
        the experiment's regression warns once, naming the state and its coefficient.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        seed: int | None = None,
        include: str | None = None,
        exclude: str | None = None,
        svd: str = "auto",
        exact_max_dim: int | None = None,
        rank: int | None = None,
        threads: int | None = None,
        keep_checkpoints: bool = False,
        model: str | os.PathLike | None = None,
    ):
        from trainmap.metrics import engine as metrics

        self._live = None
        self._warned_detour = False
        if model is not None:
            # The one import up a floor (tests/test_layers.py ALLOWED_UPWARD): only when a
            # fitted model is given, the analysis stage's forward filter is loaded.
            from trainmap.analysis.live import LiveMap

            self._live = LiveMap(model)  # a bad model file stops here, before the directory is touched
        self._metrics = metrics
        self.directory = Path(directory)
        self.seed = _check_seed(seed)
        self.options = _resolved_options(include, exclude, svd, exact_max_dim, rank)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise RecorderError(f"threads must be a positive integer or None, not {threads!r}")
        self.threads = threads
        self.keep_checkpoints = bool(keep_checkpoints)
        self._closed = False
        self._session_last: int | None = None
        self._metrics_header: str | None = None
        self._metrics_rows: list[tuple[int, str]] = []  # (step, CSV line with its newline)
        self._log_columns: list[str] = [STEP]
        self._log_rows: list[dict[str, str]] = []  # CSV fields as text, keyed by column
        self._log_lines: list[str] = []  # _log_rows rendered under _log_columns (cached: rows never change)
        self._check_directory()  # before the lock: a refused directory gains no lock file
        self._lock = RunLock(self.directory, purpose=f"trainmap Recorder seed={self.seed}").acquire()
        # A script that never closes its Recorder lets go of the directory when the object goes.
        self._release = weakref.finalize(self, self._lock.release)
        try:
            self._open_directory()
            self._write_run_json("running")
        except BaseException:
            self._release()
            raise

    # -- the public interface -------------------------------------------------------

    def record(self, step: int, weights: Any, /, **scalars: Any) -> None:
        """Record the statistics of ``weights`` and the ``scalars`` at training ``step``.

        ``weights``: a ``torch.nn.Module`` (its ``named_parameters()``, the weights
        ``trainmap train`` saves; buffers such as batch-norm statistics never count), a mapping name ->
        torch tensor or numpy array, or the path of a safetensors file. ``scalars``:
        numbers (Python, numpy or one-element tensors) written to log.csv; a non-finite
        one is written as is, with a warning naming it. Steps must increase within one
        Recorder; the first step of a continued run replaces the rows at or after it.
        """
        if self._closed:
            raise RecorderError(f"{self.directory}: record(step={step}) after the Recorder was closed")
        step = _record_step(self.directory, step)
        if self._session_last is not None and step <= self._session_last:
            raise RecorderError(
                f"{self.directory}: record(step={step}) after step {self._session_last} was recorded; "
                "steps must increase within one Recorder (start a new Recorder to re-record earlier steps)"
            )
        values = self._scalar_fields(step, scalars)
        tensors = _as_tensors(weights)
        self._check_countable(step, tensors)
        with warnings.catch_warnings(record=True) as caught:  # the engine's warnings, said of this record
            warnings.simplefilter("always")
            result = self._metrics.weights_metrics(tensors, **self.options, threads=self.threads)
        for warning in caught:
            warnings.warn(f"{self.directory}: record(step={step}): {warning.message}", warning.category, stacklevel=2)
        row = self._metrics.metrics_frame([step], [result])
        header, line = _csv_header_and_line(row)
        if self._metrics_header is not None and header != self._metrics_header:
            raise RecorderError(
                f"{self.directory / METRICS_CSV}: its columns ({self._metrics_header}) differ from this "
                f"engine's ({header}); record into a new directory"
            )
        if self._session_last is None:
            self._forget_from(step)
        self._session_last = step
        if self.keep_checkpoints:
            _write_checkpoint(checkpoint_path(self.directory, step), tensors)
        self._metrics_header = header
        self._metrics_rows.append((step, line))
        if self._live is not None:
            values.update(self._live_fields(step))
        self._add_log_row(step, values)
        self._write_files(durable=False)

    def close(self, complete: bool = True) -> None:
        """Mark the run complete in run.json and let go of the directory. Later ``record``
        calls are errors. ``complete=False`` only lets go: run.json stays ``"running"``, so a
        restarted script continues the run (what leaving a ``with`` block by an exception does)."""
        if not self._closed:
            self._closed = True
            try:
                if complete:
                    if self._session_last is not None:
                        self._write_files(durable=True)
                    self._write_run_json("complete", durable=True)
            finally:
                self._release()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        # A block left by an exception did not finish the run: run.json stays "running",
        # so the restarted script continues it.
        self.close(complete=exc_type is None)

    @property
    def steps(self) -> list[int]:
        """Steps in metrics.csv, ascending."""
        return [step for step, _ in self._metrics_rows]

    # -- the run directory ----------------------------------------------------------

    def _check_directory(self) -> bool:
        """Refuse a directory that is not empty, new, or this run's; True when it holds this run."""
        directory = self.directory
        if directory.exists() and not directory.is_dir():
            raise RecorderError(f"{directory}: exists and is not a directory")
        run_json = directory / RUN_JSON
        if not run_json.is_file():
            present = sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) if directory.exists() else []
            if present:
                raise RecorderError(
                    f"{directory}: holds {', '.join(present[:_NAMES_SHOWN])} but no run.json of a Recorder run; "
                    "record into an empty or new directory"
                )
            return False
        self._check_same_run(_read_json(run_json))
        return True

    def _open_directory(self) -> None:
        """With the directory's lock held: check again that it holds this run (or nothing),
        and read its rows."""
        if self._check_directory():
            self._read_metrics(self.directory / METRICS_CSV)
            self._read_log(self.directory / LOG_CSV)

    def _check_same_run(self, saved: Mapping[str, Any]) -> None:
        """Refuse a run.json of another run, naming every difference."""
        where = self.directory / RUN_JSON
        kind = saved.get("kind")
        if kind != RUN_KIND:
            what = f"of kind {kind!r}" if kind is not None else "without a 'kind' (a `trainmap train` or other run)"
            raise RecorderError(f"{where}: a run {what}, not a Recorder run; record into another directory")
        mine = self._identity()
        differences = [
            f"{key} {saved.get(key)!r} there, {mine[key]!r} here" for key in mine if saved.get(key) != mine[key]
        ]
        if differences:
            raise RecorderError(
                f"{where}: holds another run ({'; '.join(differences)}); record into another directory"
            )

    def _identity(self) -> dict[str, Any]:
        """What makes two Recorders the same run: run.json keys that must agree."""
        return {
            "seed": self.seed,
            "options": self.options,
            "engine": self._metrics.ENGINE_FINGERPRINT,
            "keep_checkpoints": self.keep_checkpoints,
        }

    def _read_metrics(self, path: Path) -> None:
        """Keep the existing metrics.csv as text lines (no float round trip)."""
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        if not lines:
            return
        self._metrics_header = lines[0].rstrip("\r\n")
        for number, line in enumerate(lines[1:], start=2):
            try:
                self._metrics_rows.append((parse_step(line.split(",", 1)[0], f"{path}, line {number}"), line))
            except StepError as exc:
                raise RecorderError(str(exc)) from None

    def _read_log(self, path: Path) -> None:
        """Keep the existing log.csv as text fields."""
        if not path.is_file():
            return
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            try:
                if reader.fieldnames is None:
                    return
                if reader.fieldnames[0] != STEP:
                    raise RecorderError(f"{path}: first column is {reader.fieldnames[0]!r}, not {STEP!r}")
                self._log_columns = list(reader.fieldnames)
                for row in reader:
                    parse_step(row[STEP], f"{path}, line {reader.line_num}")
                    self._log_rows.append({key: value or "" for key, value in row.items()})
            except StepError as exc:
                raise RecorderError(str(exc)) from None
            except csv.Error as exc:  # a field over the csv module's limit, a NUL byte...
                raise RecorderError(f"{path}, line {reader.line_num + 1}: not a readable log ({exc})") from None
            except UnicodeDecodeError as exc:
                raise RecorderError(f"{path}: not a readable log (not UTF-8 text: {exc})") from None
        self._log_lines = [_csv_line(self._log_columns, row) for row in self._log_rows]

    def _forget_from(self, step: int) -> None:
        """Drop rows and kept checkpoints at ``step`` or later: a restarted script records them again."""
        self._metrics_rows = [(s, line) for s, line in self._metrics_rows if s < step]
        kept = [i for i, row in enumerate(self._log_rows) if int(row[STEP]) < step]
        self._log_rows = [self._log_rows[i] for i in kept]
        self._log_lines = [self._log_lines[i] for i in kept]
        for kept_step in checkpoint_steps(self.directory):
            if kept_step >= step:
                checkpoint_path(self.directory, kept_step).unlink()

    def _live_fields(self, step: int) -> dict[str, str]:
        """The live state of the run so far (log.csv fields), warning once on entering a detour."""
        import io

        import pandas as pd

        from trainmap.io.contracts import LIVE_DETOUR, LIVE_PROBABILITY, LIVE_STATE

        text = self._metrics_header + "\n" + "".join(line for _, line in self._metrics_rows)
        live = self._live.state(pd.read_csv(io.StringIO(text)))
        if live.detour and not self._warned_detour:
            self._warned_detour = True
            coefficient = (f"{live.coefficient:+,.0f} steps" if live.coefficient == live.coefficient
                           else "not identifiable")
            warnings.warn(f"{self.directory}: step {step}: the run entered detour state {live.state} "
                          f"(p = {live.probability:.2f}) of {self._live.path}; its regression coefficient on the "
                          f"convergence step is {coefficient}", RuntimeWarning, stacklevel=3)
        return {LIVE_STATE: str(live.state) if live.state >= 0 else "",
                LIVE_PROBABILITY: repr(live.probability) if live.state >= 0 else "",
                LIVE_DETOUR: str(int(live.detour)) if live.state >= 0 else ""}

    def _add_log_row(self, step: int, values: Mapping[str, str]) -> None:
        new_columns = [name for name in values if name not in self._log_columns]
        self._log_columns.extend(new_columns)
        row = {STEP: str(step), **values}
        self._log_rows.append(row)
        if new_columns:  # earlier rows gain empty fields: render them again
            self._log_lines = [_csv_line(self._log_columns, earlier) for earlier in self._log_rows]
        else:
            self._log_lines.append(_csv_line(self._log_columns, row))

    def _write_files(self, durable: bool) -> None:
        """Rewrite metrics.csv, log.csv and run.json, each atomically (renamed into place).

        At each record they are not flushed to disk (``durable=False``): fsync would cost
        more than the statistics of a small model, and a killed process still never
        leaves a half file. ``close()`` rewrites them durably.
        """
        text = self._metrics_header + "\n" + "".join(line for _, line in self._metrics_rows)
        atomic.write_text(self.directory / METRICS_CSV, text, durable=durable)
        log = _csv_line(self._log_columns, {name: name for name in self._log_columns}) + "".join(self._log_lines)
        atomic.write_text(self.directory / LOG_CSV, log, durable=durable)
        self._write_run_json("running", durable=durable)

    def _write_run_json(self, status: str, durable: bool = True) -> None:
        steps = self.steps
        atomic.write_json(
            self.directory / RUN_JSON,
            {
                "kind": RUN_KIND,
                "status": status,
                "seed": self.seed,
                "steps_recorded": len(steps),
                "first_step": steps[0] if steps else None,
                "last_step": steps[-1] if steps else None,
                "options": self.options,
                "engine": self._metrics.ENGINE_FINGERPRINT,
                "versions": _versions(),
                "keep_checkpoints": self.keep_checkpoints,
            },
            durable=durable,
        )

    # -- checks of the input --------------------------------------------------------

    def _scalar_fields(self, step: int, scalars: Mapping[str, Any]) -> dict[str, str]:
        """``scalars`` as CSV text, warning about non-finite values."""
        fields = {}
        for name, value in scalars.items():
            if name == STEP:
                raise RecorderError(f"record(step={step}): a scalar may not be named {STEP!r} (log.csv's first column)")
            number = _as_number(name, value, step)
            if isinstance(number, float) and not math.isfinite(number):
                warnings.warn(
                    f"{self.directory}: scalar {name}={number} at step {step} is not finite; recorded as {number}",
                    RuntimeWarning,
                    stacklevel=3,
                )
            fields[name] = repr(number) if isinstance(number, float) else str(number)
        return fields

    def _check_countable(self, step: int, tensors: Any) -> None:
        """One clear error when no tensor of ``tensors`` counts under the selection options."""
        entries = _entries(tensors)
        selected = self._metrics.select_tensors(
            entries, include=self.options["include"], exclude=self.options["exclude"]
        )
        if selected:
            return
        if not entries:
            seen = "no tensors at all"
        else:
            shown = ", ".join(f"{name} {list(shape)}" for name, shape in entries[:_NAMES_SHOWN])
            more = f" and {len(entries) - _NAMES_SHOWN} more" if len(entries) > _NAMES_SHOWN else ""
            seen = f"{len(entries)} tensors ({shown}{more})"
        raise RecorderError(
            f"{self.directory}: record(step={step}): no countable tensor in the weights: saw {seen}. "
            "Counted are tensors with >= 2 dimensions and 1-D tensors named '*bias' that match include="
            f"{self.options['include']!r} and not exclude={self.options['exclude']!r}"
        )


# -- plain helpers ------------------------------------------------------------------


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) and not hasattr(seed, "__index__"):
        raise RecorderError(f"seed must be an integer or None, not {seed!r}")
    return int(seed.__index__())


def _record_step(directory: Path, step: Any) -> int:
    """The ``step`` argument of ``record`` as a validated step (:func:`trainmap.io.contracts.parse_step`)."""
    try:
        return parse_step(step, f"{directory}: record(step={step!r})")
    except StepError as exc:
        raise RecorderError(str(exc)) from None


def _resolved_options(include, exclude, svd, exact_max_dim, rank) -> dict[str, Any]:
    """The metric options, validated and with their defaults filled in (what run.json
    records): defaults and bounds are those of ``trainmap metrics``
    (:class:`trainmap.options.MetricsOptions`), the default exclusion the engine's."""
    from trainmap.metrics.engine import DEFAULT_EXCLUDE
    from trainmap.options import MetricsOptions

    defaults = MetricsOptions()
    try:
        chosen = MetricsOptions(
            svd=svd,
            include=include,
            exclude=exclude,
            exact_max_dim=defaults.exact_max_dim if exact_max_dim is None else exact_max_dim,
            rank=defaults.rank if rank is None else rank,
        )
    except ValueError as exc:
        raise RecorderError(f"Recorder: {exc}") from None
    return {
        "include": chosen.include,
        "exclude": DEFAULT_EXCLUDE if chosen.exclude is None else chosen.exclude,
        "svd": chosen.svd,
        "exact_max_dim": chosen.exact_max_dim,
        "rank": chosen.rank,
    }


def _as_number(name: str, value: Any, step: int) -> int | float:
    """A scalar as a Python int or float (numpy and torch scalars unwrapped). Booleans are
    refused, as they are as steps: ``True`` written as 1 would pass for a measurement."""
    if _is_one_element_tensor(value) or _is_numpy_scalar(value):
        value = value.item()
    if isinstance(value, bool):
        raise RecorderError(f"record(step={step}): scalar {name}={value!r} is a boolean, not a number; "
                            f"record it as 0 or 1 (int({name})) if a number is meant")
    if isinstance(value, (int, float)):
        return value
    raise RecorderError(f"record(step={step}): scalar {name}={value!r} is not a number")


def _is_numpy_scalar(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, (numpy.generic, numpy.ndarray)) and value.size == 1


def _is_one_element_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor) and value.numel() == 1


def _as_tensors(weights: Any) -> Any:
    """A path stays a path; a module becomes its parameters by name (as ``weights_metrics``
    reads a module); a mapping stays itself."""
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such safetensors file")
        return path
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(weights, torch.nn.Module):
        return dict(weights.named_parameters())
    if isinstance(weights, Mapping):
        return weights
    raise RecorderError(
        "weights must be a torch.nn.Module, a mapping name -> tensor, or a safetensors file path, "
        f"not {type(weights).__name__}"
    )


def _entries(tensors: Any) -> list[tuple[str, list[int]]]:
    """(name, shape) of every tensor, read from a safetensors header when given a path."""
    if isinstance(tensors, Path):
        return _safetensors_entries(tensors)
    entries = []
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not hasattr(tensor, "shape"):
            raise RecorderError(f"weights: entry {name!r} is not a named tensor ({type(tensor).__name__})")
        entries.append((name, [int(n) for n in tensor.shape]))
    return entries


def _safetensors_entries(path: Path) -> list[tuple[str, list[int]]]:
    """Names and shapes from a safetensors header (8-byte length, then JSON)."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(min(length, 100_000_000)))
        return [(name, list(meta["shape"])) for name, meta in header.items() if name != "__metadata__"]
    except (struct.error, ValueError, KeyError, TypeError, AttributeError):
        raise RecorderError(f"{path}: not a safetensors file (unreadable header)") from None


def _write_checkpoint(path: Path, tensors: Any) -> None:
    """Atomically write the recorded tensors, in their own dtypes, as safetensors."""
    if isinstance(tensors, Path):
        with atomic.atomic_path(path) as tmp:
            shutil.copyfile(tensors, tmp)
        return
    torch = sys.modules.get("torch")
    if torch is not None and any(isinstance(t, torch.Tensor) for t in tensors.values()):
        from safetensors.torch import save

        # clone(): safetensors refuses tensors sharing memory (tied weights, views).
        as_torch = {name: t if isinstance(t, torch.Tensor) else torch.from_numpy(t) for name, t in tensors.items()}
        host = {name: t.detach().to("cpu").contiguous().clone() for name, t in as_torch.items()}
        atomic.write_bytes(path, save(host))
        return
    import numpy as np
    from safetensors.numpy import save

    atomic.write_bytes(path, save({name: np.ascontiguousarray(t) for name, t in tensors.items()}))


def _csv_header_and_line(frame) -> tuple[str, str]:
    """Header and the one data line of a one-row frame, exactly as ``to_csv`` writes them."""
    header, line = frame.to_csv(index=False, lineterminator="\n").splitlines(keepends=True)
    return header.rstrip("\n"), line


def _csv_line(columns: list[str], row: Mapping[str, str]) -> str:
    """One CSV line of ``row``'s fields in ``columns`` order (missing ones empty), quoted as needed."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([row.get(column, "") for column in columns])
    return buffer.getvalue()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecorderError(f"{path}: unreadable run.json ({exc})") from None
    if not isinstance(record, dict):
        raise RecorderError(f"{path}: run.json is not a JSON object")
    return record


def _versions() -> dict[str, str]:
    """Versions of what produced the numbers (torch only when the script loaded it)."""
    import numpy as np

    from trainmap import __version__

    versions = {"trainmap": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for module in ("torch", "transformers", "lightning"):
        if module in sys.modules:
            versions[module] = getattr(sys.modules[module], "__version__", "unknown")
    return versions

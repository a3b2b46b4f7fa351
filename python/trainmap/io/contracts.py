"""File contracts: where every file of a run and of an experiment lives, how checkpoint files
are named, how a training step is read, and the names of the columns stages exchange.

This is the one place these names are written down (docs/design.md "Shape of the system");
training, the metrics engine's Python side, the Recorder, the analysis and the workflow all
import them from here. The module is plain data and small functions: importing it costs
nothing (no numpy, no torch, no engine).

Layout::

    results/{exp}/runs/{run}/checkpoints/step{N:08d}.safetensors
    results/{exp}/runs/{run}/metrics.csv, log.csv, run.json
        (read in place: also integrity.json, metrics_chunks/{i}.json)
    results/{exp}/logs/{job}.log, results/logs/tables.log, results/summary.md
    results/{exp}/hmm/selection.csv, model.npz, states.csv
    results/{exp}/map/edges.csv, training_map.svg, training_map.png, training_map.html
    results/{exp}/regression.json (:class:`RegressionRecord`), coefficients.csv, convergence.csv, baselines.csv, early.csv
    results/{exp}/figures/early.{png,svg}
    results/{exp}/figures/{model_selection,convergence_histogram,trajectories}.{png,svg}
    results/table{1,2,4}.{csv,md}
    results/compare/{name}/selection.csv, model.npz, states.csv, table_compare.{csv,md},
        occupancy.csv, transitions.csv, dissimilarity.csv, convergence.csv, coefficients.csv,
        regression.json, training_map.{svg,png}, occupancy.{png,svg}

A training step is a non-negative integer that fits in int64. :func:`parse_step` is the
only function that turns text or numbers into a step; it rejects anything else (negative,
fractional, ``1e30``, beyond int64) with a message naming the file, never truncating.
:func:`name_step` is the only one that reads a step from a file or directory name (with a
table of patterns per kind of name: ours, series' step directories and files, torch files).
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "STEP",
    "EPOCH",
    "TRAIN_LOSS",
    "TRAIN_ACCURACY",
    "EVAL_LOSS",
    "EVAL_ACCURACY",
    "LOG_COLUMNS",
    "PATH",
    "SVD",
    "CONTENT_HASH",
    "RUN",
    "STATE",
    "STATES_COLUMNS",
    "METRICS_CSV",
    "LOG_CSV",
    "RUN_JSON",
    "CHECKPOINTS_DIR",
    "CHECKPOINT_SUFFIX",
    "INTEGRITY_JSON",
    "CHUNKS_DIR",
    "LOGS_DIR",
    "MAX_STEP",
    "StepError",
    "parse_step",
    "parse_steps",
    "CHECKPOINT_NAMES",
    "TRAILING_DIGITS",
    "STEP_DIR_NAMES",
    "STEP_FILE_NAMES",
    "TORCH_FILE_NAMES",
    "name_step",
    "checkpoint_name",
    "checkpoint_path",
    "checkpoint_step",
    "checkpoint_steps",
    "RunPaths",
    "ExperimentPaths",
    "MAP_SVG",
    "MAP_HTML",
    "COEFFICIENTS_CSV",
    "MAP_PNG",
    "FIGURES",
    "TABLES",
    "SUMMARY_MD",
    "table_paths",
    "summary_path",
    "results_log",
    "CONDITION",
    "CONDITION_SEP",
    "ComparePaths",
    "REGRESSION_OPTIONAL",
    "RegressionFileError",
    "RegressionRecord",
    "CompareRecord",
]

# --- columns -----------------------------------------------------------------------------

#: The training step: first column of metrics.csv, log.csv and states.csv.
STEP = "step"
EPOCH = "epoch"
TRAIN_LOSS = "train_loss"
TRAIN_ACCURACY = "train_accuracy"
EVAL_LOSS = "eval_loss"
EVAL_ACCURACY = "eval_accuracy"
#: Columns of a training run's log.csv, in order (other sources may log a subset, or more).
LOG_COLUMNS: tuple[str, ...] = (STEP, EPOCH, TRAIN_LOSS, TRAIN_ACCURACY, EVAL_LOSS, EVAL_ACCURACY)

#: metrics.csv: the checkpoint file (when computed from files), how singular values were
#: computed, and the hash of the counted tensors; the 14 statistics are
#: ``trainmap.metrics.engine.METRIC_NAMES`` (defined by the engine).
PATH = "path"
SVD = "svd"
CONTENT_HASH = "content_hash"

#: states.csv: one row per checkpoint of every decoded run.
RUN = "run"
STATE = "state"
STATES_COLUMNS: tuple[str, ...] = (RUN, STEP, STATE)

# --- run directory -----------------------------------------------------------------------

METRICS_CSV = "metrics.csv"
LOG_CSV = "log.csv"
RUN_JSON = "run.json"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_SUFFIX = ".safetensors"
#: The integrity report of a run read in place, beside its metrics.csv (docs/design.md).
INTEGRITY_JSON = "integrity.json"
#: Where the series_metrics_chunk jobs of a run read in place write their chunks (``{i}.json``).
CHUNKS_DIR = "metrics_chunks"
#: Each stage's log of a workflow job, under ``logs/`` of its experiment, comparison or results.
LOGS_DIR = "logs"

# --- steps -------------------------------------------------------------------------------

#: Largest step: the largest int64.
MAX_STEP = 2**63 - 1
# Floats are integers exactly only below 2**53; a larger float step may already be rounded.
_EXACT_FLOAT = 2**53
_DIGITS = re.compile(r"^\s*\+?(\d+)\s*$")


class StepError(ValueError):
    """A value that is not a valid training step; the message names where it came from."""


def _where(source: str | os.PathLike | None) -> str:
    return f"{os.fspath(source)}: " if source is not None else ""


def parse_step(value: Any, source: str | os.PathLike | None = None) -> int:
    """``value`` as a training step: a non-negative integer within int64.

    Accepts Python/numpy integers, digit strings (``"1200"``, ``"00001200"``) and floats
    that are exactly integers below 2**53 (CSV readers turn integer columns with gaps into
    floats). Rejects booleans, negative numbers, fractions, NaN/inf, floats from 2**53 up
    (``1e30``: no longer exact) and integers beyond int64, raising :class:`StepError`
    whose message starts with ``source`` (a file name, or "file, row 3").
    """
    where = _where(source)
    if isinstance(value, bool) or value is None:
        raise StepError(f"{where}{value!r} is not a training step (a non-negative integer)")
    if isinstance(value, numbers.Integral):
        step = int(value)
    elif isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number) or number != math.floor(number):
            raise StepError(f"{where}{value!r} is not a training step (a non-negative integer)")
        if abs(number) >= _EXACT_FLOAT:
            raise StepError(f"{where}step {value!r} is a float too large to be an exact integer; "
                            "write steps as integers")
        step = int(number)
    elif isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        match = _DIGITS.match(text)
        if match is None:
            raise StepError(f"{where}{text!r} is not a training step (a non-negative integer)")
        step = int(match.group(1))
    else:
        raise StepError(f"{where}{value!r} ({type(value).__name__}) is not a training step")
    if step < 0:
        raise StepError(f"{where}step {step} is negative")
    if step > MAX_STEP:
        raise StepError(f"{where}step {step} does not fit in a 64-bit integer")
    return step


def parse_steps(values: Iterable[Any], source: str | os.PathLike | None = None) -> list[int]:
    """Every value as a step (:func:`parse_step`); the error names ``source`` and the row
    (1-based, not counting a header)."""
    out = []
    for row, value in enumerate(values, 1):
        try:
            out.append(parse_step(value))
        except StepError as exc:
            where = f"{os.fspath(source)}, row {row}" if source is not None else f"row {row}"
            raise StepError(f"{where}: {exc}") from None
    return out


# --- steps in file and directory names: one recogniser, a table of patterns per kind of name ---
#
# Each table is tried in order; the first pattern that matches anywhere counts, with its last
# match (``multiberts-seed_1-step_2000k`` → the ``step_2000k``); group 1 is the number and
# group 2, when not empty, a ``k`` (thousands). :func:`name_step` is the one function that
# reads a step from a name; every reader of names passes it one of these tables.

#: Our own checkpoint files: ``step{N:08d}.safetensors`` exactly (:func:`checkpoint_name`).
CHECKPOINT_NAMES = ((re.compile(r"^step(\d+)()" + re.escape(CHECKPOINT_SUFFIX) + "$"), "step"),)
#: A checkpoint file's stem ending in digits (``model_500`` → 500): ``trainmap metrics`` on
#: any directory of ``*.safetensors``.
TRAILING_DIGITS = ((re.compile(r"(\d+)()$"), "step"),)
#: Step directories of a series (``step_20k``, ``step143000``, ``checkpoint-500``, ``1200``).
STEP_DIR_NAMES = (
    (re.compile(r"step[_-]?(\d+)(k?)(?![0-9])", re.IGNORECASE), "step"),
    (re.compile(r"checkpoint[_-](\d+)()(?![0-9])", re.IGNORECASE), "step"),
    (re.compile(r"^(\d+)()$"), "step"),
)
#: ``step*.safetensors`` files of a series (``step1200.safetensors``, ``step_20k.safetensors``).
STEP_FILE_NAMES = ((re.compile(r"^step[_-]?(\d+)(k?)\.safetensors$", re.IGNORECASE), "step"),)
#: Torch files' stems (without ``.pt``/``.pth``/``.ckpt``/``.tar``), by preference, with the
#: unit they count: model_step=1000, epoch=3-step=400, step_20k, ckpt_400, checkpoint-7,
#: iter_300, 1200, then epoch_12 / epoch=12 (epochs).
TORCH_FILE_NAMES = (
    (re.compile(r"step[=_-]?(\d+)(k?)(?![0-9])", re.IGNORECASE), "step"),
    (re.compile(r"(?:ckpt|checkpoint|iter|iteration)[=_-]?(\d+)()(?![0-9])", re.IGNORECASE), "step"),
    (re.compile(r"^(\d+)()$"), "step"),
    (re.compile(r"epoch[=_-]?(\d+)()(?![0-9])", re.IGNORECASE), "epoch"),
)


def name_step(name: str, patterns: Iterable[tuple[re.Pattern, str]],
              source: str | os.PathLike | None = None) -> tuple[int, str] | None:
    """``(step, unit)`` the name stands for under ``patterns`` (one of the tables above), or
    None when none matches. The number goes through :func:`parse_step`, so one beyond int64
    raises :class:`StepError` naming ``source`` (default: ``name``)."""
    for pattern, unit in patterns:
        matches = list(pattern.finditer(name))
        if matches:
            number, thousands = matches[-1].groups()
            return parse_step(int(number) * (1000 if thousands else 1), name if source is None else source), unit
    return None


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint of ``step``: ``step{step:08d}.safetensors``."""
    return f"step{parse_step(step):08d}{CHECKPOINT_SUFFIX}"


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """``run_dir/checkpoints/step{step:08d}.safetensors``."""
    return Path(run_dir) / CHECKPOINTS_DIR / checkpoint_name(step)


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """Training step a checkpoint file's name carries: the trailing integer of its stem
    (``step00001200.safetensors`` → 1200, ``model_500.safetensors`` → 500), or None when
    the stem does not end in digits. A number beyond int64 raises :class:`StepError`
    naming the file."""
    found = name_step(Path(path).stem, TRAILING_DIGITS, path)
    return found[0] if found else None


def checkpoint_steps(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the files named like :func:`checkpoint_name` in ``run_dir/checkpoints``,
    ascending (other files, e.g. temporaries of an interrupted write, are ignored)."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    steps = []
    for path in folder.iterdir():
        found = name_step(path.name, CHECKPOINT_NAMES, path)
        if found is not None:
            steps.append(found[0])
    return sorted(steps)


# --- run and experiment paths ------------------------------------------------------------

@dataclass(frozen=True)
class RunPaths:
    """The files of one run directory."""

    root: Path

    @property
    def metrics_csv(self) -> Path:
        return self.root / METRICS_CSV

    @property
    def log_csv(self) -> Path:
        return self.root / LOG_CSV

    @property
    def run_json(self) -> Path:
        return self.root / RUN_JSON

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    def checkpoint(self, step: int) -> Path:
        return checkpoint_path(self.root, step)

    @property
    def integrity_json(self) -> Path:
        return self.root / INTEGRITY_JSON

    def metrics_chunk(self, index: int | str) -> Path:
        """The chunk ``index`` of a chunked metrics job: ``metrics_chunks/{index}.json``."""
        return self.root / CHUNKS_DIR / f"{index}.json"


#: File names of the training map drawing (in ``map/``).
MAP_SVG = "training_map.svg"
MAP_PNG = "training_map.png"
MAP_HTML = "training_map.html"
COEFFICIENTS_CSV = "coefficients.csv"
#: Columns the Recorder adds to log.csv when given a fitted model (trainmap.analysis.live).
LIVE_STATE = "live_state"
LIVE_PROBABILITY = "live_probability"
LIVE_DETOUR = "live_detour"
#: Figures of the figures stage (each as .png and .svg in ``figures/``).
FIGURES: tuple[str, ...] = ("model_selection", "convergence_histogram", "trajectories")
#: Tables of the tables stage (each as .csv and .md in the results directory).
TABLES: tuple[int, ...] = (1, 2, 4)
#: The per-experiment summary written beside the tables (and printed when a workflow ends).
SUMMARY_MD = "summary.md"


@dataclass(frozen=True)
class ExperimentPaths:
    """Every file of one experiment under ``results/{name}``.

    ``ExperimentPaths("{exp}")`` gives the Snakemake patterns (``results/{exp}/hmm/model.npz``).
    """

    name: str
    results: Path = Path("results")

    @classmethod
    def at(cls, directory: str | os.PathLike) -> "ExperimentPaths":
        """The paths of the experiment whose directory is ``directory`` (``results/{exp}``)."""
        directory = Path(directory)
        return cls(directory.name, directory.parent)

    @property
    def root(self) -> Path:
        return Path(self.results) / self.name

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run(self, run: str) -> RunPaths:
        return RunPaths(self.runs_dir / str(run))

    @property
    def sweeps_dir(self) -> Path:
        return self.root / "sweeps"

    def sweep_group(self, runs: "Iterable[str]") -> Path:
        """The marker of one seed-sweep job (config ``train: {seed_batch: N}``), written when
        every run of the group has ended: ``sweeps/{first}-{last}.json`` for runs
        first..last in order, else ``sweeps/{first}-{last}-{digest}.json``."""
        runs = [str(r) for r in runs]
        name = f"{runs[0]}-{runs[-1]}"
        if not all(r.isdigit() for r in runs) or [int(r) for r in runs] != list(range(int(runs[0]), int(runs[-1]) + 1)):
            import hashlib

            name += "-" + hashlib.sha256(",".join(runs).encode()).hexdigest()[:10]
        return self.sweep_marker(name)

    def sweep_marker(self, group: str) -> Path:
        """``sweeps/{group}.json`` (:meth:`sweep_group` names the group)."""
        return self.sweeps_dir / f"{group}.json"

    @property
    def hmm_dir(self) -> Path:
        return self.root / "hmm"

    @property
    def selection_csv(self) -> Path:
        return self.hmm_dir / "selection.csv"

    @property
    def model_npz(self) -> Path:
        return self.hmm_dir / "model.npz"

    @property
    def states_csv(self) -> Path:
        return self.hmm_dir / "states.csv"

    @property
    def map_dir(self) -> Path:
        return self.root / "map"

    @property
    def edges_csv(self) -> Path:
        return self.map_dir / "edges.csv"

    @property
    def map_svg(self) -> Path:
        return self.map_dir / MAP_SVG

    @property
    def map_png(self) -> Path:
        return self.map_dir / MAP_PNG

    @property
    def map_html(self) -> Path:
        """The interactive training map (one self-contained page)."""
        return self.map_dir / MAP_HTML

    @property
    def regression_json(self) -> Path:
        return self.root / "regression.json"

    @property
    def coefficients_csv(self) -> Path:
        return self.root / COEFFICIENTS_CSV

    @property
    def convergence_csv(self) -> Path:
        return self.root / "convergence.csv"

    @property
    def baselines_csv(self) -> Path:
        return self.root / "baselines.csv"

    @property
    def early_csv(self) -> Path:
        """How early the map knows: ``percent``, ``n_runs``, ``n_converged``,
        ``mean_checkpoints``, ``r2``, ``r2_loo``, ``concordance`` (one row per prefix)."""
        return self.root / "early.csv"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    def figure(self, name: str, ext: str) -> Path:
        return self.figures_dir / f"{name}.{ext}"

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS_DIR

    def log(self, name: str) -> Path:
        """The log of a workflow job: ``logs/{name}.log`` (``name`` may hold a folder: ``train/{run}``)."""
        return self.logs_dir / f"{name}.log"


def table_paths(results: str | os.PathLike = "results") -> list[Path]:
    """``results/table{1,2,4}.{csv,md}``."""
    return [Path(results) / f"table{n}.{ext}" for n in TABLES for ext in ("csv", "md")]


def summary_path(results: str | os.PathLike = "results") -> Path:
    """``results/summary.md``."""
    return Path(results) / SUMMARY_MD


def results_log(name: str, results: str | os.PathLike = "results") -> Path:
    """The log of a workflow job across experiments (the tables): ``results/logs/{name}.log``."""
    return Path(results) / LOGS_DIR / f"{name}.log"


# --- comparisons of experiments (config ``compare:``) ---------------------------------------

#: Column naming the condition (experiment) of a run in a comparison's files.
CONDITION = "condition"
#: A run of a comparison is named ``{experiment}{CONDITION_SEP}{run}`` (e.g. ``parities/3``).
CONDITION_SEP = "/"


@dataclass(frozen=True)
class ComparePaths:
    """Every file of one comparison under ``results/compare/{name}`` (one HMM fitted on the
    runs of several experiments; :mod:`trainmap.analysis.compare`).

    ``ComparePaths("{cmp}")`` gives the Snakemake patterns."""

    name: str
    results: Path = Path("results")

    @classmethod
    def at(cls, directory: str | os.PathLike) -> "ComparePaths":
        """The paths of the comparison whose directory is ``directory`` (``results/compare/{name}``)."""
        directory = Path(directory)
        return cls(directory.name, directory.parent.parent)

    @property
    def root(self) -> Path:
        return Path(self.results) / "compare" / self.name

    @property
    def selection_csv(self) -> Path:
        return self.root / "selection.csv"

    @property
    def model_npz(self) -> Path:
        return self.root / "model.npz"

    @property
    def states_csv(self) -> Path:
        """``condition``, ``run`` (prefixed), ``step``, ``state``."""
        return self.root / "states.csv"

    @property
    def table_csv(self) -> Path:
        return self.root / "table_compare.csv"

    @property
    def table_md(self) -> Path:
        return self.root / "table_compare.md"

    @property
    def occupancy_csv(self) -> Path:
        """Per condition and state: ``runs_visiting``, ``n_runs``, ``mean_occupancy``, ``exclusive``."""
        return self.root / "occupancy.csv"

    @property
    def transitions_csv(self) -> Path:
        """Per condition and edge: ``source``, ``target``, ``n_runs``, ``n_runs_total``, ``n_transitions``."""
        return self.root / "transitions.csv"

    @property
    def dissimilarity_csv(self) -> Path:
        """``condition_a``, ``condition_b``, ``dissimilarity`` (within a condition when a = b)."""
        return self.root / "dissimilarity.csv"

    @property
    def convergence_csv(self) -> Path:
        return self.root / "convergence.csv"

    @property
    def coefficients_csv(self) -> Path:
        return self.root / COEFFICIENTS_CSV

    @property
    def regression_json(self) -> Path:
        return self.root / "regression.json"

    @property
    def map_svg(self) -> Path:
        return self.root / MAP_SVG

    @property
    def map_png(self) -> Path:
        return self.root / MAP_PNG

    @property
    def map_html(self) -> Path:
        """The interactive joint map (one offline page)."""
        return self.root / MAP_HTML

    def occupancy_figure(self, ext: str) -> Path:
        return self.root / f"occupancy.{ext}"

    @property
    def early_csv(self) -> Path:
        """Per prefix (``percent``) and condition: ``n_runs``, ``dissimilarity_within``,
        ``occupancy_shift``, ``rank``, ``convergence_sd``, ``n_censored``."""
        return self.root / "early.csv"

    def early_figure(self, ext: str) -> Path:
        return self.root / f"early.{ext}"

    @property
    def outputs(self) -> list[Path]:
        """Every file the ``compare`` stage writes (not the selection's two)."""
        return [self.states_csv, self.table_csv, self.table_md, self.occupancy_csv, self.transitions_csv,
                self.dissimilarity_csv, self.convergence_csv, self.coefficients_csv, self.regression_json,
                self.map_svg, self.map_png, self.map_html, self.occupancy_figure("png"), self.occupancy_figure("svg"),
                self.early_csv, self.early_figure("png"), self.early_figure("svg")]

    @property
    def report_files(self) -> list[Path]:
        """The outputs shown in ``snakemake --report`` (category comparisons): the table, the
        joint map and the two figures."""
        return [self.table_csv, self.map_svg, self.occupancy_figure("svg"), self.early_figure("svg")]

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS_DIR

    def log(self, name: str) -> Path:
        """The log of a workflow job: ``logs/{name}.log``."""
        return self.logs_dir / f"{name}.log"


# --- regression.json (written by ``regress``, read by tables, summary, map and live) --------

# Every other key of RegressionRecord has been in every regression.json since the convergence
# criterion became its own object (2026-11-23): a file without one is refused, naming the
# file and the keys. Keys of still older files (``never_converged``) are ignored.

#: Keys added with the Cox model and the covariance search (2026-12-04): a file written
#: before lacks them, and they read as None (shown as "?" or empty, as before).
REGRESSION_OPTIONAL: tuple[str, ...] = (
    "n_converged", "n_censored", "censored_runs", "cox", "concordance", "checkpoints_per_run", "hmm")


class RegressionFileError(ValueError):
    """A regression.json that is not what ``regress`` writes; the message names the file."""


def _number(value, key, source, kind):
    """``kind(value)`` for a JSON value (None stays None, then read as NaN for floats), or
    :class:`RegressionFileError` naming the file and key."""
    if value is None:
        return float("nan") if kind is float else None
    if isinstance(value, (dict, list)) or (kind is not bool and isinstance(value, (bool, str))):
        ok = False
    elif kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    else:
        ok = isinstance(value, (int, float))
    if not ok:
        expected = {int: "an integer", float: "a number", bool: "true or false"}[kind]
        raise RegressionFileError(f"{_where(source)}key {key!r} must be {expected}, found {value!r}")
    return kind(value)


def _of(kind):
    def check(value, key, source):
        if value is None or (kind in (dict, list) and isinstance(value, kind)) or (kind is str and isinstance(value, str)):
            return value
        expected = {dict: "an object", list: "a list", str: "a string"}[kind]
        raise RegressionFileError(f"{_where(source)}key {key!r} must be {expected}, found {value!r}")
    return check


def _num(kind):
    return lambda value, key, source: _number(value, key, source, kind)


class _JsonRecord:
    """A JSON file's record as a frozen dataclass: its fields are the file's keys, in order;
    ``_KINDS`` checks each key's value; ``_OPTIONAL`` names the keys older files lack."""

    _WHAT = "JSON file"
    _WRITER = "the stage that writes it"
    _OPTIONAL: tuple[str, ...] = ()
    _KINDS: dict = {}

    def to_dict(self) -> dict:
        """The file's JSON object (keys in order)."""
        from dataclasses import fields

        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def _values(cls, data: dict, source) -> dict:
        from dataclasses import fields

        values, missing = {}, []
        for f in fields(cls):
            if f.name not in data:
                if f.name in cls._OPTIONAL:
                    values[f.name] = None
                else:
                    missing.append(f.name)
                continue
            values[f.name] = cls._KINDS[f.name](data[f.name], f.name, source)
        if missing:
            raise RegressionFileError(f"{_where(source)}missing key(s) {', '.join(missing)} "
                                      f"(written by an older trainmap? rerun {cls._WRITER})")
        return values

    @classmethod
    def from_dict(cls, data: dict, source: str | os.PathLike | None = None):
        """The record of the file's JSON object; errors name ``source``."""
        return cls(**cls._values(data, source))

    @classmethod
    def read(cls, path: str | os.PathLike):
        """Read ``path`` through the file guard (a missing file: FileNotFoundError)."""
        from trainmap.io.fileguard import InputFileError, read_json_object

        try:
            data = read_json_object(path, what=cls._WHAT)
        except InputFileError as exc:
            raise RegressionFileError(str(exc)) from None
        return cls.from_dict(data, path)

    def write(self, path: str | os.PathLike) -> None:
        """Write the record to ``path`` atomically (NaN as null)."""
        from trainmap.io import atomic

        atomic.write_json(path, self.to_dict())


@dataclass(frozen=True)
class RegressionRecord(_JsonRecord):
    """regression.json, the one owner of its keys: what ``regress`` writes (convergence on
    state occupancy, the Cox model, dissimilarity, forking, per-run convergence) and what
    tables, the summary, the training map and the Recorder's live state read.

    Fields are in the file's key order; :meth:`write` writes them atomically (NaN as null)
    and :meth:`read` reads a file through the file guard, with one
    :class:`RegressionFileError` naming the file for a wrong type or missing keys (except
    :data:`REGRESSION_OPTIONAL`, which read as None). Null numbers read as NaN.
    """

    experiment: str | None
    convergence: dict  # column, direction, threshold, text
    n_runs: int
    n_runs_regression: int
    n_converged: int | None
    n_censored: int | None
    censored_runs: list | None
    n_states: int
    design_states: list
    unvisited_states: list
    r2: float
    r2_adjusted: float
    r2_loo: float
    p_value: float
    f_statistic: float
    df_model: int
    df_resid: int
    intercept: float
    detour_states: list
    parametrisation: str
    cox: dict | None
    concordance: float | None
    dissimilarity: float
    forking: bool
    checkpoints_per_run: dict | None  # min, median, max
    hmm: dict | None  # covariance, folds, fits, failed_fits, failure_reasons, excluded_runs
    notes: list
    runs: list  # {run, convergence_step, converged, fitted, occupancy}

    @property
    def criterion_text(self) -> str:
        """The convergence criterion as text (``eval_accuracy>0.9``)."""
        return str(self.convergence.get("text", ""))

    @classmethod
    def from_dict(cls, data: dict, source: str | os.PathLike | None = None) -> "RegressionRecord":
        """The record of a regression.json object; errors name ``source``."""
        values = cls._values(data, source)
        if not isinstance(values["convergence"], dict) or not isinstance(values["convergence"].get("text"), str):
            raise RegressionFileError(f"{_where(source)}key 'convergence' must be an object with a 'text'")
        for row in values["runs"]:
            if not isinstance(row, dict) or not {"run", "convergence_step", "converged"} <= set(row):
                raise RegressionFileError(f"{_where(source)}each of 'runs' must be an object with run, "
                                          f"convergence_step and converged, found {row!r}")
        for key in ("detour_states", "design_states", "unvisited_states"):
            values[key] = [_number(s, key, source, int) for s in values[key]]
        return cls(**values)


_REGRESSION_KINDS = {
    "experiment": _of(str), "convergence": _of(dict), "n_runs": _num(int), "n_runs_regression": _num(int),
    "n_converged": _num(int), "n_censored": _num(int), "censored_runs": _of(list), "n_states": _num(int),
    "design_states": _of(list), "unvisited_states": _of(list), "r2": _num(float), "r2_adjusted": _num(float),
    "r2_loo": _num(float), "p_value": _num(float), "f_statistic": _num(float), "df_model": _num(int),
    "df_resid": _num(int), "intercept": _num(float), "detour_states": _of(list), "parametrisation": _of(str),
    "cox": _of(dict), "concordance": _num(float), "dissimilarity": _num(float), "forking": _num(bool),
    "checkpoints_per_run": _of(dict), "hmm": _of(dict), "notes": _of(list), "runs": _of(list),
}
RegressionRecord._WHAT, RegressionRecord._WRITER = "regression.json", "regress"
RegressionRecord._OPTIONAL = REGRESSION_OPTIONAL
RegressionRecord._KINDS = _REGRESSION_KINDS


@dataclass(frozen=True)
class CompareRecord(_JsonRecord):
    """A comparison's regression.json (``results/compare/{cmp}/``, :class:`ComparePaths`):
    written by ``trainmap compare``, read by its table_compare.md. Convergence on state
    occupancy with the condition as covariate (:class:`RegressionRecord`'s regression
    fields), each condition's runs and criterion, the covariates and states, dissimilarity."""

    comparison: str
    conditions: dict  # condition -> its runs (``{condition}/{run}``)
    convergence: dict  # condition -> its criterion as text
    n_states: int
    n_runs: int
    design_states: list
    unvisited_states: list
    r2: float
    r2_adjusted: float
    r2_loo: float
    p_value: float
    f_statistic: float
    df_model: int
    df_resid: int
    intercept: float
    detour_states: list
    parametrisation: str
    covariates: list  # {covariate, coefficient, std_error, t_value, p_value, identifiable, note...}
    states: list  # {state, coefficient, p_value, identifiable, note}
    dissimilarity: list  # {condition_a, condition_b, dissimilarity}
    notes: list
    excluded_runs: list


CompareRecord._WHAT, CompareRecord._WRITER = "regression.json", "compare"
CompareRecord._KINDS = {
    "comparison": _of(str), "conditions": _of(dict), "convergence": _of(dict), "n_states": _num(int),
    "n_runs": _num(int), "design_states": _of(list), "unvisited_states": _of(list), "r2": _num(float),
    "r2_adjusted": _num(float), "r2_loo": _num(float), "p_value": _num(float), "f_statistic": _num(float),
    "df_model": _num(int), "df_resid": _num(int), "intercept": _num(float), "detour_states": _of(list),
    "parametrisation": _of(str), "covariates": _of(list), "states": _of(list), "dissimilarity": _of(list),
    "notes": _of(list), "excluded_runs": _of(list),
}

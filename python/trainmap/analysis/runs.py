"""Loading run directories and turning their metrics into z-scored trajectories.

A run directory holds ``metrics.csv`` (one row per checkpoint: ``path``, ``step`` and the
14 statistics of :data:`trainmap.metrics.engine.METRIC_NAMES`), ``log.csv`` (``step``, ``epoch``,
``train_loss``, ``train_accuracy``, ``eval_loss``, ``eval_accuracy``; imported series may
have only some of these) and ``run.json`` (``{"seed": int, "status": ..., ...}``). A run is
identified by its seed (as a string), or by its directory name when ``run.json`` has none.

:func:`prepare_trajectories` implements step 1 of docs/design.md "HMM and training map": every
run's columns are z-scored with that run's own mean and standard deviation over its first
``zscore_first_n`` checkpoints; columns that carry no information across the experiment
are dropped and runs that cannot be used are left out, each with a warning naming them.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from trainmap.analysis.errors import InsufficientRunsError, RunFormatError
from trainmap.io.contracts import METRICS_CSV, STEP, RunPaths, StepError, parse_steps
from trainmap.options import FitOptions
from trainmap.io.fileguard import input_file

__all__ = [
    "Run",
    "Trajectories",
    "load_run",
    "load_runs",
    "zscore",
    "prepare_trajectories",
    "metric_names",
    "grid_differences",
    "GRID_RULE",
]

#: How runs of different lengths or step grids enter the analysis (docs/analysis.md).
GRID_RULE = (
    "every run enters the HMM with all its checkpoints (z-scored over its own first zscore_first_n) and the "
    "regression with its occupancy, the share of its checkpoints in each state; a run recorded more densely "
    "weighs more in fitting the HMM but the same in the regression; a run that stops early and never meets the "
    "criterion is censored at its own last step")
# Share by which a run's length, record count or step spacing may differ from the median run's.
_GRID_TOLERANCE = 0.25



def metric_names() -> tuple[str, ...]:
    """The 14 statistic columns of ``metrics.csv`` (:data:`trainmap.metrics.engine.METRIC_NAMES`)."""
    from trainmap.metrics.engine import METRIC_NAMES

    return tuple(METRIC_NAMES)


@dataclass(frozen=True)
class Run:
    """One training run as read from its directory.

    Attributes
    ----------
    run_id : the seed from ``run.json`` as a string (directory name when absent).
    path : the run directory.
    metrics : ``metrics.csv`` ordered by step (``step`` is an integer column).
    log : ``log.csv`` ordered by step, or None when the directory has none.
    info : the parsed ``run.json`` (empty when absent).
    """

    run_id: str
    path: Path
    metrics: pd.DataFrame
    log: pd.DataFrame | None
    info: dict = field(default_factory=dict)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RunFormatError(f"{path}: not a readable CSV file ({exc})") from exc


def _ordered_by_step(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``frame`` sorted by a validated integer ``step`` column (:func:`contracts.parse_steps`:
    non-negative int64, never truncated); a missing column, bad or repeated step names ``path``."""
    if STEP not in frame.columns:
        raise RunFormatError(f"{path}: no {STEP!r} column")
    try:
        steps = parse_steps(frame[STEP].tolist(), path)
    except StepError as exc:
        raise RunFormatError(str(exc)) from None
    frame = frame.assign(**{STEP: np.array(steps, dtype=np.int64)})
    if not frame[STEP].is_monotonic_increasing:
        frame = frame.sort_values(STEP, kind="stable")
    if frame[STEP].duplicated().any():
        dup = int(frame.loc[frame[STEP].duplicated(), STEP].iloc[0])
        raise RunFormatError(f"{path}: step {dup} appears more than once")
    return frame.reset_index(drop=True)


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read one run directory (``metrics.csv`` required; ``log.csv``, ``run.json`` optional).

    Raises :class:`RunFormatError` when ``metrics.csv`` is missing or unreadable, a step is
    missing or repeated, or ``run.json`` is not valid JSON.
    """
    run_dir = Path(run_dir)
    paths = RunPaths(run_dir)
    metrics_path = paths.metrics_csv
    if input_file(metrics_path, required=False, what=METRICS_CSV) is None:
        raise RunFormatError(f"{run_dir}: no {METRICS_CSV} in this run directory")
    metrics = _ordered_by_step(_read_csv(metrics_path), metrics_path)
    log_path = paths.log_csv
    log = _ordered_by_step(_read_csv(log_path), log_path) if input_file(log_path, required=False) else None
    info: dict = {}
    info_path = paths.run_json
    if input_file(info_path, required=False, what="run.json"):
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunFormatError(f"{info_path}: not valid JSON ({exc})") from exc
        if not isinstance(info, dict):
            raise RunFormatError(f"{info_path}: expected a JSON object, found a {type(info).__name__}")
    seed = info.get("seed")
    run_id = str(seed) if seed is not None else run_dir.resolve().name
    return Run(run_id=run_id, path=run_dir, metrics=metrics, log=log, info=info)


def load_runs(run_dirs: Iterable[str | os.PathLike]) -> list[Run]:
    """Read several run directories; run identities must be distinct.

    Raises :class:`RunFormatError` naming both directories when two runs share an id.
    """
    runs: list[Run] = []
    seen: dict[str, Path] = {}
    for run_dir in run_dirs:
        run = load_run(run_dir)
        if run.run_id in seen:
            raise RunFormatError(
                f"runs {seen[run.run_id]} and {run.path} have the same identity {run.run_id!r} "
                "(seed in run.json, else directory name)"
            )
        seen[run.run_id] = run.path
        runs.append(run)
    if not runs:
        raise InsufficientRunsError("no run directories given")
    return runs


def zscore(values: np.ndarray, first_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Z-score each column of ``values`` (T, d) with the mean and population standard
    deviation of its first ``first_n`` rows.

    Returns ``(z, constant)`` where ``constant`` (d,) marks columns whose first ``first_n``
    rows have zero spread; those are centred but not scaled (scale 1), as scikit-learn's
    ``StandardScaler`` does.
    """
    if first_n < 1:
        raise ValueError(f"zscore_first_n must be at least 1, not {first_n}")
    values = np.asarray(values, dtype=float)
    head = values[:first_n]
    mean = head.mean(axis=0)
    sd = head.std(axis=0)
    constant = ~(sd > 1e-12 * np.maximum(1.0, np.abs(mean)))
    scale = np.where(constant, 1.0, sd)
    return (values - mean) / scale, constant


@dataclass
class Trajectories:
    """Z-scored feature trajectories of the usable runs of an experiment.

    Attributes
    ----------
    run_ids : identities of the usable runs, in input order.
    features : names of the feature columns kept.
    data : one array (T_i, len(features)) of z-scored values per run.
    steps : one integer array (T_i,) of training steps per run.
    excluded : ``{run_id: reason}`` for runs left out.
    dropped_columns : ``{column: reason}`` for columns dropped.
    zscore_first_n : checkpoints used for each run's mean and standard deviation.
    """

    run_ids: list[str]
    features: list[str]
    data: list[np.ndarray]
    steps: list[np.ndarray]
    excluded: dict[str, str] = field(default_factory=dict)
    dropped_columns: dict[str, str] = field(default_factory=dict)
    zscore_first_n: int = 1000


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _format_ids(ids: Iterable[str], limit: int = 20) -> str:
    ids = list(ids)
    text = ", ".join(ids[:limit])
    return text + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def prepare_trajectories(
    runs: Sequence[Run],
    *,
    features: Sequence[str] | None = None,
    zscore_first_n: int = FitOptions.zscore_first_n,
    min_checkpoints: int = FitOptions.min_checkpoints,
    min_runs: int = FitOptions.min_runs,
) -> Trajectories:
    """Per-run z-scored feature trajectories (docs/design.md step 1), with bad input left out.

    Parameters
    ----------
    runs : runs from :func:`load_runs`.
    features : columns to use. ``None`` (model selection) means the 14 statistics, minus
        columns that are NaN in every run or constant within every run (dropped with a
        warning). An explicit list (decoding with a fitted model) is used as given.
    zscore_first_n : each run is standardised with the mean and standard deviation of its
        first ``zscore_first_n`` checkpoints (the paper's 1000).
    min_checkpoints : runs with fewer checkpoints are left out.
    min_runs : fewer usable runs than this raise :class:`InsufficientRunsError`.

    Runs with a non-finite value in a used column, runs lacking a used column, and runs
    shorter than ``min_checkpoints`` are left out with one ``RuntimeWarning`` listing them.
    A column constant over a run's first ``zscore_first_n`` checkpoints (but not over the
    whole experiment) is centred without scaling, with a warning.
    """
    if min_checkpoints < 2:
        raise ValueError(f"min_checkpoints must be at least 2, not {min_checkpoints}")
    explicit = features is not None
    columns = list(features) if explicit else list(metric_names())
    excluded: dict[str, str] = {}
    dropped: dict[str, str] = {}

    if not explicit:
        # Columns absent from every run, or NaN everywhere, carry nothing: drop them.
        for col in list(columns):
            present = [r for r in runs if col in r.metrics.columns]
            values = [pd.to_numeric(r.metrics[col], errors="coerce").to_numpy(float) for r in present]
            if not present or all(np.isnan(v).all() for v in values):
                columns.remove(col)
                dropped[col] = "missing or NaN in every run"

    usable: list[tuple[Run, np.ndarray]] = []
    for run in runs:
        missing = [c for c in columns if c not in run.metrics.columns]
        if missing:
            excluded[run.run_id] = f"no column(s) {', '.join(missing)} in metrics.csv"
            continue
        values = run.metrics[columns].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        bad_rows = ~np.isfinite(values).all(axis=1)
        if bad_rows.any():
            steps = run.metrics[STEP].to_numpy()[bad_rows]
            bad_cols = [c for c, b in zip(columns, ~np.isfinite(values).all(axis=0)) if b]
            excluded[run.run_id] = (
                f"{int(bad_rows.sum())} checkpoint(s) with NaN/inf (first at step {int(steps[0])}; "
                f"column(s) {', '.join(bad_cols)})"
            )
            continue
        if len(values) < min_checkpoints:
            excluded[run.run_id] = f"only {len(values)} checkpoint(s), fewer than {min_checkpoints}"
            continue
        usable.append((run, values))

    if excluded:
        _warn(
            f"left out {len(excluded)} run(s): "
            + "; ".join(f"{rid}: {why}" for rid, why in excluded.items())
        )
    if len(usable) < min_runs:
        raise InsufficientRunsError(
            f"only {len(usable)} usable run(s) of {len(runs)}: the analysis needs at least {min_runs} runs "
            "(seeds) of the same setup (config hmm.min_runs, --min-runs); add seeds"
            + (f" (left out: {_format_ids(excluded)})" if excluded else "")
        )

    if not explicit:
        keep = []
        for j, col in enumerate(columns):
            constant = all(
                np.ptp(v[:, j]) <= 1e-12 * max(1.0, float(np.abs(v[:, j]).max())) for _, v in usable
            )
            if constant:
                dropped[col] = "constant within every run"
            else:
                keep.append(j)
        columns = [columns[j] for j in keep]
        usable = [(run, v[:, keep]) for run, v in usable]
        if dropped:
            _warn(
                "dropped column(s) "
                + "; ".join(f"{c} ({why})" for c, why in dropped.items())
            )
        if not columns:
            raise InsufficientRunsError("no informative feature column is left after dropping constant/NaN columns")

    data, steps, ids = [], [], []
    unscaled: list[str] = []
    for run, values in usable:
        z, constant = zscore(values, zscore_first_n)
        for col, c in zip(columns, constant):
            if c:
                unscaled.append(f"{run.run_id}:{col}")
        data.append(z)
        steps.append(run.metrics[STEP].to_numpy(dtype=np.int64))
        ids.append(run.run_id)
    if unscaled:
        _warn(
            "column constant over the first "
            f"{zscore_first_n} checkpoints of a run, centred without scaling (run:column): "
            + _format_ids(unscaled)
        )
    return Trajectories(
        run_ids=ids,
        features=columns,
        data=data,
        steps=steps,
        excluded=excluded,
        dropped_columns=dropped,
        zscore_first_n=zscore_first_n,
    )


def grid_differences(run_ids: Sequence[str], steps: Sequence[np.ndarray]) -> list[str]:
    """Runs whose last step, number of checkpoints or usual step spacing differs from the
    median run's by more than a quarter: one short sentence per kind of difference, naming
    the runs (empty when the runs agree). How such runs enter the analysis: :data:`GRID_RULE`."""
    if len(run_ids) < 2:
        return []
    last = np.array([float(s[-1]) for s in steps])
    count = np.array([float(len(s)) for s in steps])
    spacing = np.array([float(_usual_spacing(s)) for s in steps])
    out = []
    for values, template in ((last, "run(s) ending at another step than the median run's {median}: {runs}"),
                             (count, "run(s) with another number of checkpoints than the median run's {median}: {runs}"),
                             (spacing, "run(s) on another step grid than the median run's (every {median} steps): "
                                       "{runs}")):
        median = float(np.median(values))
        if not np.isfinite(median) or median <= 0:
            continue
        off = [(r, v) for r, v in zip(run_ids, values) if abs(v - median) > _GRID_TOLERANCE * median]
        if off:
            shown = ", ".join(f"{r} ({v:.0f})" for r, v in off[:10]) + (f" and {len(off) - 10} more" if len(off) > 10 else "")
            out.append(template.format(median=f"{median:.0f}", runs=shown))
    return out


def _usual_spacing(steps: np.ndarray) -> float:
    """The most common difference between consecutive steps (NaN for a single checkpoint)."""
    diffs = np.diff(np.asarray(steps, dtype=np.int64))
    if not len(diffs):
        return float("nan")
    values, counts = np.unique(diffs, return_counts=True)
    return float(values[np.argmax(counts)])

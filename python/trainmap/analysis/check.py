"""``trainmap check RUN_DIR...``: before anything is fitted, what the runs hold and what the
analysis can support with them.

Per run: what kind of directory it is (a Recorder run, a directory of checkpoints read in
place and its layout, a run trained here or already read into ``results/``), the records
(checkpoints or recorded steps), their step range and grid, the training log and its scalar
columns, and, given a convergence criterion, the first step meeting it. Then a verdict:
whether there are enough runs, roughly how many states the records can support with each
covariance type, censored runs, unequal runs, and what to do about each.

Nothing is read beyond file names, run.json, metrics.csv and the logs: no checkpoint's
tensors are loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from trainmap.analysis.convergence import Criterion
from trainmap.analysis.hmm_select import AUTO_COVARIANCES, CV_MAX_RUNS, n_folds, n_free_parameters
from trainmap.analysis.runs import grid_differences
from trainmap.io.contracts import LOG_CSV, METRICS_CSV, RUN_JSON, STEP
from trainmap.options import FitOptions

__all__ = ["RunCheck", "CheckReport", "check_runs", "supported_states", "CHECKPOINTS_PER_PARAMETER",
           "RECOMMENDED_RUNS", "RECOMMENDED_RECORDS"]

#: Checkpoints per free parameter below which a model is taken as more than the data can
#: support (a rough guide: the held-out BIC decides; calibrated on benchmarks/selection_recovery.py).
CHECKPOINTS_PER_PARAMETER = 2.0
#: What the guide recommends: at least this many runs (seeds) ...
RECOMMENDED_RUNS = 10
#: ... of at least this many records each.
RECOMMENDED_RECORDS = 50
# The statistics the HMM reads (docs/metrics.md).
_FEATURES = 14


@dataclass
class RunCheck:
    """What one run directory holds (no tensor read)."""

    path: Path
    kind: str
    steps: np.ndarray
    log_sources: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    met_at: float | None = None  # first step meeting the criterion; NaN = never; None = not checked
    best: float | None = None  # the best value of the criterion's column
    problem: str = ""

    @property
    def records(self) -> int:
        return int(len(self.steps))

    @property
    def grid(self) -> float:
        """The usual spacing between recorded steps (NaN for fewer than two records)."""
        if len(self.steps) < 2:
            return float("nan")
        values, counts = np.unique(np.diff(self.steps), return_counts=True)
        return float(values[np.argmax(counts)])


@dataclass
class CheckReport:
    """Every run's :class:`RunCheck`, the table shown, and the verdict lines."""

    runs: list[RunCheck]
    table: pd.DataFrame
    verdict: list[str]
    advice: list[str]
    supported: dict[str, int]

    def render(self) -> str:
        """The report as text: the table, then the verdict and the advice."""
        lines = [_text_table(self.table), "", "Verdict:"]
        lines += [f"  - {line}" for line in self.verdict]
        if self.advice:
            lines += ["", "Advice:"] + [f"  - {line}" for line in self.advice]
        return "\n".join(lines) + "\n"


def supported_states(n_checkpoints: int, n_runs: int, max_components: int = FitOptions.max_components,
                     n_features: int = _FEATURES) -> dict[str, int]:
    """Per covariance type, the most states (up to ``max_components``; 0 when not even one)
    whose free parameters the training checkpoints can carry at
    :data:`CHECKPOINTS_PER_PARAMETER` checkpoints per parameter. With folds over runs the
    models are fitted on (K-1)/K of the checkpoints; with one split on 80 %."""
    k = n_folds(n_runs) if n_runs >= 2 else 1
    fitted = n_checkpoints * ((k - 1) / k if k > 1 else 0.8)
    out = {}
    for cov in AUTO_COVARIANCES:
        n = 0
        while n < max_components and n_free_parameters(n + 1, n_features, cov) * CHECKPOINTS_PER_PARAMETER <= fitted:
            n += 1
        out[cov] = n
    return out


def _read_json(path: Path) -> dict:
    from trainmap.io.fileguard import read_json_object

    return read_json_object(path, what=RUN_JSON)


def _log_frame(log: dict[int, dict]) -> pd.DataFrame:
    return pd.DataFrame([{STEP: step, **values} for step, values in log.items()])


def _inspect(path: Path) -> tuple[str, np.ndarray, list[str], pd.DataFrame | None]:
    """(kind, steps, log sources, log frame) of one run directory."""
    from trainmap.analysis.runs import load_run
    from trainmap.metrics.series import discover, read_log

    record = _read_json(path / RUN_JSON) if (path / RUN_JSON).is_file() else {}
    if record.get("kind") != "recorder" and (path / METRICS_CSV).is_file():
        run = load_run(path)
        if record.get("kind") == "in_place":
            kind = f"read in place from {record.get('source', '?')} ({record.get('layout', '?')})"
        elif record.get("task"):
            kind = f"trained here (task {record['task']})"
        else:
            kind = "run directory with metrics.csv"
        sources = [LOG_CSV] if run.log is not None else []
        return kind, run.metrics[STEP].to_numpy(np.int64), sources, run.log
    series = discover(path)
    if series.layout == "recorder":
        metrics = pd.read_csv(path / METRICS_CSV, usecols=[STEP]) if (path / METRICS_CSV).is_file() else None
        steps = metrics[STEP].to_numpy(np.int64) if metrics is not None else np.array(series.steps, dtype=np.int64)
        kind = "Recorder run" + (f" ({record.get('status')})" if record.get("status") else "")
    else:
        steps = np.array(series.steps, dtype=np.int64)
        kind = f"checkpoint directory ({series.layout} layout)"
    log = read_log(series)
    sources = [f"{os.path.relpath(source.path, path)} ({source.kind})" for source in series.logs]
    return kind, np.sort(steps), sources, _log_frame(log) if log else None


def _check_one(path: Path, criterion: Criterion | None) -> RunCheck:
    try:
        kind, steps, sources, log = _inspect(path)
    except (OSError, ValueError) as exc:
        return RunCheck(path, "unreadable", np.array([], dtype=np.int64), problem=str(exc))
    columns = [c for c in (log.columns if log is not None else []) if c != STEP]
    check = RunCheck(path, kind, steps, sources, columns)
    if criterion is not None and log is not None and criterion.column in log.columns:
        values = pd.to_numeric(log[criterion.column], errors="coerce").to_numpy(float)
        hits = np.nonzero(criterion.met(values))[0]
        check.met_at = float(log[STEP].to_numpy()[hits[0]]) if len(hits) else float("nan")
        finite = values[np.isfinite(values)]
        if len(finite):
            check.best = float(finite.max() if criterion.direction == "above" else finite.min())
    elif criterion is not None:
        check.problem = "no log" if log is None else f"no column {criterion.column!r} in the log"
    return check


def _table(runs: Sequence[RunCheck], criterion: Criterion | None) -> pd.DataFrame:
    rows = []
    for r in runs:
        row = {"run": r.path.name, "kind": r.kind, "records": r.records,
               "steps": f"{r.steps[0]}–{r.steps[-1]}" if r.records else "–",
               "every": "–" if np.isnan(r.grid) else f"{r.grid:.0f}",
               "log": ", ".join(r.log_sources) or "none",
               "columns": ", ".join(r.columns) or "–"}
        if criterion is not None:
            if r.problem:
                row[str(criterion)] = r.problem
            elif r.met_at is not None and np.isfinite(r.met_at):
                row[str(criterion)] = f"step {r.met_at:.0f}"
            elif r.met_at is not None:
                row[str(criterion)] = "never" + (f" (best {r.best:.4g})" if r.best is not None else "")
        rows.append(row)
    return pd.DataFrame(rows)


def check_runs(run_dirs: Sequence[str | os.PathLike], criterion: Criterion | None = None, *,
               min_runs: int = FitOptions.min_runs, max_components: int = FitOptions.max_components) -> CheckReport:
    """Inspect the run directories and judge what the analysis can support (module docstring)."""
    runs = [_check_one(Path(d), criterion) for d in run_dirs]
    usable = [r for r in runs if r.records >= FitOptions.min_checkpoints and r.kind != "unreadable"]
    verdict: list[str] = []
    advice: list[str] = []
    for r in runs:
        if r.kind == "unreadable":
            verdict.append(f"{r.path}: cannot be read: {r.problem}")
        elif r.records < FitOptions.min_checkpoints:
            verdict.append(f"{r.path}: only {r.records} record(s): left out of the analysis")
    n = len(usable)
    records = np.array([r.records for r in usable]) if usable else np.array([0])
    total = int(records.sum())
    if n < min_runs:
        verdict.append(f"{n} usable run(s): too few — the analysis needs at least {min_runs} runs (seeds) of the "
                       "same setup")
        advice.append(f"train more seeds: {RECOMMENDED_RUNS} or more give a map worth reading")
    elif n < RECOMMENDED_RUNS:
        verdict.append(f"{n} runs: enough to run, few to trust — model selection holds each run out once over "
                       f"{n_folds(n)} folds; expect a coarse map (2–3 states) with wide uncertainty")
        advice.append(f"train more seeds ({RECOMMENDED_RUNS}–20) for a map whose states recur across runs")
    elif n < CV_MAX_RUNS:
        verdict.append(f"{n} runs: model selection holds each run out once over {n_folds(n)} folds")
    else:
        verdict.append(f"{n} runs: model selection holds out 20 % of the runs, as the paper does")
    median = float(np.median(records))
    supported = supported_states(total, max(n, 2), max_components)
    verdict.append(f"{total} records in all (median {median:.0f} per run): roughly enough for "
                   + ", ".join(f"{_states(supported[c])} with {c} covariance" for c in AUTO_COVARIANCES)
                   + f" (at {CHECKPOINTS_PER_PARAMETER:g} checkpoints per parameter; the held-out BIC decides)")
    if max(supported.values()) <= 1:
        verdict.append("expect one state: the records cannot support a map with more")
    if median < RECOMMENDED_RECORDS:
        advice.append(f"record more often: {RECOMMENDED_RECORDS}–200 records per run (a record costs a few "
                      "milliseconds for a small model with trainmap.Recorder)")
    differences = grid_differences([r.path.name for r in usable], [r.steps for r in usable])
    for difference in differences:
        verdict.append(f"unequal runs: {difference}")
    if differences:
        advice.append("runs of different lengths or step grids are analysed as they are (docs/analysis.md, "
                      "'Runs of different lengths'); record every run on the same grid where you can")
    if criterion is not None:
        missing = [r.path.name for r in usable if r.problem]
        if missing:
            verdict.append(f"the convergence criterion {criterion} cannot be read for run(s) {', '.join(missing)}")
            columns = sorted({c for r in usable for c in r.columns})
            advice.append(f"log {criterion.column!r} at every evaluation, or choose a criterion on a logged column"
                          + (f" ({', '.join(columns)})" if columns else ""))
        checked = [r for r in usable if r.met_at is not None]
        never = [r for r in checked if not np.isfinite(r.met_at)]
        if checked and len(never) == len(checked):
            best = [r.best for r in checked if r.best is not None]
            verdict.append(f"no run meets {criterion}"
                           + (f" (best value reached: {max(best) if criterion.direction == 'above' else min(best):.4g})"
                              if best else "") + ": there is no convergence to explain")
            advice.append("check the criterion's threshold, or train longer")
        elif never:
            verdict.append(f"{len(never)} of {len(checked)} runs never meet {criterion}: they are censored at their "
                           "last step (the paper's OLS leaves them out; the Cox model uses them)")
            if len(never) > len(checked) / 2:
                advice.append("most runs never converge: train longer, or use a criterion they reach")
    return CheckReport(runs=runs, table=_table(runs, criterion), verdict=verdict, advice=advice, supported=supported)


def _states(n: int) -> str:
    return "not even 1 state" if n == 0 else f"{n} state{'s' if n != 1 else ''}"


def _text_table(frame: pd.DataFrame) -> str:
    """A plain fixed-width table."""
    if frame.empty:
        return "(no runs)"
    cells = [list(frame.columns)] + [[str(v) for v in row] for row in frame.itertuples(index=False)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def to_json(report: CheckReport) -> str:
    """The report as JSON (the table's rows, the verdict, the advice, the supported states)."""
    return json.dumps({"runs": report.table.to_dict("records"), "verdict": report.verdict, "advice": report.advice,
                       "supported_states": report.supported}, indent=2)

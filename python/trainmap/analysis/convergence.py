"""When a run has converged, as the user defines it (docs/design.md step 5).

A :class:`Criterion` is a log.csv column and a strict bound: ``eval_accuracy>0.9`` (the
paper's kind: accuracy above a threshold) or ``eval_loss<2.5``. Config ``convergence:
{column: C, above: x}`` / ``{column: C, below: x}``, ``threshold: x`` as shorthand for
``{column: eval_accuracy, above: x}``; command line ``--convergence 'C>x'`` / ``'C<x'``,
``--threshold x``.

Convergence is a time to event. The convergence step of a run is the first logged step
whose value meets the criterion (``converged = true``). A run that never meets it is
**right-censored at its own last evaluated step** (the last step whose log has a value in the
column; ``converged = false``): all that is known is that it had not converged by then. It
is never given another run's length. The paper's OLS uses the runs that converged; the Cox
model (:mod:`trainmap.analysis.regression`) uses every run, censored ones included.

A run without a log, or whose log lacks the column, is an error naming the runs and the
column: a regression on a subset of runs chosen by which logs happen to be complete would
be silently biased. So is a cell of the column that is not a number (naming the file and
the step), and a log whose steps do not cover the run's checkpoints (:func:`check_log_steps`:
steps in another unit, or another run's log).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from trainmap.io import contracts
from trainmap.analysis.errors import RunFormatError
from trainmap.options import Criterion

__all__ = ["Criterion", "convergence_step", "convergence_table", "check_log_steps", "never_met_message",
           "CONVERGENCE_COLUMNS"]

#: Columns of convergence.csv.
#: convergence.csv; ``first_detour_step`` (the first checkpoint step decoded in a detour
#: state, empty when the run never enters one) is added by ``regress`` from the decoded paths.
CONVERGENCE_COLUMNS = ["run", "convergence_step", "converged", "last_step", "criterion", "first_detour_step"]

def _column_values(log, column: str, source: str = "log") -> np.ndarray:
    """``log[column]`` as floats; a cell that is neither empty nor a number is an error
    naming ``source`` and its step (an empty cell, or ``nan``, is a step without a value)."""
    import pandas as pd

    raw = log[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(float)
    bad = np.nonzero(np.isnan(values) & raw.notna().to_numpy() & (raw.astype(str).str.strip().str.lower() != "nan").to_numpy())[0]
    if len(bad):
        i = int(bad[0])
        raise RunFormatError(f"{source}: column {column!r} at step {log[contracts.STEP].iloc[i]} holds {raw.iloc[i]!r}, "
                             f"not a number ({len(bad)} such cell(s))")
    return values


def convergence_step(log, criterion: Criterion, source: str = "log") -> float:
    """First logged step of ``log`` (a frame with ``step`` and ``criterion.column``) that
    meets ``criterion``, or NaN if none does. ``source`` names the log in errors."""
    for needed in (contracts.STEP, criterion.column):
        if needed not in log.columns:
            raise RunFormatError(f"{source} has no {needed!r} column")
    values = _column_values(log, criterion.column, source)
    hits = np.nonzero(criterion.met(values))[0]
    return float(log[contracts.STEP].to_numpy()[hits[0]]) if len(hits) else float("nan")


def convergence_table(logs: Mapping[str, Any], criterion: Criterion, sources: Mapping[str, str] | None = None):
    """Convergence of every run: a frame indexed by run id with ``convergence_step`` (the
    first step meeting ``criterion``, or for a censored run its last evaluated step),
    ``converged`` (bool; false = censored), ``last_step`` (the log's last step) and
    ``criterion`` (its text form). ``sources`` names each run's log in messages.

    Raises :class:`RunFormatError` naming every run without a log (or an empty one) or
    without ``criterion.column``, and the column; and for a cell that is not a number or a
    column without any value.
    """
    import pandas as pd

    sources = dict(sources or {})
    lacking = [str(r) for r, log in logs.items()
               if log is None or len(log) == 0 or criterion.column not in log.columns]
    if lacking:
        shown = ", ".join(lacking[:20]) + (f" and {len(lacking) - 20} more" if len(lacking) > 20 else "")
        raise RunFormatError(
            f"convergence ({criterion}) needs column {criterion.column!r} in log.csv: run(s) {shown} have no log.csv "
            f"or no such column; choose another criterion (--convergence / config convergence) or fix the logs")
    rows = {}
    for run_id, log in logs.items():
        source = sources.get(str(run_id), f"the log of run {run_id}")
        values = _column_values(log, criterion.column, source)
        steps = log[contracts.STEP].to_numpy()
        evaluated = np.nonzero(np.isfinite(values))[0]
        if not len(evaluated):
            raise RunFormatError(f"{source}: column {criterion.column!r} has no value at any step")
        step = convergence_step(log, criterion, source)
        converged = bool(np.isfinite(step))
        rows[str(run_id)] = (step if converged else float(steps[evaluated[-1]]), converged, float(steps.max()))
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["convergence_step", "converged", "last_step"])
    frame.index.name = contracts.RUN
    frame["converged"] = frame["converged"].astype(bool)
    frame["criterion"] = str(criterion)
    return frame


def never_met_message(logs: Mapping[str, Any], criterion: Criterion) -> str:
    """When no run meets ``criterion``: a sentence saying so with the best value any run
    reached (the criterion may be impossible: ``--threshold 5`` on an accuracy), else ''."""
    best, best_run = None, None
    for run_id, log in logs.items():
        values = _column_values(log, criterion.column)
        values = values[np.isfinite(values)]
        if not len(values):
            continue
        if criterion.met(values).any():
            return ""
        value = values.max() if criterion.direction == "above" else values.min()
        if best is None or (value > best if criterion.direction == "above" else value < best):
            best, best_run = float(value), run_id
    reached = f" (the {'highest' if criterion.direction == 'above' else 'lowest'} {criterion.column} of any run is " \
              f"{best:.4g}, in run {best_run})" if best is not None else ""
    return (f"no run meets the convergence criterion {criterion}{reached}: every run is censored and the "
            "regression has nothing to explain; check the criterion (config convergence/threshold)")


def check_log_steps(log_steps, checkpoint_steps, source: str) -> None:
    """Refuse a log whose steps do not cover the run's checkpoints: the overlap of the two
    step ranges must be at least half the checkpoints' range (a log in epochs against
    checkpoints in steps, or another run's log, fails). Raises :class:`RunFormatError`
    naming ``source`` and both ranges."""
    log_steps = np.asarray(log_steps, dtype=float)
    checkpoint_steps = np.asarray(checkpoint_steps, dtype=float)
    if not len(log_steps) or len(checkpoint_steps) < 2:
        return
    a, b = checkpoint_steps.min(), checkpoint_steps.max()
    c, d = log_steps.min(), log_steps.max()
    if b <= a:
        return
    overlap = max(0.0, min(b, d) - max(a, c))
    if overlap < 0.5 * (b - a):
        raise RunFormatError(
            f"{source}: the log's steps ({c:.0f}–{d:.0f}) do not cover the checkpoints' steps ({a:.0f}–{b:.0f}); "
            "is the log in another unit (epochs?) or another run's? Convergence steps would not match the states")

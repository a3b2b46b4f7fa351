"""When a run has converged, as the user defines it (docs/design.md step 5).

A :class:`Criterion` is a log.csv column and a strict bound: ``eval_accuracy>0.9`` (the
paper's kind: accuracy above a threshold) or ``eval_loss<2.5``. Config ``convergence:
{column: C, above: x}`` / ``{column: C, below: x}``, ``threshold: x`` as shorthand for
``{column: eval_accuracy, above: x}``; command line ``--convergence 'C>x'`` / ``'C<x'``,
``--threshold x``.

The convergence step of a run is the first logged step whose value meets the criterion.
Runs that never meet it get the longest run length (the largest last logged step among all
runs), as the authors did, and ``converged = false``. A run without a log, or whose log
lacks the column, is an error naming the runs and the column: a regression on a subset of
runs chosen by which logs happen to be complete would be silently biased.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from trainmap import contracts
from trainmap.analysis.errors import RunFormatError

__all__ = ["Criterion", "convergence_step", "convergence_table", "CONVERGENCE_COLUMNS"]

#: Columns of convergence.csv.
CONVERGENCE_COLUMNS = ["run", "convergence_step", "converged", "last_step", "criterion"]

_TEXT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*([<>])\s*(\S+)\s*$")


@dataclass(frozen=True)
class Criterion:
    """A run has converged at the first step where ``column`` is strictly ``above`` (or
    ``below``) ``threshold``."""

    column: str
    direction: str  # "above" | "below"
    threshold: float

    def __post_init__(self) -> None:
        if self.direction not in ("above", "below"):
            raise ValueError(f"convergence direction must be 'above' or 'below', not {self.direction!r}")
        if not isinstance(self.column, str) or not self.column:
            raise ValueError(f"convergence column must be a non-empty name, not {self.column!r}")
        _finite(self.threshold, "convergence threshold")

    @classmethod
    def parse(cls, text: str, option: str = "--convergence") -> "Criterion":
        """``'eval_loss<2.5'`` → below, ``'eval_accuracy>0.9'`` → above. Errors name ``option``."""
        match = _TEXT.match(str(text))
        if match is None:
            raise ValueError(f"{option}: expected COLUMN<X or COLUMN>X (e.g. 'eval_loss<2.5'), not {text!r}")
        column, op, number = match.groups()
        try:
            value = float(number)
        except ValueError:
            raise ValueError(f"{option}: {number!r} is not a number") from None
        return cls(column, "above" if op == ">" else "below", _finite(value, option))

    @classmethod
    def from_threshold(cls, threshold: float, option: str = "--threshold") -> "Criterion":
        """The shorthand: ``eval_accuracy`` above ``threshold``."""
        return cls(contracts.EVAL_ACCURACY, "above", _finite(threshold, option))

    @classmethod
    def from_config(cls, spec: Mapping[str, Any] | None, threshold: float | None, key: str) -> "Criterion | None":
        """From config ``convergence: {column, above|below}`` or ``threshold: x`` (None when
        neither is set). Both, or neither/both of above and below, raise naming ``key``."""
        if spec is not None and threshold is not None:
            raise ValueError(f"config key {key}: give convergence or threshold, not both")
        if threshold is not None:
            return cls.from_threshold(threshold, f"config key {key}.threshold")
        if spec is None:
            return None
        bounds = [d for d in ("above", "below") if d in spec]
        if len(bounds) != 1:
            raise ValueError(f"config key {key}.convergence: give exactly one of above or below")
        where = f"config key {key}.convergence.{bounds[0]}"
        return cls(str(spec.get("column", contracts.EVAL_ACCURACY)), bounds[0], _finite(spec[bounds[0]], where))

    def __str__(self) -> str:
        return f"{self.column}{'>' if self.direction == 'above' else '<'}{self.threshold:g}"

    def describe(self) -> str:
        """Readable: ``first step with eval_loss < 2.5``."""
        return f"first step with {self.column} {'>' if self.direction == 'above' else '<'} {self.threshold:g}"

    def to_dict(self) -> dict:
        """For regression.json: column, direction, threshold and the text form."""
        return {"column": self.column, "direction": self.direction, "threshold": self.threshold, "text": str(self)}

    def met(self, values: np.ndarray) -> np.ndarray:
        """Where ``values`` meet the criterion (NaN never does)."""
        values = np.asarray(values, dtype=float)
        with np.errstate(invalid="ignore"):
            return values > self.threshold if self.direction == "above" else values < self.threshold


def _finite(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"{where}: must be a finite number, not {value!r}")
    return number


def convergence_step(log, criterion: Criterion) -> float:
    """First logged step of ``log`` (a frame with ``step`` and ``criterion.column``) that
    meets ``criterion``, or NaN if none does."""
    for needed in (contracts.STEP, criterion.column):
        if needed not in log.columns:
            raise RunFormatError(f"log has no {needed!r} column")
    import pandas as pd

    values = pd.to_numeric(log[criterion.column], errors="coerce").to_numpy(float)
    hits = np.nonzero(criterion.met(values))[0]
    return float(log[contracts.STEP].to_numpy()[hits[0]]) if len(hits) else float("nan")


def convergence_table(logs: Mapping[str, Any], criterion: Criterion):
    """Convergence step of every run: a frame indexed by run id with ``convergence_step``,
    ``converged`` (bool), ``last_step`` and ``criterion`` (its text form).

    Raises :class:`RunFormatError` naming every run without a log (or an empty one) or
    without ``criterion.column``, and the column.
    """
    import pandas as pd

    lacking = [str(r) for r, log in logs.items()
               if log is None or len(log) == 0 or criterion.column not in log.columns]
    if lacking:
        shown = ", ".join(lacking[:20]) + (f" and {len(lacking) - 20} more" if len(lacking) > 20 else "")
        raise RunFormatError(
            f"convergence ({criterion}) needs column {criterion.column!r} in log.csv: run(s) {shown} have no log.csv "
            f"or no such column; choose another criterion (--convergence / config convergence) or fix the logs")
    rows = {}
    for run_id, log in logs.items():
        step = convergence_step(log, criterion)
        rows[str(run_id)] = (step, bool(np.isfinite(step)), float(log[contracts.STEP].max()))
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["convergence_step", "converged", "last_step"])
    frame.index.name = contracts.RUN
    frame.loc[~frame["converged"], "convergence_step"] = frame["last_step"].max()
    frame["converged"] = frame["converged"].astype(bool)
    frame["criterion"] = str(criterion)
    return frame

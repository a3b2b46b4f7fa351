"""How numbers are shown to people (tables, map titles, the interactive page, the summary):
rounded to what the data supports, never ``2.220446049250313e-16``, and a dash for a value
that is not defined. Machine-readable files (regression.json, coefficients.csv) keep full
precision."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fixed", "r2", "p_value", "bic", "steps", "ratio", "missing", "DASH"]

#: Shown for a value that is not defined (NaN, None).
DASH = "–"


def missing(x: Any) -> bool:
    """Whether ``x`` is no number to show (None, pandas NA, NaN, a non-number)."""
    if x is None:
        return True
    try:
        return not math.isfinite(float(x))
    except (TypeError, ValueError):
        return True


def fixed(x: Any, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals; ``-0.000`` shows as ``0.000``."""
    if missing(x):
        return DASH
    text = f"{float(x):.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def r2(x: Any) -> str:
    """An R² or concordance: three decimals."""
    return fixed(x, 3)


def p_value(x: Any) -> str:
    """A p-value: three decimals, ``< 0.001`` below that."""
    if missing(x):
        return DASH
    return "< 0.001" if float(x) < 0.001 else f"{float(x):.3f}"


def bic(x: Any) -> str:
    """An information criterion: four significant digits below 10⁴, whole numbers above."""
    if missing(x):
        return DASH
    return f"{float(x):.4g}" if abs(float(x)) < 1e4 else f"{float(x):.0f}"


def steps(x: Any) -> str:
    """A training step or a coefficient in steps: a whole number."""
    if missing(x):
        return DASH
    return fixed(x, 0)


def ratio(x: Any) -> str:
    """A ratio that can be tiny or huge (a hazard ratio): three significant digits
    (``0.0312``, ``4.87``, ``6.08e+07``)."""
    if missing(x):
        return DASH
    return f"{float(x):.3g}"

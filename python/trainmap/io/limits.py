"""How much of the machine one command may use: worker counts are capped at its CPUs.

Asking for more workers than CPUs never makes a CPU-bound computation faster; it only
multiplies memory and, with processes, start-up cost, and a typo (``--threads 10000``)
could exhaust the machine. Every worker or thread count a user gives goes through
:func:`cap_workers`, which lowers it to the CPUs this process may run on, with a warning.
"""

from __future__ import annotations

import os
import warnings

__all__ = ["available_cpus", "cap_workers"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cap_workers(requested: int, what: str) -> int:
    """``requested`` workers, at most :func:`available_cpus`; ``what`` (an option or
    setting name such as ``--threads``) names the count in the error and the warning.

    Raises ``ValueError`` for a count that is not a positive integer.
    """
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ValueError(f"{what} must be a positive integer, got {requested!r}")
    cpus = available_cpus()
    if requested > cpus:
        warnings.warn(f"{what} {requested} is more than the {cpus} CPU(s) available; using {cpus}",
                      RuntimeWarning, stacklevel=2)
        return cpus
    return requested

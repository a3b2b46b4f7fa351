"""Exceptions of the analysis stage.

All are ``ValueError`` subclasses, so the CLI reports them as one line (see
``trainmap.cli.main``) and library callers can catch them as ordinary bad input.
"""

from __future__ import annotations

__all__ = ["AnalysisError", "RunFormatError", "InsufficientRunsError", "ModelFormatError"]


class AnalysisError(ValueError):
    """Base class: bad input to an analysis function, with a message naming the culprit."""


class RunFormatError(AnalysisError):
    """A run directory lacks a required file or column, or holds an unreadable one."""


class InsufficientRunsError(AnalysisError):
    """Fewer usable runs than the analysis needs (after leaving out bad runs)."""


class ModelFormatError(AnalysisError):
    """A saved model file is missing parameters or holds inconsistent ones."""

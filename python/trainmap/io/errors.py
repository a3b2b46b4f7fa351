"""Error types shared across stages, on the ground floor so no stage imports another for them."""

from __future__ import annotations

__all__ = ["DataFileError", "SeriesError"]


class DataFileError(ValueError):
    """A data file that is not in the expected format, or is corrupt."""


class SeriesError(DataFileError):
    """A problem with a checkpoint series on disk (missing shard, two directories for one
    step...); the message names the file or directory. A :class:`DataFileError`, so that
    ``except DataFileError`` (``trainmap import``) still catches it."""

"""Atomic file output: write to a temporary file beside the target, then rename.

A killed process never leaves a half-written file under the final name, so Snakemake
and resumable training can trust that any file that exists is complete.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "write_bytes", "write_text", "write_json", "write_csv"]


@contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it to ``path`` on success.

    The parent directory is created when missing. If the body raises, the temporary
    file is removed and ``path`` is left as it was. ``durable`` flushes the file to disk
    (fsync) before the rename, so it survives a power loss too; without it the rename is
    still atomic for every process (a killed writer never leaves a half file), at a
    fraction of the cost, for files rewritten often (the Recorder's rows).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Atomically write ``data`` to ``path`` (``durable``: see :func:`atomic_path`)."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> None:
    """Atomically write ``text`` (UTF-8) to ``path`` (``durable``: see :func:`atomic_path`)."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any, *, durable: bool = True) -> None:
    """Atomically write ``obj`` as indented, strictly valid JSON.

    Non-finite floats (NaN, ±inf), which JSON cannot represent, are written as ``null``.
    """
    write_text(path, json.dumps(_finite_or_none(obj), indent=2, allow_nan=False) + "\n", durable=durable)


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(value) for value in obj]
    return obj


def write_csv(path: str | os.PathLike, frame, **to_csv_kwargs) -> None:
    """Atomically write a pandas DataFrame as CSV (``index=False`` unless given)."""
    to_csv_kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv_kwargs)

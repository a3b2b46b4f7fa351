"""Rules every file trainmap reads or writes obeys, in one place.

* Inputs are regular files: a FIFO, device or socket given where a file is expected would
  block a reader forever (or read endlessly), a directory would fail obscurely. They are
  refused before they are opened, naming the path. Readers say how big a file may be for
  its purpose, and larger ones are refused before they are read.
* Outputs never clobber inputs: an output that is one of the command's inputs, or whose
  name says it is another format (CSV written to ``*.safetensors``), is refused before any
  work is done.
* ``.npz`` files are read only after every array's declared size has been checked, so a
  small file cannot make the reader allocate gigabytes.
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

__all__ = [
    "InputFileError",
    "OutputClobberError",
    "input_file",
    "check_output_format",
    "refuse_clobber",
    "read_npz",
    "read_csv",
    "read_json_object",
    "read_safetensors_header",
    "MAX_SAFETENSORS_HEADER_BYTES",
]

#: The largest safetensors header read (the format's own limit, as the engine applies it).
MAX_SAFETENSORS_HEADER_BYTES = 100_000_000

# Suffixes of the formats trainmap reads or writes, and of files it must never overwrite
# with text: checkpoints, archives, arrays, figures.
_FORMAT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "csv": (".csv", ".tsv", ".txt"),
    "json": (".json",),
    "npz": (".npz",),
    "markdown": (".md",),
    "svg": (".svg",),
    "png": (".png",),
    "html": (".html", ".htm"),
}
_FOREIGN_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".npy", ".gz", ".tar", ".zip", ".png", ".svg",
    ".pdf", ".csv", ".json", ".md", ".yaml", ".yml", ".html",
)


class InputFileError(ValueError):
    """An input path that is not a regular file, or is larger than its purpose allows."""


class OutputClobberError(ValueError):
    """An output path that would overwrite an input or a file of another format."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def input_file(path: str | os.PathLike, *, required: bool = True, max_bytes: int | None = None,
               what: str = "input") -> Path | None:
    """``path`` when it is a regular file (symlinks followed), checked without opening it.

    Returns None for a missing file when ``required`` is false; raises ``FileNotFoundError``
    when it is true. Raises :class:`InputFileError` naming the path for a FIFO, device,
    socket or directory, and for a file larger than ``max_bytes``.
    """
    path = Path(path)
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):  # (a parent that is a file: also no such file)
        if required:
            raise FileNotFoundError(f"{path}: no such file") from None
        return None
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(f"{path}: {what} is {_kind(info.st_mode)}, not a regular file; refusing to read it")
    if max_bytes is not None and info.st_size > max_bytes:
        raise InputFileError(
            f"{path}: {info.st_size} bytes, more than the {max_bytes} a {what} can need; refusing to read it"
        )
    return path


def check_output_format(path: str | os.PathLike, fmt: str, *, option: str = "output") -> Path:
    """Refuse to write ``fmt`` (csv, json, npz, markdown) to a path whose suffix names
    another format: ``metrics -o glob/*.safetensors`` must not turn a checkpoint into CSV."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _FOREIGN_SUFFIXES and suffix not in _FORMAT_SUFFIXES[fmt]:
        raise OutputClobberError(
            f"{option} {path}: would write {fmt.upper()} to a {suffix} file; refusing (give a "
            f"{' or '.join(_FORMAT_SUFFIXES[fmt])} path)"
        )
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def refuse_clobber(outputs: Mapping[str, str | os.PathLike | None], inputs: Iterable[str | os.PathLike]) -> None:
    """Raise :class:`OutputClobberError` when an output (``{option: path}``) is one of
    ``inputs`` (same path, symlink or hard link) or two outputs are the same file."""
    given = {option: Path(p) for option, p in outputs.items() if p is not None}
    input_paths = [Path(p) for p in inputs]
    for option, out in given.items():
        for source in input_paths:
            if _same_file(out, source):
                raise OutputClobberError(f"{option} {out} is also an input ({source}); refusing to overwrite it")
    names = list(given)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if _same_file(given[first], given[second]):
                raise OutputClobberError(f"{first} and {second} name the same file {given[first]}")


def _declared_bytes(handle, member: str, source: Path) -> int:
    """Bytes the ``.npy`` member at ``handle`` declares (shape × item size), from its header."""
    try:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise InputFileError(f"{source}: array {member} has an unreadable header ({exc})") from None
    if dtype.hasobject:
        raise InputFileError(f"{source}: array {member} holds Python objects; refusing (no pickle)")
    return math.prod(shape) * dtype.itemsize


def read_npz(path: str | os.PathLike, *, max_array_bytes: int, max_total_bytes: int,
             what: str = "npz file") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, without pickle, after checking declared sizes.

    Each member's ``.npy`` header is read first; an array declaring more than
    ``max_array_bytes``, or all together more than ``max_total_bytes``, is refused with
    :class:`InputFileError` naming the file and the array before anything is allocated.
    """
    path = input_file(path, what=what)
    try:
        with zipfile.ZipFile(path) as archive:
            total = 0
            for info in archive.infolist():
                member = info.filename.removesuffix(".npy")
                with archive.open(info) as handle:
                    size = _declared_bytes(handle, member, path)
                if size > max_array_bytes:
                    raise InputFileError(
                        f"{path}: array {member} declares {size} bytes, more than the {max_array_bytes} "
                        f"a {what} needs; refusing to load it"
                    )
                total += size
                if total > max_total_bytes:
                    raise InputFileError(f"{path}: arrays declare more than {max_total_bytes} bytes in all; "
                                         f"refusing to load a {what} that large")
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        if isinstance(exc, (InputFileError, FileNotFoundError)):
            raise
        raise InputFileError(f"{path}: not a readable {what} ({exc})") from None


def read_csv(path: str | os.PathLike, *, columns: Iterable[str] = (), what: str = "CSV file", **read_csv_kwargs):
    """A CSV file as a pandas DataFrame, with one ``ValueError`` naming the file when it is
    not a regular file, not CSV, or lacks one of ``columns``."""
    import pandas as pd

    path = input_file(path, what=what)
    try:
        frame = pd.read_csv(path, **read_csv_kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise InputFileError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputFileError(f"{path}: {what} lacks column(s) {', '.join(missing)}")
    return frame


def read_json_object(path: str | os.PathLike, *, what: str = "JSON file", max_bytes: int = 64 << 20) -> dict:
    """A JSON file that must hold an object, with one ``ValueError`` naming the file otherwise."""
    import json

    path = input_file(path, what=what, max_bytes=max_bytes)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputFileError(f"{path}: {what} must hold a JSON object, found a {type(value).__name__}")
    return value


def read_safetensors_header(path: str | os.PathLike, *, what: str = "safetensors file") -> dict[str, tuple[str, list[int]]]:
    """``{tensor name: (dtype, shape)}`` from a safetensors file's header, without reading
    tensor data. The header's length field is checked against the file's size and
    :data:`MAX_SAFETENSORS_HEADER_BYTES` before it is read; anything that is not a
    safetensors header raises :class:`InputFileError` naming the file (and not echoing its
    bytes)."""
    import json
    import struct

    path = input_file(path, what=what)
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            (length,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
            if length is None or length > MAX_SAFETENSORS_HEADER_BYTES or 8 + length > size:
                raise ValueError("no valid header length")
            header = json.loads(handle.read(length))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        return {name: (str(entry["dtype"]), [int(n) for n in entry["shape"]])
                for name, entry in header.items() if name != "__metadata__"}
    except (ValueError, KeyError, TypeError, OSError) as exc:
        if isinstance(exc, InputFileError):
            raise
        reason = "unreadable header" if isinstance(exc, (ValueError, KeyError, TypeError)) else exc.strerror
        raise InputFileError(f"{path}: not a safetensors file ({what} with {reason})") from None

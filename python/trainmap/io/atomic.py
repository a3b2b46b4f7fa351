"""Atomic file output: write to a temporary file beside the target, then rename.

A killed process never leaves a half-written file under the final name, so Snakemake
and resumable training can trust that any file that exists is complete.
:func:`write_files` writes many files this way at once, with one flush to disk for all of
them (training writes thousands of small checkpoints). Files get the
mode an ordinary ``open(path, "w")`` would give them (0666 less the umask), not the 0600
of the temporary file they start as, so results can be shared as the user's umask says.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import math
import os
import secrets
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from trainmap.io.fileguard import check_output_format

__all__ = ["atomic_path", "write_files", "write_bytes", "write_text", "write_json", "write_csv", "file_mode", "OutputWriteError"]

_UMASK_LOCK = threading.Lock()
# What to tell the user for the errors a full, read-only or forbidden place gives.
_REMEDIES = {
    errno.ENOSPC: "the disk is full; free space there or write elsewhere",
    errno.EDQUOT: "the disk quota is used up; free space there or write elsewhere",
    errno.EACCES: "make {folder} writable for you or write elsewhere",
    errno.EPERM: "make {folder} writable for you or write elsewhere",
    errno.EROFS: "write elsewhere",
}


class OutputWriteError(OSError):
    """An output that could not be written (disk full, permission denied...). Its message
    names the file the user asked for, never the temporary one; ``errno`` is the cause's."""

    def __str__(self) -> str:
        return self.strerror


def _write_error(target: Path, exc: OSError) -> OutputWriteError:
    reason = exc.strerror or str(exc)
    remedy = _REMEDIES.get(exc.errno, "").format(folder=target.parent)
    text = f"{target}: could not be written ({reason}{': ' + remedy if remedy else ''}); the previous file, if any, is unchanged"
    return OutputWriteError(exc.errno, text)


def file_mode() -> int:
    """The mode a newly created file gets: 0o666 less the process's current umask.

    The umask can only be read by setting it; the lock keeps two threads of this module
    from seeing each other's temporary value.
    """
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return 0o666 & ~umask


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
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            os.fchmod(fd, file_mode())  # mkstemp creates 0600 whatever the umask
        finally:
            os.close(fd)
    except OSError as exc:
        raise _write_error(target, exc) from None
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            if durable:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            if isinstance(exc, OutputWriteError) or exc.errno not in _REMEDIES:
                raise
            raise _write_error(target, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_files(files: Sequence[tuple[str | os.PathLike, bytes]], *, durable: bool = True) -> None:
    """Atomically write several files, made visible (renamed into place) in the given order.

    Every temporary is written first; with ``durable``, their data then goes to disk before
    the first rename, so no file becomes visible before every file's data is on disk. On
    Linux that is one ``syncfs`` per file system written to, elsewhere one ``fsync`` per
    file: a parities checkpoint costs about 0.3 ms to fsync on its own and under 0.1 ms in a
    batch flushed at once (the sweep writes 20,000 of them). ``syncfs`` also flushes other
    processes' pending writes on that file system, which per-file fsyncs on ext4 largely do
    as well (one journal commit each). The renames themselves are not synced (as in
    :func:`atomic_path`): that a power loss keeps them in their order is the file system's
    journal's doing (ext4, XFS), which POSIX does not promise; a killed process always
    leaves them in order.

    On an error, the files already renamed stay (complete), every other temporary is
    removed, and the error names the file asked for, as :func:`atomic_path`'s does.
    """
    targets = [Path(path) for path, _ in files]
    syncfs = _syncfs() if durable else None
    temporaries: list[Path] = []
    # One open temporary per file system, to syncfs it through (a descriptor of the
    # directory would need read permission on it, which writing a file does not).
    through: dict[int, tuple[int, Path]] = {}  # device: (descriptor, its target)
    seen: set[Path] = set()  # directories made and their file system looked up
    renamed = 0
    target = None  # the file being written, named in an error
    try:
        try:
            for target, (_, data) in zip(targets, files, strict=True):
                if target.parent not in seen:
                    target.parent.mkdir(parents=True, exist_ok=True)
                tmp, fd = _new_temporary(target)
                temporaries.append(tmp)
                try:
                    _write_all(fd, data)
                    if durable and syncfs is None:
                        os.fsync(fd)
                    if syncfs is not None and target.parent not in seen:
                        device = os.fstat(fd).st_dev
                        if device not in through:
                            through[device], fd = (fd, target), -1  # kept open until the flush
                finally:
                    if fd >= 0:
                        os.close(fd)
                seen.add(target.parent)
            for fd, target in through.values():  # (an error names the first file written there)
                _flush_file_system(syncfs, fd)
            for tmp, target in zip(temporaries, targets):
                os.replace(tmp, target)
                renamed += 1
        except OSError as exc:
            if isinstance(exc, OutputWriteError) or exc.errno not in _REMEDIES:
                raise
            raise _write_error(target, exc) from None
        finally:
            for fd, _ in through.values():
                os.close(fd)
    except BaseException:
        for tmp in temporaries[renamed:]:
            tmp.unlink(missing_ok=True)
        raise


def _new_temporary(target: Path) -> tuple[Path, int]:
    """A new temporary ``.NAME.XXXXXXXX.tmp`` beside ``target`` (the name
    :func:`tempfile.mkstemp` would give, which trainmap.io.owner recognises), open for
    writing. Created with mode 0666, which the kernel reduces by the umask as for any new
    file (mkstemp's 0600 would need an fchmod)."""
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(target.parent))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """The C library's ``syncfs`` (Linux), or None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def _flush_file_system(syncfs: Callable[[int], int], fd: int) -> None:
    """Write everything pending on the file system of the open file ``fd`` to disk (raises
    OSError)."""
    if syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


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
    A path whose suffix names another format (``.safetensors``, ``.csv``…) is refused.
    """
    check_output_format(path, "json")
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
    """Atomically write a pandas DataFrame as CSV (``index=False`` unless given). A path
    whose suffix names another format (``.safetensors``, ``.json``…) is refused."""
    check_output_format(path, "csv")
    to_csv_kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv_kwargs)

"""Whose files a directory holds, and which of them trainmap wrote: the owner file.

Every directory trainmap fills (a training run, an import, the results of a run read in
place) gets ``DIR/.trainmap-run.json`` before anything else::

    {"kind": "train" | "import" | "in_place", ...what makes two runs the same...,
     "files": ["checkpoints/step00000000.safetensors", "log.csv", ...]}

``files`` lists, relative to ``DIR``, every file trainmap has written there or is about to
write: a name is listed *before* its file is created, so a killed writer never leaves a
file of its own unlisted. The rules (docs/design.md, "Conventions"):

* a directory is written only when it is empty, or holds an owner file of the same kind
  and nothing that file does not list (the lock and owner files aside; an atomic write's
  temporary of a listed file or of the owner file, left by a killed writer, counts as
  listed, and the next writer deletes it): a file trainmap did not write is never
  overwritten, mixed into a run, or deleted; the directory is refused, naming it;
* a writer that starts a run over deletes exactly the files the list names.

Owner files written before the list existed have no ``files``; their writers fall back to
the names of their layout (:func:`listed_files` returns None for them).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Collection, Iterable, Iterator, Mapping

from trainmap.io import atomic
from trainmap.io.fileguard import input_file
from trainmap.io.runlock import LOCK_NAME, RunLock

__all__ = [
    "OWNER_NAME",
    "ForeignDirectoryError",
    "read_record",
    "read_owner",
    "write_owner",
    "owner_bytes",
    "listed_files",
    "add_listed",
    "unlisted_files",
    "refuse_foreign",
    "refuse_unlisted",
    "remove_listed",
    "remove_temporaries",
    "listed_output",
]

#: Name of the file that says which run a directory holds and which files trainmap wrote.
OWNER_NAME = ".trainmap-run.json"
# The most a run.json or owner file can reasonably need (a list of every checkpoint file fits).
_MAX_RECORD_BYTES = 64 << 20
# How many names a refusal shows before "and N more".
_SHOWN = 5


class ForeignDirectoryError(ValueError):
    """An output directory that holds files of something other than the run being written."""


def read_record(path: str | os.PathLike, remedy: str) -> dict[str, Any] | None:
    """A JSON object from a regular file, None when absent; one ``ValueError`` naming the
    file for anything else (a FIFO, a list, broken JSON)."""
    path = Path(path)
    if input_file(path, required=False, max_bytes=_MAX_RECORD_BYTES, what=path.name) is None:
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable {path.name} ({exc}); {remedy}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, found a {type(record).__name__}; {remedy}")
    return record


def read_owner(out: str | os.PathLike) -> dict[str, Any] | None:
    """The owner file of ``out``, or None when it has none."""
    return read_record(Path(out) / OWNER_NAME, "delete it only if this directory holds nothing you need")


def owner_bytes(identity: Mapping[str, Any], files: Iterable[str]) -> bytes:
    """The owner file's content: ``identity`` and the sorted ``files`` list (as
    :func:`trainmap.io.atomic.write_json` writes JSON)."""
    record = {**{k: v for k, v in identity.items() if k != "files"}, "files": sorted(set(files))}
    return (json.dumps(record, indent=2, allow_nan=False) + "\n").encode()


def write_owner(out: str | os.PathLike, identity: Mapping[str, Any], files: Iterable[str] = ()) -> None:
    """Atomically write ``out``'s owner file: ``identity`` and the ``files`` trainmap wrote."""
    atomic.write_bytes(Path(out) / OWNER_NAME, owner_bytes(identity, files))


def listed_files(owner: Mapping[str, Any] | None) -> set[str] | None:
    """The files an owner file lists; None for an owner file without a list (written by a
    trainmap before the list existed) or no owner file."""
    files = owner.get("files") if owner is not None else None
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        return None
    return set(files)


def add_listed(out: str | os.PathLike, names: Iterable[str]) -> None:
    """List ``names`` (relative to ``out``) in ``out``'s owner file before they are written.
    Nothing happens without an owner file, or with one from before the list existed."""
    owner = read_owner(out)
    listed = listed_files(owner)
    names = set(names)
    if listed is not None and not names <= listed:
        write_owner(out, owner, listed | names)


def _temporary_of(name: str) -> str | None:
    """The file an atomic write's temporary ``.NAME.XXXXXXXX.tmp`` was to become, else None."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    target, dot, _ = name[1:-len(".tmp")].rpartition(".")
    return target if dot and target else None


def unlisted_files(out: str | os.PathLike, listed: Collection[str], *, limit: int | None = None) -> list[str]:
    """Files under ``out`` (relative paths, sorted, sub-directories walked) that are not in
    ``listed``, not the lock or owner file, and not an atomic write's temporary of a listed
    file; at most ``limit`` of them. Empty directories are not files. Symlinks are entries,
    never followed."""
    out = Path(out)
    if not out.is_dir():
        return []
    own = {*listed, OWNER_NAME}  # whose atomic temporaries are trainmap's
    found: list[str] = []
    pending = [("", out)]
    while pending and (limit is None or len(found) < limit):
        prefix, folder = pending.pop(0)
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        for entry in entries:
            relative = prefix + entry.name
            if not prefix and entry.name in (LOCK_NAME, OWNER_NAME):
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append((relative + "/", Path(entry.path)))
                continue
            temporary_of = _temporary_of(entry.name)
            if relative in listed or (temporary_of is not None and prefix + temporary_of in own):
                continue
            found.append(relative)
            if limit is not None and len(found) >= limit:
                break
    return found


def _shown(names: list[str], more: bool) -> str:
    return ", ".join(names[:_SHOWN]) + (" and more" if more else "")


def refuse_foreign(out: str | os.PathLike, command: str, *, option: str = "--out",
                   allowed: Collection[str] = ()) -> None:
    """Raise :class:`ForeignDirectoryError` naming what ``out`` holds when it holds any file
    (besides ``allowed`` ones, the lock and owner file); for a directory without an owner
    file of the run."""
    found = unlisted_files(out, allowed, limit=_SHOWN + 1)
    if found:
        raise ForeignDirectoryError(
            f"{out}: not empty ({_shown(found, len(found) > _SHOWN)}) and not a run directory of this {command}; "
            f"it writes only into an empty directory or its own run, and deletes nothing it did not write: use "
            f"another {option}"
        )


def refuse_unlisted(out: str | os.PathLike, listed: Collection[str], *, option: str = "--out") -> None:
    """Raise :class:`ForeignDirectoryError` naming the files of ``out`` its owner file does
    not list (``listed``): files trainmap did not write, which it must neither overwrite,
    delete nor mix with its own."""
    found = unlisted_files(out, listed, limit=_SHOWN + 1)
    if found:
        raise ForeignDirectoryError(
            f"{out}: holds {_shown(found, len(found) > _SHOWN)}, which trainmap did not write (its {OWNER_NAME} "
            "does not list them); it neither deletes nor mixes its files with them: move them elsewhere, or use "
            f"another {option}; nothing was changed"
        )


def remove_listed(out: str | os.PathLike, listed: Collection[str]) -> None:
    """Delete the files of ``out`` that ``listed`` names (and atomic temporaries of them),
    and directories left empty by that; nothing else."""
    out = Path(out)
    folders = set()
    for relative in sorted(listed):
        path = out / relative
        if path.is_file() or path.is_symlink():
            path.unlink()
        folders.add(path.parent)
    for temporary in _listed_temporaries(out, listed):
        temporary.unlink(missing_ok=True)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder != out:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty


def remove_temporaries(out: str | os.PathLike, listed: Collection[str]) -> None:
    """Delete what killed writers left in ``out``: atomic temporaries of the ``listed``
    files and of the owner file (never complete, never read). Call with the run's lock held."""
    for temporary in _listed_temporaries(Path(out), listed):
        temporary.unlink(missing_ok=True)


def _listed_temporaries(out: Path, listed: Collection[str]) -> list[Path]:
    """Atomic temporaries of the ``listed`` files and of the owner file."""
    listed = {*listed, OWNER_NAME}
    found = []
    for folder in {(out / relative).parent for relative in listed}:
        if folder.is_dir():
            prefix = "" if folder == out else folder.relative_to(out).as_posix() + "/"
            found += [folder / name for name in os.listdir(folder)
                      if (target := _temporary_of(name)) is not None and prefix + target in listed]
    return found


@contextlib.contextmanager
def listed_output(path: str | os.PathLike, *, purpose: str) -> Iterator[None]:
    """For a command writing the one file ``path``: when ``path``'s directory holds an owner
    file (a run directory), hold the directory's lock while the body runs and list the file
    in the owner file first, so that the run's writers know it as trainmap's."""
    path = Path(path)
    folder = path.parent
    if read_owner(folder) is None:
        yield
        return
    with RunLock(folder, purpose=purpose):
        add_listed(folder, [path.name])
        yield

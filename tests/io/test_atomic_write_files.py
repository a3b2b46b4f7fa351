"""trainmap.io.atomic.write_files: many files made visible in order, one flush for all.

Training writes thousands of small checkpoints through it, so each contract that a single
atomic write keeps is checked for the batch too: order, mode, errors that name the file,
nothing half-written or left behind, and what reaches the disk before the first rename.
"""

from __future__ import annotations

import errno
import os

import pytest

from trainmap.io import atomic


def _names(directory):
    return sorted(p.name for p in directory.iterdir())


def test_files_are_written_complete_and_renamed_in_the_order_given(tmp_path, monkeypatch):
    files = [(tmp_path / "b" / f"step{i:03d}.bin", bytes([i]) * (1000 + i)) for i in (3, 1, 2)]
    files.append((tmp_path / "a" / "owner.json", b"{}"))
    real_replace = os.replace
    renamed = []

    def replace(src, dst):
        renamed.append(os.path.basename(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    atomic.write_files(files)
    assert renamed == ["step003.bin", "step001.bin", "step002.bin", "owner.json"]
    for path, data in files:
        assert path.read_bytes() == data
    assert _names(tmp_path / "b") == ["step001.bin", "step002.bin", "step003.bin"]  # no temporaries
    assert _names(tmp_path / "a") == ["owner.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_the_umask_gives_an_ordinary_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic.write_files([(tmp_path / "x.bin", b"x")])
        (tmp_path / "ordinary").write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == (tmp_path / "ordinary").stat().st_mode & 0o777


def test_all_data_is_flushed_before_the_first_rename(tmp_path, monkeypatch):
    """A reader that sees file k must find every file before it complete after a power
    loss too: the flush to disk comes after every write and before any rename."""
    events = []
    real_replace, real_write = os.replace, atomic._write_all
    monkeypatch.setattr(atomic, "_write_all", lambda fd, data: (events.append("write"), real_write(fd, data)))
    monkeypatch.setattr(os, "replace", lambda s, d: (events.append("rename"), real_replace(s, d)))
    real_flush = atomic._flush_file_system
    monkeypatch.setattr(atomic, "_flush_file_system", lambda f, fd: (events.append("sync"), real_flush(f, fd)))
    atomic.write_files([(tmp_path / f"{i}.bin", b"data") for i in range(4)])
    if atomic._syncfs() is None:
        pytest.skip("no syncfs in this C library: the per-file fsync path is tested below")
    assert events == ["write"] * 4 + ["sync"] + ["rename"] * 4


def test_one_syncfs_per_file_system_and_none_when_not_durable(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(atomic, "_syncfs", lambda: (lambda fd: calls.append(fd) or 0))
    monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("fsync per file although syncfs is there"))
    atomic.write_files([(tmp_path / d / f"{i}.bin", b"x") for d in ("one", "two") for i in range(5)])
    assert len(calls) == 1  # both directories are on one file system
    calls.clear()
    atomic.write_files([(tmp_path / f"{i}.bin", b"x") for i in range(5)], durable=False)
    assert calls == []


def test_without_syncfs_each_file_is_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic, "_syncfs", lambda: None)
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic.write_files([(tmp_path / f"{i}.bin", b"x") for i in range(3)])
    assert len(synced) == 3 and _names(tmp_path) == ["0.bin", "1.bin", "2.bin"]
    synced.clear()
    atomic.write_files([(tmp_path / f"{i}.bin", b"y") for i in range(3)], durable=False)
    assert synced == []


def test_the_real_syncfs_is_found_on_linux():
    if not os.uname().sysname == "Linux":
        pytest.skip("syncfs is Linux's")
    assert atomic._syncfs() is not None


def _fail_with(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), "/somewhere/.x.bin.0123abcd.tmp")

    return fail


@pytest.mark.parametrize("where", ["write", "sync", "rename"])
def test_a_full_disk_names_the_target_keeps_what_was_renamed_and_leaves_no_temporary(tmp_path, monkeypatch, where):
    for i in range(4):
        (tmp_path / f"{i}.bin").write_bytes(b"old")
    files = [(tmp_path / f"{i}.bin", b"new") for i in range(4)]
    real_write, real_replace = atomic._write_all, os.replace
    count = {"n": 0}

    def third(real):
        def call(*args):
            count["n"] += 1
            if count["n"] == 3:
                _fail_with(errno.ENOSPC)()
            return real(*args)

        return call

    if where == "write":
        monkeypatch.setattr(atomic, "_write_all", third(real_write))
    elif where == "rename":
        monkeypatch.setattr(os, "replace", third(real_replace))
    else:
        monkeypatch.setattr(atomic, "_syncfs", lambda: (lambda fd: 0))
        monkeypatch.setattr(atomic, "_flush_file_system", _fail_with(errno.ENOSPC))
    with pytest.raises(atomic.OutputWriteError) as caught:
        atomic.write_files(files)
    monkeypatch.undo()
    message = str(caught.value)
    assert caught.value.errno == errno.ENOSPC
    assert str(tmp_path) in message and "the disk is full" in message and ".tmp" not in message, message
    expected_named = {"write": "2.bin", "rename": "2.bin", "sync": "0.bin"}[where]
    assert message.startswith(str(tmp_path / expected_named)), message
    contents = [(tmp_path / f"{i}.bin").read_bytes() for i in range(4)]
    assert contents == ([b"new", b"new", b"old", b"old"] if where == "rename" else [b"old"] * 4)
    assert _names(tmp_path) == ["0.bin", "1.bin", "2.bin", "3.bin"]  # no temporary left


def test_an_interrupt_while_writing_leaves_no_temporary(tmp_path, monkeypatch):
    def interrupted(fd, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "_write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_files([(tmp_path / "a.bin", b"x"), (tmp_path / "b.bin", b"y")])
    assert _names(tmp_path) == []


def test_an_error_it_cannot_explain_is_raised_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_write_all", _fail_with(errno.EIO))
    with pytest.raises(OSError) as caught:
        atomic.write_files([(tmp_path / "a.bin", b"x")])
    assert not isinstance(caught.value, atomic.OutputWriteError) and caught.value.errno == errno.EIO
    assert _names(tmp_path) == []


def test_a_name_clash_with_a_left_temporary_takes_another_name(tmp_path, monkeypatch):
    tokens = iter(["aaaaaaaa", "aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(tokens))
    (tmp_path / ".x.bin.aaaaaaaa.tmp").write_bytes(b"someone else's")
    atomic.write_files([(tmp_path / "x.bin", b"mine")])
    assert (tmp_path / "x.bin").read_bytes() == b"mine"
    assert (tmp_path / ".x.bin.aaaaaaaa.tmp").read_bytes() == b"someone else's"


def test_a_temporary_left_by_a_kill_is_recognised_as_the_targets(tmp_path, monkeypatch):
    """A kill -9 between write and rename leaves ``.NAME.XXXXXXXX.tmp``; the run-directory
    checks (trainmap.io.owner) must take it for the listed file's, not a stranger's file."""
    from trainmap.io import owner

    monkeypatch.setattr(os, "replace", _fail_with(errno.EIO))
    monkeypatch.setattr(atomic, "_write_all", lambda fd, data: None)
    seen = []
    real_unlink = type(tmp_path).unlink
    monkeypatch.setattr(type(tmp_path), "unlink", lambda self, missing_ok=False: seen.append(self.name))
    with pytest.raises(OSError):
        atomic.write_files([(tmp_path / "step00000010.safetensors", b"")])
    monkeypatch.setattr(type(tmp_path), "unlink", real_unlink)
    assert len(seen) == 1 and owner._temporary_of(seen[0]) == "step00000010.safetensors"


def test_a_directory_that_can_be_written_but_not_listed_is_flushed(tmp_path, monkeypatch):
    """syncfs goes through an open temporary, not a descriptor of the directory, which
    would need read permission on it: a 0300 directory can be written, not listed. Root
    reads any directory, so there opening one for reading is refused as the kernel refuses
    it to anyone else."""
    box = tmp_path / "drop"
    box.mkdir()
    box.chmod(0o300)
    if os.geteuid() == 0:
        real_open = os.open

        def unreadable(path, flags, *args, **kwargs):
            if os.path.realpath(path) == str(box) and not flags & (os.O_WRONLY | os.O_RDWR):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", unreadable)
    try:
        atomic.write_files([(box / "a.bin", b"a"), (box / "b.bin", b"b")])
    finally:
        monkeypatch.undo()
        box.chmod(0o700)
    assert _names(box) == ["a.bin", "b.bin"] and (box / "b.bin").read_bytes() == b"b"


def test_syncfs_goes_through_a_file_on_each_file_system(tmp_path, monkeypatch):
    """One descriptor per file system (found once per directory), each a file just written;
    all of them closed after."""
    synced = []

    def syncfs(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return 0

    monkeypatch.setattr(atomic, "_syncfs", lambda: syncfs)
    files = [(tmp_path / d / f"{i}.bin", b"x") for d in ("one", "two", "three") for i in range(3)]
    before = len(os.listdir("/proc/self/fd"))
    atomic.write_files(files)
    assert len(synced) == 1 and synced[0].startswith(str(tmp_path / "one" / ".0.bin."))
    assert len(os.listdir("/proc/self/fd")) == before

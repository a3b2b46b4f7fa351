"""Helpers of the hostile-input tests: run the CLI in a subprocess with a timeout (so a hang
fails the test), and fingerprint a tree of files to prove that no input changed."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: parities settings that train in well under a second.
TINY_PARITIES = {"n_train": 64, "n_test": 16, "hidden": 8, "batch_size": 32, "epochs": 2,
                 "checkpoint_every": 1, "checkpoint_unit": "epoch"}


def env() -> dict[str, str]:
    """The environment of a child trainmap process: this worktree's package first."""
    out = dict(os.environ)
    out["PYTHONPATH"] = str(ROOT / "python") + os.pathsep + out.get("PYTHONPATH", "")
    out.pop("TRAINMAP_DEBUG", None)
    return out


def like_a_terminal() -> None:
    """``preexec_fn`` for a child the test sends Ctrl-C (SIGINT): reset SIGINT to its default
    disposition, as in a terminal. A shell starts background jobs with SIGINT ignored, the
    ignore is inherited across exec, and Python then installs no KeyboardInterrupt handler,
    so without this the test would depend on how the test run itself was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def trainmap_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainmap.cli", *map(str, args)]


def run_cli(*args: str, timeout: float = 120.0, **kwargs) -> subprocess.CompletedProcess:
    """``trainmap ARGS`` in a child process; a hang raises ``TimeoutExpired`` (a failure)."""
    return subprocess.run(trainmap_command(*args), capture_output=True, text=True, timeout=timeout, env=env(),
                          **kwargs)


def set_args(settings: dict) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def fingerprint(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every regular file under ``root`` (FIFOs and other
    special files by their kind, never opened)."""
    result = {}
    for path in sorted(Path(root).rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode):
            result[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif not stat.S_ISDIR(mode):
            result[str(path.relative_to(root))] = f"special {stat.S_IFMT(mode):o}"
    return result


def one_error_line(stderr: str, command: str) -> str:
    """The single ``trainmap COMMAND: error: ...`` line of ``stderr`` (no traceback)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"trainmap {command}: error:")]
    assert len(lines) == 1, stderr
    return lines[0]

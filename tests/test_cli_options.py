"""The command line's shared options: every path option is declared by role (so the check
that no output overwrites an input covers every command), and ``--threads`` and
``--no-progress`` mean the same in every command."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from checkpoint_factory import tensor, write_checkpoint
from hostile_helpers import fingerprint, one_error_line
from trainmap.cli import _path, build_parser, main
from trainmap.io.limits import available_cpus


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def _options(command: argparse.ArgumentParser, name: str) -> list[argparse.Action]:
    return [a for a in command._actions if name in a.option_strings]


def test_every_path_argument_is_declared_as_output_input_or_place():
    for name, command in _commands().items():
        roles = {key: set(command.get_default(key) or {}) for key in ("file_outputs", "file_inputs", "other_paths")}
        for action in command._actions:
            assert action.type is not Path, (name, action.dest)  # a bare Path escapes the clobber check
            if action.type is _path:
                found = [key for key, dests in roles.items() if action.dest in dests]
                assert len(found) == 1, (name, action.dest, found)
        assert not set().union(*roles.values()) - {a.dest for a in command._actions}, name


def test_threads_and_no_progress_read_the_same_in_every_command():
    threads = {name: a.help for name, c in _commands().items() for a in _options(c, "--threads")}
    progress = {name: a.help for name, c in _commands().items() for a in _options(c, "--no-progress")}
    assert len(threads) >= 5 and len(set(threads.values())) == 1, threads
    assert len(progress) >= 8 and len(set(progress.values())) == 1, progress
    assert {"metrics", "train", "train-sweep", "series-metrics", "series-metrics-chunk"} <= set(threads)


def _checkpoints(folder, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    return [write_checkpoint(folder / f"step{i:08d}.safetensors",
                             [tensor("fc.weight", np.arange(6.0).reshape(2, 3) + i, "F32", "matrix")])
            for i in range(n)]


def test_threads_beyond_the_cpus_are_lowered_in_metrics_as_in_training(tmp_path):
    """The engine capped its own thread count with its own message; now every command's
    --threads is capped by the command line, with one message for all of them."""
    _checkpoints(tmp_path / "ckpts")
    with pytest.warns(RuntimeWarning, match=f"--threads 10000 is more than the {available_cpus()} CPU"):
        status = main(["metrics", str(tmp_path / "ckpts"), "-o", str(tmp_path / "m.csv"), "--threads", "10000",
                       "--no-progress"])
    assert status == 0 and (tmp_path / "m.csv").is_file()


def test_zero_threads_is_one_error_in_every_engine_command(tmp_path, capsys):
    _checkpoints(tmp_path / "ckpts")
    for argv in (["metrics", str(tmp_path / "ckpts"), "-o", str(tmp_path / "m.csv")],
                 ["series-metrics-chunk", str(tmp_path / "ckpts"), "--index", "0", "--size", "1",
                  "-o", str(tmp_path / "c.json")]):
        status = main([*argv, "--threads", "0", "--no-progress"])
        line = one_error_line(capsys.readouterr().err, argv[0])
        assert status == 2 and "--threads must be a positive integer" in line


def test_series_metrics_chunk_refuses_to_write_over_a_file_of_its_run(tmp_path, capsys):
    """series-metrics-chunk was outside the clobber check (no entry in the old table):
    its -o onto a file of the run directory it reads is refused, nothing changed."""
    run = tmp_path / "run"
    _checkpoints(run)
    (run / "trainer_state.json").write_text('{"log_history": []}\n')
    before = fingerprint(tmp_path)
    status = main(["series-metrics-chunk", str(run), "--index", "0", "--size", "1",
                   "-o", str(run / "trainer_state.json"), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "series-metrics-chunk")
    assert status == 2 and "also an input" in line and "trainer_state.json" in line
    assert fingerprint(tmp_path) == before

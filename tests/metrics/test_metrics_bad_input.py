"""Bad input to the metrics engine: one clear exception naming the file, never a crash."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from checkpoint_factory import tensor, write_checkpoint, write_raw
from trainmap.cli import main
from trainmap.metrics.engine import CheckpointError, checkpoint_metrics, checkpoint_paths, trajectory_metrics


def good(tmp_path, name="good.safetensors"):
    return write_checkpoint(tmp_path / name, [tensor("fc.weight", np.arange(6.0).reshape(2, 3), "F32", "matrix")])


def header(**entries) -> bytes:
    return json.dumps(entries).encode()


def expect_checkpoint_error(path, match):
    with pytest.raises(CheckpointError) as info:
        checkpoint_metrics(path)
    message = str(info.value)
    assert path.name in message, message
    assert re.search(match, message), message
    assert isinstance(info.value, ValueError)


def test_truncated_file(tmp_path):
    path = good(tmp_path, "truncated.safetensors")
    path.write_bytes(path.read_bytes()[:-5])
    expect_checkpoint_error(path, "truncated")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    expect_checkpoint_error(path, "empty")


def test_file_shorter_than_the_header_length_field(tmp_path):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x02")
    expect_checkpoint_error(path, "truncated")


def test_header_length_beyond_the_file(tmp_path):
    path = write_raw(tmp_path / "long.safetensors", b"{}", b"", header_len=4096)
    expect_checkpoint_error(path, "runs past the end of the file")


def test_absurd_header_length(tmp_path):
    path = write_raw(tmp_path / "huge.safetensors", b"{}", b"", header_len=2**62)
    expect_checkpoint_error(path, "header length")


def test_invalid_json_header(tmp_path):
    path = write_raw(tmp_path / "json.safetensors", b'{"fc.weight": {"dtype": "F32", ', b"")
    expect_checkpoint_error(path, "not valid safetensors JSON")


def test_data_offsets_out_of_range(tmp_path):
    h = header(**{"fc.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}})
    path = write_raw(tmp_path / "range.safetensors", h, bytes(8))
    expect_checkpoint_error(path, "does not end where the file ends")


def test_overlapping_data_offsets(tmp_path):
    h = header(
        a={"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        b={"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    )
    path = write_raw(tmp_path / "overlap.safetensors", h, bytes(12))
    expect_checkpoint_error(path, "overlap")


def test_shape_and_dtype_not_matching_the_byte_range(tmp_path):
    h = header(**{"fc.weight": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 16]}})
    path = write_raw(tmp_path / "shape.safetensors", h, bytes(16))
    expect_checkpoint_error(path, r"fc\.weight.*36 bytes.*16 bytes")


def test_unknown_dtype_string(tmp_path):
    h = header(**{"fc.weight": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}})
    path = write_raw(tmp_path / "dtype.safetensors", h, bytes(2))
    expect_checkpoint_error(path, "not valid safetensors JSON")


def test_directory_given_as_a_checkpoint(tmp_path):
    folder = tmp_path / "step1.safetensors"
    folder.mkdir()
    expect_checkpoint_error(folder, "directory")


def test_missing_path(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        checkpoint_metrics(missing)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        trajectory_metrics([good(tmp_path), missing])


def test_directory_without_checkpoints(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="no \\*.safetensors checkpoints"):
        checkpoint_paths(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        checkpoint_paths(tmp_path / "nowhere")


def test_one_bad_file_in_a_trajectory_is_named(tmp_path):
    paths = [good(tmp_path, f"step{i}.safetensors") for i in range(5)]
    paths[3].write_bytes(b"garbage that is not a checkpoint")
    with pytest.raises(CheckpointError, match="step3.safetensors"):
        trajectory_metrics(paths, threads=2)


def test_cli_reports_one_line_and_keeps_the_previous_output(tmp_path, capsys):
    run = tmp_path / "checkpoints"
    run.mkdir()
    good(run, "step00000000.safetensors")
    bad = run / "step00000100.safetensors"
    bad.write_bytes(b"")
    output = tmp_path / "metrics.csv"
    output.write_text("previous complete result\n")
    status = main(["metrics", str(run), "-o", str(output), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2
    assert "step00000100.safetensors" in err and "empty" in err and "Traceback" not in err
    assert output.read_text() == "previous complete result\n"
    assert not list(tmp_path.glob(".metrics.csv*")), "no temporary file left behind"


def test_cli_directory_without_checkpoints(tmp_path, capsys):
    assert main(["metrics", str(tmp_path), "-o", str(tmp_path / "m.csv")]) == 2
    assert "no *.safetensors checkpoints" in capsys.readouterr().err

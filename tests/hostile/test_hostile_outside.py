"""Hostile and careless input, class 5: files that point outside the run.

A shard index (``model.safetensors.index.json``) is data from wherever the checkpoints came
from; what it names is read only when it is a plain file name inside the index's own
directory, and only when the shards hold exactly the tensors it claims. Each case asserts
the exit status, that the one-line message names the index and the entry, and that nothing
changed (no output written, the file outside not copied)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from checkpoint_factory import tensor, write_checkpoint
from hostile_helpers import fingerprint, one_error_line
from trainmap.cli import main


def _weights(value: float):
    return [tensor("fc.weight", np.full((2, 3), value), "F32", "matrix")]


def _sharded_series(root, entry, *, secret_value: float = 1234.5):
    """``root/src/step_0`` whose index names ``entry`` (a shard there holds fc.bias), and a
    valid checkpoint outside the run at ``root/secret/secret.safetensors``."""
    secret = root / "secret"
    secret.mkdir()
    write_checkpoint(secret / "secret.safetensors", _weights(secret_value))
    folder = root / "src" / "step_0"
    folder.mkdir(parents=True)
    write_checkpoint(folder / "model-00001-of-00002.safetensors",
                     [tensor("fc.bias", np.ones(2), "F32", "bias")])
    entry = entry(root) if callable(entry) else entry
    index = {"metadata": {}, "weight_map": {"fc.bias": "model-00001-of-00002.safetensors", "fc.weight": entry}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return root / "src", folder / "model.safetensors.index.json", entry


def _symlinked(root):
    """A shard in the index's directory that is a symlink to the checkpoint outside."""
    link = root / "src" / "step_0" / "model-00002-of-00002.safetensors"
    os.symlink(root / "secret" / "secret.safetensors", link)
    return link.name


ESCAPES = {
    "parent": "../../secret/secret.safetensors",
    "absolute": lambda root: str(root / "secret" / "secret.safetensors"),
    "etc_passwd": "/etc/passwd",
    "separator": "sub/model-00002-of-00002.safetensors",
    "symlink": "symlink",
}


def _entry(kind):
    def make(root):
        if kind == "symlink":
            return _symlinked(root)
        value = ESCAPES[kind]
        return value(root) if callable(value) else value
    return make


@pytest.mark.parametrize("command", ["series-metrics", "import"])
@pytest.mark.parametrize("kind", list(ESCAPES))
def test_a_shard_index_pointing_outside_its_directory_is_refused(tmp_path, capsys, command, kind):
    src, index, entry = _sharded_series(tmp_path, _entry(kind))
    if kind == "separator":
        (src / "step_0" / "sub").mkdir()
        write_checkpoint(src / "step_0" / entry, _weights(1.0))  # inside, but not a plain name
    out = tmp_path / "out"
    before = fingerprint(tmp_path)
    option = "--out-dir" if command == "series-metrics" else "--out"
    status = main([command, str(src), option, str(out), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, command)
    assert status == 2, line
    assert str(index) in line and entry in line, line
    assert "1234.5" not in line and "root:" not in line
    assert fingerprint(tmp_path) == before
    assert not out.exists()


@pytest.mark.parametrize("command", ["series-metrics", "import"])
def test_a_shard_index_claiming_tensors_its_shards_do_not_hold_is_refused(tmp_path, capsys, command):
    folder = tmp_path / "src" / "step_0"
    folder.mkdir(parents=True)
    write_checkpoint(folder / "model-00001-of-00001.safetensors", _weights(1.0))  # holds fc.weight
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"claimed.weight": "model-00001-of-00001.safetensors"}}))
    out = tmp_path / "out"
    before = fingerprint(tmp_path)
    option = "--out-dir" if command == "series-metrics" else "--out"
    status = main([command, str(tmp_path / "src"), option, str(out), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, command)
    assert status == 2 and str(index) in line and "claimed.weight" in line and "fc.weight" in line, line
    assert fingerprint(tmp_path) == before
    assert not out.exists()


def test_a_symlinked_shard_that_stays_in_the_directory_is_read(tmp_path, capsys):
    """The rule is about where a shard resolves, not about links as such."""
    folder = tmp_path / "src" / "step_0"
    folder.mkdir(parents=True)
    write_checkpoint(folder / "blob", _weights(2.0))
    os.symlink("blob", folder / "model-00001-of-00001.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"fc.weight": "model-00001-of-00001.safetensors"}}))
    status = main(["series-metrics", str(tmp_path / "src"), "--out-dir", str(tmp_path / "out"), "--no-progress"])
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "metrics.csv").is_file()


def test_a_bin_shard_index_claiming_tensors_its_shards_do_not_hold_is_refused(tmp_path, capsys):
    import torch

    folder = tmp_path / "src" / "step_0"
    folder.mkdir(parents=True)
    torch.save({"fc.weight": torch.ones(2, 3)}, folder / "pytorch_model-00001-of-00001.bin")
    index = folder / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"weight_map": {"claimed.weight": "pytorch_model-00001-of-00001.bin"}}))
    before = fingerprint(tmp_path / "src")
    status = main(["import", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "import")
    assert status == 2 and str(index) in line and "claimed.weight" in line and "fc.weight" in line, line
    assert fingerprint(tmp_path / "src") == before
    # .bin shards are checked as they are loaded: the import is left unfinished, with no checkpoint
    assert not (tmp_path / "out" / "checkpoints").exists() and not (tmp_path / "out" / "run.json").exists()

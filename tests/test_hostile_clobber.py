"""Hostile and careless input, class 1: outputs that would destroy or mix files.

Each case asserts the exit status, that the one-line message names the file or option,
and that no input file changed (hashes before and after)."""

from __future__ import annotations

import numpy as np
import pytest

from checkpoint_factory import tensor, write_checkpoint
from hostile_helpers import TINY_PARITIES, fingerprint, one_error_line
from trainmap.cli import main
from trainmap.train import layout


def _checkpoints(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    return [write_checkpoint(folder / f"step{i:08d}.safetensors",
                             [tensor("fc.weight", np.arange(6.0).reshape(2, 3) + i, "F32", "matrix")])
            for i in range(n)]


def test_metrics_output_glob_matching_checkpoints_is_refused(tmp_path, capsys):
    """`trainmap metrics -o glob/*.safetensors`: the shell makes the first checkpoint the output."""
    paths = _checkpoints(tmp_path / "glob")
    before = fingerprint(tmp_path)
    status = main(["metrics", "-o", *map(str, paths), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "metrics")
    assert status == 2
    assert "--output" in line and str(paths[0]) in line and ".safetensors" in line
    assert fingerprint(tmp_path) == before


def test_metrics_output_that_is_an_input_is_refused(tmp_path, capsys):
    """A CSV-named output that is a hard link to an input checkpoint is the same file."""
    paths = _checkpoints(tmp_path / "ckpts")
    alias = tmp_path / "metrics.csv"
    alias.hardlink_to(paths[1])
    before = fingerprint(tmp_path)
    status = main(["metrics", str(tmp_path / "ckpts"), "-o", str(alias), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "metrics")
    assert status == 2 and "also an input" in line and str(alias) in line
    assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("option", ["--states", "--model"])
def test_analysis_output_onto_a_run_file_is_refused(tmp_path, capsys, option):
    """hmm-select/hmm-decode writing over a run directory's metrics.csv (an input)."""
    run = tmp_path / "runs" / "0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("step,l1\n0,1.0\n")
    (run / "run.json").write_text('{"seed": 0}\n')
    before = fingerprint(tmp_path)
    if option == "--states":
        argv = ["hmm-decode", str(run), "--model", str(tmp_path / "model.npz"), "--states", str(run / "metrics.csv")]
        command = "hmm-decode"
    else:  # an npz written onto run.json: the wrong format, and an input
        argv = ["hmm-select", str(run), "--selection-csv", str(tmp_path / "sel.csv"), "--model", str(run / "run.json")]
        command = "hmm-select"
    status = main(argv)
    line = one_error_line(capsys.readouterr().err, command)
    assert status == 2 and option in line and str(run) in line
    assert fingerprint(tmp_path) == before


def test_train_refuses_a_foreign_non_empty_directory(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work\n")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "step00000000.safetensors").write_bytes(b"someone else's checkpoint")
    before = fingerprint(tmp_path)
    status = main(["train", "parities", "--seed", "0", "--out", str(out), "--no-progress", "--threads", "1",
                   *[a for k, v in TINY_PARITIES.items() for a in ("--set", f"{k}={v}")]])
    line = one_error_line(capsys.readouterr().err, "train")
    assert status == 2 and str(out) in line and "thesis.tex" in line and "checkpoints" in line
    assert fingerprint(tmp_path) == before  # nothing deleted, nothing added (not even a lock file)


def test_import_refuses_a_foreign_directory_and_the_source_itself(tmp_path, capsys):
    source = _series(tmp_path / "src", [0, 10])
    before = fingerprint(tmp_path)
    status = main(["import", str(source), "--out", str(source), "--no-progress"])  # --out is the source
    line = one_error_line(capsys.readouterr().err, "import")
    assert status == 2 and str(source) in line and "step_0" in line
    assert fingerprint(tmp_path) == before


def _series(src, steps):
    """A released-checkpoint series: one step_N/model.safetensors per step."""
    for step in steps:
        (src / f"step_{step}").mkdir(parents=True)
        write_checkpoint(src / f"step_{step}" / "model.safetensors",
                         [tensor("fc.weight", np.full((2, 3), float(step)), "F32", "matrix")])
    return src


def test_an_interrupted_import_resumed_from_another_source_is_refused(tmp_path, capsys):
    first, second = _series(tmp_path / "a", [0, 10, 20]), _series(tmp_path / "b", [0, 10, 20])
    (second / "step_10" / "model.safetensors").write_bytes(
        (first / "step_20" / "model.safetensors").read_bytes())  # differs from a's step 10
    out = tmp_path / "run"
    assert main(["import", str(first), "--out", str(out), "--no-progress"]) == 0
    (out / "run.json").unlink()  # as if killed before it finished
    (out / "checkpoints" / "step00000020.safetensors").unlink()
    before = fingerprint(tmp_path)
    status = main(["import", str(second), "--out", str(out), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "import")
    assert status == 2 and layout.OWNER_NAME in line and str(first.resolve()) in line
    assert fingerprint(tmp_path) == before  # no checkpoint of b mixed in
    assert main(["import", str(first), "--out", str(out), "--no-progress"]) == 0  # the same source resumes
    assert layout.checkpoint_steps(out) == [0, 10, 20]


def test_a_finished_training_run_is_not_overwritten_by_an_import(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "parities", "--seed", "0", "--out", str(out), "--no-progress", "--threads", "1",
                 *[a for k, v in TINY_PARITIES.items() for a in ("--set", f"{k}={v}")]]) == 0
    source = _series(tmp_path / "src", [0])
    before = fingerprint(tmp_path)
    status = main(["import", str(source), "--out", str(out), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "import")
    assert status == 2 and "run.json" in line and "training run" in line
    assert fingerprint(tmp_path) == before


def test_a_resume_state_without_owner_file_of_other_settings_is_not_claimed(tmp_path, monkeypatch, capsys):
    """A run directory from before owner files: its resume state decides whose it is."""
    from trainmap.train import loop, train_run

    out = tmp_path / "run"
    monkeypatch.setattr(loop, "_run_record", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # killed after its last resume state, before run.json
        train_run("parities", 0, out, TINY_PARITIES, threads=1, progress=False, resume_interval_s=0)
    monkeypatch.undo()
    (out / layout.OWNER_NAME).unlink()
    before = fingerprint(tmp_path)
    status = main(["train", "parities", "--seed", "0", "--out", str(out), "--no-progress", "--threads", "1",
                   *[a for k, v in {**TINY_PARITIES, "hidden": 9}.items() for a in ("--set", f"{k}={v}")]])
    line = one_error_line(capsys.readouterr().err, "train")
    assert status == 2 and "resume/state.safetensors belongs to a different run (hidden: 8 there, 9 now" in line
    assert fingerprint(tmp_path) == before  # and no owner file claims it for the other settings

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


@pytest.mark.slow
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


# --- round 2: what series-metrics and train may write over or delete ---------------------


def _recorder_run(directory):
    """A closed Recorder run (kept checkpoints), as a training script leaves it."""
    from trainmap import Recorder

    with Recorder(directory, seed=1, keep_checkpoints=True) as rec:
        for step in (0, 10):
            rec.record(step, {"fc.weight": np.full((2, 3), 1.0 + step, dtype=np.float32)}, eval_accuracy=step / 10)
    return directory


@pytest.mark.parametrize("inside", ["", "analysis"])
def test_series_metrics_out_dir_on_or_inside_its_source_is_refused(tmp_path, capsys, inside):
    """--out-dir onto the Recorder run it reads would rewrite its run.json and log.csv."""
    run = _recorder_run(tmp_path / "run")
    out = run / inside if inside else run
    before = fingerprint(tmp_path)
    status = main(["series-metrics", str(run), "--out-dir", str(out), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "series-metrics")
    assert status == 2 and "--out-dir" in line and str(out) in line and str(run) in line, line
    assert fingerprint(tmp_path) == before
    from trainmap import Recorder

    with Recorder(run, seed=1, keep_checkpoints=True) as rec:  # the script can still continue its run
        rec.record(20, {"fc.weight": np.full((2, 3), 5.0, dtype=np.float32)})


def test_series_metrics_refuses_an_out_dir_holding_files_it_did_not_write(tmp_path, capsys):
    run = _recorder_run(tmp_path / "run")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.csv").write_text("the user's own metrics\n")
    (out / "notes.txt").write_text("keep\n")
    before = fingerprint(tmp_path)
    status = main(["series-metrics", str(run), "--out-dir", str(out), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "series-metrics")
    assert status == 2 and str(out) in line and "metrics.csv" in line and "notes.txt" in line, line
    assert fingerprint(tmp_path) == before


def test_series_metrics_rewrites_its_own_out_dir_and_one_from_before_owner_files(tmp_path, capsys):
    run = _recorder_run(tmp_path / "run")
    out = tmp_path / "out"
    for _ in range(2):  # its own earlier output is replaced
        assert main(["series-metrics", str(run), "--out-dir", str(out), "--no-progress"]) == 0, capsys.readouterr()
    (out / layout.OWNER_NAME).unlink()  # as written by a trainmap without owner files: run.json says in_place
    assert main(["series-metrics", str(run), "--out-dir", str(out), "--no-progress"]) == 0, capsys.readouterr()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "integrity.json", "log.csv", "metrics.csv", "run.json"]


def _train_args(out, **changes):
    return ["train", "parities", "--seed", "0", "--out", str(out), "--no-progress", "--threads", "1",
            *[a for k, v in {**TINY_PARITIES, **changes}.items() for a in ("--set", f"{k}={v}")]]


def test_train_over_a_finished_run_without_run_json_deletes_only_what_trainmap_wrote(tmp_path, capsys):
    """The owner file says a finished run; run.json is gone (Snakemake removed it after a
    change of settings). Files trainmap never wrote are not deleted: the directory is refused,
    naming them, and nothing changes."""
    out = tmp_path / "run"
    assert main(_train_args(out)) == 0
    (out / "run.json").unlink()
    (out / "checkpoints" / "step00000099.safetensors").write_bytes(b"a checkpoint trainmap never wrote")
    (out / "notes.txt").write_text("years of work\n")
    before = fingerprint(tmp_path)
    status = main(_train_args(out, hidden=9))
    line = one_error_line(capsys.readouterr().err, "train")
    assert status == 2 and str(out) in line, line
    assert "checkpoints/step00000099.safetensors" in line and "notes.txt" in line, line
    assert fingerprint(tmp_path) == before


def test_train_starting_over_removes_the_old_runs_metrics_csv(tmp_path, capsys):
    """Every file trainmap wrote into the run (metrics.csv by `trainmap metrics` too) goes when
    the run starts over; nothing of the old run stays beside the new checkpoints."""
    out = tmp_path / "run"
    assert main(_train_args(out)) == 0
    assert main(["metrics", str(out / "checkpoints"), "-o", str(out / "metrics.csv"), "--no-progress"]) == 0
    old_steps = layout.checkpoint_steps(out)
    (out / "run.json").unlink()
    assert main(_train_args(out, epochs=1)) == 0, capsys.readouterr().err
    assert layout.checkpoint_steps(out) == old_steps[: len(layout.checkpoint_steps(out))] != old_steps
    assert not (out / "metrics.csv").exists()

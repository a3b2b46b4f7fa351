"""The one reader of checkpoint series (trainmap.metrics.series): layouts, steps, shards, logs,
memory-mapped tensors; and the integrity report of trainmap.metrics.series_metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from trainmap.io.contracts import StepError
from trainmap.metrics.series import Series, SeriesError, discover, read_log, step_of, trainer_global_step
from trainmap.metrics.series_metrics import integrity_report, integrity_warning


def state(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return {"layer.weight": torch.randn(3, 4, generator=g), "layer.bias": torch.randn(3, generator=g)}


def test_step_files_directly_or_under_checkpoints(tmp_path):
    for folder, names in ((tmp_path / "a", ("step10.safetensors", "step2.safetensors")),
                          (tmp_path / "b" / "checkpoints", ("step00000000.safetensors", "step00000005.safetensors"))):
        folder.mkdir(parents=True)
        for name in names:
            save_file(state(0), str(folder / name))
    (tmp_path / "a" / "notes.safetensors").write_bytes(b"")  # no step in its name: not a checkpoint
    a, b = discover(tmp_path / "a"), discover(tmp_path / "b")
    assert (a.layout, a.steps, b.layout, b.steps) == ("files", [2, 10], "files", [0, 5])
    assert a.checkpoints[1].files == (tmp_path / "a" / "step10.safetensors",)


def test_step_directories_of_every_format(tmp_path):
    src = tmp_path / "run"
    (src / "checkpoint-500").mkdir(parents=True)
    save_file(state(500), str(src / "checkpoint-500" / "model.safetensors"))
    (src / "step_20k").mkdir()
    save_file({"layer.weight": state(1)["layer.weight"]}, str(src / "step_20k" / "model-00001-of-00002.safetensors"))
    save_file({"layer.bias": state(1)["layer.bias"]}, str(src / "step_20k" / "model-00002-of-00002.safetensors"))
    (src / "step_20k" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "layer.weight": "model-00001-of-00002.safetensors", "layer.bias": "model-00002-of-00002.safetensors"}}))
    (src / "step143000").mkdir()
    torch.save(state(2), src / "step143000" / "pytorch_model.bin")
    (src / "runs").mkdir()  # tensorboard folder: no step in its name
    series = discover(src)
    assert series.layout == "dirs" and series.steps == [500, 20000, 143000]
    assert [c.format for c in series.checkpoints] == ["safetensors", "sharded", "bin"]
    sharded = series.checkpoints[1]
    assert sharded.index == src / "step_20k" / "model.safetensors.index.json" and len(sharded.files) == 2
    assert set(series.input_files()) == {str(p) for c in series.checkpoints for p in c.files} | {str(sharded.index)}


def test_a_recorder_run_is_recognised_with_or_without_checkpoints(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"kind": "recorder", "status": "complete"}))
    (tmp_path / "run" / "metrics.csv").write_text("step\n")
    (tmp_path / "run" / "log.csv").write_text("step,eval_loss\n0,1.5\n")
    series = discover(tmp_path / "run")
    assert series.layout == "recorder" and series.steps == [] and series.recorder["status"] == "complete"
    assert sorted(series.input_files()) == sorted(str(tmp_path / "run" / f) for f in ("run.json", "metrics.csv",
                                                                                        "log.csv"))
    (tmp_path / "run" / "checkpoints").mkdir()
    save_file(state(3), str(tmp_path / "run" / "checkpoints" / "step00000003.safetensors"))
    assert discover(tmp_path / "run").steps == [3]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "no checkpoints found"),
        (lambda d: (d / "step5").mkdir(), "step5: no model.safetensors"),
        (lambda d: ((d / "step5").mkdir(), save_file(state(0), str(d / "step5" / "model-00001-of-00002.safetensors"))),
         "safetensors shards but no model.safetensors.index.json"),
        (lambda d: ((d / "step5").mkdir(), (d / "step5" / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"w": "model-00001-of-00002.safetensors"}}))),
         "names shard model-00001-of-00002.safetensors, which is missing"),
        (lambda d: ((d / "step5").mkdir(), (d / "step5" / "model.safetensors.index.json").write_text("{")),
         "unreadable JSON"),
        (lambda d: [save_file(state(0), str(d / n)) for n in ("step1k.safetensors", "step1000.safetensors")],
         "both stand for step 1000"),
    ],
)
def test_bad_series_are_named(tmp_path, make, message):
    src = tmp_path / "run"
    src.mkdir()
    make(src)
    with pytest.raises(SeriesError, match=message) as info:
        discover(src)
    assert str(src) in str(info.value)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent: no such run directory"):
        discover(tmp_path / "absent")


def test_step_names_beyond_int64_are_refused():
    assert step_of("step9223372036854775807") == 2**63 - 1
    with pytest.raises(StepError, match="step9223372036854775808: step 9223372036854775808 does not fit"):
        step_of("step9223372036854775808")


def test_log_csv_and_the_newest_trainer_state_are_merged(tmp_path):
    src = tmp_path / "run"
    for step, history in ((10, [{"step": 10, "loss": 2.0}, {"step": 10, "eval_loss": 9.0}]),
                          (20, [{"step": 10, "loss": 2.0}, {"step": 10, "eval_loss": 2.5},
                                {"step": 20, "loss": 1.0, "eval_acc": 0.75, "epoch": 1.0}])):
        folder = src / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        save_file(state(step), str(folder / "model.safetensors"))
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": history}))
    (src / "log.csv").write_text("step,eval_accuracy,note\n0,0.1,start\n10,0.5,\n")
    log = read_log(discover(src))
    assert log == {
        0: {"eval_accuracy": 0.1, "note": "start"},
        10: {"eval_accuracy": 0.5, "note": None, "train_loss": 2.0, "eval_loss": 2.5},  # the newer state wins
        20: {"train_loss": 1.0, "eval_accuracy": 0.75, "epoch": 1.0},
    }
    assert trainer_global_step(src / "checkpoint-20") == 20
    assert read_log(Series(src, "files", (), ())) == {}
    (src / "log.csv").write_text("epoch,eval_accuracy\n1,0.5\n")
    with pytest.raises(SeriesError, match="log.csv: no 'step' column"):
        read_log(discover(src))
    (src / "log.csv").write_text("step,eval_accuracy\n-3,0.5\n")
    with pytest.raises(StepError, match="log.csv, line 2: '-3' is not a training step"):
        read_log(discover(src))


def test_integrity_duplicates_gaps_and_disagreeing_steps():
    steps = [0, 10, 20, 30, 50, 60, 70]
    hashes = ["a", "b", "c", "b", "d", "e", "a"]
    report = integrity_report(steps, hashes, {60: 60, 70: 65})
    assert report["duplicates"] == [{"step": 30, "duplicate_of": 10}, {"step": 70, "duplicate_of": 0}]
    assert report["gaps"] == [{"after": 30, "before": 50, "missing": 1, "grid": 10}]
    assert report["out_of_order"] == [{"step": 70, "recorded_step": 65}]
    message = integrity_warning(report, "runs/a")
    assert message.startswith("runs/a: checkpoint series integrity: ")
    for part in ("step 30 is identical to step 10", "step 70 is identical to step 0",
                 "1 checkpoint(s) of the 10-step grid missing between steps 30 and 50",
                 "checkpoint of step 70 records step 65"):
        assert part in message
    assert integrity_warning(integrity_report([0, 10, 20], ["a", "b", "c"]), "x") is None


@pytest.mark.parametrize(
    "steps",
    [
        [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000, 4000],  # Pythia's log-spaced start
        [*range(0, 200_001, 20_000), *range(300_000, 2_000_001, 100_000)],  # MultiBERTs' two grids
        [0, 5],
    ],
)
def test_schedules_that_change_spacing_are_not_gaps(steps):
    assert integrity_report(steps, [None] * len(steps))["gaps"] == []


def test_a_missing_checkpoint_in_a_released_schedule_is_a_gap():
    steps = [*range(0, 200_001, 20_000), *range(300_000, 2_000_001, 100_000)]
    steps.remove(1_500_000)
    assert integrity_report(steps, [None] * len(steps))["gaps"] == [
        {"after": 1_400_000, "before": 1_600_000, "missing": 1, "grid": 100_000}]

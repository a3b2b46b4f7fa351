"""Training logs of runs read in place (trainmap.metrics.series): Lightning's CSVLogger, TensorBoard
event files written by torch's SummaryWriter (read with the tensorboard package's reader),
a log the experiment names (a W&B history with ``_step``), which source wins, the bounds on
what is read, and the warning when the log's steps match no checkpoint."""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch.utils.tensorboard import SummaryWriter

from trainmap.metrics import series as series_module
from trainmap.cli import main
from trainmap.metrics.series import LogSource, SeriesError, discover, named_log, read_log
from trainmap.metrics.series_metrics import series_metrics


def checkpoints(src, steps=(10, 20, 30)) -> None:
    """step*.safetensors files at ``steps`` (the log sources do not depend on the layout)."""
    src.mkdir(parents=True, exist_ok=True)
    for step in steps:
        g = torch.Generator().manual_seed(step)
        save_file({"fc.weight": torch.randn(4, 3, generator=g), "fc.bias": torch.randn(4, generator=g)},
                  str(src / f"step{step}.safetensors"))


def lightning_version(folder, metrics_csv: str | None = None, hparams: bool = True):
    """A Lightning logger's version directory (CSVLogger writes hparams.yaml only when the
    module saved hyper-parameters; TensorBoardLogger always does)."""
    folder.mkdir(parents=True)
    if hparams:
        (folder / "hparams.yaml").write_text("{}\n")
    if metrics_csv is not None:
        (folder / "metrics.csv").write_text(metrics_csv)
    return folder


def test_lightning_csv_rows_of_one_step_are_merged_and_shifted_to_global_step(tmp_path):
    """CSVLogger writes training and validation metrics on rows of their own, at global_step - 1."""
    checkpoints(tmp_path / "run", (5, 10))
    lightning_version(tmp_path / "run" / "lightning_logs" / "version_0", (
        "epoch,eval_accuracy,eval_loss,step,train_loss\n"
        "0,,,4,0.69\n0,0.6875,0.657,4,\n0,,,9,0.70\n0,0.578125,0.675,9,\n"), hparams=False)
    series = discover(tmp_path / "run")
    assert series.logs == (LogSource(tmp_path / "run" / "lightning_logs" / "version_0" / "metrics.csv",
                                     "lightning_csv", "step", 1),)
    assert read_log(series) == {
        5: {"epoch": 0, "eval_accuracy": 0.6875, "eval_loss": 0.657, "train_loss": 0.69},
        10: {"epoch": 0, "eval_accuracy": 0.578125, "eval_loss": 0.675, "train_loss": 0.70},
    }
    assert str(series.logs[0].path) in series.input_files()


def write_events(folder, scalars, **writer_options) -> None:
    """Scalars ``{tag: [(step, value), ...]}`` through torch's SummaryWriter, plus a
    histogram and a text that are not scalars."""
    writer = SummaryWriter(log_dir=str(folder))
    for tag, points in scalars.items():
        for step, value in points:
            writer.add_scalar(tag, value, step, **writer_options)
    writer.add_histogram("weights", torch.randn(50), 10)
    writer.add_text("notes", "not a scalar", 10)
    writer.close()


def test_tensorboard_scalars_of_every_kind(tmp_path):
    checkpoints(tmp_path / "run")
    folder = tmp_path / "run" / "runs" / "May01_10-00-00_host"  # SummaryWriter()'s and the HF Trainer's default
    write_events(folder, {"eval/accuracy": [(10, 0.1), (20, 0.7)], "train/loss": [(10, 2.5)]})
    writer = SummaryWriter(log_dir=str(folder))  # a second event file: TensorFlow 2's tensor scalars
    writer.add_scalar("eval/accuracy", 0.9, 30, new_style=True)
    writer.add_scalar("eval/loss", 0.25, 30, new_style=True, double_precision=True)
    writer.close()
    series = discover(tmp_path / "run")
    assert [s.kind for s in series.logs] == ["tensorboard", "tensorboard"]
    assert read_log(series) == {
        10: {"eval/accuracy": 0.1, "train/loss": 2.5},
        20: {"eval/accuracy": 0.7},  # float32's 0.7, written as 0.7 (not 0.699999988079071)
        30: {"eval/accuracy": 0.9, "eval/loss": 0.25},
    }


def test_newer_event_files_win_and_event_files_in_the_run_directory_are_found(tmp_path):
    checkpoints(tmp_path / "run")
    write_events(tmp_path / "run", {"eval_accuracy": [(10, 0.1), (20, 0.2)]})
    older = next((tmp_path / "run").glob("events.out.tfevents.*"))
    name = older.name.split(".")
    name[3] = str(int(name[3]) + 100)  # a later run (resumed): later creation time in the name
    write_events(tmp_path / "tmp", {"eval_accuracy": [(20, 0.5), (30, 0.6)]})
    next((tmp_path / "tmp").glob("events.out.tfevents.*")).rename(tmp_path / "run" / ".".join(name))
    series = discover(tmp_path / "run")
    assert [s.path.name for s in series.logs] == [older.name, ".".join(name)]
    assert read_log(series) == {10: {"eval_accuracy": 0.1}, 20: {"eval_accuracy": 0.5}, 30: {"eval_accuracy": 0.6}}


def test_a_log_csv_comes_before_lightning_and_tensorboard_logs(tmp_path):
    checkpoints(tmp_path / "run")
    version = lightning_version(tmp_path / "run" / "lightning_logs" / "version_0", "step,eval_accuracy\n9,0.3\n")
    write_events(version, {"eval_accuracy": [(9, 0.3)]})
    assert [s.kind for s in discover(tmp_path / "run").logs] == ["lightning_csv"]
    (version / "metrics.csv").unlink()
    assert [s.kind for s in discover(tmp_path / "run").logs] == ["lightning_tensorboard"]
    assert read_log(discover(tmp_path / "run")) == {10: {"eval_accuracy": 0.3}}
    (version / "hparams.yaml").unlink()  # not written by Lightning's TensorBoardLogger: steps as they are
    assert [s.kind for s in discover(tmp_path / "run").logs] == ["tensorboard"]
    (tmp_path / "run" / "log.csv").write_text("step,eval_accuracy\n10,0.3\n")
    assert [s.kind for s in discover(tmp_path / "run").logs] == ["log_csv"]


def test_a_log_named_by_the_experiment(tmp_path):
    src = tmp_path / "run"
    checkpoints(src)
    (src / "wandb_history.csv").write_text("_step,_runtime,eval_accuracy\n10,1.5,0.25\n20,3.0,\n30,4.5,0.75\n")
    series = discover(src, "wandb_history.csv", "_step")
    assert series.logs == (LogSource(src / "wandb_history.csv", "csv", "_step", 0),)
    assert read_log(series) == {10: {"_runtime": 1.5, "eval_accuracy": 0.25}, 20: {"_runtime": 3.0,
                                "eval_accuracy": None}, 30: {"_runtime": 4.5, "eval_accuracy": 0.75}}
    write_events(src / "tb" / "a", {"acc": [(10, 0.5)]})
    assert [s.kind for s in named_log(src, "tb")] == ["tensorboard"]  # a directory: its event files, recursively
    assert read_log(discover(src, "tb")) == {10: {"acc": 0.5}}
    with pytest.raises(SeriesError, match="applies to CSV logs"):
        discover(src, "tb", "_step")
    with pytest.raises(SeriesError, match=f"{src / 'absent.csv'}: no such log \\(log.path 'absent.csv'"):
        discover(src, "absent.csv")
    with pytest.raises(SeriesError, match="wandb_history.csv: no 'step' column"):
        read_log(discover(src, "wandb_history.csv"))  # default step column: step
    (src / "empty").mkdir()
    with pytest.raises(SeriesError, match=f"{src / 'empty'}: the log named by log.path holds no TensorBoard event"):
        named_log(src, "empty")
    # the command line names it the same way
    assert main(["series-metrics", str(src), "--out-dir", str(tmp_path / "out"), "--threads", "1",
                 "--log", "wandb_history.csv", "--log-step", "_step", "--no-progress"]) == 0
    assert pd.read_csv(tmp_path / "out" / "log.csv")["eval_accuracy"].tolist()[::2] == [0.25, 0.75]
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["log_sources"] == [{"path": str(src / "wandb_history.csv"), "kind": "csv", "step_column": "_step",
                                      "step_offset": 0}]


def test_a_truncated_event_file_warns_and_a_garbage_one_is_named(tmp_path):
    checkpoints(tmp_path / "run")
    write_events(tmp_path / "run", {"eval_accuracy": [(10, 0.1), (20, 0.2), (30, 0.3)]})
    path = next((tmp_path / "run").glob("events.out.tfevents.*"))
    data = path.read_bytes()
    path.write_bytes(data[:-30])  # cut inside the last records: a run still writing, or a damaged copy
    with pytest.warns(RuntimeWarning, match=f"{path}: TensorBoard event file read up to byte \\d+ of {len(data) - 30}"):
        log = read_log(discover(tmp_path / "run"))
    assert log[10] == {"eval_accuracy": 0.1}
    path.write_bytes(b"\x00" * 64)
    with pytest.warns(RuntimeWarning, match="read up to byte 0 of 64"):
        assert read_log(discover(tmp_path / "run")) == {}


def test_what_is_read_from_tensorboard_is_bounded(tmp_path, monkeypatch):
    checkpoints(tmp_path / "run")
    write_events(tmp_path / "run", {"a": [(10, 0.1), (20, 0.2)], "b": [(10, 1.0), (20, 2.0)]})
    monkeypatch.setattr(series_module, "MAX_TENSORBOARD_VALUES", 3)
    with pytest.raises(SeriesError, match="more than 3 TensorBoard scalars in this run; refusing to read them all"):
        read_log(discover(tmp_path / "run"))
    monkeypatch.setattr(series_module, "MAX_TENSORBOARD_VALUES", 4)
    assert read_log(discover(tmp_path / "run")) == {10: {"a": 0.1, "b": 1.0}, 20: {"a": 0.2, "b": 2.0}}
    monkeypatch.setattr(series_module, "MAX_EVENT_FILE_BYTES", 100)
    with pytest.raises(ValueError, match="more than the 100 a TensorBoard event file can need; refusing to read it"):
        read_log(discover(tmp_path / "run"))


def test_a_log_whose_steps_match_no_checkpoint_warns_naming_both(tmp_path):
    src = tmp_path / "run"
    checkpoints(src, (100, 200, 300))
    (src / "log.csv").write_text("step,eval_accuracy\n1,0.5\n2,0.6\n3,0.7\n")  # epochs, not steps
    with pytest.warns(RuntimeWarning) as caught:
        series_metrics(src, tmp_path / "out", threads=1)
    messages = [str(w.message) for w in caught if "no step of its log" in str(w.message)]
    assert messages == [f"{src}: no step of its log ({src / 'log.csv'} (log_csv): 3 steps, 1..3) is the step of a "
                        "checkpoint (3 checkpoints, steps 100..300); log rows are matched to checkpoints by equal "
                        "step, so check that both count the same thing (name the log and its step column with the "
                        "experiment's log: {path, step})"]
    (src / "log.csv").write_text("step,eval_accuracy\n1,0.5\n100,0.6\n")  # one common step: matched
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        series_metrics(src, tmp_path / "out", threads=1)
    assert not [w for w in caught if "no step of its log" in str(w.message)]


def test_a_malformed_scalar_tensor_is_named(tmp_path):
    """A scalars-plugin tensor whose bytes do not fit its declared float32 scalar."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

    checkpoints(tmp_path / "run")
    value = summary_pb2.Summary.Value(
        tag="eval_accuracy",
        metadata=summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")),
        tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                      tensor_content=b"\x00\x01\x02"))
    writer = SummaryWriter(log_dir=str(tmp_path / "run"))
    writer._get_file_writer().add_summary(summary_pb2.Summary(value=[value]), 10)
    writer.close()
    with pytest.raises(SeriesError, match="events.out.tfevents.*: malformed TensorBoard scalar 'eval_accuracy'"):
        read_log(discover(tmp_path / "run"))

"""Every task trains a few steps on tiny settings and writes the full run layout."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from safetensors import safe_open

from trainmap.train import LOG_COLUMNS, TASKS, default_settings, train_run
from trainmap.train.components import build_model
from trainmap.train.tasks import resolve_settings

TINY = {
    "modular": {
        "modulus": 11,
        "d_model": 8,
        "n_heads": 2,
        "d_head": 4,
        "d_mlp": 16,
        "batch_size": 16,
        "epochs": 2,
        "checkpoint_every": 1,
        "checkpoint_unit": "epoch",
    },
    "parities": {
        "n_bits": 10,
        "k_bits": 2,
        "n_train": 64,
        "n_test": 16,
        "hidden": 8,
        "batch_size": 16,
        "epochs": 2,
        "checkpoint_every": 3,
        "checkpoint_unit": "step",
    },
    "digits": {"hidden": 8, "epochs": 1, "checkpoint_every": 10, "checkpoint_unit": "step"},
    "mnist": {
        "hidden": 8,
        "batch_size": 16,
        "epochs": 1,
        "checkpoint_every": 2,
        "checkpoint_unit": "step",
        "train_eval_size": 20,
    },
    "cifar100": {
        "width": 2,
        "batch_size": 4,
        "epochs": 1,
        "checkpoint_every": 2,
        "checkpoint_unit": "step",
        "train_eval_size": 6,
        "eval_batch_size": 4,
    },
}
TINY["modular_stable"] = TINY["modular"]
TINY["cifar100_unstable"] = TINY["cifar100"]


def tiny_settings(task: str, data_dir=None) -> dict:
    settings = dict(TINY[task])
    if data_dir is not None and "data_dir" in default_settings(task):
        settings["data_dir"] = str(data_dir)
    return settings


def read_log(path) -> list[dict]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == LOG_COLUMNS
        return [{k: float(v) for k, v in row.items()} for row in reader]


@pytest.mark.parametrize("task", TASKS)
def test_every_task_writes_the_full_layout(task, tmp_path, mnist_maker, cifar_maker):
    data_dir = tmp_path / "data"
    if task == "mnist":
        mnist_maker(data_dir, n_train=40, n_test=12)
    elif task.startswith("cifar100"):
        cifar_maker(data_dir, n_train=10, n_test=6)
    out = tmp_path / "run"
    record = train_run(task, 3, out, tiny_settings(task, data_dir), threads=1, progress=False)

    # run.json: the record returned, written last, with the facts the workflow needs
    assert json.loads((out / "run.json").read_text()) == record
    assert record["status"] == "complete" and record["task"] == task and record["seed"] == 3
    assert record["settings"] == resolve_settings(task, tiny_settings(task, data_dir))
    assert record["torch_version"] == torch.__version__ and record["device"].startswith("cpu")
    assert record["threads"] == 1 and record["wall_time_s"] > 0
    assert not (out / "resume").exists()  # resume state is removed once the run is finished

    # checkpoints: step 0, the schedule, the last step; one log row each
    steps = sorted(int(p.stem.removeprefix("step")) for p in (out / "checkpoints").glob("step*.safetensors"))
    assert all((out / "checkpoints" / f"step{s:08d}.safetensors").exists() for s in steps)
    spe = record["steps_per_epoch"]
    every = TINY[task]["checkpoint_every"] * (spe if TINY[task]["checkpoint_unit"] == "epoch" else 1)
    total = record["final_step"]
    assert total == TINY[task]["epochs"] * spe
    assert steps == sorted(set(range(0, total + 1, every)) | {total})
    rows = read_log(out / "log.csv")
    assert [int(r["step"]) for r in rows] == steps
    for row in rows:
        assert row["epoch"] == pytest.approx(row["step"] / spe)
        assert 0.0 <= row["train_accuracy"] <= 1.0 and 0.0 <= row["eval_accuracy"] <= 1.0
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["eval_loss"])
    assert record["final"]["step"] == total == record["last_checkpoint_step"]

    # checkpoint content: exactly the model's parameters, float32, sorted keys, no metadata
    expected = dict(build_model(task, resolve_settings(task, tiny_settings(task, data_dir)), 3).named_parameters())
    with safe_open(str(out / "checkpoints" / "step00000000.safetensors"), framework="pt") as handle:
        assert list(handle.keys()) == sorted(expected)
        assert not handle.metadata()
        for name in handle.keys():
            tensor = handle.get_tensor(name)
            assert tensor.dtype == torch.float32
            assert torch.equal(tensor, expected[name].detach())  # step 0 is the initialisation
    with safe_open(str(out / "checkpoints" / f"step{total:08d}.safetensors"), framework="pt") as handle:
        assert any(not torch.equal(handle.get_tensor(n), expected[n].detach()) for n in handle.keys())  # it trained


def test_a_finished_run_started_again_does_nothing(tmp_path):
    out = tmp_path / "run"
    first = train_run("digits", 0, out, TINY["digits"], threads=1, progress=False)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    again = train_run("digits", 0, out, TINY["digits"], threads=1, progress=False)
    assert again == first
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == before


def test_a_finished_run_refuses_other_settings(tmp_path):
    out = tmp_path / "run"
    train_run("digits", 0, out, TINY["digits"], threads=1, progress=False)
    with pytest.raises(ValueError, match="different run.*lr: 0.001 there, 0.01 now"):
        train_run("digits", 0, out, {**TINY["digits"], "lr": 0.01}, threads=1, progress=False)
    with pytest.raises(ValueError, match="seed: 0 there, 1 now"):
        train_run("digits", 1, out, TINY["digits"], threads=1, progress=False)


def test_checkpoint_every_counts_epochs_or_steps(tmp_path):
    by_epoch = train_run(
        "parities",
        0,
        tmp_path / "e",
        {**TINY["parities"], "epochs": 3, "checkpoint_every": 2, "checkpoint_unit": "epoch"},
        threads=1,
        progress=False,
    )
    assert by_epoch["steps_per_epoch"] == 4
    assert [int(r["step"]) for r in read_log(tmp_path / "e" / "log.csv")] == [0, 8, 12]
    by_step = train_run(
        "parities",
        0,
        tmp_path / "s",
        {**TINY["parities"], "max_steps": 7, "checkpoint_every": 5, "checkpoint_unit": "step"},
        threads=1,
        progress=False,
    )
    assert by_step["final_step"] == 7
    assert [int(r["step"]) for r in read_log(tmp_path / "s" / "log.csv")] == [0, 5, 7]


def test_stop_at_eval_accuracy_ends_the_run_early(tmp_path):
    record = train_run(
        "digits",
        0,
        tmp_path,
        {"epochs": 20, "checkpoint_every": 5, "stop_at_eval_accuracy": 0.5},
        threads=1,
        progress=False,
    )
    assert record["status"] == "complete" and record["stopped_at_eval_accuracy"]
    assert record["final"]["eval_accuracy"] >= 0.5 > read_log(tmp_path / "log.csv")[-2]["eval_accuracy"]
    assert record["final_step"] < record["planned_steps"]


def test_a_diverging_run_is_marked_and_keeps_its_checkpoints(tmp_path):
    out = tmp_path / "run"
    record = train_run(
        "digits",
        0,
        out,
        {"lr": 1e30, "weight_decay": 0.0, "epochs": 3, "checkpoint_every": 1},
        threads=1,
        progress=False,
    )
    assert record["status"] == "diverged"
    diverged_at = record["diverged_at_step"]
    assert diverged_at is not None and 0 < diverged_at < record["planned_steps"]
    steps = [int(r["step"]) for r in read_log(out / "log.csv")]
    assert steps == list(range(diverged_at + 1)) and record["final_step"] == diverged_at
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step{s:08d}.safetensors" for s in steps]
    assert json.loads((out / "run.json").read_text())["status"] == "diverged"
    # a diverged run is finished: starting it again changes nothing
    assert (
        train_run(
            "digits",
            0,
            out,
            {"lr": 1e30, "weight_decay": 0.0, "epochs": 3, "checkpoint_every": 1},
            threads=1,
            progress=False,
        )
        == record
    )


def test_progress_is_shown_on_stderr(tmp_path, capfd):
    train_run("parities", 0, tmp_path, TINY["parities"], threads=1, progress=True)
    err = capfd.readouterr().err
    assert "parities seed 0" in err and "eval_acc=" in err


def test_threads_and_global_torch_state_are_restored(tmp_path):
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.random.get_rng_state())
    train_run("parities", 0, tmp_path, TINY["parities"], threads=1, progress=False)
    after = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.random.get_rng_state())
    assert before[:2] == after[:2] and torch.equal(before[2], after[2])


def test_unknown_device_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="device 'tpu'"):
        train_run("parities", 0, tmp_path, TINY["parities"], device="tpu", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            train_run("parities", 0, tmp_path, TINY["parities"], device="cuda", progress=False)

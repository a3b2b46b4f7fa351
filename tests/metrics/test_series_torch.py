"""Checkpoints written by ``torch.save`` and Lightning's ModelCheckpoint, read in place
(trainmap.metrics.series, layouts ``torch`` and ``lightning``): the state dict under the usual keys,
the step from the file before the name, optimiser state left out of the statistics, and the
same numbers as the same weights saved as safetensors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from trainmap.metrics.engine import METRIC_NAMES, checkpoint_metrics
from trainmap.metrics.series import STATE_DICT_KEYS, SeriesError, discover, load_checkpoint, torch_name_step
from trainmap.metrics.series_metrics import series_metrics

STEPS = (10, 20, 30, 40)


def trained(steps=STEPS, seed: int = 0):
    """(step, model state dict, optimizer state dict) of a small MLP drifting over ``steps``,
    with AdamW's state as ``optimizer.state_dict()`` has it: its moments are 2-D float
    tensors that would change every statistic if they were counted. (Real training runs in
    tests/workflow/test_workflow_formats.py; an optimiser step here would import torch._dynamo, ~8 s.)"""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    out = []
    for step in steps:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        optim = {"state": {i: {"step": torch.tensor(float(step)), "exp_avg": 0.1 * torch.randn_like(p),
                               "exp_avg_sq": torch.rand_like(p)} for i, p in enumerate(model.parameters())},
                 "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01,
                                   "amsgrad": False, "params": list(range(4))}]}
        out.append((step, state, optim))
    return out


def reference(tmp_path, states) -> pd.DataFrame:
    """The engine's metrics and content hash of each state dict saved as safetensors."""
    rows = []
    for step, state, _ in states:
        path = tmp_path / "reference" / f"step{step}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path))
        rows.append(checkpoint_metrics(path))
    return pd.DataFrame(rows)


# The three shapes a plain loop saves: a bare state dict; {"model", "optimizer", "step",
# "epoch"}; PyTorch's tutorial {"model_state_dict", "optimizer_state_dict", "epoch", ...}
# with the step only inside and no step in the name.
SHAPES = {
    "state_dict": (lambda step, state, optim: state, "ckpt_{step}.pt"),
    "model_dict": (lambda step, state, optim: {"model": state, "optimizer": optim, "step": step, "epoch": step // 20},
                   "model_step={step}.pth"),
    "tutorial": (lambda step, state, optim: {"model_state_dict": state, "optimizer_state_dict": optim,
                                             "global_step": step, "epoch": step // 20, "loss": 0.5},
                 "checkpoint-{letter}.pth.tar"),
}


def write_shape(folder, shape: str, states) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    content, name = SHAPES[shape]
    for index, (step, state, optim) in enumerate(states):
        torch.save(content(step, state, optim), folder / name.format(step=step, letter="abcdefgh"[index]))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_three_shapes_of_torch_save_give_the_numbers_of_the_same_weights_as_safetensors(tmp_path, shape):
    states = trained()
    write_shape(tmp_path / "run", shape, states)
    (tmp_path / "run" / "log.csv").write_text("step,eval_accuracy\n" + "".join(f"{s},0.5\n" for s in STEPS))
    record = series_metrics(tmp_path / "run", tmp_path / "out", threads=1)
    assert record["layout"] == "torch" and record["formats"] == ["torch"] and record["steps"] == list(STEPS)
    assert record["step_unit"] == "step" and record["integrity"]["out_of_order"] == 0
    frame = pd.read_csv(tmp_path / "out" / "metrics.csv")
    expected = reference(tmp_path, states)
    np.testing.assert_array_equal(frame[list(METRIC_NAMES)].to_numpy(), expected[list(METRIC_NAMES)].to_numpy())
    assert list(frame["content_hash"]) == list(expected["content_hash"])


def test_optimizer_state_is_not_counted(tmp_path):
    """Were the optimiser's moments (the same names under "optimizer") counted, the numbers would change."""
    states = trained(steps=(10,))
    step, state, optim = states[0]
    moments = {f"moment{i}": s["exp_avg"] for i, s in optim["state"].items()}
    (tmp_path / "run").mkdir()
    torch.save({"model": state, "optimizer": optim, "ema": moments, "step": step}, tmp_path / "run" / "ckpt_10.pt")
    (tmp_path / "run" / "log.csv").write_text("step,eval_accuracy\n10,0.5\n")
    series = discover(tmp_path / "run")
    assert set(load_checkpoint(series.checkpoints[0])) == set(state)
    series_metrics(tmp_path / "run", tmp_path / "out", threads=1)
    counted = pd.read_csv(tmp_path / "out" / "metrics.csv")
    wrong = checkpoint_metrics_of({**state, **{f"x.{k}": v for k, v in moments.items()}}, tmp_path / "wrong")
    assert counted.loc[0, "l2"] == reference(tmp_path, states).loc[0, "l2"] != wrong["l2"]


def checkpoint_metrics_of(tensors, folder):
    folder.mkdir()
    save_file(tensors, str(folder / "w.safetensors"))
    return checkpoint_metrics(folder / "w.safetensors")


@pytest.mark.parametrize("key", [*STATE_DICT_KEYS, None])
def test_the_state_dict_is_found_under_each_usual_key_or_at_the_top(tmp_path, key):
    state = trained(steps=(10,))[0][1]
    (tmp_path / "run").mkdir()
    content = state if key is None else {key: state, "epoch": 3, "note": "x"}
    torch.save(content, tmp_path / "run" / "step_10.pt")
    series = discover(tmp_path / "run")
    assert series.steps == [10]
    loaded = load_checkpoint(series.checkpoints[0])
    assert list(loaded) == list(state) and all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("epoch=3-step=400.ckpt", (400, "step")),
        ("model_step=1000.pt", (1000, "step")),
        ("step_400.pt", (400, "step")),
        ("step_20k.pth", (20000, "step")),
        ("global_step300.pt", (300, "step")),
        ("ckpt_400.pt", (400, "step")),
        ("checkpoint-7.pth.tar", (7, "step")),
        ("iter_0000300.pt", (300, "step")),
        ("1200.pt", (1200, "step")),
        ("epoch_12.pth", (12, "epoch")),
        ("epoch=5.ckpt", (5, "epoch")),
        ("last.ckpt", None),
        ("model_best.pth.tar", None),
        ("resnet18.pt", None),
    ],
)
def test_steps_in_torch_file_names(name, expected):
    assert torch_name_step(name) == expected


def test_the_step_recorded_in_the_file_wins_and_a_disagreeing_name_is_reported(tmp_path):
    states = trained()
    src = tmp_path / "run"
    src.mkdir()
    for step, state, _ in states:
        # the name counts steps from 0, the file from 1 at the last checkpoint: they disagree once
        named = step - 1 if step == 40 else step
        torch.save({"model": state, "global_step": step}, src / f"ckpt_{named}.pt")
    (src / "log.csv").write_text("step,eval_accuracy\n" + "".join(f"{s},0.5\n" for s in STEPS))
    series = discover(src)
    assert series.steps == list(STEPS) and [c.named_step for c in series.checkpoints] == [10, 20, 30, 39]
    with pytest.warns(RuntimeWarning, match="checkpoint of step 40 \\(recorded in the file\\) is named step 39"):
        record = series_metrics(src, tmp_path / "out", threads=1)
    integrity = json.loads((tmp_path / "out" / "integrity.json").read_text())
    assert integrity["out_of_order"] == [{"step": 40, "named_step": 39}]
    assert integrity["checked"]["recorded_steps"] is True and record["integrity"]["out_of_order"] == 1


def test_epochs_in_names_are_stated_as_the_unit(tmp_path):
    states = trained(steps=(10, 20, 30))
    src = tmp_path / "run"
    src.mkdir()
    for epoch, (_, state, optim) in enumerate(states, start=1):
        torch.save({"state_dict": state, "optimizer": optim}, src / f"epoch_{epoch}.pth")
    (src / "log.csv").write_text("step,eval_accuracy\n1,0.5\n2,0.6\n3,0.7\n")
    series = discover(src)
    assert series.steps == [1, 2, 3] and series.step_unit == "epoch"
    with pytest.warns(RuntimeWarning, match="its checkpoints give epochs, not steps \\(e.g. epoch_1.pth: epoch 1\\)"):
        record = series_metrics(src, tmp_path / "out", threads=1)
    assert record["step_unit"] == "epoch"
    torch.save({"state_dict": states[0][1], "step": 500}, src / "epoch_4.pth")
    with pytest.raises(SeriesError, match="some checkpoints count steps \\(epoch_4.pth: step 500\\) and some epochs"):
        discover(src)


def test_copies_and_files_that_are_no_checkpoints_are_left_out(tmp_path):
    states = trained(steps=(10, 20))
    src = tmp_path / "run"
    src.mkdir()
    for step, state, optim in states:
        torch.save({"state_dict": state, "global_step": step}, src / f"epoch=0-step={step}.ckpt")
    torch.save({"state_dict": states[-1][1], "global_step": 20}, src / "last.ckpt")  # ModelCheckpoint's save_last
    torch.save(states[-1][2], src / "optimizer.pt")  # no state dict, no step
    torch.save({"state_dict": states[0][1]}, src / "init.pt")  # no step anywhere
    torch.save(torch.zeros(3), src / "data.pt")
    series = discover(src)
    assert series.layout == "torch" and [c.files[0].name for c in series.checkpoints] == [
        "epoch=0-step=10.ckpt", "epoch=0-step=20.ckpt"]
    torch.save({"state_dict": states[0][1], "global_step": 20}, src / "ckpt_20.pt")
    with pytest.raises(SeriesError, match="both stand for step 20") as info:
        discover(src)
    assert {str(src / "ckpt_20.pt"), str(src / "epoch=0-step=20.ckpt")} <= set(str(info.value).split(" "))


def test_a_named_file_without_a_state_dict_is_named(tmp_path):
    src = tmp_path / "run"
    src.mkdir()
    torch.save({"optimizer": {"lr": 0.1}, "step": 5}, src / "ckpt_5.pt")
    with pytest.raises(SeriesError, match="ckpt_5.pt: no state dict .*under state_dict, model, model_state_dict, "
                                          "module; the file holds a dict with keys 'optimizer', 'step'"):
        discover(src)


def test_the_legacy_serialization_format_is_read(tmp_path):
    state = trained(steps=(10,))[0][1]
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"model": state, "step": 10}, tmp_path / "run" / "checkpoints" / "ckpt.pt",
               _use_new_zipfile_serialization=False)
    series = discover(tmp_path / "run")
    assert series.layout == "torch" and series.steps == [10]
    assert torch.equal(load_checkpoint(series.checkpoints[0])["0.weight"], state["0.weight"])


def test_a_pickled_module_is_refused_with_how_to_convert_it(tmp_path):
    (tmp_path / "run").mkdir()
    torch.save(torch.nn.Linear(3, 2), tmp_path / "run" / "ckpt_10.pt")
    with pytest.raises(SeriesError) as info:
        discover(tmp_path / "run")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'run' / 'ckpt_10.pt'}: cannot read checkpoint without unpickling the "
                              "Python object torch.nn.modules.linear.Linear, which can run arbitrary code")
    assert "torch.save(model.state_dict(), path)" in message and "safetensors.torch.save_file" in message
    assert "\n" not in message


def lightning_checkpoint(step: int, state) -> dict:
    """What Lightning's ModelCheckpoint saves (keys as Lightning 2 writes them)."""
    return {"epoch": step // 10, "global_step": step, "pytorch-lightning_version": "2.6.0",
            "state_dict": {f"net.{k}": v for k, v in state.items()}, "loops": {}, "callbacks": {},
            "optimizer_states": [], "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": {"lr": 0.01}}


def test_lightning_versions_are_read_together(tmp_path):
    states = trained()
    src = tmp_path / "run"
    for version, part in ((0, states[:2]), (1, states[2:])):  # a run resumed into a new version
        folder = src / "lightning_logs" / f"version_{version}"
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "hparams.yaml").write_text("lr: 0.01\n")
        for step, state, _ in part:
            torch.save(lightning_checkpoint(step, state), folder / "checkpoints" / f"epoch={step // 10}-step={step}.ckpt")
    series = discover(src)
    assert series.layout == "lightning" and series.steps == list(STEPS)
    assert list(load_checkpoint(series.checkpoints[0])) == [f"net.{k}" for k in states[0][1]]
    # the version directory itself is a run directory too
    assert discover(src / "lightning_logs" / "version_1").layout == "lightning"
    assert discover(src / "lightning_logs" / "version_1").steps == [30, 40]
    again = src / "lightning_logs" / "version_1" / "checkpoints" / "epoch=1-step=20.ckpt"
    torch.save(lightning_checkpoint(20, states[1][1]), again)
    with pytest.raises(SeriesError, match="both stand for step 20 \\(two Lightning runs in one directory\\? name one "
                                          "version directory as the run\\)"):
        discover(src)


def test_a_fractional_epoch_is_no_step_and_a_bad_recorded_step_is_named(tmp_path):
    state = trained(steps=(10,))[0][1]
    src = tmp_path / "run"
    src.mkdir()
    torch.save({"model": state, "epoch": 2.5}, src / "ckpt_10.pt")  # fractional epochs are common; not a number here
    assert discover(src).steps == [10] and discover(src).step_unit == "step"
    torch.save({"model": state, "global_step": -5}, src / "ckpt_10.pt")
    with pytest.raises(ValueError, match="ckpt_10.pt: 'global_step': step -5 is negative"):
        discover(src)


def test_a_gpu_device_computes_torch_files_with_torch(tmp_path, monkeypatch):
    """``device="cuda"`` sends a torch file's state dict (only it) to trainmap.metrics.metrics_torch;
    torch's CPU backend stands in for the GPU (this machine has none)."""
    from trainmap.metrics import engine as metrics

    asked = []
    monkeypatch.setattr(metrics, "_torch_device", lambda device, svd: asked.append(device) or torch.device("cpu"))
    states = trained()
    write_shape(tmp_path / "run", "model_dict", states)
    (tmp_path / "run" / "log.csv").write_text("step,eval_accuracy\n" + "".join(f"{s},0.5\n" for s in STEPS))
    series_metrics(tmp_path / "run", tmp_path / "out", threads=1, device="cuda")
    frame = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert asked == ["cuda"] * len(STEPS)
    np.testing.assert_allclose(frame[list(METRIC_NAMES)].to_numpy(),
                               reference(tmp_path, states)[list(METRIC_NAMES)].to_numpy(), rtol=1e-9, atol=0)

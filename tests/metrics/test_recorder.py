"""trainmap.Recorder: the run directory it writes, its agreement with `trainmap metrics`,
continuation of a restarted run, and refusal of bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from trainmap import Recorder
from trainmap.cli import main
from trainmap.metrics.engine import METRIC_NAMES
from trainmap.metrics.recorder import RecorderError

COLUMNS = ["step", *METRIC_NAMES, "svd", "content_hash"]


class SmallNet(torch.nn.Module):
    """A conv layer (4-D kernel), a LayerNorm (excluded by default) and two linear layers."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.ln = torch.nn.LayerNorm(16)
        self.fc1 = torch.nn.Linear(16, 12)
        self.fc2 = torch.nn.Linear(12, 2, bias=False)

    def forward(self, x):
        h = self.conv(x).mean(dim=(2, 3))  # (n, 4)
        h = self.ln(torch.cat([h] * 4, dim=1))
        return self.fc2(torch.relu(self.fc1(h)))


def train_steps(model, steps, seed=0):
    """A few deterministic SGD steps; yields (step, loss) after each."""
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x = torch.randn(8, 1, 6, 6, generator=generator)
        y = torch.randint(0, 2, (8,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():  # SGD by hand: torch.optim's first step imports torch._dynamo (~10 s)
            for parameter in model.parameters():
                parameter -= 0.1 * parameter.grad
        yield step + 1, loss.item()


def cli_metrics(folder, out, *options):
    assert main(["metrics", str(folder), "-o", str(out), "--no-progress", *options]) == 0
    return pd.read_csv(out)


def assert_same_metrics(recorded: pd.DataFrame, reference: pd.DataFrame):
    """Equal steps, SVD modes and hashes; statistics within 1e-9 relative."""
    assert list(recorded.columns) == COLUMNS
    reference = reference[[c for c in reference.columns if c != "path"]]
    assert list(reference.columns) == COLUMNS
    assert recorded["step"].tolist() == reference["step"].tolist()
    assert recorded["svd"].tolist() == reference["svd"].tolist()
    assert recorded["content_hash"].tolist() == reference["content_hash"].tolist()
    np.testing.assert_allclose(recorded[list(METRIC_NAMES)], reference[list(METRIC_NAMES)], rtol=1e-9, atol=0)


def test_metrics_equal_trainmap_metrics_on_the_same_weights_saved_to_files(tmp_path):
    torch.manual_seed(0)
    model = SmallNet()
    saved = tmp_path / "saved"
    saved.mkdir()
    with Recorder(tmp_path / "run", seed=0, threads=1) as rec:
        for step, loss in train_steps(model, 6):
            if step % 2 == 0:
                rec.record(step, model, train_loss=loss)
                state = {k: v.contiguous() for k, v in model.state_dict().items()}
                save_file(state, saved / f"step{step:08d}.safetensors")
        assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "running"
    recorded = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert recorded["step"].tolist() == [2, 4, 6]
    assert_same_metrics(recorded, cli_metrics(saved, tmp_path / "cli.csv"))
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log.columns) == ["step", "train_loss"]
    assert log["step"].tolist() == [2, 4, 6]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["kind"] == "recorder" and record["status"] == "complete" and record["seed"] == 0
    assert (record["steps_recorded"], record["first_step"], record["last_step"]) == (3, 2, 6)
    assert record["options"]["svd"] == "auto" and record["keep_checkpoints"] is False


def test_kept_checkpoints_hold_the_recorded_weights_and_give_the_same_metrics(tmp_path):
    torch.manual_seed(1)
    model = SmallNet().to(torch.float64)
    states = {}
    with Recorder(tmp_path / "run", keep_checkpoints=True, svd="exact", exclude="") as rec:
        rec.record(0, model)
        states[0] = {k: v.clone() for k, v in model.state_dict().items()}
        model.fc1.weight.data.mul_(2.0)
        rec.record(7, model)
        states[7] = {k: v.clone() for k, v in model.state_dict().items()}
    for step, state in states.items():
        kept = load_file(tmp_path / "run" / "checkpoints" / f"step{step:08d}.safetensors")
        assert kept.keys() == state.keys()
        for name in state:
            assert kept[name].dtype == torch.float64 and torch.equal(kept[name], state[name])
    reference = cli_metrics(tmp_path / "run" / "checkpoints", tmp_path / "cli.csv", "--svd", "exact", "--exclude", "")
    assert_same_metrics(pd.read_csv(tmp_path / "run" / "metrics.csv"), reference)


def test_numpy_mappings_and_safetensors_paths_are_recorded_like_modules(tmp_path):
    torch.manual_seed(2)
    model = SmallNet()
    path = tmp_path / "w.safetensors"
    save_file(model.state_dict(), path)
    with Recorder(tmp_path / "run") as rec:
        rec.record(1, model)
        rec.record(2, {k: v.numpy() for k, v in model.state_dict().items()})
        rec.record(3, path)
    frame = pd.read_csv(tmp_path / "run" / "metrics.csv")
    first = frame.iloc[0]
    for _, row in frame.iloc[1:].iterrows():
        assert row["content_hash"] == first["content_hash"]
        for name in METRIC_NAMES:
            assert row[name] == pytest.approx(first[name], rel=1e-12, nan_ok=True)


def test_a_continued_run_replaces_rows_from_its_first_step_and_unions_log_columns(tmp_path):
    torch.manual_seed(3)
    model = SmallNet()
    first = Recorder(tmp_path / "run", seed=5, keep_checkpoints=True)
    for step in (0, 10, 20, 30):
        first.record(step, model, eval_loss=float(step))
    del first  # the script crashed: never closed
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "running"

    model.fc1.weight.data.add_(1.0)  # the restarted script's weights differ
    with Recorder(tmp_path / "run", seed=5, keep_checkpoints=True) as rec:
        rec.record(20, model, eval_loss=-20.0, eval_accuracy=0.5)
        rec.record(25, model, eval_loss=-25.0)
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics["step"].tolist() == [0, 10, 20, 25]
    assert metrics["content_hash"][0] == metrics["content_hash"][1] != metrics["content_hash"][2]
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log.columns) == ["step", "eval_loss", "eval_accuracy"]
    assert log["step"].tolist() == [0, 10, 20, 25]
    assert log["eval_loss"].tolist() == [0.0, 10.0, -20.0, -25.0]
    assert math.isnan(log["eval_accuracy"][0]) and log["eval_accuracy"][2] == 0.5
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == [f"step{s:08d}.safetensors" for s in (0, 10, 20, 25)]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (record["status"], record["steps_recorded"], record["last_step"]) == ("complete", 4, 25)


def test_import_trainmap_loads_neither_torch_nor_pandas():
    code = "import sys, trainmap; trainmap.Recorder; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# -- bad input ------------------------------------------------------------------------


@pytest.fixture
def recorded(tmp_path):
    """A closed Recorder run of seed 3 with two rows; returns its directory."""
    torch.manual_seed(4)
    with Recorder(tmp_path / "run", seed=3) as rec:
        rec.record(0, SmallNet(), eval_loss=1.0)
        rec.record(5, SmallNet(), eval_loss=0.5)
    return tmp_path / "run"


def snapshot(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    "options, named",
    [({"seed": 4}, "seed 3 there, 4 here"), ({"seed": 3, "svd": "exact"}, "options"),
     ({"seed": 3, "keep_checkpoints": True}, "keep_checkpoints")],
)
def test_a_directory_of_another_run_is_refused_naming_the_difference(recorded, options, named):
    before = snapshot(recorded)
    with pytest.raises(RecorderError, match=named):
        Recorder(recorded, **options)
    assert snapshot(recorded) == before


def test_a_run_of_another_engine_build_or_an_unreadable_run_json_is_refused(recorded):
    record = json.loads((recorded / "run.json").read_text())
    (recorded / "run.json").write_text(json.dumps({**record, "engine": "0" * 64}))
    with pytest.raises(RecorderError, match="engine '0000"):
        Recorder(recorded, seed=3)
    (recorded / "run.json").write_text("{not json")
    with pytest.raises(RecorderError, match="unreadable run.json"):
        Recorder(recorded, seed=3)


def test_a_directory_of_a_non_recorder_run_is_refused(tmp_path):
    (tmp_path / "trained" / "checkpoints").mkdir(parents=True)
    (tmp_path / "trained" / "log.csv").write_text("step,eval_accuracy\n0,0.5\n")
    with pytest.raises(RecorderError, match="checkpoints, log.csv but no run.json"):
        Recorder(tmp_path / "trained")
    (tmp_path / "trained" / "run.json").write_text(json.dumps({"task": "parities", "seed": 0, "status": "complete"}))
    with pytest.raises(RecorderError, match="not a Recorder run"):
        Recorder(tmp_path / "trained")


def test_a_step_not_above_the_last_one_of_the_session_names_both_steps(tmp_path):
    model = SmallNet()
    with Recorder(tmp_path / "run") as rec:
        rec.record(10, model)
        with pytest.raises(RecorderError, match="step=3.*after step 10"):
            rec.record(3, model)
        with pytest.raises(RecorderError, match="step=10.*after step 10"):
            rec.record(10, model)
        with pytest.raises(RecorderError, match=r"record\(step=-1\): step -1 is negative"):
            rec.record(-1, model)
        with pytest.raises(RecorderError, match="not a training step"):
            rec.record(12.5, model)
        assert rec.steps == [10]


def test_a_nan_scalar_is_recorded_with_a_warning_naming_it(tmp_path):
    with Recorder(tmp_path / "run") as rec:
        with pytest.warns(RuntimeWarning, match="eval_loss=nan at step 1"):
            rec.record(1, SmallNet(), eval_loss=torch.tensor(float("nan")), eval_accuracy=np.float32(0.25))
        with pytest.warns(RuntimeWarning, match="eval_loss=inf at step 2"):
            rec.record(2, SmallNet(), eval_loss=math.inf, eval_accuracy=1)
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert math.isnan(log["eval_loss"][0]) and log["eval_loss"][1] == math.inf
    assert log["eval_accuracy"].tolist() == [0.25, 1.0]


def test_weights_without_a_countable_tensor_are_an_error_naming_what_was_seen(tmp_path):
    norm_only = torch.nn.ModuleDict({"ln": torch.nn.LayerNorm(8)})
    with Recorder(tmp_path / "run") as rec:
        with pytest.raises(RecorderError, match=r"no countable tensor.*2 tensors \(ln.weight \[8\], ln.bias \[8\]\)"):
            rec.record(0, norm_only)
        with pytest.raises(RecorderError, match="no tensors at all"):
            rec.record(0, {})
        with pytest.raises(RecorderError, match="not a number"):
            rec.record(0, SmallNet(), note="fine")
        with pytest.raises(RecorderError, match="may not be named 'step'"):
            rec.record(0, SmallNet(), step=3)
        with pytest.raises(RecorderError, match="not list"):
            rec.record(0, [torch.zeros(2, 2)])
        assert rec.steps == []
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize(
    "options, named", [({"svd": "fast"}, "svd"), ({"rank": 0}, "rank"), ({"exact_max_dim": 1.5}, "exact_max_dim")]
)
def test_bad_engine_options_are_refused_naming_the_option(tmp_path, options, named):
    with pytest.raises(RecorderError, match=named):
        Recorder(tmp_path / "run", **options)
    assert not (tmp_path / "run").exists()


def test_record_after_close_is_an_error(tmp_path):
    rec = Recorder(tmp_path / "run")
    rec.close()
    with pytest.raises(RecorderError, match="closed"):
        rec.record(0, SmallNet())

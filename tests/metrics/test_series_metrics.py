"""Run directories analysed in place (trainmap.metrics.series_metrics, `trainmap series-metrics`):
sharded and .bin checkpoints give the metrics of the same checkpoint as one file, a
Recorder's metrics are adopted only under the same engine and options, identical
checkpoints and disagreeing steps are reported, and a missing log is said."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from existing_runs import write_checkpoint_run, write_recorder_run
from trainmap.cli import main
from trainmap.metrics.engine import METRIC_NAMES, checkpoint_metrics
from trainmap.metrics.series import SeriesError
from trainmap.metrics.series_metrics import series_metrics

COLUMNS = ["step", *METRIC_NAMES, "svd", "content_hash"]
STEPS = (0, 100, 200)


def bert_like(step: int) -> dict[str, torch.Tensor]:
    """A small state dict with bf16 and f32 matrices, biases, an embedding and an integer buffer."""
    g = torch.Generator().manual_seed(step)
    return {
        "bert.embeddings.word_embeddings.weight": torch.randn(10, 6, generator=g),
        "bert.embeddings.position_ids": torch.arange(6),
        "bert.encoder.layer.0.attention.self.query.weight": torch.randn(6, 6, generator=g),
        "bert.encoder.layer.0.attention.self.query.bias": torch.randn(6, generator=g),
        "bert.encoder.layer.0.output.dense.weight": torch.randn(6, 9, generator=g).to(torch.bfloat16),
        "bert.encoder.layer.0.output.dense.bias": torch.randn(6, generator=g).to(torch.bfloat16),
        "bert.encoder.layer.1.intermediate.dense.weight": torch.randn(9, 6, generator=g),
    }


def write_series(root, kind: str):
    """Step directories of ``bert_like`` checkpoints: one file, two shards with an index, or .bin."""
    for step in STEPS:
        folder = root / f"step_{step}"
        folder.mkdir(parents=True)
        tensors = bert_like(step)
        if kind == "file":
            save_file(tensors, str(folder / "model.safetensors"))
        elif kind == "sharded":
            names = sorted(tensors)
            shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
            for shard, members in shards.items():
                save_file({n: tensors[n] for n in members}, str(folder / shard))
            weight_map = {n: shard for shard, members in shards.items() for n in members}
            (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        else:
            torch.save(tensors, folder / "pytorch_model.bin")
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": [
            {"step": s, "eval_accuracy": s / 400} for s in STEPS if s <= step]}))
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Metrics of the unsharded files, from the engine's file reader."""
    root = write_series(tmp_path_factory.mktemp("reference") / "series", "file")
    rows = [checkpoint_metrics(root / f"step_{s}" / "model.safetensors") for s in STEPS]
    return pd.DataFrame(rows)[list(METRIC_NAMES)]


@pytest.mark.parametrize("kind", ["file", "sharded", "bin"])
def test_checkpoints_are_analysed_in_place_as_one_file_would_be(tmp_path, reference, kind):
    src = write_series(tmp_path / "series", kind)
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    record = series_metrics(src, tmp_path / "out", threads=1)
    frame = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert list(frame.columns) == COLUMNS and list(frame["step"]) == list(STEPS)
    np.testing.assert_allclose(frame[list(METRIC_NAMES)].to_numpy(), reference.to_numpy(), rtol=1e-12, atol=0)
    assert frame["content_hash"].nunique() == len(STEPS)
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before  # the source is only read
    assert not list((tmp_path / "out").rglob("*.safetensors")) and not list((tmp_path / "out").rglob("*.bin"))
    assert pd.read_csv(tmp_path / "out" / "log.csv").to_dict("list") == {"step": [0, 100, 200],
                                                                         "eval_accuracy": [0.0, 0.25, 0.5]}
    assert record == json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["kind"] == "in_place" and record["layout"] == "dirs" and record["steps"] == list(STEPS)
    assert record["formats"] == [{"file": "safetensors", "sharded": "sharded", "bin": "bin"}[kind]]
    assert record["integrity"] == {"duplicates": 0, "gaps": 0, "out_of_order": 0}


@pytest.mark.parametrize("kind", ["file", "sharded", "bin"])
def test_a_gpu_device_computes_with_torch_and_agrees_with_the_engine(tmp_path, reference, kind, monkeypatch):
    """``device="cuda"`` routes every checkpoint layout to trainmap.metrics.metrics_torch; here torch's
    CPU backend stands in for the GPU (this machine has none), running every line but the device."""
    from trainmap.metrics import engine as metrics

    asked = []
    monkeypatch.setattr(metrics, "_torch_device", lambda device, svd: asked.append(device) or torch.device("cpu"))
    record = series_metrics(write_series(tmp_path / "series", kind), tmp_path / "out", threads=1, device="cuda")
    frame = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert asked == ["cuda"] * len(STEPS)
    np.testing.assert_allclose(frame[list(METRIC_NAMES)].to_numpy(), reference.to_numpy(), rtol=1e-9, atol=0)
    assert frame["content_hash"].isna().all()  # the GPU path has no content hash ...
    integrity = json.loads((tmp_path / "out" / "integrity.json").read_text())
    assert integrity["checked"]["content_hash"] is False  # ... which the integrity report says
    assert record["steps"] == list(STEPS)


def test_sharded_and_bin_hashes_equal_the_files(tmp_path):
    hashes = {}
    for kind in ("file", "sharded", "bin"):
        series_metrics(write_series(tmp_path / kind, kind), tmp_path / f"out_{kind}", threads=1)
        hashes[kind] = list(pd.read_csv(tmp_path / f"out_{kind}" / "metrics.csv")["content_hash"])
    assert hashes["file"] == hashes["sharded"] == hashes["bin"]


def test_a_bad_shard_or_bin_is_named_and_nothing_is_written(tmp_path):
    src = write_series(tmp_path / "sharded", "sharded")
    (src / "step_100" / "model-00002-of-00002.safetensors").write_bytes(b"\x10" + b"\x00" * 7 + b"{}")
    with pytest.raises(SeriesError, match="step_100/model-00002-of-00002.safetensors: .*not a safetensors file"):
        series_metrics(src, tmp_path / "out", threads=1)
    assert not (tmp_path / "out").exists()
    src = write_series(tmp_path / "twice", "sharded")  # a tensor saved in both shards
    first, second = (src / "step_100" / f"model-0000{i}-of-00002.safetensors" for i in (1, 2))
    save_file({**load_file(str(second)), **dict(list(load_file(str(first)).items())[:1])}, str(second))
    with pytest.raises(SeriesError, match="model-00002-of-00002.safetensors: tensor '.*' is also in .*model-00001"):
        series_metrics(src, tmp_path / "out", threads=1)
    assert not (tmp_path / "out").exists()
    src = write_series(tmp_path / "bin", "bin")
    torch.save({"w": torch.zeros(2, 2), "bad": _NotATensor()}, src / "step_200" / "pytorch_model.bin")
    with pytest.raises(SeriesError, match="step_200/pytorch_model.bin: cannot read checkpoint"):
        series_metrics(src, tmp_path / "out", threads=1)


class _NotATensor:
    """Pickled state that ``torch.load(weights_only=True)`` refuses to rebuild."""


def test_non_finite_weights_in_a_shard_warn_naming_the_checkpoint(tmp_path):
    src = write_series(tmp_path / "sharded", "sharded")
    folder = src / "step_200"
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    name = "bert.encoder.layer.1.intermediate.dense.weight"
    shard = folder / index[name]
    tensors = {k: v for k, v in bert_like(200).items() if index.get(k) == shard.name}
    tensors[name] = tensors[name].clone()
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(shard))
    with pytest.warns(RuntimeWarning, match=f"{folder}: .*{name}"):
        series_metrics(src, tmp_path / "out", threads=1)


def test_a_duplicated_checkpoint_and_a_disagreeing_step_are_reported(tmp_path):
    src = write_series(tmp_path / "series", "file")
    shutil.copy(src / "step_100" / "model.safetensors", src / "step_200" / "model.safetensors")  # saved twice
    state = json.loads((src / "step_200" / "trainer_state.json").read_text())
    (src / "step_200" / "trainer_state.json").write_text(json.dumps({**state, "global_step": 150}))
    with pytest.warns(RuntimeWarning) as caught:
        record = series_metrics(src, tmp_path / "out", threads=1)
    messages = [str(w.message) for w in caught if "integrity" in str(w.message)]
    assert len(messages) == 1
    assert "step 200 is identical to step 100" in messages[0]
    assert "checkpoint of step 200 records step 150" in messages[0]
    assert str(tmp_path / "out" / "integrity.json") in messages[0]
    integrity = json.loads((tmp_path / "out" / "integrity.json").read_text())
    assert integrity["duplicates"] == [{"step": 200, "duplicate_of": 100}]
    assert integrity["out_of_order"] == [{"step": 200, "recorded_step": 150}]
    assert record["integrity"] == {"duplicates": 1, "gaps": 0, "out_of_order": 1}
    frame = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert frame.loc[1, "content_hash"] == frame.loc[2, "content_hash"]


def test_a_tensor_identical_checkpoint_saved_in_another_order_is_a_duplicate(tmp_path):
    src = tmp_path / "run"
    src.mkdir()
    tensors = bert_like(1)
    save_file(tensors, str(src / "step10.safetensors"))
    save_file(dict(reversed(list(tensors.items()))), str(src / "step20.safetensors"), metadata={"note": "resaved"})
    save_file(bert_like(2), str(src / "step30.safetensors"))
    (src / "log.csv").write_text("step,eval_accuracy\n10,0.5\n")
    with pytest.warns(RuntimeWarning, match="step 20 is identical to step 10"):
        series_metrics(src, tmp_path / "out", threads=1)


def test_checkpoints_without_a_log_still_get_metrics_and_the_gap_is_said(tmp_path):
    src = write_checkpoint_run(tmp_path / "run", seed=0, steps=[0, 10, 20, 40, 50], log=False)
    with pytest.warns(RuntimeWarning) as caught:
        record = series_metrics(src, tmp_path / "out", threads=1)
    messages = " | ".join(str(w.message) for w in caught)
    assert f"{src}: no log (log.csv, trainer_state.json, Lightning's metrics.csv or TensorBoard" in messages
    assert "no eval column" in messages
    assert "1 checkpoint(s) of the 10-step grid missing between steps 20 and 40" in messages
    assert len(pd.read_csv(tmp_path / "out" / "metrics.csv")) == 5
    assert (tmp_path / "out" / "log.csv").read_text().strip() == "step"
    assert record["log_files"] == [] and record["layout"] == "files"


def test_a_recorder_run_is_adopted_under_the_same_engine_and_options(tmp_path):
    src = write_recorder_run(tmp_path / "run", seed=3, steps=[0, 5, 10])
    record = series_metrics(src, tmp_path / "out")
    assert record["metrics"] == "adopted" and record["layout"] == "recorder" and record["source_run"]["seed"] == 3
    assert (tmp_path / "out" / "metrics.csv").read_text() == (src / "metrics.csv").read_text()
    assert (pd.read_csv(tmp_path / "out" / "log.csv").to_numpy() == pd.read_csv(src / "log.csv").to_numpy()).all()
    record = json.loads((src / "run.json").read_text())
    (src / "run.json").write_text(json.dumps({**record, "status": "running"}))
    with pytest.warns(RuntimeWarning, match="the Recorder run is still 'running': its metrics up to step 10"):
        assert series_metrics(src, tmp_path / "out")["source_run"]["status"] == "running"


def test_a_recorder_run_under_other_options_is_recomputed_from_its_checkpoints(tmp_path):
    src = write_recorder_run(tmp_path / "run", seed=3, steps=[0, 5, 10], keep_checkpoints=True,
                             exclude="")
    record = series_metrics(src, tmp_path / "out", threads=1)
    assert record["metrics"] == "recomputed" and "exclude" in record["metrics_differences"][0]
    expected = [checkpoint_metrics(src / "checkpoints" / f"step{s:08d}.safetensors") for s in (0, 5, 10)]
    computed = pd.read_csv(tmp_path / "out" / "metrics.csv")
    expected = pd.DataFrame(expected)[list(METRIC_NAMES)].to_numpy()
    np.testing.assert_allclose(computed[list(METRIC_NAMES)].to_numpy(), expected, rtol=1e-12)
    assert not np.allclose(computed["l1"], pd.read_csv(src / "metrics.csv")["l1"])  # the embedding counted there


def test_a_recorder_run_under_another_engine_without_checkpoints_is_refused(tmp_path):
    src = write_recorder_run(tmp_path / "run", seed=3, steps=[0, 5], engine="0" * 64)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.csv").write_text("kept\n")
    with pytest.raises(SeriesError, match=r"engine 000000000000… \(run\) vs .* kept no checkpoints") as info:
        series_metrics(src, tmp_path / "out")
    assert str(src) in str(info.value)
    assert (tmp_path / "out" / "metrics.csv").read_text() == "kept\n"  # nothing lost


def test_cli_metrics_series(tmp_path, capsys):
    src = write_checkpoint_run(tmp_path / "run", seed=1, steps=[0, 10, 20])
    assert main(["series-metrics", str(src), "--out-dir", str(tmp_path / "out"), "--svd", "exact",
                 "--no-progress"]) == 0
    assert "computed metrics of 3 checkpoints (files layout)" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "run.json").read_text())["options"]["svd"] == "exact"
    assert main(["series-metrics", str(tmp_path / "absent"), "--out-dir", str(tmp_path / "out2")]) == 2
    assert "absent: no such run directory" in capsys.readouterr().err


def test_an_interrupted_series_continues_where_it_stopped(tmp_path, monkeypatch):
    import trainmap.metrics.series_metrics as sm

    src = write_checkpoint_run(tmp_path / "run", seed=2, steps=[0, 10, 20, 30])
    clean = series_metrics(src, tmp_path / "clean", threads=1)
    monkeypatch.setattr(sm, "SAVE_EVERY_S", 0.0)

    def interrupt(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        series_metrics(src, tmp_path / "out", threads=1, progress=interrupt)
    assert not (tmp_path / "out" / "metrics.csv").exists()
    computed = []
    original = sm._checkpoint_result
    monkeypatch.setattr(sm, "_checkpoint_result", lambda c, *a: computed.append(c.step) or original(c, *a))
    stamp = (src / "step10.safetensors").stat().st_mtime_ns + 10**9
    os.utime(src / "step10.safetensors", ns=(stamp, stamp))  # changed since it was computed: computed again
    series_metrics(src, tmp_path / "out", threads=1)
    assert computed == [10, 20, 30]
    assert (tmp_path / "out" / "metrics.csv").read_text() == (tmp_path / "clean" / "metrics.csv").read_text()
    assert not list((tmp_path / "out").glob(".*partial*")) and clean["checkpoints"] == 4


def test_bad_options_and_a_bad_log_stop_before_any_checkpoint_is_read(tmp_path, monkeypatch):
    import trainmap.metrics.series_metrics as sm

    src = write_checkpoint_run(tmp_path / "run", seed=1, steps=[0, 10])
    monkeypatch.setattr(sm, "_checkpoint_result", lambda *a: pytest.fail("a checkpoint was read"))
    with pytest.raises(ValueError, match="rank"):
        series_metrics(src, tmp_path / "out", rank=-1)
    (src / "log.csv").write_text("epoch,eval_accuracy\n1,0.5\n")
    with pytest.raises(SeriesError, match="log.csv: no 'step' column"):
        series_metrics(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()

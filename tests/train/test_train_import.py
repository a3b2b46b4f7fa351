"""Import of released checkpoint series (MultiBERTs / Pythia / Trainer style) into the run layout."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from trainmap.cli import main
from trainmap.train import DataFileError, import_series
from trainmap.metrics.series import step_of


def fake_state(step: int) -> dict[str, torch.Tensor]:
    """A small BERT-like state dict whose values depend on the step."""
    g = torch.Generator().manual_seed(step)
    return {
        "bert.embeddings.word_embeddings.weight": torch.randn(10, 4, generator=g),
        "bert.embeddings.LayerNorm.weight": torch.ones(4),
        "bert.encoder.layer.0.attention.self.query.weight": torch.randn(4, 4, generator=g),
        "bert.encoder.layer.0.attention.self.query.bias": torch.randn(4, generator=g),
        "bert.encoder.layer.0.output.dense.weight": torch.randn(4, 4, generator=g).to(torch.bfloat16),
        "bert.embeddings.position_ids": torch.arange(8),  # an integer buffer: not a parameter
    }


@pytest.fixture
def released(tmp_path):
    """MultiBERTs-style safetensors at steps 0 and 20k, a Pythia-style .bin at 40k, each with
    a trainer_state.json, plus a noise directory."""
    src = tmp_path / "multiberts-seed_1"
    for name, step in (("step_0k", 0), ("step_20k", 20000)):
        (src / name).mkdir(parents=True)
        save_file(fake_state(step), str(src / name / "model.safetensors"))
    (src / "step40000").mkdir()
    state = fake_state(40000)
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]  # tied: shared storage
    torch.save(state, src / "step40000" / "pytorch_model.bin")
    for name, step, loss in (("step_0k", 0, 10.5), ("step_20k", 20000, 2.25), ("step40000", 40000, 1.75)):
        history = [
            {"step": step, "loss": loss, "learning_rate": 1e-4},
            {"step": step, "eval_loss": loss + 0.5},
            {"step": step + 1, "loss": 99.0},
        ]
        (src / name / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    (src / "tokenizer").mkdir()  # no step in its name: ignored
    return src


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("step_20k", 20000),
        ("multiberts-seed_1-step_2000k", 2000000),
        ("step143000", 143000),
        ("checkpoint-500", 500),
        ("1200", 1200),
        ("step-7", 7),
        ("tokenizer", None),
        ("seed_3", None),
    ],
)
def test_step_is_read_from_directory_names(name, step):
    assert step_of(name) == step


def test_a_released_series_becomes_a_run(released, tmp_path):
    out = tmp_path / "run"
    record = import_series(released, out, progress=False)
    files = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert files == ["step00000000.safetensors", "step00020000.safetensors", "step00040000.safetensors"]
    for step in (0, 20000, 40000):
        expected = fake_state(step)
        with safe_open(str(out / "checkpoints" / f"step{step:08d}.safetensors"), framework="pt") as handle:
            names = list(handle.keys())
            assert "bert.embeddings.position_ids" not in names and names == sorted(names)
            for name in names:
                if name.startswith("cls."):
                    continue
                assert torch.equal(handle.get_tensor(name), expected[name])  # same values, same dtype
    with safe_open(str(out / "checkpoints" / "step00040000.safetensors"), framework="pt") as handle:
        assert torch.equal(
            handle.get_tensor("cls.predictions.decoder.weight"),
            fake_state(40000)["bert.embeddings.word_embeddings.weight"],
        )
    with open(out / "log.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["step", "train_loss", "eval_loss", "learning_rate"]
        rows = list(reader)
    assert [(r["step"], r["train_loss"], r["eval_loss"]) for r in rows] == [
        ("0", "10.5", "11.0"),
        ("20000", "2.25", "2.75"),
        ("40000", "1.75", "2.25"),
    ]
    assert record["status"] == "complete" and record["checkpoints"] == 3
    assert record["dropped_tensors"] == ["bert.embeddings.position_ids"]
    assert json.loads((out / "run.json").read_text()) == record


def test_log_has_only_step_when_the_source_has_no_metrics(tmp_path):
    src = tmp_path / "pythia"
    for step in (1000, 0):
        (src / f"step{step}").mkdir(parents=True)
        save_file(
            {"gpt_neox.layers.0.mlp.dense_h_to_4h.weight": torch.ones(2, 2) * step},
            str(src / f"step{step}" / "model.safetensors"),
        )
    import_series(src, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "log.csv").read_text() == "step\n0\n1000\n"


def test_a_source_log_csv_is_joined_by_step(tmp_path):
    src = tmp_path / "series"
    for step in (0, 10):
        (src / f"checkpoint-{step}").mkdir(parents=True)
        save_file({"w": torch.zeros(2, 2)}, str(src / f"checkpoint-{step}" / "model.safetensors"))
    (src / "log.csv").write_text("step,eval_accuracy,note\n0,0.1,start\n5,0.3,between\n10,0.9,end\n")
    import_series(src, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "log.csv").read_text() == "step,eval_accuracy,note\n0,0.1,start\n10,0.9,end\n"


def test_sharded_checkpoints_are_merged(tmp_path):
    folder = tmp_path / "src" / "step5"
    folder.mkdir(parents=True)
    save_file({"a": torch.ones(2)}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(3)}, str(folder / "model-00002-of-00002.safetensors"))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    )
    import_series(tmp_path / "src", tmp_path / "run", progress=False)
    with safe_open(str(tmp_path / "run" / "checkpoints" / "step00000005.safetensors"), framework="pt") as handle:
        assert sorted(handle.keys()) == ["a", "b"]


def test_an_interrupted_import_continues_and_a_finished_one_does_nothing(released, tmp_path):
    out = tmp_path / "run"
    first = import_series(released, out, progress=False)
    (out / "run.json").unlink()
    kept = out / "checkpoints" / "step00020000.safetensors"
    kept_time = kept.stat().st_mtime_ns
    (out / "checkpoints" / "step00040000.safetensors").unlink()  # as if killed before the last one
    again = import_series(released, out, progress=False)
    assert kept.stat().st_mtime_ns == kept_time and (out / "checkpoints" / "step00040000.safetensors").exists()
    assert {k: v for k, v in again.items() if k != "wall_time_s"} == {
        k: v for k, v in first.items() if k != "wall_time_s"
    }
    stamp = (out / "run.json").stat().st_mtime_ns
    assert import_series(released, out, progress=False) == again and (out / "run.json").stat().st_mtime_ns == stamp


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such source directory"):
        import_series(tmp_path / "absent", tmp_path / "run", progress=False)
    (tmp_path / "empty" / "docs").mkdir(parents=True)
    with pytest.raises(DataFileError, match="no checkpoint directories"):
        import_series(tmp_path / "empty", tmp_path / "run", progress=False)
    (tmp_path / "holes" / "step_1k").mkdir(parents=True)
    with pytest.raises(DataFileError, match="step_1k: no model.safetensors"):
        import_series(tmp_path / "holes", tmp_path / "run", progress=False)
    for name in ("step_1k", "step1000"):
        (tmp_path / "twice" / name).mkdir(parents=True)
        save_file({"w": torch.zeros(1)}, str(tmp_path / "twice" / name / "model.safetensors"))
    with pytest.raises(DataFileError, match="both stand for step 1000"):
        import_series(tmp_path / "twice", tmp_path / "run", progress=False)


def test_corrupt_and_unsafe_checkpoints_are_named(tmp_path):
    folder = tmp_path / "src" / "step1"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(DataFileError, match=f"{folder / 'model.safetensors'}: cannot read checkpoint"):
        import_series(tmp_path / "src", tmp_path / "run", progress=False)
    (folder / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1), "evil": _Evil()}, folder / "pytorch_model.bin")
    with pytest.raises(DataFileError, match=f"{folder / 'pytorch_model.bin'}: cannot read checkpoint.*"):
        import_series(tmp_path / "src", tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


class _Evil:
    """Not a tensor: ``weights_only=True`` must refuse to rebuild it."""


def test_cli_import(released, tmp_path, capsys):
    assert main(["import", str(released), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "imported 3 checkpoints" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "absent"), "--out", str(tmp_path / "run2")]) == 2
    assert "no such source directory" in capsys.readouterr().err

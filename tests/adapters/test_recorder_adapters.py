"""The Hugging Face and Lightning callbacks, driven by the real Trainers on tiny models (CPU)."""

from __future__ import annotations

import importlib
import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from trainmap.cli import main
from trainmap.metrics.engine import METRIC_NAMES


def final_row_matches_trainmap_metrics(run_dir, model, tmp_path):
    """The last metrics.csv row equals `trainmap metrics` on the final parameters saved to a file."""
    path = tmp_path / "final" / "step00000000.safetensors"
    path.parent.mkdir()
    save_file({k: v.detach().contiguous() for k, v in model.named_parameters()}, path)
    assert main(["metrics", str(path), "-o", str(tmp_path / "final.csv"), "--no-progress"]) == 0
    reference = pd.read_csv(tmp_path / "final.csv").iloc[0]
    last = pd.read_csv(run_dir / "metrics.csv").iloc[-1]
    assert last["content_hash"] == reference["content_hash"]
    columns = list(METRIC_NAMES)
    np.testing.assert_allclose(last[columns].astype(float), reference[columns].astype(float), rtol=1e-9)


@pytest.mark.parametrize(
    "module, library, extra", [("hf", "transformers", "hf"), ("lightning", "lightning", "lightning")]
)
def test_an_adapter_without_its_library_names_the_extra(monkeypatch, module, library, extra):
    # Imports of `library` and of its submodules now fail, also when an earlier test in
    # this process imported them (a cached `lightning.pytorch.callbacks` would otherwise
    # still be found).
    for name in [library, *(name for name in sys.modules if name.startswith(f"{library}."))]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, f"trainmap.adapters.{module}", raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'trainmap\[{extra}\]'"):
        importlib.import_module(f"trainmap.adapters.{module}")


class TokenDataset(torch.utils.data.Dataset):
    """Random token sequences; the label is whether token 1 occurs in the first half."""

    def __init__(self, n, seed):
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, 30, (n, 8), generator=generator)
        self.ids[: n // 2, 1] = 1
        self.labels = (self.ids[:, :4] == 1).any(1).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


@pytest.mark.slow  # importing transformers' Trainer takes several seconds
def test_hf_trainer_records_at_evaluations_and_every_n_steps(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from trainmap.adapters.hf import TrainmapCallback

    config = BertConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=2,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=6, eval_strategy="steps", eval_steps=3,
        per_device_train_batch_size=4, per_device_eval_batch_size=8, learning_rate=1e-3, report_to=[],
        use_cpu=True, save_strategy="no", logging_steps=3, seed=7, disable_tqdm=True,
    )

    def accuracy(prediction):
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    callback = TrainmapCallback(tmp_path / "run", every_n_steps=2, threads=1)
    trainer = Trainer(
        model=model, args=args, train_dataset=TokenDataset(24, 0), eval_dataset=TokenDataset(8, 1),
        compute_metrics=accuracy, callbacks=[callback],
    )
    trainer.train()

    run = tmp_path / "run"
    # every 2 steps (2, 4) and at the evaluations (3, 6); step 6 once, with its metrics
    assert pd.read_csv(run / "metrics.csv")["step"].tolist() == [2, 3, 4, 6]
    log = pd.read_csv(run / "log.csv")
    assert log["step"].tolist() == [2, 3, 4, 6]
    evaluations = {entry["step"]: entry for entry in trainer.state.log_history if "eval_loss" in entry}
    assert sorted(evaluations) == [3, 6]
    for step, entry in evaluations.items():
        row = log.set_index("step").loc[step]
        assert row["eval_loss"] == entry["eval_loss"] and row["eval_accuracy"] == entry["eval_accuracy"]
    assert math.isnan(log.set_index("step").loc[2, "eval_loss"])
    record = json.loads((run / "run.json").read_text())
    assert (record["status"], record["seed"], record["steps_recorded"]) == ("complete", 7, 4)
    final_row_matches_trainmap_metrics(run, trainer.model, tmp_path)
    before = (run / "metrics.csv").read_bytes(), (run / "log.csv").read_bytes()
    trainer.evaluate()  # outside train(): not part of the run
    assert ((run / "metrics.csv").read_bytes(), (run / "log.csv").read_bytes()) == before


@pytest.mark.slow  # importing lightning takes several seconds
def test_lightning_trainer_records_at_the_end_of_each_validation(tmp_path):
    import lightning

    from trainmap.adapters.lightning import TrainmapCallback

    class Classifier(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
            self.seen = {}  # global step -> validation loss computed here

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("val_loss", loss)
            self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())
            if not self.trainer.sanity_checking:
                self.seen[self.trainer.global_step] = loss.item()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 6, generator=generator)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    val_loader = torch.utils.data.DataLoader(data, batch_size=16)

    lightning.seed_everything(11, verbose=False)
    module = Classifier()
    trainer = lightning.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, max_steps=6, val_check_interval=2,
        limit_val_batches=1, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[TrainmapCallback(tmp_path / "run", threads=1)],
    )
    trainer.fit(module, loader, val_loader)

    run = tmp_path / "run"
    assert sorted(module.seen) == [2, 4, 6]
    assert pd.read_csv(run / "metrics.csv")["step"].tolist() == [2, 4, 6]
    log = pd.read_csv(run / "log.csv").set_index("step")
    assert {"val_loss", "val_acc"} <= set(log.columns)
    for step, loss in module.seen.items():
        assert log.loc[step, "val_loss"] == pytest.approx(loss, rel=1e-6)
    record = json.loads((run / "run.json").read_text())
    assert (record["status"], record["seed"], record["steps_recorded"]) == ("complete", 11, 3)
    final_row_matches_trainmap_metrics(run, module, tmp_path)
    before = (run / "metrics.csv").read_bytes(), (run / "log.csv").read_bytes()
    trainer.validate(module, val_loader, verbose=False)  # outside fit: not part of the run
    assert ((run / "metrics.csv").read_bytes(), (run / "log.csv").read_bytes()) == before

"""Runs as PyTorch and Lightning write them by default, read in place through the workflow to
Table 1: a plain loop's ``torch.save`` in its three common shapes (logged to TensorBoard by
torch's ``SummaryWriter`` or to a log.csv), and a real Lightning ``Trainer`` with
``ModelCheckpoint(every_n_train_steps=..., save_top_k=-1)`` and ``CSVLogger``, or its
default TensorBoard logger. Every file is written by the real library in the test; each
run's statistics equal those of the same weights saved as safetensors."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

from snakemake_runner import snakemake
from trainmap.metrics.engine import METRIC_NAMES, checkpoint_metrics

EVERY, LAST = 5, 100
STEPS = list(range(EVERY, LAST + 1, EVERY))
ANALYSIS = {"convergence": {"column": "eval_accuracy", "above": 0.9},
            "hmm": {"max_components": 2, "restarts": 2, "covariance": "diag", "min_runs": 4},
            "baselines": {"max_components": 2}, "figures": {"fast": 1, "slow": 1}}


def data(seed: int):
    """A linearly separable task (train 512, eval 256): eval accuracy climbs within 100 steps."""
    g = torch.Generator().manual_seed(seed)
    x, x_eval = torch.randn(512, 10, generator=g), torch.randn(256, 10, generator=torch.Generator().manual_seed(99))
    label = lambda v: (v[:, 0] + v[:, 1] > 0).long()
    return x, label(x), x_eval, label(x_eval)


def mlp() -> torch.nn.Module:
    """210 parameters: 10 → 16 → 2."""
    return torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def save_reference(reference: Path, step: int, state: dict) -> None:
    """The same weights as safetensors, with the names the checkpoint has."""
    reference.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(reference / f"step{step}.safetensors"))


def plain_loop(run: Path, reference: Path, seed: int, save, log) -> dict[int, float]:
    """A training loop of one's own: AdamW on ``mlp``, every EVERY steps ``save(step, model,
    optimizer)`` and ``log(step, eval_loss, eval_accuracy)``; returns the accuracies."""
    torch.manual_seed(seed)
    x, y, x_eval, y_eval = data(seed)
    model, accuracies = mlp(), {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3 * (1 + seed % 3))
    run.mkdir(parents=True, exist_ok=True)
    for step in range(1, LAST + 1):
        batch = torch.randint(0, len(x), (32,))
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % EVERY == 0:
            with torch.no_grad():
                logits = model(x_eval)
            accuracies[step] = float((logits.argmax(1) == y_eval).float().mean())
            save(step, model, optimizer)
            save_reference(reference, step, model.state_dict())
            log(step, float(F.cross_entropy(logits, y_eval)), accuracies[step])
    (reference / "eval_accuracy.json").write_text(json.dumps(accuracies))
    return accuracies


def run_state_dict_with_tensorboard(run: Path, reference: Path, seed: int) -> None:
    """torch.save(model.state_dict(), f"ckpt_{step}.pt"); scalars by SummaryWriter into the run directory."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run))
    plain_loop(run, reference, seed, lambda step, model, optimizer: torch.save(model.state_dict(), run / f"ckpt_{step}.pt"),
               lambda step, loss, accuracy: (writer.add_scalar("eval_loss", loss, step),
                                             writer.add_scalar("eval_accuracy", accuracy, step)))
    writer.close()


def run_model_dict_with_log_csv(run: Path, reference: Path, seed: int) -> None:
    """{"model", "optimizer", "step", "epoch"} in model_step={step}.pth; a log.csv."""
    rows = []
    plain_loop(run, reference, seed,
               lambda step, model, optimizer: torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                                          "step": step, "epoch": step // 16}, run / f"model_step={step}.pth"),
               lambda step, loss, accuracy: rows.append({"step": step, "eval_loss": loss, "eval_accuracy": accuracy}))
    with open(run / "log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "eval_loss", "eval_accuracy"])
        writer.writeheader()
        writer.writerows(rows)


def run_tutorial_dict_with_tensorboard_runs(run: Path, reference: Path, seed: int) -> None:
    """PyTorch's tutorial dict {"model_state_dict", "optimizer_state_dict", "epoch", "global_step"}
    in files whose names hold no step; scalars (TensorFlow 2 style tensors) in runs/<date>_<host>/."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run / "runs" / "Jan01_00-00-00_host"))
    name = lambda step: f"snapshot_{hashlib.sha256(str(step).encode()).hexdigest()[:8]}.tar"
    plain_loop(run, reference, seed,
               lambda step, model, optimizer: torch.save(
                   {"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                    "epoch": step // 16, "global_step": step}, run / name(step)),
               lambda step, loss, accuracy: writer.add_scalar("eval_accuracy", accuracy, step, new_style=True))
    writer.close()


def run_lightning(run: Path, reference: Path, seed: int, logger: str) -> None:
    """A real Lightning Trainer: ModelCheckpoint every EVERY steps (all kept, and last.ckpt),
    validation every EVERY steps, CSVLogger or the default (TensorBoard) logger."""
    import lightning
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    class Classifier(lightning.LightningModule):
        def __init__(self, lr: float):
            super().__init__()
            self.lr = lr  # no save_hyperparameters(): CSVLogger then writes no hparams.yaml
            self.net = mlp()

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self.net(x)
            self.log("eval_loss", F.cross_entropy(logits, y))
            self.log("eval_accuracy", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=self.lr)

    class SaveReference(Callback):
        """The weights ModelCheckpoint saves, as safetensors (the same batch end)."""

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step % EVERY == 0:
                save_reference(reference, trainer.global_step, pl_module.state_dict())

    lightning.seed_everything(seed, verbose=False)
    x, y, x_eval, y_eval = data(seed)
    loader = lambda a, b, shuffle: torch.utils.data.DataLoader(torch.utils.data.TensorDataset(a, b), batch_size=32,
                                                                shuffle=shuffle)
    trainer = lightning.Trainer(
        default_root_dir=str(run), max_steps=LAST, accelerator="cpu", devices=1, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=None, val_check_interval=EVERY,
        log_every_n_steps=EVERY, logger=CSVLogger(str(run)) if logger == "csv" else True,
        callbacks=[SaveReference(), ModelCheckpoint(every_n_train_steps=EVERY, save_top_k=-1, save_last=True)],
    )
    trainer.fit(Classifier(lr=3e-3 * (1 + seed % 3)), loader(x, y, True), loader(x_eval, y_eval, False))


RUNS = {
    "pt_state_dict": (run_state_dict_with_tensorboard, "torch", ["tensorboard"]),
    "pth_model_dict": (run_model_dict_with_log_csv, "torch", ["log_csv"]),
    "tar_tutorial": (run_tutorial_dict_with_tensorboard_runs, "torch", ["tensorboard"]),
    "lightning_csv": (lambda run, ref, seed: run_lightning(run, ref, seed, "csv"), "lightning", ["lightning_csv"]),
    "lightning_tb": (lambda run, ref, seed: run_lightning(run, ref, seed, "default"), "lightning",
                     ["lightning_tensorboard"]),
}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """The root holding runs/, reference/ and work/ after the workflow made Table 1."""
    root = tmp_path_factory.mktemp("formats")
    for seed, (name, (write, _, _)) in enumerate(RUNS.items()):
        write(root / "runs" / name, root / "reference" / name, seed)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"threads": {"metrics": 1, "hmm": 2}, "experiments": {"mine": {
        "runs": {name: str(root / "runs" / name) for name in RUNS}, **ANALYSIS}}}))
    result = snakemake(root / "work", "results/table1.csv", "--configfile", str(config), "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return root


@pytest.mark.slow
def test_default_outputs_of_pytorch_and_lightning_reach_table_1(made):
    table1 = pd.read_csv(made / "work" / "results" / "table1.csv")
    assert list(table1["experiment"]) == ["mine"] and list(table1["n_runs"]) == [len(RUNS)]
    results = made / "work" / "results"
    assert not [p for p in results.rglob("*") if p.suffix in (".pt", ".pth", ".tar", ".ckpt", ".safetensors")]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_each_run_has_the_statistics_of_its_weights_saved_as_safetensors(made, name):
    _, layout, log_kinds = RUNS[name]
    out = made / "work" / "results" / "mine" / "runs" / name
    record = json.loads((out / "run.json").read_text())
    assert record["layout"] == layout and record["formats"] == ["torch"] and record["step_unit"] == "step"
    assert [source["kind"] for source in record["log_sources"]] == log_kinds
    assert record["integrity"] == {"duplicates": 0, "gaps": 0, "out_of_order": 0}
    frame = pd.read_csv(out / "metrics.csv")
    assert list(frame["step"]) == STEPS  # Lightning's last.ckpt is a copy, not a step
    reference = pd.DataFrame([checkpoint_metrics(made / "reference" / name / f"step{step}.safetensors")
                              for step in STEPS])
    np.testing.assert_array_equal(frame[list(METRIC_NAMES)].to_numpy(), reference[list(METRIC_NAMES)].to_numpy())
    assert list(frame["content_hash"]) == list(reference["content_hash"])
    log = pd.read_csv(out / "log.csv").set_index("step")
    # every checkpoint has its evaluation in the log at its own step (Lightning's global_step - 1 shifted)
    assert log.loc[STEPS, "eval_accuracy"].notna().all()
    accuracy = log["eval_accuracy"].dropna()  # (other rows: Lightning's train_loss, TensorBoardLogger's hp_metric)
    assert ((accuracy >= 0) & (accuracy <= 1)).all()
    loop = made / "reference" / name / "eval_accuracy.json"
    if loop.exists():  # a plain loop: the values it logged, also through TensorBoard's float32 (k/256 is exact)
        assert {int(k): v for k, v in json.loads(loop.read_text()).items()} == log["eval_accuracy"].to_dict()

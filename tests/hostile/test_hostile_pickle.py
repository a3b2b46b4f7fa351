"""Hostile input, pickles: a checkpoint whose pickle would run code when unpickled — in
``pytorch_model.bin``, a ``torch.save`` ``.pt`` and a Lightning ``.ckpt`` — is refused by
every way trainmap reads runs in place (discovery, ``series-metrics``, the workflow's DAG
check), with one message naming the file, and the code never runs."""

from __future__ import annotations

import json

import os
from pathlib import Path

import pytest
import torch
import yaml

from hostile_helpers import fingerprint, one_error_line
from snakemake_runner import snakemake
from trainmap.cli import main
from trainmap.metrics.series import SeriesError, discover
from trainmap.metrics.series_metrics import series_metrics


class Exploit:
    """Unpickling this runs ``touch MARKER`` (``os.system``)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def state(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return {"fc.weight": torch.randn(4, 3, generator=g), "fc.bias": torch.randn(4, generator=g)}


def write_run(root: Path, kind: str, marker: Path) -> tuple[Path, Path]:
    """(run directory, the hostile file) of two checkpoints, the second one hostile."""
    if kind == "bin":  # a Hugging Face step directory
        for step in (10, 20):
            (root / f"checkpoint-{step}").mkdir(parents=True)
            torch.save(state(step), root / f"checkpoint-{step}" / "pytorch_model.bin")
        hostile = root / "checkpoint-20" / "pytorch_model.bin"
        torch.save({**state(20), "fc.extra": Exploit(marker)}, hostile)
    elif kind == "pt":  # a plain loop's torch.save
        root.mkdir(parents=True)
        torch.save({"model": state(10), "step": 10}, root / "ckpt_10.pt")
        hostile = root / "ckpt_20.pt"
        torch.save({"model": state(20), "optimizer": Exploit(marker), "step": 20}, hostile)
    else:  # Lightning's ModelCheckpoint, the code hidden in the hyper-parameters
        folder = root / "lightning_logs" / "version_0"
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "hparams.yaml").write_text("{}\n")
        for step in (10, 20):
            torch.save({"epoch": 0, "global_step": step, "state_dict": state(step), "hyper_parameters": {}},
                       folder / "checkpoints" / f"epoch=0-step={step}.ckpt")
        hostile = folder / "checkpoints" / "epoch=0-step=20.ckpt"
        torch.save({"epoch": 0, "global_step": 20, "state_dict": state(20),
                    "hyper_parameters": {"model": Exploit(marker)}}, hostile)
    (root / "log.csv").write_text("step,eval_accuracy\n10,0.5\n20,0.6\n")
    return root, hostile


KINDS = ["bin", "pt", "ckpt"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_pickle_is_live(tmp_path, kind):
    """The control: unpickled without weights_only, each hostile file runs its code."""
    marker = tmp_path / "pwned"
    _, hostile = write_run(tmp_path / "run", kind, marker)
    torch.load(hostile, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, kind, capsys):
    marker = tmp_path / "pwned"
    src, hostile = write_run(tmp_path / "run", kind, marker)
    before = fingerprint(tmp_path)
    expected = (f"{hostile}: cannot read checkpoint without unpickling the Python object (posix|os).system, which "
                "can run arbitrary code")
    if kind != "bin":  # torch files are opened when found, for the step they record
        with pytest.raises(SeriesError, match=expected):
            discover(src)
    with pytest.raises(SeriesError, match=expected):
        series_metrics(src, tmp_path / "out", threads=1)
    status = main(["series-metrics", str(src), "--out-dir", str(tmp_path / "out"), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "series-metrics")
    assert status == 2 and str(hostile) in line and "torch.load(weights_only=True) only" in line
    assert not marker.exists()
    after = fingerprint(tmp_path)
    # Nothing changed but the output directory's claim: a .bin is read once its run's output
    # directory is claimed (the owner file listing what it would write, and the lock file),
    # torch files before; no output file was written.
    claimed = {name for name in after if name.startswith("out/")}
    assert {name: h for name, h in after.items() if name not in claimed} == before
    assert claimed <= {"out/.trainmap-run.json", "out/.trainmap.lock"} and (kind == "bin" or not claimed)


@pytest.mark.slow  # Snakemake in a subprocess
@pytest.mark.parametrize("kind", ["pt", "ckpt"])
def test_the_workflow_refuses_it_before_any_job(tmp_path, kind):
    marker = tmp_path / "pwned"
    src, hostile = write_run(tmp_path / "run", kind, marker)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"experiments": {"mine": {"runs": {"evil": str(src)}, "threshold": 0.5}}}))
    result = snakemake(tmp_path / "work", "--dry-run", "--configfile", str(config))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"experiment mine: runs.evil: {hostile}: cannot read checkpoint without unpickling" in output
    assert not marker.exists()

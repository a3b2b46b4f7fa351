"""The code of docs/your-runs.md runs as written and does what the text around it says."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

DOC = (Path(__file__).resolve().parents[1] / "docs" / "your-runs.md").read_text(encoding="utf-8")


def section_code(title: str) -> str:
    """The python code block of the section ``## title``."""
    section = DOC.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_section(title: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    exec(compile(section_code(title), f"docs/your-runs.md: {title}", "exec"), {"__name__": "__main__"})


def steps(path: Path) -> list[int]:
    return pd.read_csv(path)["step"].tolist()


@pytest.mark.slow  # torch.optim's first step imports torch._dynamo (~10 s on its own)
def test_the_plain_pytorch_loop(tmp_path, monkeypatch):
    run_section("A plain PyTorch loop", tmp_path, monkeypatch)
    run = tmp_path / "runs" / "seed3"
    assert steps(run / "metrics.csv") == list(range(0, 301, 50))
    assert list(pd.read_csv(run / "log.csv").columns) == ["step", "eval_loss", "eval_accuracy"]


@pytest.mark.slow  # transformers' Trainer
def test_the_hugging_face_trainer(tmp_path, monkeypatch):
    run_section("The Hugging Face Trainer", tmp_path, monkeypatch)
    run = tmp_path / "runs" / "hf-seed3"
    assert steps(run / "metrics.csv") == [5, 10, 15, 20]
    assert list(pd.read_csv(run / "log.csv").columns) == [
        "step", "eval_loss", "eval_accuracy", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second",
        "epoch",
    ]


@pytest.mark.slow  # lightning
def test_lightning(tmp_path, monkeypatch):
    run_section("Lightning", tmp_path, monkeypatch)
    run = tmp_path / "runs" / "lightning-seed3"
    assert steps(run / "metrics.csv") == [16, 32, 48, 64, 80]
    assert {"train_loss", "eval_loss", "eval_accuracy"} <= set(pd.read_csv(run / "log.csv").columns)

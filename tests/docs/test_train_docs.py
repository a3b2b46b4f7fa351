"""docs/training.md documents every task and every setting the code has."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainmap.train import TASKS, default_settings
from trainmap.train.tasks import default_threshold

DOC = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("task", TASKS)
def test_every_task_and_setting_is_documented(task):
    assert f"`{task}`" in DOC
    missing = [key for key in default_settings(task) if f"`{key}`" not in DOC]
    assert not missing, f"settings of {task} missing from docs/training.md: {missing}"


def test_documented_defaults_match_the_code():
    assert "| `parities` | 500 | 1 epoch | 501 |" in DOC and default_settings("parities")["epochs"] == 500
    assert "| `modular_stable` | 300 | 5 epochs | 61 |" in DOC and default_settings("modular_stable")["epochs"] == 300
    assert "| `modular` | 10 000 | 10 epochs | 1 001 |" in DOC and default_settings("modular")["epochs"] == 10000


def test_documented_thresholds_are_the_task_registry():
    """The Tasks table's last column is each task's convergence threshold: the one value the
    workflow uses when a config gives none (trainmap.train.tasks, declared there only)."""
    rows = [line for line in DOC.split("## Tasks", 1)[1].splitlines() if line.startswith("| `")]
    documented = {row.split("|")[1].strip().strip("`"): float(row.rstrip(" |").rsplit("|", 1)[1].strip().rstrip("²"))
                  for row in rows[: len(TASKS)]}
    assert documented == {task: default_threshold(task) for task in TASKS}

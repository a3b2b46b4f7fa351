"""Behaviour check of the parities setup: on its default settings and within its default
length, an MLP first memorises the training set and later generalises (grokking)."""

from __future__ import annotations

import csv
import pytest

from trainmap.train import default_settings, train_run


def _log(path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_parities_groks_on_its_default_settings(tmp_path):
    defaults = default_settings("parities")
    outcomes = []
    for seed in (0, 1, 4):  # at least one of a few seeds must grok; seed 0 does with torch 2.x
        record = train_run("parities", seed, tmp_path / str(seed), threads=1, progress=False)
        assert record["settings"] == defaults and record["status"] == "complete"
        rows = _log(tmp_path / str(seed) / "log.csv")
        memorised = next((r for r in rows if r["train_accuracy"] >= 0.99), None)
        generalised = next((r for r in rows if r["eval_accuracy"] >= 0.9), None)
        outcomes.append((seed, memorised and memorised["epoch"], generalised and generalised["epoch"]))
        if memorised and generalised:
            # grokking: when the training set is memorised the test set is still near chance,
            # and generalisation comes clearly later, within the default number of epochs
            assert memorised["eval_accuracy"] < 0.7
            assert generalised["epoch"] >= memorised["epoch"] + 20
            assert generalised["epoch"] <= defaults["epochs"]
            assert rows[-1]["eval_accuracy"] >= 0.9 and rows[-1]["train_accuracy"] >= 0.99
            return
    raise AssertionError(
        f"no seed grokked within {defaults['epochs']} epochs: (seed, memorised, generalised) = {outcomes}"
    )

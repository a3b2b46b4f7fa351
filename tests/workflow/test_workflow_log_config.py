"""The per-experiment ``log: {path, step}`` of runs read in place: resolved from the config,
passed to each run's series_metrics job, its file an input of that job, and refused where
it means nothing."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

import trainmap.workflow as tw
from snakemake_runner import REPO, snakemake

SCHEMA = tw.load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")


def resolve(config: dict) -> dict[str, tw.Experiment]:
    return tw.experiments(tw.validate_config(copy.deepcopy(config), SCHEMA))


def wandb_runs(root, names=("a", "b")) -> dict[str, str]:
    """Run directories of ckpt_{step}.pt files with a W&B history export (``_step``)."""
    runs = {}
    for name in names:
        run = root / name
        run.mkdir(parents=True)
        for step in (10, 20):
            torch.save({"fc.weight": torch.full((2, 3), float(step))}, run / f"ckpt_{step}.pt")
        (run / "wandb_history.csv").write_text("_step,eval_accuracy\n10,0.5\n20,0.9\n")
        runs[name] = str(run)
    return runs


def test_the_log_key_names_each_runs_log(tmp_path):
    runs = wandb_runs(tmp_path)
    exp = resolve({"experiments": {"mine": {"runs": runs, "threshold": 0.8,
                                            "log": {"path": "wandb_history.csv", "step": "_step"}}}})["mine"]
    assert exp.log_args() == "--log wandb_history.csv --log-step _step"
    assert f"{runs['a']}/wandb_history.csv" in exp.series_inputs("a")
    assert [s.kind for s in exp.series("a").logs] == ["csv"] and tw.series_problems({"mine": exp}) == []
    (tmp_path / "b" / "wandb_history.csv").unlink()
    tw._series.cache_clear()  # a run directory is discovered once per workflow invocation
    assert tw.series_problems({"mine": exp}) == [
        f"experiment mine: runs.b: {tmp_path / 'b' / 'wandb_history.csv'}: no such log (log.path "
        f"'wandb_history.csv' of run directory {tmp_path / 'b'})"]
    plain = resolve({"experiments": {"mine": {"runs": runs, "threshold": 0.8, "log": {"path": "tb"}}}})["mine"]
    assert plain.log_args() == "--log tb" and plain.log == {"path": "tb", "step": None}


@pytest.mark.parametrize("log, message", [
    ({"step": "_step"}, "config key experiments.mine.log: 'path' is a required property"),
    ({"path": "x.csv", "format": "csv"}, "config key experiments.mine.log: unknown key 'format'"),
])
def test_a_bad_log_key_is_named(tmp_path, log, message):
    with pytest.raises(tw.ConfigError, match=message):
        resolve({"experiments": {"mine": {"runs": wandb_runs(tmp_path), "threshold": 0.8, "log": log}}})


def test_a_trained_experiment_has_no_log_key():
    with pytest.raises(tw.ConfigError, match="config key experiments.exp.log: names the log of run directories"):
        resolve({"experiments": {"exp": {"task": "parities", "seeds": 3, "log": {"path": "x.csv"}}}})


@pytest.mark.slow  # Snakemake in a subprocess
def test_the_series_metrics_job_is_given_the_log(tmp_path):
    runs = wandb_runs(tmp_path / "runs")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"experiments": {"mine": {
        "runs": runs, "threshold": 0.8, "log": {"path": "wandb_history.csv", "step": "_step"}}}}))
    result = snakemake(tmp_path / "work", "results/mine/runs/a/metrics.csv", "--dry-run", "--printshellcmds",
                       "--configfile", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--log wandb_history.csv --log-step _step" in result.stdout

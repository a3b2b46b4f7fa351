"""The whole workflow on a tiny configuration (two experiments, four seeds, a few dozen
checkpoints): every target, Table 1, the report, and Snakemake's contract that a rerun
redoes exactly what is stale."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from snakemake_runner import TINY_CONFIG, dry_run, snakemake

# Every test here runs Snakemake (seconds to minutes each): not in `make test-fast`.
pytestmark = pytest.mark.slow

EXPERIMENTS = ("digits", "digits_sgd")
FIGURES = ("model_selection", "convergence_histogram", "trajectories")


@pytest.fixture(scope="module")
def completed(tmp_path_factory) -> Path:
    """A working directory in which the tiny configuration has run to the end."""
    workdir = tmp_path_factory.mktemp("tiny")
    result = snakemake(workdir, "--configfile", str(TINY_CONFIG), "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return workdir


def variant(completed: Path, tmp_path: Path, edit) -> str:
    """A copy of the tiny configuration changed by ``edit(config)``."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    edit(config)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_every_target_exists(completed):
    for table in ("table1", "table2", "table4"):
        for ext in ("csv", "md"):
            assert (completed / "results" / f"{table}.{ext}").stat().st_size > 0
    for exp in EXPERIMENTS:
        root = completed / "results" / exp
        for path in ("hmm/selection.csv", "hmm/model.npz", "hmm/states.csv", "map/edges.csv",
                     "map/training_map.svg", "map/training_map.png", "map/training_map.html", "regression.json", "coefficients.csv",
                     "baselines.csv", *(f"figures/{f}.{e}" for f in FIGURES for e in ("png", "svg"))):
            assert (root / path).stat().st_size > 0, f"{exp}/{path}"
        for run in range(4):
            assert (root / "runs" / str(run) / "metrics.csv").exists()
            assert list((root / "runs" / str(run) / "checkpoints").glob("step*.safetensors"))


def test_table1_has_one_row_per_experiment_with_finite_r2(completed):
    table1 = pd.read_csv(completed / "results" / "table1.csv")
    assert list(table1["experiment"]) == list(EXPERIMENTS)
    assert list(table1["n_runs"]) == [4, 4]
    assert all(math.isfinite(r2) for r2 in table1["r2"]), table1


def test_a_second_invocation_has_nothing_to_do(completed):
    result = snakemake(completed, "--dry-run", "--configfile", str(TINY_CONFIG), "--cores", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


def test_report_includes_every_figure_and_table(completed, tmp_path):
    report = tmp_path / "report.html"
    result = snakemake(completed, "--configfile", str(TINY_CONFIG), "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text(errors="replace")
    for name in (*(f"{f}.png" for f in FIGURES), "training_map.svg", "training_map.html", "table1.csv", "table2.md", "table4.csv",
                 "coefficients.csv", "edges.csv", "selection.csv"):
        assert name in html, name


def test_changing_hmm_settings_reruns_that_experiments_analysis_only(completed, tmp_path):
    config = variant(completed, tmp_path, lambda c: c["experiments"]["digits"]["hmm"].update(restarts=3))
    jobs = dry_run(completed, "--configfile", config)
    rules = {rule for rule, _ in jobs}
    assert {"hmm_select", "hmm_decode", "map", "regress", "figures", "tables"} <= rules
    assert not rules & {"train", "metrics"}
    assert all(w.get("exp") in (None, "digits") for _, w in jobs), jobs


def test_changing_training_settings_retrains_that_experiment_only(completed, tmp_path):
    config = variant(completed, tmp_path, lambda c: c["experiments"]["digits_sgd"]["train"].update(hidden=16))
    jobs = dry_run(completed, "--configfile", config)
    trained = sorted((w["exp"], w["run"]) for rule, w in jobs if rule == "train")
    assert trained == [("digits_sgd", str(run)) for run in range(4)]
    assert all(w.get("exp") in (None, "digits_sgd") for _, w in jobs), jobs


def test_adding_a_seed_trains_only_that_seed(completed, tmp_path):
    config = variant(completed, tmp_path, lambda c: c["experiments"]["digits"].update(seeds=5))
    jobs = dry_run(completed, "--configfile", config)
    assert [(w["exp"], w["run"]) for rule, w in jobs if rule == "train"] == [("digits", "4")]
    assert [(w["exp"], w["run"]) for rule, w in jobs if rule == "metrics"] == [("digits", "4")]
    assert all(w.get("exp") in (None, "digits") for _, w in jobs), jobs


def test_a_rebuilt_metrics_engine_makes_the_metrics_stale(completed, tmp_path):
    """Simulates an engine rebuilt from changed sources: a sitecustomize module makes the
    installed engine report another source fingerprint (and the sources agree with it)."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import trainmap.metrics.engine, trainmap.workflow\n"
        "trainmap.metrics.engine.ENGINE_FINGERPRINT = 'rebuilt-engine'\n"
        "trainmap.workflow.engine_fingerprint = lambda crate_dir: 'rebuilt-engine'\n"
    )
    jobs = dry_run(completed, "--configfile", str(TINY_CONFIG), env={"PYTHONPATH": str(shim)})
    metrics_jobs = sorted((w["exp"], w["run"]) for rule, w in jobs if rule == "metrics")
    assert metrics_jobs == [(exp, str(run)) for exp in EXPERIMENTS for run in range(4)]
    assert not any(rule == "train" for rule, _ in jobs)


def test_a_stale_engine_build_is_refused(completed, tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import trainmap.metrics.engine\ntrainmap.metrics.engine.ENGINE_FINGERPRINT = 'old'\n")
    result = snakemake(completed, "--dry-run", "--configfile", str(TINY_CONFIG), env={"PYTHONPATH": str(shim)})
    assert result.returncode != 0
    assert "make setup" in result.stdout + result.stderr

"""The workflow on run directories that exist already (config ``runs:`` as a glob): Recorder
runs and a plain loop's checkpoints, analysed in place through Table 1, and Snakemake's
contract that a new checkpoint or a changed log makes only that run's metrics stale."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from safetensors.numpy import save_file

from existing_runs import weights, write_checkpoint_run, write_recorder_run
from snakemake_runner import dry_run, snakemake

STEPS = list(range(0, 200, 10))
ANALYSIS = {"threshold": 0.5, "hmm": {"max_components": 2, "restarts": 2, "covariance": "diag", "min_runs": 4},
            "baselines": {"max_components": 2}, "figures": {"fast": 1, "slow": 1}}


def config_file(path: Path, runs) -> str:
    path.write_text(yaml.safe_dump({"threads": {"metrics": 1, "hmm": 2},
                                    "experiments": {"mine": {"runs": runs, **ANALYSIS}}}))
    return str(path)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, Path, str]:
    """(sweep directory, working directory, config) after the workflow made Table 1."""
    root = tmp_path_factory.mktemp("inplace")
    sweep = root / "sweep"
    write_recorder_run(sweep / "seed_0", 0, STEPS, switch=0.3)  # adopted
    write_recorder_run(sweep / "seed_1", 1, STEPS, switch=0.45, keep_checkpoints=True)  # adopted
    write_recorder_run(sweep / "seed_2", 2, STEPS, switch=0.5, keep_checkpoints=True,
                       exclude="")  # other options: recomputed from its checkpoints
    write_checkpoint_run(sweep / "seed_3", 3, STEPS, switch=0.6)
    write_checkpoint_run(sweep / "seed_4", 4, STEPS, switch=0.7)
    config = config_file(root / "config.yaml", f"{sweep}/seed_*")
    workdir = root / "work"
    result = snakemake(workdir, "results/table1.csv", "--configfile", config, "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    (root / "console.txt").write_text(result.stdout + result.stderr)
    return sweep, workdir, config


@pytest.mark.slow
def test_existing_runs_reach_table_1_without_copies(sweep):
    _, workdir, _ = sweep
    table1 = pd.read_csv(workdir / "results" / "table1.csv")
    assert list(table1["experiment"]) == ["mine"] and list(table1["n_runs"]) == [5]
    assert not list((workdir / "results").rglob("*.safetensors"))
    for run in range(5):
        run_dir = workdir / "results" / "mine" / "runs" / f"seed_{run}"
        assert len(pd.read_csv(run_dir / "metrics.csv")) == len(STEPS)
        assert list(pd.read_csv(run_dir / "log.csv")["step"]) == STEPS
    records = {run: yaml.safe_load((workdir / "results/mine/runs" / f"seed_{run}" / "run.json").read_text())
               for run in range(5)}
    assert [records[r]["metrics"] for r in range(5)] == ["adopted", "adopted", "recomputed", "computed", "computed"]


@pytest.mark.slow
def test_a_second_invocation_has_nothing_to_do(sweep):
    _, workdir, config = sweep
    result = snakemake(workdir, "results/table1.csv", "--dry-run", "--configfile", config)
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def later(path: Path) -> None:
    """Make ``path`` newer than anything the workflow wrote."""
    stamp = max(p.stat().st_mtime for p in path.parents[2].rglob("*") if p.is_file()) + 10
    os.utime(path, (stamp, stamp))


def metrics_jobs(workdir: Path, config: str) -> list[tuple[str, str]]:
    jobs = dry_run(workdir, "results/table1.csv", "--configfile", config)
    assert all(w.get("exp") in (None, "mine") for _, w in jobs)
    return sorted((w["exp"], w["run"]) for rule, w in jobs if rule in ("series_metrics", "metrics", "train"))


@pytest.mark.slow
def test_a_new_checkpoint_makes_only_its_run_stale(sweep):
    sweep_dir, workdir, config = sweep
    new = sweep_dir / "seed_3" / "step200.safetensors"
    save_file(weights(3, 200, 200, 0.6), str(new))
    try:
        later(new)
        assert metrics_jobs(workdir, config) == [("mine", "seed_3")]
    finally:
        new.unlink()
    assert metrics_jobs(workdir, config) == []


@pytest.mark.slow
def test_a_changed_log_makes_only_its_run_stale(sweep):
    sweep_dir, workdir, config = sweep
    log = sweep_dir / "seed_0" / "log.csv"
    saved = log.with_suffix(".saved")
    shutil.copy2(log, saved)
    try:
        log.write_text(log.read_text() + "200,0.0,1.0\n")
        later(log)
        assert metrics_jobs(workdir, config) == [("mine", "seed_0")]
    finally:
        shutil.copy2(saved, log)
        saved.unlink()
    assert metrics_jobs(workdir, config) == []


@pytest.mark.slow
def test_a_glob_that_matches_nothing_is_one_config_error(tmp_path):
    config = config_file(tmp_path / "config.yaml", f"{tmp_path}/sweep/seed_*")
    result = snakemake(tmp_path / "work", "--dry-run", "--configfile", config)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"config key experiments.mine.runs: the pattern '{tmp_path}/sweep/seed_*' matches no directory" in output


@pytest.mark.slow
def test_a_run_directory_without_checkpoints_stops_the_workflow_naming_its_key(tmp_path):
    write_checkpoint_run(tmp_path / "good", 0, [0, 10])
    (tmp_path / "notes").mkdir()
    config = config_file(tmp_path / "config.yaml", {"good": str(tmp_path / "good"), "notes": str(tmp_path / "notes")})
    result = snakemake(tmp_path / "work", "--dry-run", "--configfile", config)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"experiment mine: runs.notes: {tmp_path / 'notes'}: no checkpoints found" in output
    assert "runs.good" not in output


@pytest.mark.slow
def test_the_workflow_ends_with_a_summary_on_the_console(sweep):
    _, workdir, _ = sweep
    console = (workdir.parent / "console.txt").read_text()
    summary = (workdir / "results" / "summary.md").read_text()
    assert "# trainmap summary" in console and "| mine | 5 | 20 |" in console
    # What the console said is what summary.md holds, for the experiment analysed.
    row = next(line for line in summary.splitlines() if line.startswith("| mine |"))
    assert row in console


@pytest.mark.slow
def test_a_convergence_column_the_logs_lack_stops_a_dry_run(tmp_path):
    for seed in (0, 1):
        write_checkpoint_run(tmp_path / "sweep" / f"seed_{seed}", seed, [0, 10])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"experiments": {"mine": {
        "runs": f"{tmp_path}/sweep/seed_*", "convergence": {"column": "eval_bleu", "above": 30}}}}))
    result = snakemake(tmp_path / "work", "--dry-run", "--configfile", str(config))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert (f"experiment mine: runs.seed_0: the log of {tmp_path / 'sweep' / 'seed_0'} has no column 'eval_bleu', "
            "which the convergence criterion eval_bleu>30 reads (config key experiments.mine.convergence); "
            "its columns: eval_accuracy, eval_loss") in output
    assert "runs.seed_1" in output and not (tmp_path / "work" / "results").exists()


@pytest.mark.slow
def test_a_failed_jobs_error_reaches_the_console(sweep, tmp_path):
    """Four runs are too few for the analysis: the HMM job fails, and its log's message is
    printed by Snakemake (the default workflow profile's show-failed-logs), not left in a file."""
    sweep_dir, _, _ = sweep
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"threads": {"metrics": 1, "hmm": 1}, "experiments": {"four": {
        "runs": f"{sweep_dir}/seed_[0-3]", "threshold": 0.5, "hmm": {"max_components": 2, "restarts": 1}}}}))
    result = snakemake(tmp_path / "work", "results/four/hmm/model.npz", "--configfile", str(config), "--cores", "2")
    assert result.returncode != 0
    assert ("only 4 usable run(s) of 4: the analysis needs at least 5 runs (seeds) of the same setup"
            in result.stdout + result.stderr)

"""The workflow's seed sweeps (config ``train: {seed_batch: N}``): one training job per group
of N seeds, and the stale-only contract (docs/training.md, "Seed sweeps")."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from snakemake_runner import dry_run, snakemake
from trainmap.io.contracts import ExperimentPaths
from trainmap.train import layout
from trainmap.workflow import ConfigError, experiments, load_schema, validate_config

REPO = Path(__file__).resolve().parents[2]
TRAIN = {"n_train": 64, "n_test": 16, "hidden": 8, "epochs": 2, "checkpoint_every": 1, "seed_batch": 2}


def write_config(path: Path, seeds: int = 4, **train) -> Path:
    config = {"threads": {"train": 1, "metrics": 1, "hmm": 1},
              "experiments": {"sw": {"task": "parities", "seeds": seeds, "train": {**TRAIN, **train}}}}
    path.write_text(yaml.safe_dump(config))
    return path


def group_target(*runs: str) -> str:
    return ExperimentPaths("sw").sweep_group(runs).as_posix()


def sweep_jobs(workdir: Path, config: Path, *targets: str) -> list[str]:
    jobs = dry_run(workdir, *targets, "--configfile", str(config))
    return sorted(w["group"] for rule, w in jobs if rule == "train_sweep")


def resolved(**train):
    schema = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
    config = validate_config({"experiments": {"sw": {"task": "parities", "seeds": 5, "train": train}}}, schema)
    return experiments(config)["sw"]


def test_groups_are_consecutive_runs_and_name_their_marker():
    exp = resolved(seed_batch=2, epochs=3)
    assert exp.groups() == [("0", "1"), ("2", "3"), ("4",)]
    assert exp.trained_markers() == ["results/sw/sweeps/0-1.json", "results/sw/sweeps/2-3.json",
                                     "results/sw/sweeps/4-4.json"]
    assert exp.trained_marker("3") == "results/sw/sweeps/2-3.json"
    assert "seed_batch" not in exp.train_settings and exp.train_settings["epochs"] == 3
    assert ExperimentPaths("e").sweep_group(["1", "5"]).name.startswith("1-5-")  # not runs 1..5
    unbatched = resolved(epochs=3)
    assert unbatched.trained_marker("3") == "results/sw/runs/3/run.json"


def test_seed_batch_of_a_task_that_cannot_batch_is_refused():
    schema = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
    config = validate_config({"experiments": {"c": {"task": "cifar100", "seeds": 2, "train": {"seed_batch": 2}}}},
                             schema)
    with pytest.raises(ConfigError, match=r"experiments.c.train.seed_batch: task 'cifar100' trains one seed per job"):
        experiments(config)


@pytest.mark.slow  # two Snakemake dry runs (~20 s idle, minutes on the shared machine)
def test_a_dry_run_plans_one_job_per_group(tmp_path):
    config = write_config(tmp_path / "config.yaml", seeds=5)
    assert sweep_jobs(tmp_path, config, "results/sw/runs/4/metrics.csv", "results/sw/runs/0/metrics.csv") == \
        ["0-1", "4-4"]
    jobs = dry_run(tmp_path, "results/sw/runs/0/metrics.csv", "--configfile", str(config))
    assert [rule for rule, _ in jobs].count("train") == 0


@pytest.mark.slow  # two real sweep jobs (~1-2 min on the shared 2-core machine)
def test_stale_only_and_a_failed_group_leaves_the_others_complete(tmp_path):
    config = write_config(tmp_path / "config.yaml")
    # Seed 3's directory holds a file trainmap did not write: its group fails, the other does not.
    (tmp_path / "results/sw/runs/3").mkdir(parents=True)
    (tmp_path / "results/sw/runs/3/notes.txt").write_text("mine")
    targets = [group_target("0", "1"), group_target("2", "3")]
    done = snakemake(tmp_path, *targets, "--configfile", str(config), "--cores", "2", "--keep-going")
    assert done.returncode != 0
    assert (tmp_path / targets[0]).is_file() and not (tmp_path / targets[1]).exists()
    for run in ("0", "1"):
        record = layout.read_run_json(tmp_path / "results/sw/runs" / run)
        assert record["status"] == "complete" and record["batch"]["seeds"] == [0, 1]
    assert layout.read_run_json(tmp_path / "results/sw/runs/3") is None
    (tmp_path / "results/sw/runs/3/notes.txt").unlink()
    assert sweep_jobs(tmp_path, config, *targets) == ["2-3"]  # only the failed group is planned again
    done = snakemake(tmp_path, *targets, "--configfile", str(config), "--cores", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sweep_jobs(tmp_path, config, *targets) == []
    # Adding seeds plans only the new group.
    more = write_config(tmp_path / "more.yaml", seeds=6)
    assert sweep_jobs(tmp_path, more, *targets, group_target("4", "5")) == ["4-5"]
    # Changing a setting replans every group; the job then replaces each run of other settings.
    changed = write_config(tmp_path / "changed.yaml", lr=0.05)
    assert sweep_jobs(tmp_path, changed, *targets) == ["0-1", "2-3"]
    before = (tmp_path / "results/sw/runs/0/checkpoints/step00000002.safetensors").read_bytes()
    done = snakemake(tmp_path, targets[0], "--configfile", str(changed), "--cores", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert layout.read_run_json(tmp_path / "results/sw/runs/0")["settings"]["lr"] == 0.05
    assert (tmp_path / "results/sw/runs/0/checkpoints/step00000002.safetensors").read_bytes() != before


def test_keep_checkpoints_false_trains_in_sweep_jobs_with_the_metrics_options():
    exp = resolved(keep_checkpoints=False, epochs=3)  # seed_batch 1: one sweep job per seed
    assert exp.batched and exp.statistics_in_loop and exp.groups() == [("0",), ("1",), ("2",), ("3",), ("4",)]
    assert "keep_checkpoints" not in exp.train_settings
    assert exp.sweep_args() == ("--set epochs=3 --no-checkpoints --svd auto --exact-max-dim 2048 --rank 64 "
                                "--metrics-device auto")
    # The statistics are part of what makes the runs stale (options, device, engine).
    assert '"statistics"' in exp.train_fingerprint() and '"engine"' in exp.train_fingerprint()
    kept = resolved(seed_batch=2, epochs=3)
    assert not kept.statistics_in_loop and kept.sweep_args() == kept.train_args() == "--set epochs=3"
    assert '"statistics"' not in kept.train_fingerprint()


def test_keep_checkpoints_false_of_a_task_that_cannot_batch_is_refused():
    schema = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
    config = validate_config({"experiments": {"c": {"task": "cifar100", "seeds": 2,
                                                    "train": {"keep_checkpoints": False}}}}, schema)
    with pytest.raises(ConfigError, match=r"experiments.c.train.keep_checkpoints: task 'cifar100' trains one seed"):
        experiments(config)
    with pytest.raises(ConfigError, match=r"experiments.c.train.keep_checkpoints: 'no' is not of type 'boolean'"):
        validate_config({"experiments": {"c": {"task": "parities", "seeds": 2, "train": {"keep_checkpoints": "no"}}}},
                        schema)


@pytest.mark.slow  # a Snakemake dry run (~10 s idle, a minute on the shared machine)
def test_a_dry_run_with_statistics_in_the_loop_plans_no_metrics_job(tmp_path):
    config = write_config(tmp_path / "config.yaml", seeds=4, keep_checkpoints=False)
    jobs = dry_run(tmp_path, "results/sw/hmm/selection.csv", "--configfile", str(config))
    rules = [rule for rule, _ in jobs]
    assert rules.count("train_sweep") == 2 and "hmm_select" in rules
    assert "metrics" not in rules and "train" not in rules
    kept = write_config(tmp_path / "kept.yaml", seeds=4)
    assert [rule for rule, _ in dry_run(tmp_path, "results/sw/hmm/selection.csv", "--configfile",
                                        str(kept))].count("metrics") == 4

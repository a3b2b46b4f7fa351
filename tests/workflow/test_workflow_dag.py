"""The workflow's DAG for the shipped configurations, its lint, and its refusal messages."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from snakemake_runner import REPO, dry_run, snakemake

# Every test here runs Snakemake (seconds to minutes each): not in `make test-fast`.
pytestmark = pytest.mark.slow

EVERY_RULE = {"train", "metrics", "hmm_select", "hmm_decode", "map", "regress", "baselines", "figures",
              "tables", "early", "all"}


@pytest.fixture
def fake_data(tmp_path):
    """Empty stand-ins of the MNIST and CIFAR-100 files (the dry run only looks for them)."""
    data = tmp_path / "data"
    (data / "cifar-100-python").mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz", "cifar-100-python/train", "cifar-100-python/test"):
        (data / name).touch()
    return data


def test_default_config_is_the_papers_table_1(tmp_path, fake_data):
    jobs = Counter(rule for rule, _ in dry_run(tmp_path, "--config", f"data_dir={fake_data}"))
    assert set(jobs) == EVERY_RULE
    assert jobs["train"] == jobs["metrics"] == 6 * 40
    assert jobs["hmm_select"] == jobs["regress"] == jobs["figures"] == 6


def test_quick_preset_builds_every_rule(tmp_path):
    jobs = Counter(rule for rule, _ in dry_run(tmp_path, "--configfile", str(REPO / "workflow/presets/quick.yaml")))
    assert set(jobs) == EVERY_RULE | {"train_sweep"}
    preset = yaml.safe_load((REPO / "workflow/presets/quick.yaml").read_text())
    batched = [e for e in preset["experiments"].values() if e["train"].get("seed_batch", 1) > 1]
    assert batched, "the front door shows a seed sweep in one job"
    assert jobs["train_sweep"] == sum(-(-e["seeds"] // e["train"]["seed_batch"]) for e in batched)
    assert jobs["train"] == sum(e["seeds"] for e in preset["experiments"].values() if e not in batched)
    assert jobs["metrics"] == sum(e["seeds"] for e in preset["experiments"].values())
    assert jobs["hmm_select"] == len(preset["experiments"])


@pytest.mark.parametrize("preset", ["compare_parities", "compare_layernorm"])
def test_comparison_presets_plan_their_comparison(tmp_path, preset):
    """The command line docs/analysis.md shows for each comparison preset plans every run of
    its experiments and one compare job."""
    config = yaml.safe_load((REPO / f"workflow/presets/{preset}.yaml").read_text())
    (name, experiments), = config["compare"].items()
    jobs = Counter(rule for rule, _ in dry_run(tmp_path, f"results/compare/{name}/table_compare.csv",
                                               "--configfile", str(REPO / f"workflow/presets/{preset}.yaml")))
    assert jobs["compare"] == jobs["compare_select"] == 1
    assert jobs["train"] == sum(config["experiments"][e]["seeds"] for e in experiments)


def test_released_series_are_read_in_place(tmp_path):
    from safetensors.torch import save_file
    import torch

    sources = {}
    for run in ("seed_0", "seed_1"):
        (tmp_path / "released" / run / "step_20k").mkdir(parents=True)
        save_file({"w": torch.ones(2, 2)}, str(tmp_path / "released" / run / "step_20k" / "model.safetensors"))
        sources[run] = str(tmp_path / "released" / run)
    config = tmp_path / "import.yaml"
    config.write_text(yaml.safe_dump({"experiments": {"bert": {"sources": sources, "threshold": 0.5}}}))
    targets = [f"results/bert/runs/{run}/metrics.csv" for run in sources]
    jobs = dry_run(tmp_path / "work", *targets, "--configfile", str(config))
    assert sorted(w["run"] for rule, w in jobs if rule == "series_metrics") == ["seed_0", "seed_1"]
    assert not any(rule in ("train", "metrics") for rule, _ in jobs)
    # Released series rarely ship a log: their metrics can be computed, but the analysis,
    # which needs each run's convergence, stops while the DAG is built (here, a dry run).
    result = snakemake(tmp_path / "work", "--dry-run", "--configfile", str(config))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert ("experiment bert: sources.seed_0: " in output and "has no training log" in output
            and "(config key experiments.bert.convergence, or name the log: experiments.bert.log)" in output)


def test_lint_is_clean(fake_data):
    result = snakemake(REPO, "--lint", "--config", f"data_dir={fake_data}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_unknown_config_key_stops_with_its_name(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"experiments": {"p": {"task": "parities", "seeds": 2, "hmm": {"restart": 3}}}}))
    result = snakemake(tmp_path, "--dry-run", "--configfile", str(config))
    assert result.returncode != 0
    assert "config key experiments.p.hmm: unknown key 'restart'" in result.stdout + result.stderr


def test_bad_training_setting_stops_with_its_name(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"experiments": {"p": {"task": "parities", "seeds": 2, "train": {"lr": "high"}}}}))
    result = snakemake(tmp_path, "--dry-run", "--configfile", str(config))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "experiments.p.train" in output and "lr" in output


def test_missing_dataset_stops_a_real_run_at_the_start(tmp_path):
    """A run whose plan trains MNIST and CIFAR-100 without their files stops before any job,
    naming data_dir and the files (a dry run plans without them: tests/workflow/test_front_door.py)."""
    result = snakemake(tmp_path, "--cores", "1", "results/mnist/runs/0/run.json", "results/cifar100/runs/0/run.json",
                       "--config", f"data_dir={tmp_path / 'nowhere'}")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config key data_dir" in output
    assert "train-images-idx3-ubyte.gz" in output and "cifar-100-python.tar.gz" in output
    assert "download=true" in output
    assert not (tmp_path / "results").exists()

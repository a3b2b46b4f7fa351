"""The compare rules (config ``compare:``): a bad comparison stops the DAG naming its key; a
comparison runs through compare_select and compare; adding a seed to one experiment makes
only the comparisons holding it stale (a dry run after a real run)."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
import yaml

from snakemake_runner import dry_run, snakemake
from synthetic_runs import write_synthetic_runs

# Every test here runs Snakemake (a dry run or a real one): not in `make test-fast`.
pytestmark = pytest.mark.slow

SEEDS = [1000, 1001, 1002, 1003, 1004, 1005]
ANALYSIS = {"threshold": 0.9, "hmm": {"max_components": 3, "restarts": 1, "covariance": "diag", "min_runs": 4,
                                      "zscore_first_n": 6}}


def config(path, seeds_c=SEEDS, compare=None) -> str:
    experiments = {name: {"task": "digits", "seeds": list(seeds), **ANALYSIS}
                   for name, seeds in (("a", SEEDS), ("b", SEEDS), ("c", seeds_c))}
    path.write_text(yaml.safe_dump({"threads": {"hmm": 1}, "experiments": experiments,
                                    "compare": compare if compare is not None else {"ab": ["a", "b"], "bc": ["b", "c"]}}))
    return str(path)


def fake_runs(workdir, name, seed, fraction):
    """Runs as if trained and measured: run.json, log.csv, then metrics.csv (newer)."""
    exp = write_synthetic_runs(workdir / "results" / name / "runs", len(SEEDS), 60, detour_fraction=fraction, seed=seed)
    later = time.time() + 1
    for d in exp.run_dirs:
        os.utime(d / "metrics.csv", (later, later))
    return exp


@pytest.mark.parametrize("compare, words", [
    ({"ab": ["a", "nope"]}, ["compare.ab", "nope"]),
    ({"ab": ["a"]}, ["compare.ab"]),
    ({"a-b": ["a", "b"]}, ["compare", "a-b"]),
])
def test_a_bad_comparison_stops_naming_its_key(tmp_path, compare, words):
    result = snakemake(tmp_path, "--dry-run", "--configfile", config(tmp_path / "c.yaml", compare=compare))
    assert result.returncode != 0
    for word in words:
        assert word in result.stdout + result.stderr


def test_comparisons_plan_their_own_rules(tmp_path):
    jobs = dry_run(tmp_path, "--configfile", config(tmp_path / "c.yaml"))
    planned = [(rule, w.get("cmp")) for rule, w in jobs if rule.startswith("compare")]
    assert sorted(planned) == [("compare", "ab"), ("compare", "bc"), ("compare_select", "ab"), ("compare_select", "bc")]


@pytest.mark.slow
def test_adding_a_seed_reruns_only_the_comparisons_holding_it(tmp_path):
    work = tmp_path / "work"
    fake_runs(work, "a", 1, 0.0)
    fake_runs(work, "b", 1, 1.0)
    fake_runs(work, "c", 1, 0.5)
    cfg = config(tmp_path / "c.yaml")
    targets = ["results/compare/ab/table_compare.csv", "results/compare/bc/table_compare.csv"]
    result = snakemake(work, *targets, "--configfile", cfg, "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    table = pd.read_csv(work / "results/compare/ab/table_compare.csv")
    assert list(table["condition"]) == ["a", "b"] and list(table["n_runs"]) == [6, 6]
    assert not [j for j in dry_run(work, *targets, "--configfile", cfg)]
    # The comparison's early ranking is in its outputs, and its table, map and figures in the report.
    early = pd.read_csv(work / "results/compare/ab/early.csv")
    assert set(early["condition"]) == {"a", "b"} and set(early["rank"]) <= {1, 2}
    assert "## Predicted stability" in (work / "results/compare/ab/table_compare.md").read_text()
    report = tmp_path / "report.html"
    result = snakemake(work, *targets, "--configfile", cfg, "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text(errors="replace")
    for name in ("table_compare.csv", "occupancy.svg", "early.svg", "comparisons"):
        assert name in html, name
    # A seventh seed of c: its run is trained and measured, and only comparison bc refitted.
    cfg = config(tmp_path / "c7.yaml", seeds_c=[*SEEDS, 1006])
    jobs = dry_run(work, *targets, "--configfile", cfg)
    rules = sorted((rule, w.get("cmp") or w.get("exp")) for rule, w in jobs)
    assert rules == [("compare", "bc"), ("compare_select", "bc"), ("metrics", "c"), ("train", "c")]


def test_a_comparison_of_seed_sweeps_waits_for_their_jobs(tmp_path):
    """Runs trained in sweeps have no run.json or metrics.csv of their own rule: the
    comparison depends on the group markers, as each experiment's analysis does."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"threads": {"hmm": 1}, "experiments": {
        "a": {"task": "parities", "seeds": 4, "train": {"epochs": 2, "seed_batch": 2}, **ANALYSIS},
        "b": {"task": "parities", "seeds": 4, "train": {"epochs": 2, "seed_batch": 4, "keep_checkpoints": False},
              **ANALYSIS}},
        "compare": {"ab": ["a", "b"]}}))
    jobs = dry_run(tmp_path, "results/compare/ab/table_compare.csv", "--configfile", str(path))
    rules = [rule for rule, _ in jobs]
    assert sorted(w["group"] for rule, w in jobs if rule == "train_sweep") == ["0-1", "0-3", "2-3"]
    assert rules.count("metrics") == 4 and rules.count("compare_select") == 1 and rules.count("compare") == 1

"""The rules' outputs and logs are the file contracts' paths (issue 20, "contracts everywhere").

One dry run of ``all`` plans every rule: trained runs (train, metrics), a seed sweep
(train_sweep), runs read in place in chunks (series_metrics_chunk, series_metrics), the
analysis of each experiment, the tables and a comparison. Every planned job's ``output:``
and ``log:`` lines must be exactly what :mod:`trainmap.io.contracts` says that rule writes
for the job's wildcards, computed here from ``ExperimentPaths``/``RunPaths``/``ComparePaths``
(not from ``trainmap.workflow``, which the rules use)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from existing_runs import write_checkpoint_run
from snakemake_runner import snakemake
from trainmap.io import contracts
from trainmap.io.contracts import ComparePaths, ExperimentPaths

ANALYSIS = {"threshold": 0.5, "hmm": {"max_components": 2, "restarts": 1, "covariance": "diag", "min_runs": 2}}
TRAIN = {"n_train": 64, "n_test": 16, "hidden": 8, "epochs": 2, "checkpoint_every": 1}


def planned(output: str) -> list[dict]:
    """Every job of a dry run's listing: rule, wildcards, output and log files."""
    jobs: list[dict] = []
    for line in output.splitlines():
        line = line.strip()
        rule = re.match(r"^(?:local)?rule (\w+):$", line)
        if rule:
            jobs.append({"rule": rule.group(1), "wildcards": {}, "output": [], "log": []})
        elif jobs and (m := re.match(r"^(wildcards|output|log): (.*)$", line)):
            key, value = m.groups()
            if key == "wildcards":
                jobs[-1]["wildcards"] = dict(item.split("=", 1) for item in value.split(", "))
            else:
                jobs[-1][key] = value.split(", ")
    return jobs


def expected(rule: str, w: dict[str, str]) -> tuple[list[Path], list[Path]]:
    """(outputs, logs) of one job, from the contracts."""
    exp = ExperimentPaths(w.get("exp", "_"))
    run = exp.run(w.get("run", "_"))
    cmp = ComparePaths(w.get("cmp", "_"))
    table = {
        "train": ([run.run_json], [exp.log(f"train/{w.get('run')}")]),
        "train_sweep": ([exp.sweep_marker(w.get("group", "_"))], [exp.log(f"train/sweep-{w.get('group')}")]),
        "metrics": ([run.metrics_csv], [exp.log(f"metrics/{w.get('run')}")]),
        "series_metrics": ([run.metrics_csv, run.log_csv, run.integrity_json, run.run_json],
                           [exp.log(f"metrics/{w.get('run')}")]),
        "series_metrics_chunk": ([run.metrics_chunk(w.get("chunk", "_"))],
                                 [exp.log(f"metrics/{w.get('run')}.chunk{w.get('chunk')}")]),
        "hmm_select": ([exp.selection_csv, exp.model_npz], [exp.log("hmm_select")]),
        "hmm_decode": ([exp.states_csv], [exp.log("hmm_decode")]),
        "regress": ([exp.regression_json, exp.convergence_csv, exp.coefficients_csv], [exp.log("regress")]),
        "map": ([exp.edges_csv, exp.map_svg, exp.map_png, exp.map_html], [exp.log("map")]),
        "baselines": ([exp.baselines_csv], [exp.log("baselines")]),
        "figures": ([exp.figure(f, e) for f in contracts.FIGURES for e in ("png", "svg")], [exp.log("figures")]),
        "early": ([exp.early_csv, exp.figure("early", "png"), exp.figure("early", "svg")], [exp.log("early")]),
        "tables": ([*contracts.table_paths(), contracts.summary_path()], [contracts.results_log("tables")]),
        "compare_select": ([cmp.selection_csv, cmp.model_npz], [cmp.log("compare_select")]),
        "compare": (cmp.outputs, [cmp.log("compare")]),
        "all": ([], []),
    }
    return table[rule]


def test_every_rule_writes_the_contracts_paths(tmp_path):
    for seed in (0, 1):
        write_checkpoint_run(tmp_path / "mine" / f"seed_{seed}", seed, list(range(0, 70, 10)))
    config = {
        "threads": {"train": 1, "metrics": 1, "hmm": 1},
        "experiments": {
            "trained": {"task": "parities", "seeds": 2, "train": TRAIN, **ANALYSIS},
            "swept": {"task": "parities", "seeds": 2, "train": {**TRAIN, "seed_batch": 2}, **ANALYSIS},
            "mine": {"runs": f"{tmp_path / 'mine'}/seed_*", "metrics": {"chunk": 3}, **ANALYSIS},
        },
        "compare": {"both": ["trained", "mine"]},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path / "work", "--dry-run", "--cores", "2", "all", "--configfile",
                       str(tmp_path / "config.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = planned(result.stdout + result.stderr)
    rules = {job["rule"] for job in jobs}
    assert rules == {"train", "train_sweep", "metrics", "series_metrics", "series_metrics_chunk", "hmm_select",
                     "hmm_decode", "regress", "map", "baselines", "figures", "early", "tables", "compare_select",
                     "compare", "all"}
    for job in jobs:
        assert job["output"] or job["rule"] == "all", job  # the listing was read
        outputs, logs = expected(job["rule"], job["wildcards"])
        assert job["output"] == [p.as_posix() for p in outputs] or (
            sorted(job["output"]) == sorted(p.as_posix() for p in outputs)), job
        assert sorted(job["log"]) == sorted(p.as_posix() for p in logs), job

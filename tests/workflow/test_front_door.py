"""The README's commands as a new user meets them: `make run`'s command line parses, the
default config plans without datasets and stops a run that needs one before any job,
the cluster tests skip for a user without root, and nothing points outside the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snakemake_runner import REPO, planned_jobs, snakemake

STAMP = ".venv/.trainmap-installed"


@pytest.mark.slow
def test_make_run_command_line_parses_as_written(tmp_path):
    """`make run` exactly as the Makefile writes it, with --dry-run appended: a target after
    --configfile (which takes several values) would be read as a config file and fail."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(
        ["make", "--no-print-directory", "-o", STAMP, "-o", "setup", "run", "RUN_FLAGS=--dry-run --quiet rules"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "FileNotFoundError" not in output
    # The quick preset's experiments are all planned (or already done).
    assert "table" in output or "Nothing to be done" in output, output


@pytest.mark.slow
def test_default_config_plans_targets_without_datasets(tmp_path):
    """No MNIST/CIFAR files: a parities target plans, and so does the whole Table 1."""
    for target in ("results/parities/map/edges.csv", "results/table1.csv"):
        result = snakemake(tmp_path, "--dry-run", "--cores", "2", target)
        assert result.returncode == 0, result.stdout + result.stderr
        jobs = planned_jobs(result.stdout + result.stderr)
        assert ("train", {"exp": "parities", "run": "0"}) in jobs
    trained = {w["exp"] for rule, w in jobs if rule == "train"}
    assert trained == {"modular", "modular_stable", "parities", "mnist", "cifar100", "cifar100_unstable"}


@pytest.mark.slow
def test_real_run_needing_a_missing_dataset_stops_before_any_job(tmp_path):
    result = snakemake(tmp_path, "--cores", "1", "results/mnist/runs/0/run.json", timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "missing input data" in output and "data_dir" in output
    assert "train-images-idx3-ubyte" in output
    assert "Traceback" not in output and 'File "' not in output, output
    assert not (tmp_path / "results").exists(), "a job started although the data were missing"
    assert not list((tmp_path / ".snakemake").glob("locks/*")), "the directory lock was left behind"


@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux's unshare is not installed")
def test_cluster_tests_skip_for_a_user_without_root(tmp_path):
    """pytest on the cluster tests as uid 1000 in a new user namespace: not root, so they
    must skip with a one-line reason and pass. (A throwaway system user cannot run this
    .venv, whose interpreter lives under /root; the namespace gives the same view of who
    we are, which is what the skip decides on.)"""
    done = subprocess.run(
        ["unshare", "--user", "--map-user=1000", "--map-group=1000", sys.executable, "-m", "pytest",
         "-p", "no:cacheprovider", "-q", "-rs", str(REPO / "tests" / "workflow" / "test_cluster.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if "unshare failed" in done.stderr:
        pytest.skip(f"user namespaces are not available here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\d+ skipped", done.stdout) and " passed" not in done.stdout, done.stdout
    assert "needs root" in done.stdout and "failed" not in done.stdout, done.stdout


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names if Path(n).suffix in {".py", ".md", ".smk", ".yaml", ".yml", ".rs", ".toml", ".rst", ".sh", ""}]


def test_no_file_refers_to_a_document_outside_the_repository():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    outside = re.compile(r"(?<![\w/])(DESIGN\.md|\.\./shared|shared/paper|shared/notes)")
    offenders = []
    for path in _tracked_text_files():
        if path.name == "test_front_door.py" or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if outside.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)

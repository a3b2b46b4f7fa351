"""Test helpers: run the repository's workflow with Snakemake in a subprocess and read
which jobs it plans (from the dry-run listing)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"


def snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run snakemake on the repository's Snakefile in ``workdir``; output captured as text."""
    command = [str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--directory", str(workdir), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job in a dry run's listing."""
    jobs: list[tuple[str, dict[str, str]]] = []
    for line in output.splitlines():
        rule = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if rule:
            jobs.append((rule.group(1), {}))
            continue
        wildcards = re.match(r"^wildcards: (.*)$", line.strip())
        if wildcards and jobs:
            jobs[-1] = (jobs[-1][0], dict(item.split("=", 1) for item in wildcards.group(1).split(", ")))
    return jobs


def dry_run(workdir: Path, *args: str, env: dict | None = None) -> list[tuple[str, dict[str, str]]]:
    """The jobs a dry run plans; fails the test with Snakemake's output if it errors."""
    result = snakemake(workdir, "--dry-run", "--cores", "2", *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return planned_jobs(result.stdout + result.stderr)

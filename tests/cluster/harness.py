"""Helpers for running a Snakemake workflow on the one-node SLURM test cluster.

Used by tests/workflow/test_cluster.py, which describes what runs as one :class:`WorkflowCase`::

    cluster = start_cluster()                       # tests/cluster/start-slurm.sh
    result = run_snakemake(workdir, CASE, SLURM_PROFILE, cluster=cluster)
    result.submissions                              # what Snakemake sent to sbatch
    cluster.jobs(result.run_id)                     # what SLURM itself recorded (squeue)
    stop_cluster(cluster)                           # tests/cluster/stop-slurm.sh

Every snakemake runs in its own working directory with ``--snakefile`` pointing into
the repository, through the profile given, with the virtual environment of the Python
running the tests first on PATH: SLURM jobs inherit the submitting environment
(``sbatch --export=ALL``) and run ``python -m snakemake`` and the rules' commands
(``trainmap``) from it.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

REPO = Path(__file__).resolve().parents[2]
START_SCRIPT = REPO / "tests" / "cluster" / "start-slurm.sh"
STOP_SCRIPT = REPO / "tests" / "cluster" / "stop-slurm.sh"
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "workflow" / "profiles" / "local"

#: Extra arguments for runs on the test cluster. Test speed only, not a site value: the
#: plugin's first status query comes 40 s after a submission (kind to a busy slurmctld);
#: with jobs of a few seconds that would dominate the test's wall time.
CLUSTER_TEST_ARGS = ("--slurm-init-seconds-before-status-checks", "2")
#: Snakemake with the SLURM executor's back-off between status checks capped, for the same
#: reason (see the module); runs through the cluster use it.
CAPPED_POLLING = Path(__file__).with_name("snakemake_capped_polling.py")


@dataclass(frozen=True)
class WorkflowCase:
    """A workflow configuration the cluster test runs, locally and through SLURM.

    snakefile:   the Snakefile (absolute path).
    targets:     target files/rules given to snakemake; files among them must exist after.
    compare:     files (relative to the working directory) that must be identical, or
                 numerically equal for CSV, between the local run and the SLURM run.
    args:        further snakemake arguments, e.g. ``("--configfile", "/abs/tiny.yaml")``.
    fail_env:    environment that makes exactly one job fail (and nothing else change).
    failing_job: that job's SLURM comment, ``rule_<rule>`` or ``rule_<rule>_wildcards_<values>``.
    fail_message: text the failing job prints, expected in its SLURM log.
    local_rules: rules Snakemake may run without SLURM (input-only target rules like all).
    job_id_files: SLURM comment -> JSON output of that job holding ``slurm_job_id`` (the
                 job's SLURM_JOB_ID), tying outputs to SLURM's records; the test needs one.
    failing_job_files: files of the failing job itself (relative to results/), e.g. its
                 rule log, which its rerun rewrites; every other file must be left alone.
    """

    snakefile: Path
    targets: tuple[str, ...]
    compare: tuple[str, ...]
    fail_env: Mapping[str, str]
    failing_job: str
    fail_message: str
    args: tuple[str, ...] = ()
    local_rules: frozenset[str] = frozenset({"all"})
    job_id_files: Mapping[str, str] = field(default_factory=dict)
    failing_job_files: tuple[str, ...] = ()


# --- the cluster ------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmJob:
    """One job as slurmctld reports it (``squeue --states=all``)."""

    job_id: str
    name: str  # the Snakemake SLURM run id for jobs the plugin submitted
    state: str  # COMPLETED, FAILED, RUNNING, PENDING, ...
    comment: str  # rule_<rule>[_wildcards_<values>] for jobs the plugin submitted
    partition: str
    cpus: int


@dataclass(frozen=True)
class Cluster:
    state_dir: Path
    env: Mapping[str, str]  # what start-slurm.sh exported: SLURM_CONF, PATH

    def command(self, *args: str, timeout: float = 30) -> str:
        """Run a SLURM client command against this cluster; return its stdout."""
        done = subprocess.run(
            args, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def jobs(self, run_id: str | None = None) -> list[SlurmJob]:
        """Jobs slurmctld knows, finished ones included (the cluster keeps them a day:
        MinJobAge), optionally only those named ``run_id``."""
        args = ["squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%k|%P|%C"]
        if run_id:
            args += ["--name", run_id]
        jobs = []
        for line in self.command(*args).splitlines():
            job_id, name, state, comment, partition, cpus = line.split("|")
            jobs.append(SlurmJob(job_id, name, state, comment, partition, int(cpus)))
        return jobs

    def slurmd_log(self) -> str:
        return (self.state_dir / "log" / "slurmd.log").read_text(errors="replace")


def start_cluster(state_dir: Path | None = None, timeout: float = 600) -> Cluster:
    """Start (or reuse) the test cluster; the first start installs the packages."""
    env = dict(os.environ)
    if state_dir is not None:
        env["TRAINMAP_SLURM_DIR"] = str(state_dir)
    done = subprocess.run(
        [str(START_SCRIPT)], env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"start-slurm.sh failed ({done.returncode}):\n{done.stderr}")
    exported = {}
    for line in done.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, value = words[1].split("=", 1)
            exported[key] = value
    if "SLURM_CONF" not in exported:
        raise RuntimeError(f"start-slurm.sh printed no SLURM_CONF:\n{done.stdout}\n{done.stderr}")
    return Cluster(state_dir=Path(exported["SLURM_CONF"]).parents[1], env=exported)


def stop_cluster(cluster: Cluster) -> None:
    subprocess.run(
        [str(STOP_SCRIPT)],
        env={**os.environ, "TRAINMAP_SLURM_DIR": str(cluster.state_dir)},
        check=True,
        timeout=120,
    )


# --- running snakemake --------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    snakemake_jobid: int
    slurm_jobid: str
    slurm_log: Path


@dataclass(frozen=True)
class StartedJob:
    """A job as the main Snakemake announced it (``rule train:`` / ``localrule all:``)."""

    rule: str
    jobid: int  # Snakemake's job id within this run
    local: bool  # run by Snakemake itself, not submitted
    threads: int


@dataclass(frozen=True)
class SnakemakeResult:
    returncode: int
    output: str  # stdout and stderr together
    run_id: str | None  # "SLURM run ID" the plugin names all its jobs with
    submissions: dict[str, Submission]  # by SLURM job id
    started: list[StartedJob]

    def __str__(self) -> str:  # shown by pytest when an assertion on the result fails
        return f"snakemake exited {self.returncode}; output:\n{self.output}"


_SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$", re.M)
_RUN_ID = re.compile(r"^SLURM run ID: (\S+)$", re.M)
_RULE = re.compile(r"^(local)?rule (\S+):$")
_FIELD = re.compile(r"^\s+(jobid|threads): (\d+)$")


def _started_jobs(output: str) -> list[StartedJob]:
    """Parse the job announcements: a ``rule X:`` line, then indented fields (``jobid``,
    ``threads`` when more than 1) up to the first line that is not indented."""
    started, block = [], None

    def close():
        if block and "jobid" in block:
            started.append(StartedJob(block["rule"], block["jobid"], block["local"], block.get("threads", 1)))

    for line in output.splitlines():
        if m := _RULE.match(line):
            close()
            block = {"rule": m.group(2), "local": bool(m.group(1))}
        elif block is not None and line.startswith(" "):
            if m := _FIELD.match(line):
                block[m.group(1)] = int(m.group(2))
        else:
            close()
            block = None
    close()
    return started


def run_snakemake(
    workdir: Path,
    case: WorkflowCase,
    profile: Path,
    *,
    cluster: Cluster | None = None,
    extra_args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> SnakemakeResult:
    """Run ``snakemake --profile <profile>`` on ``case`` in ``workdir``.

    With ``cluster``, its environment (SLURM_CONF, the client wrappers on PATH) is added
    and so are :data:`CLUSTER_TEST_ARGS`. ``env`` adds variables (e.g. ``case.fail_env``).
    On timeout, the run's SLURM jobs are cancelled and TimeoutError is raised.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    run_env = {**os.environ, **(cluster.env if cluster else {}), **(env or {})}
    run_env["PATH"] = os.pathsep.join([venv_bin, run_env.get("PATH", "")])
    args = [
        *([sys.executable, str(CAPPED_POLLING)] if cluster else [sys.executable, "-m", "snakemake"]),
        "--profile", str(profile),
        "--snakefile", str(case.snakefile),
        *case.args,
        *(CLUSTER_TEST_ARGS if cluster else ()),
        *extra_args,
        *case.targets,
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=workdir, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate()
        if cluster and (m := _RUN_ID.search(output)):
            for job in cluster.jobs(m.group(1)):
                if job.state in ("PENDING", "RUNNING"):
                    cluster.command("scancel", job.job_id)
        raise TimeoutError(f"snakemake ran over {timeout}s in {workdir}:\n{output}")
    # Keep each run's output beside its results (snakemake-1.txt, -2.txt, ...) for a post-mortem.
    n = 1 + sum(1 for _ in workdir.glob("snakemake-*.txt"))
    (workdir / f"snakemake-{n}.txt").write_text(output)
    run_id = m.group(1) if (m := _RUN_ID.search(output)) else None
    submissions = {
        slurm_id: Submission(int(job), slurm_id, Path(log))
        for job, slurm_id, log in _SUBMITTED.findall(output)
    }
    return SnakemakeResult(proc.returncode, output, run_id, submissions, _started_jobs(output))


# --- comparing outputs ----------------------------------------------------------------------


def files_differ(a: Path, b: Path, rel_tol: float = 1e-9) -> str | None:
    """None when ``a`` and ``b`` have the same content, else why not.

    CSV files count as equal when the header and every non-numeric cell agree and numeric
    cells agree to ``rel_tol`` (floating-point sums may differ in the last bits when a job
    runs with a different number of threads); other files must be byte-identical.
    """
    if a.read_bytes() == b.read_bytes():
        return None
    if a.suffix != ".csv":
        return f"{a} and {b} differ"
    with open(a, newline="") as fa, open(b, newline="") as fb:
        rows_a, rows_b = list(csv.reader(fa)), list(csv.reader(fb))
    if len(rows_a) != len(rows_b):
        return f"{a} has {len(rows_a)} rows, {b} has {len(rows_b)}"
    for i, (ra, rb) in enumerate(zip(rows_a, rows_b)):
        if len(ra) != len(rb):
            return f"row {i}: {len(ra)} cells in {a}, {len(rb)} in {b}"
        for x, y in zip(ra, rb):
            if x == y:
                continue
            try:
                fx, fy = float(x), float(y)
            except ValueError:
                return f"row {i}: {x!r} in {a}, {y!r} in {b}"
            if not (math.isclose(fx, fy, rel_tol=rel_tol) or (math.isnan(fx) and math.isnan(fy))):
                return f"row {i}: {x} in {a}, {y} in {b}"
    return None


def file_mtimes(root: Path) -> dict[str, int]:
    """Modification time (ns) of every file under ``root``, by path relative to it."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}

"""The workflow on a real SLURM cluster started on this machine (issue 6).

Starts a one-node SLURM (tests/cluster/start-slurm.sh: installs Debian's packages when
missing, so it needs root), runs CASE through ``--profile workflow/profiles/slurm``
unchanged, and checks that the jobs really went through SLURM, that the outputs match a
local run, that a job failing on the cluster is reported with its SLURM log, and that
the rerun after the fix redoes nothing that had completed. Stops the cluster at the end.

    .venv/bin/python -m pytest -m cluster        # only this
    .venv/bin/python -m pytest -m "not cluster"  # everything else

To run the real workflow instead of the stand-in, set CASE to a WorkflowCase for the
tiny end-to-end config (see tests/cluster/harness.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cluster.harness import (
    LOCAL_PROFILE,
    SLURM_PROFILE,
    Cluster,
    WorkflowCase,
    SnakemakeResult,
    file_mtimes,
    files_differ,
    run_snakemake,
    start_cluster,
    stop_cluster,
)

def _why_no_cluster() -> str | None:
    """Why this machine cannot start the test cluster, or None when it can."""
    if os.geteuid() != 0:
        return "the SLURM cluster test needs root (it installs Debian's SLURM and starts its daemons)"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "the SLURM cluster test needs Debian's slurm-wlm packages or apt-get to install them"
    return None


pytestmark = [pytest.mark.cluster, pytest.mark.skipif(_why_no_cluster() is not None, reason=str(_why_no_cluster()))]

from snakemake_runner import REPO

CLUSTER_CONFIG = REPO / "tests" / "configs" / "cluster.yaml"
_RUNS = [("digits", run) for run in range(4)]

#: The real workflow on tests/configs/cluster.yaml (one experiment, four seeds: every rule
#: of the trained-run path). The deliberate failure: tests/cluster/fail_shim makes
#: `trainmap metrics` fail for digits run 2 when it is on PYTHONPATH (SLURM jobs inherit
#: the environment). Rules send their commands' output to their own log, so the failed
#: job's SLURM log must point there.
CASE = WorkflowCase(
    snakefile=REPO / "Snakefile",
    targets=("results/table1.csv", "results/table2.csv", "results/table4.csv", "results/digits/map/training_map.svg"),
    compare=("results/table1.csv", "results/table2.csv", "results/table4.csv", "results/digits/map/edges.csv",
             *(f"results/{exp}/runs/{run}/metrics.csv" for exp, run in _RUNS)),
    args=("--configfile", str(CLUSTER_CONFIG)),
    fail_env={"PYTHONPATH": str(REPO / "tests" / "cluster" / "fail_shim")},
    failing_job="rule_metrics_wildcards_digits_2",
    fail_message="log: results/digits/logs/metrics/2.log (check log file(s) for error details)",
    # The metrics job of run 2 writes its log, takes the run's lock and adds metrics.csv to
    # the run's owner file: all three are that job's own files, rewritten when it reruns.
    failing_job_files=("digits/logs/metrics/2.log", "digits/runs/2/.trainmap.lock",
                       "digits/runs/2/.trainmap-run.json"),
    job_id_files={f"rule_train_wildcards_{exp}_{run}": f"results/{exp}/runs/{run}/run.json" for exp, run in _RUNS},
)


@pytest.fixture(scope="session")
def cluster():
    cluster = start_cluster()
    yield cluster
    stop_cluster(cluster)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> tuple[Path, SnakemakeResult]:
    workdir = tmp_path_factory.mktemp("local")
    result = run_snakemake(workdir, CASE, LOCAL_PROFILE, extra_args=("--cores", "2"))
    assert result.returncode == 0, result
    return workdir, result


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> tuple[Path, SnakemakeResult]:
    workdir = tmp_path_factory.mktemp("slurm")
    return workdir, run_snakemake(workdir, CASE, SLURM_PROFILE, cluster=cluster)


@pytest.fixture(scope="module")
def failed_then_fixed(cluster, tmp_path_factory):
    """A run in which CASE.failing_job fails on the cluster, then the rerun without the
    failure, in the same working directory; with the file times between the two."""
    workdir = tmp_path_factory.mktemp("failure")
    failed = run_snakemake(workdir, CASE, SLURM_PROFILE, cluster=cluster, env=CASE.fail_env)
    mtimes = file_mtimes(workdir / "results")
    fixed = run_snakemake(workdir, CASE, SLURM_PROFILE, cluster=cluster)
    return workdir, failed, mtimes, fixed


def _by_comment(cluster: Cluster, result: SnakemakeResult) -> dict[str, list]:
    assert result.run_id, f"no 'SLURM run ID' in the output: did it use the slurm executor?\n{result}"
    jobs: dict[str, list] = {}
    for job in cluster.jobs(result.run_id):
        jobs.setdefault(job.comment, []).append(job)
    return jobs


def test_cluster_node_is_up(cluster):
    states = cluster.command("sinfo", "--noheader", "--format=%P %t").split()
    assert len(states) == 2 and states[0].endswith("*"), states  # one default partition
    assert states[1] in ("idle", "mix", "alloc"), states


def test_workflow_completes_through_the_slurm_profile(slurm_run):
    workdir, result = slurm_run
    assert result.returncode == 0, result
    assert "Using profile" in result.output and str(SLURM_PROFILE) in result.output
    for target in CASE.targets:
        assert (workdir / target).is_file(), f"missing target {target}"


def test_every_job_was_a_slurm_job(cluster, slurm_run):
    workdir, result = slurm_run
    assert result.returncode == 0, result
    # Every job Snakemake started, except input-only rules like `all`, was an sbatch.
    remote = [job for job in result.started if not job.local]
    local = {job.rule for job in result.started if job.local}
    assert local <= CASE.local_rules, f"ran outside SLURM: {local - CASE.local_rules}"
    submitted = {s.snakemake_jobid for s in result.submissions.values()}
    assert remote and {job.jobid for job in remote} == submitted, result
    assert len(result.submissions) == len(remote)

    # slurmctld's own records: one COMPLETED job per submission, named with the run id,
    records = cluster.jobs(result.run_id)
    assert {job.job_id for job in records} == set(result.submissions)
    assert all(job.state == "COMPLETED" for job in records), records
    assert sorted(job.comment.split("_wildcards_")[0] for job in records) == sorted(f"rule_{j.rule}" for j in remote)
    # ... on the cluster's default partition (the profile leaves the partition to the site),
    [default_partition] = [p[:-1] for p in cluster.command("sinfo", "--noheader", "--format=%P").split() if p.endswith("*")]
    assert {job.partition for job in records} == {default_partition}
    # ... each with as many CPUs as its rule has threads (cpus_per_task: threads).
    threads = {job.jobid: job.threads for job in remote}
    cpus = {result.submissions[job.job_id].snakemake_jobid: job.cpus for job in records}
    assert cpus == threads
    assert max(threads.values()) > 1, "no job with threads > 1: the CPU mapping went untested"

    # slurmd launched each of them.
    log = cluster.slurmd_log()
    for job_id in result.submissions:
        assert f"Launching batch job {job_id} for" in log, f"slurmd never launched job {job_id}"


def test_outputs_record_their_slurm_job(cluster, slurm_run):
    workdir, result = slurm_run
    jobs = _by_comment(cluster, result)
    assert CASE.job_id_files, "CASE.job_id_files names no output that records SLURM_JOB_ID"
    for comment, path in CASE.job_id_files.items():
        recorded = json.loads((workdir / path).read_text())["slurm_job_id"]
        assert [j.job_id for j in jobs[comment]] == [recorded], (comment, recorded, jobs.get(comment))


def test_outputs_match_a_local_run(slurm_run, local_run):
    slurm_dir, slurm_result = slurm_run
    local_dir, local_result = local_run
    assert slurm_result.returncode == 0, slurm_result
    assert not local_result.submissions and local_result.run_id is None  # truly local
    for rel in CASE.compare:
        assert (slurm_dir / rel).is_file() and (local_dir / rel).is_file(), rel
        assert (why := files_differ(slurm_dir / rel, local_dir / rel)) is None, why


def test_failed_job_is_reported_with_its_slurm_log(cluster, failed_then_fixed):
    _, failed, _, _ = failed_then_fixed
    assert failed.returncode != 0, failed
    jobs = _by_comment(cluster, failed)
    [bad] = jobs[CASE.failing_job]
    assert bad.state == "FAILED", bad
    # The other jobs of that run completed (keep-going in the profile), or were never
    # submitted because they depend on the failed one.
    others = [j for c, js in jobs.items() if c != CASE.failing_job for j in js]
    assert others and all(j.state == "COMPLETED" for j in others), others

    log = failed.submissions[bad.job_id].slurm_log
    assert "Error in rule" in failed.output, failed
    error_report = failed.output[failed.output.index("Error in rule") :]
    assert f"SLURM-job '{bad.job_id}' failed" in error_report, failed
    assert str(log) in error_report, f"the SLURM log {log} is not in Snakemake's error report"
    assert log.is_file(), f"{log} was not kept"
    assert CASE.fail_message in log.read_text(), log.read_text()


def test_rerun_after_fix_resumes_without_redoing_completed_jobs(cluster, failed_then_fixed, slurm_run, local_run):
    workdir, failed, mtimes_after_failure, fixed = failed_then_fixed
    assert fixed.returncode == 0, fixed
    failed_jobs = _by_comment(cluster, failed)
    done_before = {c for c, js in failed_jobs.items() if all(j.state == "COMPLETED" for j in js)}
    rerun = set(_by_comment(cluster, fixed))
    all_jobs = set(_by_comment(cluster, slurm_run[1]))  # the whole workflow, from the clean run

    assert done_before, "nothing completed before the failure: the resume proves nothing"
    assert CASE.failing_job in rerun
    assert rerun == all_jobs - done_before, f"rerun: {sorted(rerun)}, done before: {sorted(done_before)}"
    assert all(j.state == "COMPLETED" for js in _by_comment(cluster, fixed).values() for j in js)

    # Files written before the failure were left alone.
    mtimes_now = file_mtimes(workdir / "results")
    touched = [p for p, t in mtimes_after_failure.items()
               if mtimes_now.get(p) != t and p not in CASE.failing_job_files]
    assert mtimes_after_failure and not touched, f"rewritten by the rerun: {touched}"

    local_dir, _ = local_run
    for rel in CASE.compare:
        assert (why := files_differ(workdir / rel, local_dir / rel)) is None, why


def test_chunked_metrics_of_runs_read_in_place_go_through_slurm(cluster, tmp_path):
    """``metrics: {chunk: N}`` on the cluster: every chunk of every run read in place is a
    SLURM job of its own, and the gathered metrics.csv is byte for byte the unchunked one."""
    import yaml

    from existing_runs import write_checkpoint_run
    from trainmap.metrics.series_metrics import series_metrics

    seeds, steps = (0, 1), list(range(0, 70, 10))  # 7 checkpoints: chunks of 3 are 3 + 3 + 1
    for seed in seeds:
        write_checkpoint_run(tmp_path / "sweep" / f"seed_{seed}", seed, steps)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"threads": {"metrics": 1}, "experiments": {"mine": {
        "runs": f"{tmp_path / 'sweep'}/seed_*", "threshold": 0.5, "metrics": {"chunk": 3}}}}))
    case = WorkflowCase(
        snakefile=REPO / "Snakefile",
        targets=tuple(f"results/mine/runs/seed_{seed}/metrics.csv" for seed in seeds),
        compare=(), fail_env={}, failing_job="", fail_message="", args=("--configfile", str(config)),
    )
    result = run_snakemake(tmp_path / "work", case, SLURM_PROFILE, cluster=cluster)
    assert result.returncode == 0, result

    jobs = _by_comment(cluster, result)
    assert sorted(job.rule for job in result.started) == ["series_metrics"] * 2 + ["series_metrics_chunk"] * 6
    assert not [job for job in result.started if job.local]
    assert len(result.submissions) == 8 and sum(len(js) for js in jobs.values()) == 8
    assert all(job.state == "COMPLETED" for js in jobs.values() for job in js), jobs
    for seed, target in zip(seeds, case.targets):
        unchunked = series_metrics(tmp_path / "sweep" / f"seed_{seed}", tmp_path / f"unchunked_{seed}", device="cpu")
        assert unchunked["checkpoints"] == len(steps)
        assert (tmp_path / "work" / target).read_bytes() == (tmp_path / f"unchunked_{seed}" / "metrics.csv").read_bytes()

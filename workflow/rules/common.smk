# Configuration: validated against workflow/schemas/config.schema.yaml when the DAG is
# built, then resolved by trainmap.workflow into per-experiment settings.

import os

from snakemake.exceptions import WorkflowError

import trainmap.metrics.engine
import trainmap.workflow as tw

try:
    # Snakemake has loaded the config files already, keeping the last of two equal keys:
    # read them again to refuse that.
    tw.check_duplicate_keys(workflow.configfiles)
    tw.validate_config(config, tw.load_schema(workflow.source_path("../schemas/config.schema.yaml")))
    EXPERIMENTS = tw.experiments(config)
    COMPARISONS = tw.comparisons(config, EXPERIMENTS)
except tw.ConfigError as exc:
    # Name the files the configuration came from (Snakemake merges them into one dict).
    _files = ", ".join(map(str, workflow.configfiles)) or "none"
    raise WorkflowError(f"{exc} (config files: {_files})") from None

# Existing run directories are read when the DAG is built (their files are the inputs of
# their metrics jobs): one that cannot be read stops the workflow here, naming its key.
_unreadable = tw.series_problems(EXPERIMENTS)
if _unreadable:
    raise WorkflowError("existing runs that cannot be read:\n  " + "\n  ".join(_unreadable))


onstart:
    # Data files are checked for the training jobs this run will start, and only then: a
    # target that needs no dataset (or a dry run) plans without them, and a run that does
    # need a missing one stops here, before any job has started.
    _problems = tw.data_problems(EXPERIMENTS, tw.planned_training_experiments(workflow.dag))
    if _problems:
        tw.stop_before_any_job("missing input data:\n  " + "\n  ".join(_problems))

# The engine that will compute the metrics; a metrics job is stale when it changes.
ENGINE = trainmap.metrics.engine.ENGINE_FINGERPRINT
_crate = os.path.join(workflow.basedir, "rust_metrics")
if os.path.isdir(_crate) and tw.engine_fingerprint(_crate) != ENGINE:
    raise WorkflowError(
        "rust_metrics/ has changed since the installed metrics engine was built: "
        "run `make setup` (or pip install -e .) to rebuild it"
    )

tw.prefer_this_installation()

# Every path the rules name comes from the file contracts (trainmap.io.contracts) as patterns;
# EXP (one experiment, {exp}), RUN (one of its runs, {exp} and {run}), CMP (a comparison, {cmp}).
EXP, RUN, CMP = tw.EXP, tw.RUN, tw.CMP
TABLES = tw.TABLES
SUMMARY = tw.SUMMARY
FIGURES = tw.FIGURES


onsuccess:
    # The workflow's last words: per experiment analysed, runs, states, failed fits,
    # censored runs, R² and LOO R², and every warning (also in results/summary.md).
    tw.print_summary(EXPERIMENTS)


wildcard_constraints:
    exp="|".join(EXPERIMENTS) or "(?!)",
    cmp="|".join(COMPARISONS) or "(?!)",
    run=r"[A-Za-z0-9_.-]+",


def exp_of(wildcards):
    return EXPERIMENTS[wildcards.exp]


def regress_inputs(wildcards):
    """The runs regress reads. For runs read in place, their logs must hold the column the
    convergence criterion reads: checked when the DAG is built (a dry run says so), instead
    of by regress after every metrics job and the HMM, and only when regress is wanted (the
    metrics of a series without a log can still be computed)."""
    problems = tw.convergence_problems({wildcards.exp: exp_of(wildcards)})
    if problems:
        raise WorkflowError("existing runs whose convergence cannot be read:\n  " + "\n  ".join(problems))
    return run_inputs(wildcards)


def run_inputs(wildcards):
    """Every run of an experiment: its run record and its metrics. With statistics in the
    loop the sweep jobs' markers stand for the metrics.csv files they wrote (no rule makes
    them)."""
    exp = exp_of(wildcards)
    return {
        "records": exp.trained_markers(),
        "metrics": [] if exp.statistics_in_loop else exp.metrics_files(),
    }


experiment_outputs = tw.experiment_outputs


def table_inputs(wildcards):
    """What the cross-experiment tables read from every experiment."""
    return tw.table_inputs(EXPERIMENTS)


def compare_inputs(wildcards):
    """The runs of a comparison's experiments (only these: staleness follows them)."""
    comparison = COMPARISONS[wildcards.cmp]
    return {
        "records": comparison.record_files(),
        "metrics": comparison.metrics_files(),
    }


# Files of the compare rule, as patterns (contracts.ComparePaths); `all` wants every comparison's.
COMPARE_OUTPUTS = tw.comparison_outputs()
comparison_outputs = tw.comparison_outputs

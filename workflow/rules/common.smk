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

TABLES = expand("results/table{n}.{ext}", n=(1, 2, 4), ext=("csv", "md"))
SUMMARY = "results/summary.md"


onsuccess:
    # The workflow's last words: per experiment analysed, runs, states, failed fits,
    # censored runs, R² and LOO R², and every warning (also in results/summary.md).
    tw.print_summary(EXPERIMENTS)
FIGURES = ("model_selection", "convergence_histogram", "trajectories")


wildcard_constraints:
    exp="|".join(EXPERIMENTS) or "(?!)",
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
        "metrics": [] if exp.statistics_in_loop else [f"{d}/metrics.csv" for d in exp.run_dirs()],
    }


def experiment_outputs(name):
    """Everything `all` wants of one experiment besides the tables."""
    return [
        f"results/{name}/map/edges.csv",
        f"results/{name}/map/training_map.svg",
        f"results/{name}/map/training_map.png",
        *expand("results/{name}/figures/{fig}.{ext}", name=name, fig=FIGURES, ext=("png", "svg")),
    ]


def table_inputs(wildcards):
    """What the cross-experiment tables read from every experiment."""
    return {
        "regression": expand("results/{exp}/regression.json", exp=EXPERIMENTS),
        "coefficients": expand("results/{exp}/coefficients.csv", exp=EXPERIMENTS),
        "selection": expand("results/{exp}/hmm/selection.csv", exp=EXPERIMENTS),
        "baselines": expand("results/{exp}/baselines.csv", exp=EXPERIMENTS),
    }

"""The Snakemake workflow's configuration: validation with one clear message per problem,
and the plain data each rule needs (run names, command-line options, fingerprints).

The rules in ``workflow/rules/*.smk`` stay thin: they ask this module for an experiment's
settings and for every path they name (:data:`EXP`, :data:`RUN`, :data:`CMP`: the file
contracts of :mod:`trainmap.io.contracts` as Snakemake patterns), and call the ``trainmap``
command line. Everything a rule depends on comes from
here as a plain string, so Snakemake's ``params`` rerun trigger sees every change.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import jsonschema
import yaml

from trainmap.analysis.convergence import Criterion
from trainmap.io import contracts
from trainmap.io.contracts import ComparePaths, ExperimentPaths, RunPaths
from trainmap.options import (
    WORKFLOW_METRICS_KEYS,
    BaselineOptions,
    FiguresOptions,
    HMMSelectOptions,
    MetricsOptions,
)

__all__ = [
    "Patterns",
    "EXP",
    "RUN",
    "CMP",
    "FIGURES",
    "TABLES",
    "SUMMARY",
    "TABLES_LOG",
    "figure_files",
    "experiment_outputs",
    "table_inputs",
    "comparison_outputs",
    "comparison_report_files",
    "comparison_other_outputs",
    "table_experiment_args",
    "ConfigError",
    "MAX_CONFIG_VALUES",
    "check_config_size",
    "Experiment",
    "load_schema",
    "validate_config",
    "experiments",
    "data_problems",
    "series_problems",
    "convergence_problems",
    "print_summary",
    "planned_training_experiments",
    "stop_before_any_job",
    "engine_fingerprint",
    "prefer_this_installation",
]

#: Most values (mappings, lists and scalars, counted with repetition) a configuration may
#: expand to. YAML aliases let a few hundred bytes stand for billions of values (an "alias
#: bomb"); PyYAML (and so Snakemake's --configfile) builds those cheaply as shared objects,
#: but anything that walks them as a tree (validation, error messages) would run for hours.
MAX_CONFIG_VALUES = 100_000


class ConfigError(ValueError):
    """A configuration problem; the message names the config key."""


def check_config_size(config: Any, limit: int = MAX_CONFIG_VALUES) -> None:
    """Refuse a configuration that expands to more than ``limit`` values, naming the key
    where the count ran over. Stops counting at the limit, so it costs at most ``limit``
    steps whatever the input (self-referencing aliases included)."""
    stack: list[tuple[Any, tuple]] = [(config, ())]
    seen = 0
    while stack:
        node, path = stack.pop()
        seen += 1
        if seen > limit:
            raise ConfigError(
                f"config key {_key(path)}: the configuration expands to more than {limit} values "
                "(YAML aliases repeating a large value?); refusing to read it"
            )
        if isinstance(node, dict):
            stack.extend((value, (*path, key)) for key, value in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((value, (*path, i)) for i, value in enumerate(node))


def check_duplicate_keys(paths: Iterable[str | os.PathLike]) -> None:
    """Refuse a YAML configuration file that gives one key twice in a mapping (a repeated
    ``threshold:``, a repeated experiment name): YAML loaders, Snakemake's for --configfile
    too, keep the last silently. Raises :class:`ConfigError` naming the file, the key and
    both lines. Merge keys (``<<: *base``) may be overridden: that is what they are for.
    Each node is visited once, so aliases cost nothing (:func:`check_config_size`)."""
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            root = yaml.compose(handle, Loader=yaml.SafeLoader)
        stack, visited = [(root, ())], set()
        while stack:
            node, where = stack.pop()
            if node is None or id(node) in visited:
                continue
            visited.add(id(node))
            if isinstance(node, yaml.MappingNode):
                first_line: dict[tuple[str, str], int] = {}
                for key_node, value_node in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                        stack.append((value_node, where))
                        continue
                    key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
                    if key in first_line:
                        raise ConfigError(
                            f"{path}: config key {_key((*where, key_node.value))} appears twice, on lines "
                            f"{first_line[key]} and {line}; YAML would keep only the second: remove one"
                        )
                    first_line[key] = line
                    stack.append((value_node, (*where, key_node.value)))
            elif isinstance(node, yaml.SequenceNode):
                stack.extend((child, (*where, i)) for i, child in enumerate(node.value))


def load_schema(path: str | Path) -> dict[str, Any]:
    """The JSON schema (YAML) of the workflow configuration."""
    return yaml.safe_load(Path(path).read_text())


def _with_defaults(validator_class):
    """A validator class that fills in schema defaults of absent properties (as
    ``snakemake.utils.validate`` does), so rules see every setting explicitly."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = json.loads(json.dumps(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    # JSON Schema counts 2.0 as an integer; a seed count or a number of restarts written as
    # a float is a mistake (or a lost digit), so only real integers are (bool is no integer).
    types = validator_class.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(validator_class, {"properties": set_defaults}, type_checker=types)


def _key(path) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def validate_config(config: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``config`` against ``schema`` and fill in defaults, in place.

    Raises :class:`ConfigError` naming the offending key, e.g.
    ``config key experiments.modular.hmm.restarts: 0 is less than the minimum of 1``.
    Regular expressions (``format: regex``) must compile; the configuration's size is
    checked first (:func:`check_config_size`).
    """
    check_config_size(config)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema, format_checker=jsonschema.FormatChecker())
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None and error.validator == "oneOf":
        # Of the alternatives, report the problem with the one of the instance's own type.
        own_type = [e for e in error.context if e.validator != "type"]
        error = jsonschema.exceptions.best_match(own_type) if own_type else error
    if error is not None:
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            raise ConfigError(f"config key {_key(error.absolute_path)}: unknown key {', '.join(map(repr, extra))}")
        if "propertyNames" in error.schema_path:
            name = error.instance if len(str(error.instance)) <= 40 else f"{str(error.instance)[:40]}…"
            rule = (f"{len(error.instance)} characters; at most {error.validator_value}" if error.validator == "maxLength"
                    else f"must match {error.validator_value}")
            raise ConfigError(f"config key {_key(error.absolute_path)}: bad name {name!r} ({rule})")
        if error.validator == "format" and error.validator_value == "regex":
            raise ConfigError(f"config key {_key(error.absolute_path)}: {error.instance!r} is not a valid "
                              f"regular expression ({_regex_problem(error.instance)})")
        hint = ""
        if error.validator == "type" and error.validator_value == "boolean" and isinstance(error.instance, str):
            hint = " (on the command line write --config KEY=True or KEY=False)"
        raise ConfigError(f"config key {_key(error.absolute_path)}: {error.message}{hint}")
    return config


def _regex_problem(pattern: str) -> str:
    import re

    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return "does not compile"


@dataclass(frozen=True)
class Experiment:
    """One experiment of the configuration, resolved: what its rules need, as plain data."""

    name: str
    runs: tuple[str, ...]
    task: str | None = None  # None for run directories read in place
    sources: Mapping[str, str] = field(default_factory=dict)  # run name -> directory read in place
    sources_key: str = "runs"  # the config key that gave them: runs or sources
    train_overrides: Mapping[str, Any] = field(default_factory=dict)
    train_settings: Mapping[str, Any] = field(default_factory=dict)
    convergence: Criterion | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)
    # Config metrics:, hmm:, baselines:, figures: as the stages' options (trainmap.options),
    # validated once when the config is resolved; the rules' command lines are built from them.
    metrics: MetricsOptions = field(default_factory=MetricsOptions)
    metrics_device: str = "auto"  # config metrics.device: where the metrics jobs compute
    metrics_chunk: int | None = None  # config metrics.chunk: checkpoints per job of runs read in place
    hmm: HMMSelectOptions = field(default_factory=HMMSelectOptions)
    baselines: BaselineOptions = field(default_factory=BaselineOptions)
    figures: FiguresOptions = field(default_factory=FiguresOptions)
    log: Mapping[str, Any] | None = None  # runs read in place: config log: {path, step}
    seed_batch: int = 1  # config train: {seed_batch: N}: N seeds per training job (trainmap train-sweep)
    keep_checkpoints: bool = True  # config train: {keep_checkpoints: false}: statistics in the loop, no files

    @property
    def in_place(self) -> bool:
        """Whether the runs are directories read where they lie (``runs:``/``sources:``)."""
        return self.task is None

    def run_dir(self, run: str) -> str:
        return ExperimentPaths(self.name).run(run).root.as_posix()

    def runs_dir(self) -> str:
        """The directory holding the run directories (``trainmap train-sweep --out-dir``)."""
        return str(Path(self.run_dir("_")).parent)

    def run_dirs(self) -> list[str]:
        return [self.run_dir(run) for run in self.runs]

    def metrics_files(self) -> list[str]:
        """Every run's metrics.csv."""
        return [RunPaths(Path(d)).metrics_csv.as_posix() for d in self.run_dirs()]

    def checkpoints_dir(self, run: str) -> str:
        """The checkpoints folder of a trained run (``trainmap metrics`` reads it)."""
        return RunPaths(Path(self.run_dir(run))).checkpoints.as_posix()

    # Command-line options of each stage, as shell-quoted strings (also the params that
    # Snakemake compares to decide what is stale).

    def train_args(self) -> str:
        # Sorted: reordering keys in a config file must not make runs stale.
        return " ".join(
            f"--set {shlex.quote(f'{key}={_cli_value(value)}')}" for key, value in sorted(self.train_overrides.items())
        )

    @property
    def batched(self) -> bool:
        """Whether the runs train in seed-sweep jobs of ``seed_batch`` seeds (also of one
        seed, when the statistics are computed in the loop: only a sweep job does that)."""
        return (self.seed_batch > 1 or not self.keep_checkpoints) and not self.in_place

    @property
    def statistics_in_loop(self) -> bool:
        """Whether the training jobs write each run's metrics.csv themselves (config
        ``train: {keep_checkpoints: false}``): no checkpoint files, no metrics jobs."""
        return not self.keep_checkpoints and not self.in_place

    def in_loop_statistics(self):
        """The :class:`trainmap.train.sweep.InLoopStatistics` of config ``metrics:``."""
        from trainmap.train.sweep import InLoopStatistics

        return InLoopStatistics(self.metrics, self.metrics_device)

    def sweep_args(self) -> str:
        """``trainmap train-sweep``'s options: the training settings and, with statistics in
        the loop, ``--no-checkpoints`` and the metrics options."""
        if not self.statistics_in_loop:
            return self.train_args()
        return (f"{self.train_args()} --no-checkpoints {self.metrics_args()} "
                f"--metrics-device {shlex.quote(self.metrics_device)}").strip()

    def groups(self) -> list[tuple[str, ...]]:
        """The runs of each seed-sweep job: consecutive runs in config order, ``seed_batch`` at a
        time. Adding seeds at the end adds groups and leaves the earlier ones as they were."""
        n = self.seed_batch
        return [self.runs[i : i + n] for i in range(0, len(self.runs), n)]

    def group_file(self, runs: Iterable[str]) -> str:
        return ExperimentPaths(self.name).sweep_group(runs).as_posix()

    def group_runs(self, group: str) -> tuple[str, ...]:
        """The runs of the group whose marker is ``sweeps/{group}.json``."""
        for runs in self.groups():
            if Path(self.group_file(runs)).stem == group:
                return runs
        raise ValueError(f"experiment {self.name}: no seed group {group!r}")

    def trained_marker(self, run: str) -> str:
        """The file that says ``run`` has been trained: its run.json, or its group's marker."""
        if not self.batched:
            return RunPaths(Path(self.run_dir(run))).run_json.as_posix()
        return next(self.group_file(runs) for runs in self.groups() if run in runs)

    def trained_markers(self) -> list[str]:
        return list(dict.fromkeys(self.trained_marker(run) for run in self.runs))

    def train_fingerprint(self) -> str:
        """Every resolved training setting, defaults included: retrain when any changes.
        With statistics in the loop, also what run.json records of them (metrics options,
        device, engine fingerprint): the metrics are computed in training, so a change of
        any of these trains again."""
        if not self.statistics_in_loop:
            return json.dumps(self.train_settings, sort_keys=True)
        return json.dumps({"settings": self.train_settings, "statistics": self.in_loop_statistics().record()},
                          sort_keys=True)

    def metrics_args(self) -> str:
        return self.metrics.cli_args()

    def device_arg(self) -> str:
        """Where the metrics jobs compute (``--device`` of ``trainmap metrics`` and
        ``series-metrics``): a CUDA GPU or the Rust engine."""
        return f"--device {shlex.quote(self.metrics_device)}"

    def series(self, run: str):
        """The :class:`trainmap.metrics.series.Series` of an in-place run (with the log config
        ``log:`` names), discovered once per workflow invocation."""
        log = self.log or {}
        return _series(self.sources[run], log.get("path"), log.get("step"))

    def log_args(self) -> str:
        """``--log PATH [--log-step COLUMN]`` of series-metrics (shell-quoted) from config ``log:``."""
        if not self.log:
            return ""
        args = f"--log {shlex.quote(self.log['path'])}"
        return args + (f" --log-step {shlex.quote(self.log['step'])}" if self.log.get("step") is not None else "")

    def series_inputs(self, run: str) -> list[str]:
        """The files the metrics of an in-place run depend on (its checkpoints, shard indexes
        and logs), listed when the DAG is built: a new checkpoint or a changed log makes that
        run's metrics stale, and no other run's."""
        return self.series(run).input_files()

    def metrics_chunks(self, run: str) -> list[int]:
        """Indexes of the chunk jobs of an in-place run (config ``metrics.chunk``): none when
        not chunked, or when a Recorder's metrics.csv will be adopted (nothing to compute)."""
        size = self.metrics_chunk
        if size is None:
            return []
        from trainmap.metrics import engine as metrics
        from trainmap.metrics.series_chunks import chunk_count
        from trainmap.metrics.series_metrics import adoption_differences

        series = self.series(run)
        if series.recorder is not None and not adoption_differences(series.recorder, self.engine_options(),
                                                                    metrics.ENGINE_FINGERPRINT):
            return []
        return list(range(chunk_count(len(series.checkpoints), size)))

    def chunk_inputs(self, run: str, index: int) -> list[str]:
        """The checkpoint files chunk ``index`` of an in-place run reads."""
        from trainmap.metrics.series_chunks import chunk_input_files

        return chunk_input_files(self.series(run), index, self.metrics_chunk)

    def chunk_file(self, run: str, index: int) -> str:
        return RunPaths(Path(self.run_dir(run))).metrics_chunk(index).as_posix()

    def series_job_inputs(self, run: str) -> dict[str, list[str]]:
        """Inputs of an in-place run's metrics job: ``files`` (everything it reads) and
        ``chunks`` (the chunk files it gathers). Chunked, the checkpoints are the chunk
        jobs' inputs, so a changed checkpoint reruns its chunk and this gather only."""
        chunks = self.metrics_chunks(run)
        files = self.series_inputs(run)
        if chunks:
            in_chunks = {f for index in chunks for f in self.chunk_inputs(run, index)}
            files = [f for f in files if f not in in_chunks]
        return {"files": files, "chunks": [self.chunk_file(run, index) for index in chunks]}

    def engine_options(self) -> dict[str, Any]:
        """The engine's options, as the Recorder contract and series_metrics name them."""
        return dataclasses.asdict(self.metrics)

    def hmm_args(self) -> str:
        """``trainmap hmm-select``'s options (worker processes come from the rule's threads)."""
        return self.hmm.cli_args(omit=("workers",))

    def baseline_args(self) -> str:
        """``trainmap baselines``' options: the HMM's split and fitting options, so the
        baselines are scored on the same runs (see :func:`experiments`)."""
        return self.baselines.cli_args(omit=("workers",))

    def figures_args(self) -> str:
        """``trainmap figures``' options from config ``figures:`` (the criterion and the
        name come from convergence.csv and the results path)."""
        return self.figures.cli_args(omit=("convergence", "experiment"))

    def convergence_arg(self) -> str:
        """``--convergence 'COLUMN>X'`` (shell-quoted) for regress, map and figures."""
        return f"--convergence {shlex.quote(str(self.convergence))}"


@functools.lru_cache(maxsize=None)
def _series(source: str, log_path: str | None = None, log_step: str | None = None):
    """The series at ``source``, discovered once per workflow invocation (every chunk job's
    input function asks for it)."""
    from trainmap.metrics.series import discover

    return discover(source, log_path, log_step)


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _runs(name: str, spec: Mapping[str, Any]) -> tuple[str, ...]:
    seeds = spec["seeds"]
    return tuple(str(s) for s in (range(seeds) if isinstance(seeds, int) else seeds))


#: Run names become directories and Snakemake wildcards (the schema's rule for run names):
#: letters, digits, "_", "." and "-", not starting with "." or "-", at most 100 characters.
_RUN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def _globbed_runs(key: str, pattern: str) -> dict[str, str]:
    """Run name (the directory's name) -> directory for every directory ``pattern`` matches."""
    matches = sorted(path for path in glob.glob(os.path.expanduser(pattern)) if os.path.isdir(path))
    if not matches:
        raise ConfigError(f"config key {key}: the pattern {pattern!r} matches no directory")
    runs: dict[str, str] = {}
    for path in matches:
        name = os.path.basename(os.path.normpath(path))
        if not _RUN_NAME.match(name):
            raise ConfigError(f"config key {key}: run directory {path!r}: its name {name!r} cannot name a run "
                              "(letters, digits, '_', '.', '-', not first '.' or '-'); "
                              "list the runs as a mapping name: directory")
        if name in runs:
            raise ConfigError(f"config key {key}: {runs[name]!r} and {path!r} have the same name {name!r}; "
                              "list the runs as a mapping name: directory")
        runs[name] = path
    return runs


def _in_place(key: str, spec: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """(config key, run name -> directory) of an experiment that gives runs or sources."""
    given = [k for k in ("runs", "sources") if k in spec]
    if len(given) == 2:
        raise ConfigError(f"config key {key}: give runs or sources, not both")
    clash = [k for k in ("task", "seeds", "train") if k in spec and spec[k] != {}]
    if clash:
        raise ConfigError(f"config key {key}: an experiment of existing runs ({given[0]}) cannot also set "
                          f"{', '.join(clash)}")
    value = spec[given[0]]
    runs = _globbed_runs(f"{key}.{given[0]}", value) if isinstance(value, str) else dict(value)
    return given[0], runs


def _stage_options(key: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """An experiment's (schema-validated, defaults filled) ``metrics:``, ``hmm:``,
    ``baselines:`` and ``figures:`` as :class:`Experiment` fields. The baselines are fitted
    with the HMM's split and EM settings (scored on the same runs); their own section sets
    only how many states they try."""
    metrics = spec["metrics"]
    section = "metrics"
    try:
        options = dict(
            metrics=MetricsOptions(**{k: v for k, v in metrics.items() if k not in WORKFLOW_METRICS_KEYS}),
            metrics_device=metrics["device"],
            metrics_chunk=metrics["chunk"],
        )
        section = "hmm"
        options["hmm"] = HMMSelectOptions(**spec["hmm"])
        section = "baselines"
        options["baselines"] = BaselineOptions(**{**options["hmm"].fit_fields(), **spec["baselines"]})
        section = "figures"
        options["figures"] = FiguresOptions(**spec["figures"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key {key}.{section}: {exc}") from None
    return options


def experiments(config: Mapping[str, Any]) -> dict[str, Experiment]:
    """Resolve the (schema-validated) configuration into :class:`Experiment` records.

    Training settings are checked against each task's defaults; the top-level ``data_dir``
    and ``download`` apply to tasks that read data files unless an experiment sets them.
    """
    from trainmap.train import SettingsError, default_settings, resolve_settings
    from trainmap.train.tasks import default_threshold

    resolved = {}
    for name, spec in config["experiments"].items():
        key = f"experiments.{name}"
        try:
            convergence = Criterion.from_config(spec.get("convergence"), spec.get("threshold"), key)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        common = dict(name=name, convergence=convergence, resources=spec["resources"], **_stage_options(key, spec))
        if "runs" in spec or "sources" in spec:
            sources_key, sources = _in_place(key, spec)
            if common["convergence"] is None:
                raise ConfigError(f"config key {key}.convergence: existing runs need a convergence criterion "
                                  "(convergence: {column: ..., above|below: ...}, or threshold: x on eval_accuracy)")
            resolved[name] = Experiment(runs=tuple(sources), sources=sources, sources_key=sources_key,
                                        log=spec.get("log"), **common)
            continue
        if "log" in spec:
            raise ConfigError(f"config key {key}.log: names the log of run directories read in place (runs:, "
                              "sources:); a trained run writes its own log.csv")
        missing = [k for k in ("task", "seeds") if k not in spec]
        if missing:
            raise ConfigError(f"config key {key}: needs {' and '.join(missing)} "
                              "(or runs, to analyse existing run directories)")
        if common["metrics_chunk"] is not None:
            raise ConfigError(f"config key {key}.metrics.chunk: chunks apply to runs read in place (runs:); a "
                              "trained run's checkpoints are not known before it trains")
        task = spec["task"]
        overrides = dict(spec["train"])
        seed_batch = overrides.pop(SEED_BATCH, 1)
        keep_checkpoints = overrides.pop(KEEP_CHECKPOINTS, True)
        if seed_batch > 1 or not keep_checkpoints:
            from trainmap.train.tasks import BATCHED_TASKS

            if task not in BATCHED_TASKS:
                if seed_batch > 1:
                    raise ConfigError(f"config key {key}.train.{SEED_BATCH}: task {task!r} trains one seed per job "
                                      f"(seed sweeps: {', '.join(BATCHED_TASKS)}); remove {SEED_BATCH} or set it to 1")
                raise ConfigError(f"config key {key}.train.{KEEP_CHECKPOINTS}: task {task!r} trains one seed per "
                                  f"job and writes checkpoint files (statistics in the loop: seed sweeps of "
                                  f"{', '.join(BATCHED_TASKS)}); remove {KEEP_CHECKPOINTS}")
        defaults = default_settings(task)
        for shared in ("data_dir", "download"):
            if shared in defaults and shared not in overrides:
                overrides[shared] = config[shared]
        try:
            settings = resolve_settings(task, overrides)
        except SettingsError as exc:
            raise ConfigError(f"config key {key}.train: {exc}") from None
        if common["convergence"] is None:
            common["convergence"] = Criterion.from_threshold(default_threshold(task), f"config key {key}.threshold")
        resolved[name] = Experiment(
            runs=_runs(name, spec), task=task, train_overrides=overrides, train_settings=settings,
            seed_batch=seed_batch, keep_checkpoints=keep_checkpoints, **common
        )
    return resolved


#: The key of an experiment's ``train:`` mapping that is not a task setting: how many seeds
#: one training job trains as one batched model (trainmap.train.sweep); 1: one per job.
SEED_BATCH = "seed_batch"
#: The other one: ``false`` makes the sweep jobs compute the 14 statistics in the loop and
#: write each run's metrics.csv, with no checkpoint files (no metrics jobs are planned).
KEEP_CHECKPOINTS = "keep_checkpoints"
#: Keys of ``train:`` that configure the jobs, not the task (removed before the settings
#: are resolved).
WORKFLOW_TRAIN_KEYS: tuple[str, ...] = (SEED_BATCH, KEEP_CHECKPOINTS)


@dataclass(frozen=True)
class Comparison:
    """One comparison of the configuration (``compare: {name: [exp, ...]}``), resolved:
    its experiments (conditions) and the command-line arguments of its two rules. The HMM
    is selected with the first experiment's ``hmm:`` settings."""

    name: str
    experiments: tuple[Experiment, ...]

    def condition_args(self) -> str:
        """``--condition EXP RUN_DIR...`` for every experiment (shell-quoted)."""
        return " ".join("--condition " + " ".join(shlex.quote(x) for x in (e.name, *e.run_dirs()))
                        for e in self.experiments)

    def convergence_args(self) -> str:
        """``--convergence EXP 'COLUMN>X'`` for every experiment: each keeps its own criterion."""
        return " ".join(f"--convergence {e.name} {shlex.quote(str(e.convergence))}" for e in self.experiments)

    def hmm_args(self) -> str:
        return self.experiments[0].hmm_args()

    def run_dirs(self) -> list[str]:
        return [d for e in self.experiments for d in e.run_dirs()]

    def record_files(self) -> list[str]:
        """What stands for every run's record: run.json, or a seed sweep's group marker."""
        return [m for e in self.experiments for m in e.trained_markers()]

    def metrics_files(self) -> list[str]:
        """Every run's metrics.csv that a rule makes (none for statistics computed in a
        sweep's loop: the group markers of :meth:`record_files` stand for them)."""
        return [f for e in self.experiments if not e.statistics_in_loop for f in e.metrics_files()]


def comparisons(config: Mapping[str, Any], experiments: Mapping[str, Experiment]) -> dict[str, Comparison]:
    """Resolve config ``compare:`` against the resolved experiments: every name a safe name
    and every experiment one of ``experiments:``, at least two, none twice; else
    :class:`ConfigError` naming the key."""
    out = {}
    if config.get("compare") and "compare" in experiments:
        raise ConfigError("config key experiments.compare: an experiment may not be named compare when the "
                          "configuration has comparisons (results/compare/ holds them)")
    for name, members in (config.get("compare") or {}).items():
        key = f"compare.{name}"
        if not isinstance(name, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", name) or len(name) > 64:
            raise ConfigError(f"config key {key}: not a valid comparison name (a letter, then letters, digits or _)")
        if not isinstance(members, (list, tuple)) or len(members) < 2:
            raise ConfigError(f"config key {key}: needs a list of at least two experiments")
        unknown = [m for m in members if m not in experiments]
        if unknown:
            raise ConfigError(f"config key {key}: {', '.join(map(str, unknown))} not among the experiments "
                              f"({', '.join(experiments)})")
        twice = sorted({m for m in members if list(members).count(m) > 1})
        if twice:
            raise ConfigError(f"config key {key}: {', '.join(twice)} given more than once")
        out[name] = Comparison(name=name, experiments=tuple(experiments[m] for m in members))
    return out


def planned_training_experiments(dag) -> set[str]:
    """Names of the experiments with a training job that a Snakemake DAG will run."""
    return {job.wildcards["exp"] for job in dag.needrun_jobs() if job.rule.name in _DATA_RULES}


#: The rules that read an experiment's input data (dataset files).
_DATA_RULES = ("train", "train_sweep")


def series_problems(experiments: Mapping[str, Experiment]) -> list[str]:
    """Messages for existing run directories (``runs:``/``sources:``) that are missing or
    hold no checkpoint series in a known layout, naming the config key.

    Checked when the DAG is built: the metrics jobs of these runs take the files found
    there as their inputs.
    """
    problems = []
    for exp in (e for e in experiments.values() if e.in_place):
        for run, source in exp.sources.items():
            if not Path(source).is_dir():
                problems.append(f"experiment {exp.name}: {exp.sources_key}.{run}: {source} is not a directory")
                continue
            try:
                exp.series(run)
            except (OSError, ValueError) as exc:
                problems.append(f"experiment {exp.name}: {exp.sources_key}.{run}: {exc}")
    return problems


def convergence_problems(experiments: Mapping[str, Experiment]) -> list[str]:
    """Messages for runs read in place whose log lacks the column the experiment's
    convergence criterion reads (or that have no log at all), naming the config key.

    Checked when the DAG is built (a dry run catches it): otherwise the workflow would
    compute every run's metrics and fit the HMM before regress found the column missing.
    """
    from trainmap.metrics.series import read_log

    problems = []
    for exp in (e for e in experiments.values() if e.in_place and e.convergence is not None):
        column = exp.convergence.column
        for run, source in exp.sources.items():
            try:
                series = exp.series(run)
                log = read_log(series)
            except (OSError, ValueError) as exc:
                problems.append(f"experiment {exp.name}: {exp.sources_key}.{run}: {exc}")
                continue
            columns = sorted({c for row in log.values() for c in row})
            if not log:
                problems.append(f"experiment {exp.name}: {exp.sources_key}.{run}: {source} has no training log "
                                f"(docs/your-runs.md, 'The log'), so its convergence ({exp.convergence}) cannot be "
                                f"read (config key experiments.{exp.name}.convergence, or name the log: "
                                f"experiments.{exp.name}.log)")
            elif column not in columns:
                problems.append(f"experiment {exp.name}: {exp.sources_key}.{run}: the log of {source} has no column "
                                f"{column!r}, which the convergence criterion {exp.convergence} reads (config key "
                                f"experiments.{exp.name}.convergence); its columns: {', '.join(columns)}")
    return problems


def print_summary(experiments: Mapping[str, Experiment], results: str | Path = "results",
                  stream=None) -> None:
    """Print the summary of the experiments (:func:`trainmap.analysis.summary.render_summary`)
    that have been analysed, as the workflow's last words on the console."""
    from trainmap.analysis.summary import render_summary

    done = {name: Path(results) / name for name in experiments
            if ExperimentPaths.at(Path(results) / name).regression_json.is_file()}
    if done:
        print("\n" + render_summary(done), file=stream or sys.stdout, flush=True)


def data_problems(experiments: Mapping[str, Experiment], names: Iterable[str] | None = None) -> list[str]:
    """Messages for experiments whose data files are missing (and may not be downloaded).

    Only the experiments in ``names`` are checked (all when None): the workflow passes those
    with a planned training job, so a missing dataset stops a run that needs it before any
    job starts instead of failing forty training jobs, and does not stop one that does not.
    Existing run directories are checked by :func:`series_problems`.
    """
    from trainmap.train.datafiles import missing_data

    wanted = set(experiments) if names is None else set(names)
    problems = []
    for exp in (e for e in experiments.values() if e.name in wanted and not e.in_place):
        message = missing_data(exp.task, exp.train_settings)
        if message:
            problems.append(f"experiment {exp.name} (config key data_dir): {message}")
    return problems


def stop_before_any_job(message: str) -> None:
    """Stop the workflow from its ``onstart`` handler with ``message`` alone on stderr.

    Snakemake prints an exception raised there with a traceback line into the Snakefile;
    the user needs only the message. Exiting is safe here: no job has started, and
    Snakemake releases its directory lock on the way out.
    """
    print(f"Error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def engine_fingerprint(crate_dir: str | Path) -> str:
    """SHA-256 of the metrics engine's sources (``Cargo.toml``, ``Cargo.lock``, ``src/**.rs``),
    computed exactly as ``rust_metrics/build.rs`` computes the fingerprint it compiles into
    the engine (``trainmap.metrics.engine.ENGINE_FINGERPRINT``)."""
    crate_dir = Path(crate_dir)
    files = [crate_dir / "Cargo.toml", crate_dir / "Cargo.lock", *sorted((crate_dir / "src").rglob("*.rs"))]
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(crate_dir).as_posix()):
        digest.update(path.relative_to(crate_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def prefer_this_installation() -> None:
    """Put the bin directory of the running interpreter first on PATH, so rules call the
    ``trainmap`` command of the installation the Snakefile imported (e.g. ``.venv/bin`` when
    run as ``.venv/bin/snakemake``) rather than whatever PATH finds first. Jobs inherit the
    environment, on a cluster too; with ``--use-conda`` the activated environment comes first.
    """
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


# --- the rules' paths: Snakemake patterns of the file contracts (trainmap.io.contracts) ----------

class Patterns:
    """The paths of a contract object as Snakemake patterns (POSIX strings):
    ``Patterns(ExperimentPaths("{exp}")).model_npz`` is ``"results/{exp}/hmm/model.npz"``.
    Properties give strings, methods give functions returning strings (or ``Patterns`` for a
    contract object, lists of strings for lists of paths). The rules spell no path by hand:
    every output and log comes from here (tests/workflow/test_workflow_contract_paths.py)."""

    def __init__(self, paths: Any):
        self._paths = paths

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._paths, name)
        if callable(value):
            return lambda *args: _pattern(value(*args))
        return _pattern(value)

    def __repr__(self) -> str:
        return f"Patterns({self._paths!r})"


def _pattern(value: Any) -> Any:
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, (list, tuple)):
        return [_pattern(v) for v in value]
    if isinstance(value, (ExperimentPaths, RunPaths, ComparePaths)):
        return Patterns(value)
    return value


#: Files of one experiment (wildcard ``{exp}``), of one of its runs (``{exp}``, ``{run}``) and
#: of one comparison (``{cmp}``).
EXP = Patterns(ExperimentPaths("{exp}"))
RUN = Patterns(ExperimentPaths("{exp}").run("{run}"))
CMP = Patterns(ComparePaths("{cmp}"))
#: The figures of the figures rule and the tables and summary of the tables rule.
FIGURES: tuple[str, ...] = contracts.FIGURES
TABLES: list[str] = [p.as_posix() for p in contracts.table_paths()]
SUMMARY: str = contracts.summary_path().as_posix()
TABLES_LOG: str = contracts.results_log("tables").as_posix()


def figure_files(name: str = "{exp}") -> list[str]:
    """The figures rule's outputs for experiment ``name`` (default: the pattern)."""
    paths = ExperimentPaths(name)
    return [paths.figure(fig, ext).as_posix() for fig in FIGURES for ext in ("png", "svg")]


def experiment_outputs(name: str) -> list[str]:
    """Everything ``all`` wants of one experiment besides the tables."""
    paths = ExperimentPaths(name)
    return [paths.edges_csv.as_posix(), paths.map_svg.as_posix(), paths.map_png.as_posix(),
            *figure_files(name), paths.early_csv.as_posix()]


def table_inputs(names: Iterable[str]) -> dict[str, list[str]]:
    """What the tables rule reads of every experiment."""
    experiments = [ExperimentPaths(name) for name in names]
    return {key: [getattr(e, attribute).as_posix() for e in experiments]
            for key, attribute in (("regression", "regression_json"), ("coefficients", "coefficients_csv"),
                                   ("selection", "selection_csv"), ("baselines", "baselines_csv"),
                                   ("early", "early_csv"))}


def comparison_outputs(name: str = "{cmp}") -> list[str]:
    """Every file the compare rule writes for comparison ``name`` (default: the pattern)."""
    return [p.as_posix() for p in ComparePaths(name).outputs]


def comparison_report_files(name: str = "{cmp}") -> list[str]:
    """The compare rule's outputs that ``snakemake --report`` shows."""
    return [p.as_posix() for p in ComparePaths(name).report_files]


def comparison_other_outputs(name: str = "{cmp}") -> list[str]:
    """The compare rule's outputs that are not in the report."""
    shown = set(comparison_report_files(name))
    return [p for p in comparison_outputs(name) if p not in shown]


def table_experiment_args(names: Iterable[str]) -> str:
    """``--experiment NAME=results/NAME`` of the tables rule, for every experiment."""
    return " ".join(f"--experiment {name}={ExperimentPaths(name).root.as_posix()}" for name in names)

"""Every option declared once: the config schema, the CLI and the workflow's command lines
agree with trainmap.options for every HMM, baseline and metrics option."""

from __future__ import annotations

import copy
import dataclasses
import shlex
from pathlib import Path

import pytest

import trainmap.workflow as tw
from trainmap.analysis.convergence import Criterion
from trainmap.cli import build_parser
from trainmap.options import (
    BaselineOptions,
    FiguresOptions,
    HMMSelectOptions,
    MapOptions,
    MetricsOptions,
    RegressOptions,
    WORKFLOW_METRICS_KEYS,
    StageOptions,
)

SCHEMA = tw.load_schema(Path(__file__).parents[2] / "workflow" / "schemas" / "config.schema.yaml")
EXPERIMENT = SCHEMA["$defs"]["experiment"]["properties"]
# options that are not config keys: worker processes come from the rule's threads
NOT_CONFIG = {"workers"}


def _bounds_of_option(f: dataclasses.Field) -> dict:
    m = f.metadata
    out = {"default": f.default}
    for key, schema_key in (("minimum", "minimum"), ("maximum", "maximum"),
                            ("exclusive_minimum", "exclusiveMinimum"), ("exclusive_maximum", "exclusiveMaximum")):
        if m[key] is not None:
            out[schema_key] = m[key]
    if m["choices"] is not None:
        out["enum"] = list(m["choices"])
    return out


def _bounds_of_schema(prop: dict) -> dict:
    return {k: prop[k] for k in ("default", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum")
            if k in prop}


@pytest.mark.parametrize("section, cls, only", [
    ("hmm", HMMSelectOptions, None),
    ("baselines", BaselineOptions, {"max_components"}),  # the rest of the baselines' options come from hmm
    ("metrics", MetricsOptions, None),
    ("figures", FiguresOptions, {"fast", "slow"}),  # the criterion and name come from the experiment
])
def test_schema_defaults_and_bounds_are_the_options(section, cls, only):
    props = EXPERIMENT[section]["properties"]
    names = {f.name for f in dataclasses.fields(cls)} - NOT_CONFIG
    expected = names if only is None else only
    workflow_only = set(WORKFLOW_METRICS_KEYS) if section == "metrics" else set()
    assert set(props) - workflow_only == expected, f"config {section}: keys and options differ"
    for f in dataclasses.fields(cls):
        if f.name in expected:
            assert _bounds_of_schema(props[f.name]) == _bounds_of_option(f), f"{section}.{f.name}"


def _resolved(**experiment):
    config = {"experiments": {"e": {"task": "parities", "seeds": 2, **experiment}}}
    return tw.experiments(tw.validate_config(copy.deepcopy(config), SCHEMA))["e"]


def _parse(command: str, args: str):
    parser = build_parser()
    return parser.parse_args([command, "RUN", *_required(command), *shlex.split(args)])


def _required(command: str) -> list[str]:
    return {"hmm-select": ["--selection-csv", "s", "--model", "m"], "baselines": ["--out", "o"],
            "metrics": ["-o", "out.csv"],
            "figures": ["--selection-csv", "s", "--states", "s", "--convergence-csv", "v", "--out-dir", "d"]}[command]


CHANGED_HMM = {"max_components": 5, "restarts": 2, "covariance": "diag", "selection": "mean", "zscore_first_n": 50,
               "min_checkpoints": 3, "test_fraction": 0.25, "seed": 9, "n_iter": 20, "tol": 1e-3, "min_covar": 0.01,
               "min_runs": 4}
CHANGED_METRICS = {"svd": "exact", "exact_max_dim": 100, "rank": 8, "include": "w.*", "exclude": ""}


def test_the_experiment_holds_the_config_sections_as_options():
    """Config sections become the stages' options once, when the config is resolved: the
    baselines take the HMM's split and EM settings and only their own max_components."""
    default = _resolved()
    assert (default.hmm, default.metrics, default.figures) == (HMMSelectOptions(), MetricsOptions(), FiguresOptions())
    assert default.baselines == BaselineOptions()
    changed = _resolved(hmm=CHANGED_HMM, baselines={"max_components": 3}, metrics=CHANGED_METRICS,
                        figures={"fast": 1, "slow": 0})
    assert changed.hmm == HMMSelectOptions(**CHANGED_HMM)
    fit = {k: v for k, v in CHANGED_HMM.items() if k not in ("covariance", "selection")}
    assert changed.baselines == BaselineOptions(**{**fit, "max_components": 3})
    assert changed.metrics == MetricsOptions(**CHANGED_METRICS)
    assert (changed.metrics_device, changed.metrics_chunk) == ("auto", None)
    assert changed.figures == FiguresOptions(fast=1, slow=0)


def test_a_bad_option_value_names_its_config_section():
    # The schema refuses this first (its bounds are the options'); an options check that
    # the schema lacked would still name the config key, not only the command-line flag.
    validated = tw.validate_config(copy.deepcopy({"experiments": {"e": {"task": "parities", "seeds": 2}}}), SCHEMA)
    validated["experiments"]["e"]["hmm"]["min_runs"] = 1
    with pytest.raises(tw.ConfigError, match=r"config key experiments\.e\.hmm: option --min-runs \(min_runs\) must be at "
                                             r"least 2"):
        tw.experiments(validated)


def test_workflow_command_lines_parse_back_to_the_config_options():
    default = _resolved()
    changed = _resolved(hmm=CHANGED_HMM, baselines={"max_components": 3}, metrics=CHANGED_METRICS,
                        figures={"fast": 1, "slow": 0})
    for exp in (default, changed):
        assert HMMSelectOptions.from_args(_parse("hmm-select", exp.hmm_args())) == exp.hmm
        assert BaselineOptions.from_args(_parse("baselines", exp.baseline_args())) == exp.baselines
        assert MetricsOptions.from_args(_parse("metrics", exp.metrics_args())) == exp.metrics
        assert _parse("metrics", exp.device_arg()).device == exp.metrics_device
        figures = FiguresOptions.from_args(_parse("figures", exp.figures_args()))
        assert (figures.fast, figures.slow) == (exp.figures.fast, exp.figures.slow)
    assert HMMSelectOptions.from_args(_parse("hmm-select", default.hmm_args())) == HMMSelectOptions()
    assert changed.figures_args() == "--fast 1 --slow 0"


def test_metrics_device_default_is_the_cli_default():
    """The one workflow-only metrics key the CLI also has: the same default in both."""
    assert EXPERIMENT["metrics"]["properties"]["device"]["default"] == _parse("metrics", "").device


def test_cli_defaults_are_the_dataclass_defaults():
    assert HMMSelectOptions.from_args(_parse("hmm-select", "")) == HMMSelectOptions()
    assert BaselineOptions.from_args(_parse("baselines", "")) == BaselineOptions()
    assert MetricsOptions.from_args(_parse("metrics", "")) == MetricsOptions()
    parser = build_parser()
    args = parser.parse_args(["map", "R", "--model", "m", "--states", "s", "--regression", "r", "--edges", "e"])
    assert MapOptions.from_args(args) == MapOptions()
    args = parser.parse_args(["regress", "R", "--model", "m", "--states", "s", "--out", "o", "--coefficients", "c",
                              "--convergence-csv", "v", "--convergence", "eval_loss<2"])
    assert RegressOptions.from_args(args) == RegressOptions(convergence=Criterion("eval_loss", "below", 2.0))
    args = parser.parse_args(["figures", "R", "--selection-csv", "s", "--states", "s", "--convergence-csv", "v",
                              "--out-dir", "d", "--threshold", "0.5", "--fast", "1"])
    assert FiguresOptions.from_args(args) == FiguresOptions(convergence=Criterion.from_threshold(0.5), fast=1)


@pytest.mark.parametrize("cls, changes, fragment", [
    (HMMSelectOptions, {"n_iter": 0}, "--n-iter (n_iter) must be at least 1"),
    (HMMSelectOptions, {"tol": 0.0}, "--tol (tol) must be greater than 0"),
    (HMMSelectOptions, {"tol": float("inf")}, "--tol (tol) must be finite"),
    (HMMSelectOptions, {"max_components": 65}, "--max-components (max_components) must be at most 64"),
    (HMMSelectOptions, {"restarts": 0}, "--restarts (restarts) must be at least 1"),
    (HMMSelectOptions, {"test_fraction": 1.0}, "--test-fraction (test_fraction) must be less than 1"),
    (HMMSelectOptions, {"test_fraction": 0}, "--test-fraction (test_fraction) must be greater than 0"),
    (HMMSelectOptions, {"covariance": "spherical"}, "--covariance (covariance) must be one of auto, full, diag, tied"),
    (HMMSelectOptions, {"folds": -1}, "--folds (folds) must be at least 0"),
    (HMMSelectOptions, {"selection": "median"}, "--selection (selection) must be one of best, mean"),
    (HMMSelectOptions, {"workers": 0}, "--workers (workers) must be at least 1"),
    (HMMSelectOptions, {"n_iter": 2.5}, "--n-iter (n_iter) must be an integer"),
    (MapOptions, {"top_features": -1}, "--top-features (top_features) must be at least 0"),
    (FiguresOptions, {"slow": -2}, "--slow (slow) must be at least 0"),
    (MetricsOptions, {"svd": "fast"}, "--svd (svd) must be one of"),
    (MetricsOptions, {"rank": 0}, "--rank (rank) must be at least 1"),
    (RegressOptions, {"convergence": "eval_loss<2"}, "--convergence must be a Criterion"),
])
def test_bad_values_name_the_option(cls, changes, fragment):
    with pytest.raises(ValueError) as info:
        cls(**changes)
    assert fragment in str(info.value)


@pytest.mark.parametrize("flag, value", [("--n-iter", "0"), ("--test-fraction", "1.5"), ("--max-components", "100"),
                                         ("--tol", "nan"), ("--min-covar", "inf")])
def test_cli_rejects_bad_values_naming_the_flag(tmp_path, capsys, flag, value):
    from trainmap.cli import main

    selection = tmp_path / "s.csv"
    try:
        status = main(["hmm-select", str(tmp_path), "--selection-csv", str(selection), "--model",
                       str(tmp_path / "m.npz"), flag, value, "--no-progress"])
    except SystemExit as exc:  # argparse: non-finite floats are rejected while parsing
        status = exc.code
    assert status == 2 and not selection.exists()
    assert flag in capsys.readouterr().err


def test_every_stage_has_an_options_class_with_help():
    for cls in (MetricsOptions, HMMSelectOptions, BaselineOptions, MapOptions, RegressOptions, FiguresOptions):
        assert issubclass(cls, StageOptions)
        for f in dataclasses.fields(cls):
            assert f.metadata["help"], f"{cls.__name__}.{f.name} has no help text"


def test_metrics_defaults_are_the_engines():
    from trainmap import _rust_metrics as engine

    assert MetricsOptions().exact_max_dim == engine.DEFAULT_EXACT_MAX_DIM
    assert MetricsOptions().rank == engine.DEFAULT_RANK

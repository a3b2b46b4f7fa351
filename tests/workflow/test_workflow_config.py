"""The workflow's configuration: schema validation, per-experiment resolution, data checks,
the conda environment and the engine fingerprint."""

from __future__ import annotations

import copy
import re
import shutil
import tomllib

import pytest
import yaml

import trainmap.metrics.engine
import trainmap.workflow as tw
from snakemake_runner import REPO

SCHEMA = tw.load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")


def resolve(config: dict) -> dict[str, tw.Experiment]:
    return tw.experiments(tw.validate_config(copy.deepcopy(config), SCHEMA))


def minimal(**experiment) -> dict:
    return {"experiments": {"exp": {"task": "parities", "seeds": 3, **experiment}}}


def test_defaults_are_filled_in():
    exp = resolve(minimal())["exp"]
    assert exp.runs == ("0", "1", "2")
    assert str(exp.convergence) == "eval_accuracy>0.9"  # docs/design.md's threshold for parities
    assert exp.hmm.max_components == 8 and exp.hmm.covariance == "auto" and exp.hmm.folds == 0
    assert exp.metrics.svd == "auto"
    assert exp.train_settings["epochs"] == 500  # the task's own default


@pytest.mark.parametrize(
    "config, key",
    [
        (minimal(typo=1), "experiments.exp: unknown key 'typo'"),
        (minimal(hmm={"restarts": 0}), "experiments.exp.hmm.restarts: 0 is less than the minimum of 1"),
        (minimal(hmm={"covariance": "spherical"}), "experiments.exp.hmm.covariance"),
        (minimal(task="imagenet"), "experiments.exp.task"),
        (minimal(seeds=[0, 0]), "experiments.exp.seeds"),
        ({"experiments": {}, "cores": 3}, "(top level): unknown key 'cores'"),
        ({"experiments": {"bad-name": {"task": "digits", "seeds": 1}}}, "bad name 'bad-name'"),
    ],
)
def test_schema_errors_name_the_key(config, key):
    with pytest.raises(tw.ConfigError) as info:
        resolve(config)
    assert key in str(info.value)
    assert "\n" not in str(info.value)


def test_boolean_from_the_command_line_gets_a_hint():
    with pytest.raises(tw.ConfigError, match=r"config key download: .*KEY=True"):
        resolve({**minimal(), "download": "true"})


@pytest.mark.parametrize(
    "train, message",
    [({"lr": "fast"}, r"experiments\.exp\.train: .*lr"), ({"nonsense": 1}, r"experiments\.exp\.train: .*nonsense")],
)
def test_training_settings_are_checked_against_the_task(train, message):
    with pytest.raises(tw.ConfigError, match=message):
        resolve(minimal(train=train))


def test_experiment_kinds_are_checked():
    with pytest.raises(tw.ConfigError, match=r"experiments\.exp: needs seeds"):
        resolve({"experiments": {"exp": {"task": "digits"}}})
    with pytest.raises(tw.ConfigError, match=r"cannot also set task"):
        resolve({"experiments": {"exp": {"task": "digits", "sources": {"a": "/x"}, "threshold": 0.5}}})
    with pytest.raises(tw.ConfigError, match=r"experiments\.exp\.convergence: existing runs need"):
        resolve({"experiments": {"exp": {"sources": {"a": "/x"}}}})
    with pytest.raises(tw.ConfigError, match=r"experiments\.exp: give runs or sources, not both"):
        resolve({"experiments": {"exp": {"sources": {"a": "/x"}, "runs": {"b": "/y"}, "threshold": 0.5}}})


def test_convergence_criterion_from_config():
    assert str(resolve(minimal(threshold=0.8))["exp"].convergence) == "eval_accuracy>0.8"
    exp = resolve(minimal(convergence={"column": "eval_loss", "below": 2.5}))["exp"]
    assert exp.convergence_arg() == "--convergence 'eval_loss<2.5'"
    with pytest.raises(tw.ConfigError, match=r"experiments\.exp: give convergence or threshold, not both"):
        resolve(minimal(threshold=0.8, convergence={"above": 0.9}))
    with pytest.raises(tw.ConfigError, match=r"experiments\.exp\.convergence: give exactly one of above or below"):
        resolve(minimal(convergence={"column": "eval_loss"}))
    with pytest.raises(tw.ConfigError, match=r"experiments\.exp\.convergence"):
        resolve(minimal(convergence={"column": "eval_loss", "under": 2}))


def write_run(folder):
    """A run directory of two step*.safetensors checkpoints."""
    from safetensors.torch import save_file
    import torch

    folder.mkdir(parents=True)
    for step in (0, 10):
        save_file({"w": torch.ones(2, 2) * step}, str(folder / f"step{step}.safetensors"))
    return folder


def test_series_read_in_place(tmp_path):
    write_run(tmp_path / "seed_0")
    (tmp_path / "empty").mkdir()
    config = {"experiments": {"bert": {"sources": {"seed_0": str(tmp_path / "seed_0"), "seed_1": "/missing",
                                                   "seed_2": str(tmp_path / "empty")}, "threshold": 0.5}}}
    exp = resolve(config)["bert"]
    assert exp.in_place and exp.runs == ("seed_0", "seed_1", "seed_2")
    assert exp.series_inputs("seed_0") == [str(tmp_path / "seed_0" / f"step{s}.safetensors") for s in (0, 10)]
    problems = tw.series_problems({"bert": exp})
    assert problems[0] == "experiment bert: sources.seed_1: /missing is not a directory"
    assert problems[1].startswith(f"experiment bert: sources.seed_2: {tmp_path / 'empty'}: no checkpoints found")
    assert len(problems) == 2


def test_runs_glob_names_runs_after_their_directories(tmp_path):
    for name in ("seed_1", "seed_0"):
        write_run(tmp_path / "sweep" / name)
    (tmp_path / "sweep" / "seed_notes.txt").write_text("not a directory")
    exp = resolve({"experiments": {"s": {"runs": str(tmp_path / "sweep" / "seed_*"), "threshold": 0.5}}})["s"]
    assert exp.runs == ("seed_0", "seed_1") and exp.sources["seed_1"] == str(tmp_path / "sweep" / "seed_1")
    assert exp.sources_key == "runs" and tw.series_problems({"s": exp}) == []
    mapping = resolve({"experiments": {"s": {"runs": {"a": str(tmp_path / "sweep" / "seed_0")}, "threshold": 0.5}}})
    assert mapping["s"].runs == ("a",)


@pytest.mark.parametrize(
    "runs, message",
    [
        ("{tmp}/nothing_*", r"config key experiments\.s\.runs: the pattern '{tmp}/nothing_\*' matches no directory"),
        ("{tmp}/odd*", r"config key experiments\.s\.runs: run directory '{tmp}/odd name': its name 'odd name' "),
        ("{tmp}/*/seed_0", r"config key experiments\.s\.runs: .* have the same name 'seed_0'"),
        ({"..": "/x"}, r"config key experiments\.s\.runs: bad name '\.\.'"),
        ({"a/b": "/x"}, r"config key experiments\.s\.runs: bad name 'a/b'"),
    ],
)
def test_bad_runs_are_named(tmp_path, runs, message):
    (tmp_path / "odd name").mkdir()
    for parent in ("p", "q"):
        (tmp_path / parent / "seed_0").mkdir(parents=True)
    runs = runs.format(tmp=tmp_path) if isinstance(runs, str) else runs
    with pytest.raises(tw.ConfigError, match=message.format(tmp=re.escape(str(tmp_path)))):
        resolve({"experiments": {"s": {"runs": runs, "threshold": 0.5}}})


def test_missing_datasets_are_named_with_the_config_key(tmp_path):
    config = {"data_dir": str(tmp_path), "experiments": {"m": {"task": "mnist", "seeds": 1},
                                                         "c": {"task": "cifar100", "seeds": 1}}}
    problems = tw.data_problems(resolve(config))
    assert len(problems) == 2
    assert "config key data_dir" in problems[0] and "train-images-idx3-ubyte.gz" in problems[0]
    assert "cifar-100-python.tar.gz" in problems[1]
    assert tw.data_problems(resolve({**config, "download": True})) == []


def test_options_are_passed_to_the_command_line():
    exp = resolve(minimal(train={"epochs": 7, "lr": 0.5}, metrics={"exclude": "head|tail"},
                          hmm={"restarts": 2, "min_runs": 4}))["exp"]
    assert exp.train_args() == "--set epochs=7 --set lr=0.5"
    reordered = resolve(minimal(train={"lr": 0.5, "epochs": 7}))["exp"]
    assert reordered.train_args() == exp.train_args()  # key order in the file is irrelevant
    assert "--exclude 'head|tail'" in exp.metrics_args()
    assert exp.device_arg() == "--device auto"
    assert resolve(minimal(metrics={"device": "cuda:1"}))["exp"].device_arg() == "--device cuda:1"
    with pytest.raises(tw.ConfigError, match="experiments.exp.metrics.device"):
        resolve(minimal(metrics={"device": "gpu"}))
    assert "--restarts 2" in exp.hmm_args() and "--min-runs 4" in exp.hmm_args()
    assert "--restarts 2" in exp.baseline_args() and "--covariance" not in exp.baseline_args()
    assert exp.convergence_arg() == "--convergence 'eval_accuracy>0.9'"


def test_conda_environment_matches_pyproject():
    """envs/trainmap.yaml must name every runtime dependency with the same lower bound."""
    conda_names = {"torch": "pytorch", "matplotlib": "matplotlib-base", "graphviz": "python-graphviz",
                   "snakemake": "snakemake-minimal"}
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "envs" / "trainmap.yaml").read_text())["dependencies"]
    env_specs = {entry.split()[0]: entry.split()[1] if " " in entry else "" for entry in env if isinstance(entry, str)}
    for requirement in dependencies:
        name, bound = re.match(r"([A-Za-z0-9_.-]+)(.*)", requirement).groups()
        conda = conda_names.get(name, name)
        assert conda in env_specs, f"{name} (conda: {conda}) missing from envs/trainmap.yaml"
        assert env_specs[conda] == bound, f"{conda}: {env_specs[conda]!r} in envs/, {bound!r} in pyproject"


def test_engine_fingerprint_follows_the_sources(tmp_path):
    assert tw.engine_fingerprint(REPO / "rust_metrics") == trainmap.metrics.engine.ENGINE_FINGERPRINT
    crate = tmp_path / "rust_metrics"
    shutil.copytree(REPO / "rust_metrics", crate, ignore=shutil.ignore_patterns("target"))
    before = tw.engine_fingerprint(crate)
    source = crate / "src" / "stats.rs"
    source.write_text(source.read_text() + "\n// a change\n")
    assert tw.engine_fingerprint(crate) != before

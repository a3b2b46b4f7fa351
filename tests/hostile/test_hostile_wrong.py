"""Hostile and careless input, class 3: input that used to give silently wrong results
(floats taken for integers, regexes and names that break later, out-of-range settings,
files readable only by their owner). Each is now refused at the door, naming the key."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from hostile_helpers import ROOT, TINY_PARITIES, fingerprint, one_error_line
from trainmap import workflow
from trainmap.io import atomic
from trainmap.cli import main

SCHEMA = workflow.load_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml")


def _validate(tmp_path: Path, text: str) -> None:
    """Validate a config file's text as Snakemake would hand it over; the file must not change."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    before = fingerprint(tmp_path)
    try:
        workflow.experiments(workflow.validate_config(yaml.safe_load(path.read_text()), SCHEMA))
    finally:
        assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("seeds, key", [("2.0", "experiments.e.seeds"), ("[0, 1.0]", "experiments.e.seeds"),
                                        ("100000000", "experiments.e.seeds")])
def test_config_integers_must_be_integers(tmp_path, seeds, key):
    with pytest.raises(workflow.ConfigError, match=rf"config key {key}"):
        _validate(tmp_path, f"experiments:\n  e: {{task: parities, seeds: {seeds}}}\n")


def test_config_hmm_counts_refuse_floats(tmp_path):
    with pytest.raises(workflow.ConfigError, match=r"config key experiments\.e\.hmm\.restarts: 5\.0 is not of type"):
        _validate(tmp_path, "experiments:\n  e: {task: parities, seeds: 2, hmm: {restarts: 5.0}}\n")


@pytest.mark.parametrize("key, pattern", [("include", "fc[("), ("exclude", "(?P<x")])
def test_config_regexes_must_compile(tmp_path, key, pattern):
    with pytest.raises(workflow.ConfigError, match=rf"config key experiments\.e\.metrics\.{key}: .* is not a valid "
                                                   "regular expression"):
        _validate(tmp_path, f"experiments:\n  e: {{task: parities, seeds: 2, metrics: {{{key}: '{pattern}'}}}}\n")


@pytest.mark.parametrize("name, key", [
    ("'..'", r"experiments\.e\.sources"),           # results/e/runs/.. is the experiment directory
    ("'-rf'", r"experiments\.e\.sources"),          # a run name read as a command-line option
    ("'a|b'", r"experiments\.e\.sources"),          # breaks a Markdown table row
])
def test_config_run_names_that_break_paths_or_tables_are_refused(tmp_path, name, key):
    with pytest.raises(workflow.ConfigError, match=rf"config key {key}: bad name"):
        _validate(tmp_path, f"experiments:\n  e:\n    threshold: 0.9\n    sources: {{{name}: /tmp}}\n")


def test_config_experiment_names_that_break_paths_are_refused(tmp_path):
    with pytest.raises(workflow.ConfigError, match=r"config key experiments: bad name 'a/b'"):
        _validate(tmp_path, "experiments:\n  a/b: {task: parities, seeds: 2}\n")


@pytest.mark.parametrize("assignment, key", [("adam_beta1=1.5", "adam_beta1"), ("data_seed=-1", "data_seed"),
                                             ("momentum=1", "momentum"), ("epochs=2.5", "epochs")])
def test_train_set_values_are_validated_naming_the_key(tmp_path, capsys, assignment, key):
    task = "parities" if key in ("momentum", "epochs") else "digits"
    out = tmp_path / "run"
    status = main(["train", task, "--seed", "0", "--out", str(out), "--set", assignment, "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "train")
    assert status == 2 and f"'{key}'" in line
    assert not out.exists()  # refused before anything was written


def test_markdown_cells_cannot_break_a_table():
    import pandas as pd

    from trainmap.analysis.tables import markdown_table

    text = markdown_table(pd.DataFrame({"experiment": ["a|b", "two\nlines"], "x": [1, 2]}))
    rows = text.splitlines()
    # every row still has exactly two cells: unescaped pipes are the separators only
    assert len(rows) == 4 and all(len(re.split(r"(?<!\\)\|", row)) == 4 for row in rows), text


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """Every file trainmap writes gets 0666 less the umask (it used to be 0600 always)."""
    previous = os.umask(umask)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        atomic.write_json(tmp_path / "b.json", {"x": 1})
        assert main(["train", "parities", "--seed", "0", "--out", str(tmp_path / "run"), "--no-progress",
                     "--threads", "1", *[a for k, v in TINY_PARITIES.items() for a in ("--set", f"{k}={v}")]]) == 0
    finally:
        os.umask(previous)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 5
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(mode)}, modes


# --- round 2 -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, "numpy", "torch"])
def test_the_recorder_refuses_a_boolean_scalar_as_it_refuses_a_boolean_step(tmp_path, value):
    import numpy as np
    import torch

    from trainmap import Recorder
    from trainmap.metrics.recorder import RecorderError

    value = {"numpy": np.bool_(True), "torch": torch.tensor(True)}.get(value, value)
    weights = {"fc.weight": np.ones((2, 3), dtype=np.float32)}
    with Recorder(tmp_path / "run", seed=0) as rec:
        rec.record(0, weights, eval_accuracy=0.5)
        before = fingerprint(tmp_path)
        with pytest.raises(RecorderError, match=r"record\(step=10\): scalar converged=True is a boolean"):
            rec.record(10, weights, converged=value)
        assert fingerprint(tmp_path) == before


DUPLICATED_THRESHOLD = """\
experiments:
  e:
    task: parities
    seeds: 2
    threshold: 0.9
    hmm: {restarts: 2}
    threshold: 0.5
"""
DUPLICATED_EXPERIMENT = """\
experiments:
  e: {task: parities, seeds: 2, threshold: 0.9}
  f: {task: parities, seeds: 3}
  e: {task: digits, seeds: 4}
"""


@pytest.mark.parametrize("text, key, lines", [(DUPLICATED_THRESHOLD, "experiments.e.threshold", (5, 7)),
                                              (DUPLICATED_EXPERIMENT, "experiments.e", (2, 4))])
def test_a_repeated_yaml_key_is_an_error_naming_the_key_and_both_lines(tmp_path, text, key, lines):
    """YAML loaders (Snakemake's --configfile too) keep the last of two equal keys silently."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(workflow.ConfigError,
                       match=rf"{re.escape(str(path))}: config key {re.escape(key)} appears twice, on lines "
                             rf"{lines[0]} and {lines[1]}"):
        workflow.check_duplicate_keys([path])


def test_yaml_merge_keys_may_override_without_being_duplicates(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("base: &base {task: parities, seeds: 2}\nexperiments:\n  e: {<<: *base, seeds: 3}\n"
                    "  f: {<<: *base, seeds: 4}\n")
    workflow.check_duplicate_keys([path])


@pytest.mark.slow  # a Snakemake dry run takes seconds
def test_snakemake_dry_run_stops_at_a_repeated_key_in_the_configfile(tmp_path):
    from snakemake_runner import snakemake

    config = tmp_path / "dup.yaml"
    config.write_text(DUPLICATED_THRESHOLD)
    result = snakemake(tmp_path, "--dry-run", "--cores", "1", "all", "--configfile", str(config))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"{config}: config key experiments.e.threshold appears twice, on lines 5 and 7" in output, output
    assert "Traceback" not in output
    assert config.read_text() == DUPLICATED_THRESHOLD and not (tmp_path / "results").exists()


@pytest.mark.parametrize("spec, key, limit", [("experiments:\n  {name}: {{task: parities, seeds: 2}}\n", "experiments", 64),
                                              ("experiments:\n  e:\n    threshold: 0.9\n    sources: {{{name}: /tmp}}\n",
                                               r"experiments\.e\.sources", 100)])
def test_an_over_long_name_says_the_limit(tmp_path, spec, key, limit):
    name = "a" * (limit + 1)
    with pytest.raises(workflow.ConfigError) as caught:
        _validate(tmp_path, spec.format(name=name))
    message = str(caught.value)
    assert re.search(rf"config key {key}: bad name 'a+…?' \({limit + 1} characters; at most {limit}\)", message), message
    assert f"must match {limit}" not in message


# --- checkpoints accepted silently where the numbers would mean nothing ----------------------


def _save(path, tensors):
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def _layer(value, dtype="float32"):
    import numpy as np

    return {"fc.weight": np.full((2, 3), value, dtype=dtype), "fc.bias": np.ones(2, dtype=dtype)}


def test_two_files_of_one_step_in_a_checkpoint_directory_are_refused(tmp_path, capsys):
    first = _save(tmp_path / "ckpts" / "step1.safetensors", _layer(1.0))
    second = _save(tmp_path / "ckpts" / "step01.safetensors", _layer(2.0))
    status = main(["metrics", str(tmp_path / "ckpts"), "-o", str(tmp_path / "m.csv"), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "metrics")
    assert status == 2 and first.name in line and second.name in line and "step 1" in line, line
    assert not (tmp_path / "m.csv").exists()


def test_shards_of_one_checkpoint_are_not_a_series_of_checkpoints(tmp_path, capsys):
    import numpy as np

    folder = tmp_path / "model"
    _save(folder / "model-00001-of-00002.safetensors", {"a.weight": np.ones((2, 3), dtype=np.float32)})
    _save(folder / "model-00002-of-00002.safetensors", {"b.weight": np.ones((2, 3), dtype=np.float32)})
    status = main(["metrics", str(folder), "-o", str(tmp_path / "m.csv"), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "metrics")
    assert status == 2 and "model-00001-of-00002.safetensors" in line and "shard" in line, line
    assert "series-metrics" in line and not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize("command", ["metrics", "series-metrics"])
def test_an_include_pattern_matching_no_tensor_is_an_error_not_an_empty_row(tmp_path, capsys, command):
    for step in (0, 10):
        _save(tmp_path / "run" / f"step{step}.safetensors", _layer(1.0 + step))
    out = ["-o", str(tmp_path / "m.csv")] if command == "metrics" else ["--out-dir", str(tmp_path / "out")]
    status = main([command, str(tmp_path / "run"), *out, "--include", "attention", "--no-progress"])
    line = one_error_line(capsys.readouterr().err, command)
    assert status == 2 and "step0.safetensors" in line and "include='attention'" in line, line
    assert "fc.weight" in line  # what the checkpoint does hold
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "out" / "metrics.csv").exists()


@pytest.mark.parametrize("command", ["metrics", "series-metrics"])
def test_a_checkpoint_of_another_model_in_the_middle_of_a_series_is_named(tmp_path, capsys, command):
    import numpy as np

    for step in (0, 10, 30, 40):
        _save(tmp_path / "run" / f"step{step}.safetensors", _layer(1.0 + step))
    odd = _save(tmp_path / "run" / "step20.safetensors", {"other.weight": np.ones((5, 5), dtype=np.float32)})
    out = ["-o", str(tmp_path / "m.csv")] if command == "metrics" else ["--out-dir", str(tmp_path / "out")]
    with pytest.warns(RuntimeWarning) as caught:
        status = main([command, str(tmp_path / "run"), *out, "--no-progress"])
    assert status == 0, capsys.readouterr().err
    messages = [str(w.message) for w in caught if str(odd) in str(w.message)]
    assert len(messages) == 1 and "other tensors than the other 4 checkpoints" in messages[0], [
        str(w.message) for w in caught]
    assert not any("step10.safetensors" in str(w.message) for w in caught)


@pytest.mark.parametrize("command", ["metrics", "series-metrics", "recorder"])
def test_weights_beyond_float64_squares_give_a_warning_and_no_made_up_numbers(tmp_path, capsys, command):
    """F64 weights of 1e200 overflow their squares (l2 = inf, singular values came out 0);
    1e-170 underflow them (l2 = 0 although l1 > 0). Those statistics are NaN, named."""
    import math

    import pandas as pd

    from trainmap.metrics.engine import METRIC_NAMES

    steps = {0: 1.0, 10: 1e200, 20: 1e-170}
    if command == "recorder":
        from trainmap import Recorder

        with pytest.warns(RuntimeWarning) as caught, Recorder(tmp_path / "rec", seed=0) as rec:
            for step, value in steps.items():
                rec.record(step, _layer(value, "float64"))
        frame = pd.read_csv(tmp_path / "rec" / "metrics.csv")
        names = [f"{tmp_path / 'rec'}: record(step=10)", f"{tmp_path / 'rec'}: record(step=20)"]
    else:
        paths = [_save(tmp_path / "run" / f"step{step}.safetensors", _layer(value, "float64"))
                 for step, value in steps.items()]
        out = ["-o", str(tmp_path / "m.csv")] if command == "metrics" else ["--out-dir", str(tmp_path / "out")]
        with pytest.warns(RuntimeWarning) as caught:
            assert main([command, str(tmp_path / "run"), *out, "--no-progress"]) == 0, capsys.readouterr().err
        frame = pd.read_csv(tmp_path / "m.csv" if command == "metrics" else tmp_path / "out" / "metrics.csv")
        names = [str(paths[1]), str(paths[2])]
    messages = [str(w.message) for w in caught if "for float64 arithmetic" in str(w.message)]
    assert len(messages) == 2 and all(name in m for name, m in zip(names, messages)), [str(w.message) for w in caught]
    ok, huge, tiny = (frame.iloc[i] for i in range(3))
    assert all(math.isfinite(ok[c]) for c in METRIC_NAMES)
    for row, value in ((huge, 1e200), (tiny, 1e-170)):
        assert row["l1"] == pytest.approx(6 * value) and row["mean_w"] == pytest.approx(value)  # sums stay exact
        for column in ("l2", "code_sparsity", "spectral", "mean_lambda", "variance_lambda", "var_w"):
            assert math.isnan(row[column]), (column, row[column])

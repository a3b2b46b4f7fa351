"""Task registry and settings: typed defaults, override parsing, and the errors of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainmap.cli import main
from trainmap.train import TASKS, SettingsError, default_settings, resolve_settings, train_run
from trainmap.train.tasks import parse_assignments


def test_the_paper_tasks_and_digits_are_registered():
    assert set(TASKS) == {"modular", "modular_stable", "parities", "mnist", "cifar100", "cifar100_unstable", "digits"}


def test_defaults_follow_appendix_d():
    modular, stable, parities = (
        default_settings("modular"),
        default_settings("modular_stable"),
        default_settings("parities"),
    )
    assert (
        modular["modulus"],
        modular["train_fraction"],
        modular["lr"],
        modular["weight_decay"],
        modular["batch_size"],
    ) == (113, 0.3, 1e-3, 1.0, 2048)
    assert (modular["d_model"], modular["n_heads"], modular["d_head"], modular["d_mlp"], modular["layer_norm"]) == (
        128,
        4,
        32,
        512,
        False,
    )
    assert (modular["adam_beta1"], modular["adam_beta2"], modular["optimizer"]) == (0.9, 0.98, "adamw")
    assert (stable["layer_norm"], stable["batch_size"]) == (True, 256)
    assert (parities["n_bits"], parities["k_bits"], parities["n_train"], parities["n_test"], parities["hidden"]) == (
        40,
        3,
        1000,
        100,
        128,
    )
    assert (parities["optimizer"], parities["lr"], parities["weight_decay"], parities["batch_size"]) == (
        "sgd",
        0.1,
        0.01,
        32,
    )
    for task in ("mnist", "cifar100", "cifar100_unstable"):
        s = default_settings(task)
        assert (s["optimizer"], s["lr"], s["weight_decay"], s["batch_size"], s["download"]) == (
            "adamw",
            1e-3,
            1.0,
            256,
            False,
        )
    assert default_settings("mnist")["hidden"] == 800
    assert (default_settings("cifar100")["batch_norm"], default_settings("cifar100")["residual"]) == (True, True)
    assert (default_settings("cifar100_unstable")["batch_norm"], default_settings("cifar100_unstable")["residual"]) == (
        False,
        False,
    )


def test_default_settings_is_a_fresh_plain_dict():
    settings = default_settings("parities")
    settings["lr"] = 99.0
    assert default_settings("parities")["lr"] == 0.1
    assert all(type(v) in (int, float, bool, str) for task in TASKS for v in default_settings(task).values())
    json.dumps(default_settings("cifar100"))  # plain data


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("epochs", "7", 7),
        ("lr", "1e-2", 0.01),
        ("lr", "3", 3.0),
        ("loss", "cross_entropy", "cross_entropy"),
        ("checkpoint_unit", "step", "step"),
    ],
)
def test_string_overrides_are_parsed_to_the_default_type(key, text, expected):
    value = resolve_settings("parities", {key: text})[key]
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("False", False), ("1", True), ("no", False)])
def test_booleans_parse(text, expected):
    assert resolve_settings("cifar100", {"augment": text})["augment"] is expected


def test_python_values_keep_their_type_and_ints_widen_to_float():
    settings = resolve_settings("parities", {"lr": 1, "epochs": 3})
    assert settings["lr"] == 1.0 and type(settings["lr"]) is float and settings["epochs"] == 3


@pytest.mark.parametrize(
    ("task", "key", "value", "kind"),
    [
        ("parities", "epochs", "2.5", "int"),
        ("parities", "lr", "fast", "float"),
        ("parities", "epochs", True, "int"),
        ("parities", "epochs", 1.0, "int"),
        ("cifar100", "augment", "maybe", "bool"),
        ("modular", "layer_norm", 1, "bool"),
        ("mnist", "data_dir", 3, "str"),
    ],
)
def test_wrong_types_are_rejected_naming_the_key_and_type(task, key, value, kind):
    with pytest.raises(SettingsError, match=f"setting '{key}' needs a value of type {kind}"):
        resolve_settings(task, {key: value})


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"epochs": 0}, "epochs"),
        ({"checkpoint_unit": "hour"}, "checkpoint_unit"),
        ({"lr": "nan"}, "lr"),
        ({"k_bits": 50}, "k_bits"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"stop_at_eval_accuracy": 2.0}, "stop_at_eval_accuracy"),
    ],
)
def test_out_of_range_values_are_rejected_naming_the_key(overrides, named):
    with pytest.raises(SettingsError, match=repr(named)):
        resolve_settings("parities", overrides)


def test_unknown_key_and_unknown_task_are_named():
    with pytest.raises(SettingsError, match="'learning_rate'.*known settings: .*lr"):
        resolve_settings("parities", {"learning_rate": "0.1"})
    with pytest.raises(SettingsError, match="unknown setting 'hidden' for task 'modular'"):
        resolve_settings("modular", {"hidden": 3})
    with pytest.raises(SettingsError, match="unknown task 'imagenet'; known tasks: modular"):
        resolve_settings("imagenet")
    with pytest.raises(SettingsError, match="unknown task"):
        train_run("imagenet", 0, "unused")


def test_bad_seed_and_threads_are_rejected(tmp_path):
    with pytest.raises(SettingsError, match="seed"):
        train_run("digits", -1, tmp_path)
    with pytest.raises(SettingsError, match="threads"):
        train_run("digits", 0, tmp_path, threads=0)
    assert not list(tmp_path.iterdir())  # nothing written before the arguments were checked


def test_assignments_need_key_equals_value():
    assert parse_assignments(["lr=0.1", "data_dir=a=b"]) == {"lr": "0.1", "data_dir": "a=b"}
    with pytest.raises(SettingsError, match="key=value"):
        parse_assignments(["lr"])


def test_cli_reports_bad_input_in_one_line_with_status_2(tmp_path, capsys):
    assert main(["train", "parities", "--seed", "0", "--out", str(tmp_path / "run"), "--set", "epochs=many"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'epochs'" in err[0] and "int" in err[0]
    assert main(["train", "nonsense", "--seed", "0", "--out", str(tmp_path / "run")]) == 2
    assert "unknown task 'nonsense'" in capsys.readouterr().err


def test_cli_refuses_an_output_directory_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["train", "digits", "--seed", "0", "--out", str(blocker / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(blocker / "run") in err and "cannot be written" in err


def test_cli_shows_settings_without_training(tmp_path, capsys):
    assert main(["train", "parities", "--seed", "0", "--set", "lr=0.5", "--show-settings"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {**default_settings("parities"), "lr": 0.5}


def test_trainmap_command_is_installed_and_lists_settings_without_torch():
    command = Path(sys.executable).parent / "trainmap"
    result = subprocess.run([command, "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--set KEY=VALUE" in result.stdout
    # the registry is plain Python: validating settings does not import torch
    probe = (
        "import sys, trainmap.cli, trainmap.train; trainmap.train.resolve_settings('cifar100', {'lr': '0.1'}); "
        "trainmap.cli.build_parser(); print('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"

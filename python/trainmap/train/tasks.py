"""The task registry: each task's settings with typed defaults, and their validation.

A *setting* is one named, typed value that a run depends on (a hyper-parameter, a data
size, the checkpoint schedule, the data directory). Every task has a plain dict of
defaults; the type of each default is the type of the setting, and overrides
(``--set key=value`` on the command line, or a dict from the workflow) are parsed and
checked against it. The defaults follow the paper's Appendix D (see docs/training.md for
where each value comes from).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = [
    "BATCHED_TASKS",
    "TASKS",
    "SettingsError",
    "default_settings",
    "default_threshold",
    "resolve_settings",
    "parse_value",
    "parse_assignments",
]


class SettingsError(ValueError):
    """An unknown task, an unknown setting, or a value of the wrong type or range."""


# Settings every task has: training length, checkpoint schedule, evaluation.
_COMMON: dict[str, Any] = {
    "epochs": 1,  # training length in passes over the training split
    "max_steps": 0,  # stop after this many optimiser steps (0: no cap)
    "checkpoint_every": 1,  # checkpoint interval, in units of checkpoint_unit
    "checkpoint_unit": "epoch",  # "step" or "epoch"
    "eval_batch_size": 4096,  # batch size of the (gradient-free) evaluations
    "train_eval_size": 0,  # training examples evaluated at each checkpoint (0: all)
    "stop_at_eval_accuracy": 0.0,  # end early once eval accuracy reaches this (0: never)
}

_ADAMW: dict[str, Any] = {"optimizer": "adamw", "adam_beta1": 0.9, "adam_beta2": 0.999}
_SGD: dict[str, Any] = {"optimizer": "sgd", "momentum": 0.0}

_MODULAR: dict[str, Any] = {
    **_COMMON,
    **_ADAMW,
    # Nanda et al. (2023): p = 113, 30 % of all pairs for training, full-batch-like AdamW.
    "modulus": 113,
    "train_fraction": 0.3,
    "data_seed": 0,
    "d_model": 128,
    "n_heads": 4,
    "d_head": 32,
    "d_mlp": 512,
    "layer_norm": False,
    "lr": 1e-3,
    "weight_decay": 1.0,
    "adam_beta2": 0.98,
    "batch_size": 2048,
    # 2 steps per epoch; grokking takes thousands of epochs (docs/training.md).
    "epochs": 10000,
    "checkpoint_every": 10,
    "checkpoint_unit": "epoch",
    "eval_batch_size": 16384,
}

_IMAGE_COMMON: dict[str, Any] = {
    **_COMMON,
    **_ADAMW,
    "data_dir": "data",
    "download": False,
    "lr": 1e-3,
    "weight_decay": 1.0,
    "batch_size": 256,
    "checkpoint_unit": "step",
}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "modular": _MODULAR,
    # Section 3.3: LayerNorm back in and batch 256 make modular addition converge ~30x faster.
    # Converged (eval accuracy >= 0.9) at epochs 90-130 for seeds 0-3 on CPU (docs/training.md).
    "modular_stable": {**_MODULAR, "layer_norm": True, "batch_size": 256, "epochs": 300, "checkpoint_every": 5},
    "parities": {
        **_COMMON,
        **_SGD,
        # Barak et al. (2022), finite-sample setting: 40-bit inputs, parity of 3 of them.
        "n_bits": 40,
        "k_bits": 3,
        "n_train": 1000,
        "n_test": 100,
        "data_seed": 0,
        "hidden": 128,
        "loss": "hinge",
        "lr": 0.1,
        "weight_decay": 0.01,
        "batch_size": 32,
        # Grokking (eval accuracy >= 0.9) took 174-480 epochs over seeds 0-9 (docs/training.md).
        "epochs": 500,
        "checkpoint_every": 1,
        "checkpoint_unit": "epoch",
    },
    "mnist": {
        **_IMAGE_COMMON,
        "hidden": 800,
        "epochs": 20,
        "checkpoint_every": 20,
        "train_eval_size": 10000,
        "eval_batch_size": 10000,
    },
    "cifar100": {
        **_IMAGE_COMMON,
        "width": 64,
        "batch_norm": True,
        "residual": True,
        "augment": True,
        "epochs": 100,
        # 45 MB per checkpoint: one per epoch (196 steps) keeps a 100-epoch run at ~4.5 GB.
        "checkpoint_every": 1,
        "checkpoint_unit": "epoch",
        "train_eval_size": 5000,
        "eval_batch_size": 1000,
    },
}
# Section 3.3: without batch norm and residual connections ResNet18 training becomes unstable.
_DEFAULTS["cifar100_unstable"] = {**_DEFAULTS["cifar100"], "batch_norm": False, "residual": False}
_DEFAULTS["digits"] = {
    **_COMMON,
    **_ADAMW,
    # scikit-learn's bundled 8x8 digits (1797 images): an MNIST-like run that needs no files.
    "test_fraction": 0.2,
    "data_seed": 0,
    "hidden": 128,
    "lr": 1e-3,
    "weight_decay": 1.0,
    "batch_size": 64,
    "epochs": 40,
    "checkpoint_every": 10,
    "checkpoint_unit": "step",
}

#: Names of the tasks ``train_run`` knows.
TASKS: tuple[str, ...] = tuple(_DEFAULTS)

#: Each task's convergence threshold on eval accuracy (docs/design.md's experiment table,
#: the paper's Appendix D): the workflow's criterion when a config gives none. Declared here
#: only; config.yaml and the presets set ``threshold:`` only to differ from it.
_THRESHOLDS: dict[str, float] = {
    "modular": 0.9,
    "modular_stable": 0.9,
    "parities": 0.9,
    "mnist": 0.97,
    "cifar100": 0.6,
    "cifar100_unstable": 0.4,
    "digits": 0.9,
}
assert set(_THRESHOLDS) == set(TASKS), "every task needs a convergence threshold"

#: Tasks that can train several seeds as one batched model, and how their forward pass is
#: batched: "mlp" (stacked ``fc1``/``fc2`` and ``torch.baddbmm``) or "vmap" (``torch.func``).
BATCHED_TASKS: dict[str, str] = {
    "parities": "mlp",
    "digits": "mlp",
    "mnist": "mlp",
    "modular": "vmap",
    "modular_stable": "vmap",
}

# Allowed values of string settings.
_CHOICES: dict[str, tuple[str, ...]] = {
    "checkpoint_unit": ("step", "epoch"),
    "optimizer": ("adamw", "sgd"),
    "loss": ("hinge", "cross_entropy"),
}

# Lower bounds of numeric settings (inclusive); settings not named here only need their type.
_AT_LEAST: dict[str, float] = {
    "epochs": 1,
    "max_steps": 0,
    "checkpoint_every": 1,
    "eval_batch_size": 1,
    "train_eval_size": 0,
    "batch_size": 1,
    "modulus": 2,
    "d_model": 1,
    "n_heads": 1,
    "d_head": 1,
    "d_mlp": 1,
    "n_bits": 1,
    "k_bits": 1,
    "n_train": 1,
    "n_test": 1,
    "hidden": 1,
    "width": 1,
    "lr": 0.0,
    "weight_decay": 0.0,
    "momentum": 0.0,
    "adam_beta1": 0.0,
    "adam_beta2": 0.0,
    "stop_at_eval_accuracy": 0.0,
    "data_seed": 0,
}
# Exclusive upper bounds: Adam's averaging factors and SGD momentum must stay below 1 (at 1
# the averages never forget and training silently stalls or diverges); seeds fit in int64.
_BELOW: dict[str, float] = {
    "adam_beta1": 1.0,
    "adam_beta2": 1.0,
    "momentum": 1.0,
    "data_seed": 2**63,
}
# Settings that must lie strictly between 0 and 1.
_OPEN_UNIT_INTERVAL = ("train_fraction", "test_fraction")


def _check_task(task: str) -> None:
    if task not in _DEFAULTS:
        raise SettingsError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")


def default_settings(task: str) -> dict[str, Any]:
    """A fresh copy of ``task``'s default settings (a plain dict of int/float/bool/str)."""
    _check_task(task)
    return dict(sorted(_DEFAULTS[task].items()))


def default_threshold(task: str) -> float:
    """``task``'s convergence threshold on eval accuracy (the first step at which it is
    reached is a run's convergence time)."""
    _check_task(task)
    return _THRESHOLDS[task]


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_value(key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of ``default``, or :class:`SettingsError` naming ``key``.

    Strings (as given on the command line) are parsed; other values must already have the
    right type, except that an int is accepted for a float setting. bool is never taken
    for an int or float (``True`` is not a learning rate).
    """
    kind = type(default)
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() in _TRUE:
                    return True
                if text.lower() in _FALSE:
                    return False
                raise ValueError(text)
            return kind(text)
        except ValueError:
            raise SettingsError(f"setting {key!r} needs a value of type {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise SettingsError(
            f"setting {key!r} needs a value of type {kind.__name__}, got {value!r} of type {type(value).__name__}"
        )
    return value


def _check_range(task: str, settings: Mapping[str, Any]) -> None:
    """Reject values of the right type that no run could use, naming the setting."""
    for key, value in settings.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"setting {key!r} must be finite, got {value!r}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise SettingsError(f"setting {key!r} must be one of {', '.join(_CHOICES[key])}; got {value!r}")
        if key in _AT_LEAST and value < _AT_LEAST[key]:
            raise SettingsError(f"setting {key!r} must be at least {_AT_LEAST[key]:g}, got {value!r}")
        if key in _BELOW and value >= _BELOW[key]:
            raise SettingsError(f"setting {key!r} must be less than {_BELOW[key]:g}, got {value!r}")
        if key in _OPEN_UNIT_INTERVAL and not 0.0 < value < 1.0:
            raise SettingsError(f"setting {key!r} must lie strictly between 0 and 1, got {value!r}")
    if settings.get("stop_at_eval_accuracy", 0.0) > 1.0:
        raise SettingsError("setting 'stop_at_eval_accuracy' must be at most 1 (it is an accuracy)")
    if "k_bits" in settings and settings["k_bits"] > settings["n_bits"]:
        raise SettingsError(f"setting 'k_bits' ({settings['k_bits']}) cannot exceed 'n_bits' ({settings['n_bits']})")


def resolve_settings(task: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``task``'s defaults with ``overrides`` applied, parsed and validated.

    Raises :class:`SettingsError` for an unknown task, an unknown key (listing the known
    ones), a value of the wrong type, or a value out of range.
    """
    settings = default_settings(task)
    for key, value in (overrides or {}).items():
        if key not in settings:
            raise SettingsError(f"unknown setting {key!r} for task {task!r}; known settings: {', '.join(settings)}")
        settings[key] = parse_value(key, value, settings[key])
    _check_range(task, settings)
    return settings


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["lr=0.1", "epochs=5"]`` → ``{"lr": "0.1", "epochs": "5"}`` (values still strings)."""
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"--set needs key=value, got {item!r}")
        result[key.strip()] = value
    return result

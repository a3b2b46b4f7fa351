"""The 14 statistic names are defined once, by the engine (the fields of `Statistics` in
rust_metrics/src/engine.rs, exported as `_rust_metrics.METRIC_NAMES`). Python places that
spell them too, for code that runs without the engine or needs a subset, are pinned to it
here."""

from __future__ import annotations

import numpy as np

from checkpoint_factory import reference_metrics, tensor
from trainmap import _rust_metrics
from trainmap.analysis.training_map import FEATURE_LABELS
from trainmap.metrics import metrics_torch
from trainmap.metrics.engine import METRIC_NAMES, RESULT_COLUMNS, SQUARED_STATISTICS


def test_python_takes_the_names_from_the_engine():
    assert len(METRIC_NAMES) == 14 == len(set(METRIC_NAMES))
    assert list(METRIC_NAMES) == list(_rust_metrics.METRIC_NAMES)
    assert RESULT_COLUMNS[:14] == METRIC_NAMES


def test_the_torch_paths_weight_and_bias_keys_are_the_engines_names_in_order():
    assert metrics_torch._WEIGHT_KEYS + metrics_torch._BIAS_KEYS == METRIC_NAMES


def test_the_readable_labels_cover_the_engines_names_in_order():
    assert tuple(FEATURE_LABELS) == METRIC_NAMES


def test_the_squared_statistics_are_engine_names():
    assert set(SQUARED_STATISTICS) < set(METRIC_NAMES)


def test_the_test_factorys_numpy_reference_uses_the_engines_names():
    assert tuple(reference_metrics([tensor("fc.weight", np.eye(2), "F64", "matrix")])) == METRIC_NAMES

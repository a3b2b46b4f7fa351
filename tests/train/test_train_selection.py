"""Checkpoint tensor names work with the metrics engine's default selection (docs/design.md):
embeddings and normalisation layers are left out, weight matrices and biases count."""

from __future__ import annotations

import math
import re

import pytest

from trainmap.metrics.engine import DEFAULT_EXCLUDE, METRIC_NAMES, checkpoint_metrics
from trainmap.train import layout
from trainmap.train.components import build_model
from trainmap.train.tasks import resolve_settings

_TRANSFORMER = {
    "blocks.0.attn.W_Q",
    "blocks.0.attn.W_K",
    "blocks.0.attn.W_V",
    "blocks.0.attn.W_O",
    "blocks.0.mlp.fc_in.weight",
    "blocks.0.mlp.fc_in.bias",
    "blocks.0.mlp.fc_out.weight",
    "blocks.0.mlp.fc_out.bias",
}
_MLP = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
_CONVS = {"conv1.weight", "fc.weight", "fc.bias"} | {
    f"layer{stage}.{block}.conv{i}.weight" for stage in range(1, 5) for block in range(2) for i in (1, 2)
}
_SHORTCUTS = {f"layer{stage}.0.shortcut_conv.weight" for stage in (2, 3, 4)}

#: Per task: the tensors docs/design.md says count, and those it says must not.
EXPECTED = {
    "modular": (_TRANSFORMER, {"embed.W_E", "pos_embed.W_pos", "unembed.W_U"}),
    "modular_stable": (
        _TRANSFORMER,
        {
            "embed.W_E",
            "pos_embed.W_pos",
            "unembed.W_U",
            "blocks.0.ln1.weight",
            "blocks.0.ln1.bias",
            "blocks.0.ln2.weight",
            "blocks.0.ln2.bias",
        },
    ),
    "parities": (_MLP, set()),
    "mnist": (_MLP, set()),
    "digits": (_MLP, set()),
    "cifar100": (_CONVS | _SHORTCUTS, None),  # None: every batch-norm parameter
    "cifar100_unstable": (_CONVS, set()),
}
# Small sizes: names do not depend on widths.
_SMALL = {"cifar100": {"width": 2}, "cifar100_unstable": {"width": 2}, "mnist": {"hidden": 4}}


def _names(task: str) -> set[str]:
    model = build_model(task, resolve_settings(task, _SMALL.get(task)), seed=0)
    return {name for name, _ in model.named_parameters()}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_default_selection_keeps_exactly_the_tensors_that_count(task):
    names = _names(task)
    counted, excluded = EXPECTED[task]
    kept = {name for name in names if not re.search(DEFAULT_EXCLUDE, name)}
    assert kept == counted
    if excluded is None:  # ResNet with batch norm: everything left out is a batch norm
        excluded = names - counted
        assert excluded and all(re.search(r"(^|\.)(bn\d|shortcut_bn)\.", n) for n in excluded)
    assert names - kept == excluded


@pytest.mark.parametrize("task", ["modular_stable", "cifar100", "parities"])
def test_the_rust_engine_selects_the_same_tensors(task, tmp_path):
    """The engine's default selection gives the same statistics as naming the counted tensors
    explicitly with nothing excluded."""
    model = build_model(task, resolve_settings(task, _SMALL.get(task)), seed=0)
    path = tmp_path / "step00000000.safetensors"
    layout.write_checkpoint(path, dict(model.named_parameters()))
    counted = EXPECTED[task][0]
    explicit = "^(" + "|".join(re.escape(n) for n in sorted(counted)) + ")$"
    by_default = checkpoint_metrics(path, svd="exact", threads=1)
    by_name = checkpoint_metrics(path, svd="exact", threads=1, include=explicit, exclude="")
    assert by_default.keys() == by_name.keys()
    assert by_default["content_hash"] == by_name["content_hash"]  # the same tensors counted
    for key in METRIC_NAMES:
        a, b = by_default[key], by_name[key]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-15), key
    assert not math.isnan(by_default["mean_b"])  # biases are recognised as biases

"""The torch path (and the engine through its binding) against the shared table of
reference values, tests/data/reference_statistics.json (numpy, written by
scripts/make_reference_statistics.py). The Rust engine is tested against the same file by
rust_metrics/tests/reference_statistics.rs (``cargo test``).

No GPU here: the torch code runs on torch's CPU backend, every line the CUDA path runs
except the device itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from trainmap.metrics import metrics_torch
from trainmap.metrics.engine import METRIC_NAMES, weights_metrics
from trainmap.metrics.tensors import select_tensors

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "reference_statistics.json"
TABLE = json.loads(REFERENCE.read_text(encoding="utf-8"))
CASES = {case["name"]: case for case in TABLE["cases"]}
TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def torch_tensors(case: dict) -> list[tuple[str, torch.Tensor]]:
    """The case's tensors in their stored dtype (the stored values are exact in it)."""
    out = []
    for t in case["tensors"]:
        wide = torch.tensor(t["values"], dtype=torch.float64).reshape(t["shape"])
        stored = wide.to(TORCH_DTYPES[t["dtype"]])
        assert torch.equal(stored.to(torch.float64), wide), f"{t['name']}: values not exact in {t['dtype']}"
        out.append((t["name"], stored))
    return out


def mismatches(got: dict, expected: dict) -> list[str]:
    """Statistics outside |got - expected| <= atol + rtol |expected| (null: NaN expected)."""
    rtol, atol = TABLE["tolerance"]["rtol"], TABLE["tolerance"]["atol"]
    bad = []
    for name in METRIC_NAMES:
        g, e = got[name], expected[name]
        if e is None:
            if not math.isnan(g):
                bad.append(f"{name}: {g!r}, reference NaN")
        elif not abs(g - e) <= atol + rtol * abs(e):
            bad.append(f"{name}: {g!r}, reference {e!r}")
    return bad


def test_the_reference_table_names_the_engines_statistics():
    assert TABLE["statistic_names"] == list(METRIC_NAMES)
    assert len(CASES) >= 4
    for case in CASES.values():
        assert list(case["expected"]) == list(METRIC_NAMES), case["name"]
    assert TABLE["tolerance"] == {"rtol": 1e-9, "atol": 1e-12}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_engines_selection_gives_the_declared_roles(name):
    case = CASES[name]
    counted = dict(select_tensors([(t["name"], t["shape"]) for t in case["tensors"]]))
    assert {t["name"]: counted.get(t["name"], "ignored") for t in case["tensors"]} == {
        t["name"]: t["role"] for t in case["tensors"]
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_path_matches_the_reference_values(name):
    case = CASES[name]
    got, notes = metrics_torch.tensors_metrics(torch_tensors(case), device=torch.device("cpu"))
    assert notes == []
    assert mismatches(got, case["expected"]) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_engine_binding_matches_the_reference_values(name):
    case = CASES[name]
    for svd in ("auto", "exact"):
        got = weights_metrics(dict(torch_tensors(case)), svd=svd)
        assert mismatches(got, case["expected"]) == [], svd


def test_a_wrong_reference_value_is_caught():
    case = CASES["mixed_roles_f64"]
    got, _ = metrics_torch.tensors_metrics(torch_tensors(case), device=torch.device("cpu"))
    nudged = dict(case["expected"], spectral=case["expected"]["spectral"] * (1 + 1e-8))
    assert mismatches(got, nudged) == [f"spectral: {got['spectral']!r}, reference {nudged['spectral']!r}"]
    assert mismatches(got, dict(case["expected"], var_b=None)) == [f"var_b: {got['var_b']!r}, reference NaN"]

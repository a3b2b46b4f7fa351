"""The interactive map's payload (no browser): dwell times, state means, thinning, escaping."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from regression_records import regression_record

from trainmap.analysis.interactive import page_data, training_map_html
from trainmap.analysis.convergence import Criterion, convergence_table
from trainmap.analysis.regression import occupancy, state_regression
from trainmap.analysis.runs import metric_names

NAMES = list(metric_names())


def inputs(paths: dict[str, list[int]], steps: dict[str, np.ndarray], *, max_points: int = 250) -> dict:
    """Plain inputs for ``page_data``: l2 = 10 × state + checkpoint index, other statistics 1."""
    states = pd.concat([pd.DataFrame({"run": r, "step": steps[r], "state": p}) for r, p in paths.items()],
                       ignore_index=True)
    metrics, logs = {}, {}
    for r, p in paths.items():
        frame = pd.DataFrame({c: np.ones(len(p)) for c in NAMES}).assign(step=steps[r])
        frame["l2"] = 10.0 * np.asarray(p) + np.arange(len(p))
        frame[["mean_b", "median_b", "var_b"]] = np.nan  # a model without biases
        metrics[r] = frame
        logs[r] = pd.DataFrame({"step": steps[r], "eval_accuracy": np.where(np.asarray(p) == 1, 0.95, 0.5)})
    conv = convergence_table(logs, Criterion.from_threshold(0.9))
    occ = occupancy({r: np.asarray(p) for r, p in paths.items()}, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two runs, two states: no residual degrees of freedom
        result = state_regression(occ, conv["convergence_step"])
    edges = pd.DataFrame([{
        "source": 0, "target": 1, "n_runs": 1, "n_runs_total": len(paths), "n_transitions": 1,
        "transition_prob": 0.1, "convergence_mean": 20.0, "convergence_sd": np.nan, "log10_importance": 0.0,
        "label": "L2 ↑10.00", "feature_1": "l2", "shift_1": 10.0, "importance_1": 1.0, "runs": "a",
    }])
    return dict(edges=edges, states=states, model_means=np.array([[0.0], [1.5]]), features=["l2"],
                metrics=metrics, logs=logs, regression=regression_record(**{**result.to_dict(), "n_runs_regression": result.n_runs,
                                                      "dissimilarity": 0.5, "forking": False}),
                coefficients=result.coefficients, convergence=conv, criterion="eval_accuracy > 0.9",
                criterion_column="eval_accuracy", threshold=0.9, zscore_first_n=2, max_points=max_points)


def test_dwell_means_and_runs_per_state():
    steps = np.arange(6) * 10
    data = page_data(**inputs({"a": [0, 0, 1, 1, 1, 0], "b": [0] * 6}, {"a": steps, "b": steps}))
    s0, s1 = data["states"]
    assert s0["runs"] == ["a", "b"] and s1["runs"] == ["a"]
    # Visits of state 0: a[0:2] (2 checkpoints, steps 0 -> 20), a[5:6] (1, last checkpoint: 0 steps),
    # b[0:6] (6, steps 0 -> 50, the last checkpoint).
    assert s0["dwell_checkpoints"] == pytest.approx(3.0)
    assert s0["dwell_steps"] == pytest.approx((20 + 0 + 50) / 3, rel=1e-5)
    assert (s1["dwell_checkpoints"], s1["dwell_steps"]) == (3.0, 30.0)
    l2 = NAMES.index("l2")
    assert s1["raw"][l2] == pytest.approx(np.mean([12.0, 13.0, 14.0]), rel=1e-4)  # 5 significant digits
    assert s0["raw"][l2] == pytest.approx(np.mean([0, 1, 5, 0, 1, 2, 3, 4, 5]), rel=1e-4)
    assert s1["z"][l2] == 1.5 and data["z_from_model"][l2]  # the model's mean for a model feature
    assert s0["raw"][NAMES.index("var_b")] is None  # NaN everywhere -> null, not NaN in JSON
    assert data["runs"][0]["convergence_step"] == 20.0 and data["runs"][0]["converged"]
    json.dumps(data, allow_nan=False)


def test_thinning_keeps_every_state_change():
    steps = np.arange(1000) * 5
    path = [0] * 537 + [1] * 100 + [0] * 363
    data = page_data(**inputs({"a": path, "b": [0] * 1000}, {"a": steps, "b": steps}, max_points=50))
    run = data["runs"][0]
    assert len(run["steps"]) < 60 and run["steps"][0] == 0 and run["steps"][-1] == steps[-1]
    for t in (536, 537, 636, 637):
        assert int(steps[t]) in run["steps"]
    kept = dict(zip(run["steps"], run["states"]))
    assert all(kept[int(steps[t])] == path[t] for t in range(1000) if int(steps[t]) in kept)
    assert len(run["metrics"]["l2"]) == len(run["steps"])


def test_run_ids_cannot_break_out_of_the_data_script():
    steps = np.arange(4) * 10
    evil = "</script><script>alert(1)</script>"
    args = inputs({evil: [0, 0, 1, 1], "b": [0, 0, 0, 0]}, {evil: steps, "b": steps})
    args["edges"].loc[0, "runs"] = evil
    data = page_data(**args)
    page = training_map_html(data, edges=args["edges"], states=args["states"])
    body = re.search(r'<script type="application/json" id="tm-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(body) == json.loads(json.dumps(data))
    assert page.count("<script") == 2  # the data and the page's own script, nothing injected

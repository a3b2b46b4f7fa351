"""The interactive training map: one self-contained HTML page per experiment
(``results/{exp}/map/training_map.html``; docs/analysis.md "Interactive training map").

The page embeds the Graphviz drawing of the static map (SVG, same layout), a JSON payload
with everything the hovers and panels show, and a small hand-written script and style
sheet. Nothing is fetched when it opens: no CDN, no fonts, no network.

:func:`page_data` turns plain inputs (edges table, decoded states, model means, per-run
metrics and logs, regression results, convergence per run) into that payload;
:func:`training_map_html` renders the page; :func:`write_training_map_html` writes it
atomically. Everything the page shows is computed here in Python at full resolution; the
script only formats and draws (trajectories are thinned to ``max_points`` per run for
drawing, keeping every state change exactly).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from trainmap.io import atomic
from trainmap.io.contracts import EPOCH, RUN, STATE, STEP, CompareRecord, RegressionRecord
from trainmap.analysis.figures import STATE_COLORS, training_map_graph
from trainmap.analysis.runs import metric_names, zscore
from trainmap.analysis.training_map import feature_label, state_summary

__all__ = ["page_data", "training_map_html", "write_training_map_html", "DEFAULT_MAX_POINTS"]

#: Points per run kept for drawing trajectories (state changes are always kept).
DEFAULT_MAX_POINTS = 250

_ASSETS = Path(__file__).with_name("interactive_assets")
#: Log columns that are not curves to plot.
_NOT_CURVES = (STEP, EPOCH)


def _num(x, digits: int = 6):
    """A JSON-ready number: rounded to ``digits`` significant digits, None when not finite."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def _nums(values, digits: int = 6) -> list:
    return [_num(v, digits) for v in np.asarray(values, dtype=float)]


def _thin(n: int, max_points: int, keep: Sequence[int] = ()) -> np.ndarray:
    """Indices 0..n-1 thinned to about ``max_points`` evenly spaced ones, plus ``keep``."""
    if n <= max_points:
        return np.arange(n)
    base = np.linspace(0, n - 1, max_points).round().astype(int)
    keep = np.asarray([k for k in keep if 0 <= k < n], dtype=int)
    return np.unique(np.concatenate([base, keep]))


def _visits(path: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal stretches of one state: ``(state, first index, end index exclusive)``."""
    change = np.nonzero(path[1:] != path[:-1])[0] + 1
    bounds = np.concatenate([[0], change, [len(path)]])
    return [(int(path[a]), int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _mean_or_nan(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _state_visits(paths, steps_by_run, n_states):
    """Per state: runs visiting, and the mean dwell of a visit in checkpoints and in steps.

    A visit's dwell in steps runs from the step where the run enters the state to the step
    where it leaves (its first checkpoint in another state); a visit lasting to the end of
    the run counts up to the run's last checkpoint.
    """
    runs = [[] for _ in range(n_states)]
    dwell_ckpt = [[] for _ in range(n_states)]
    dwell_steps = [[] for _ in range(n_states)]
    for run_id, path in paths.items():
        steps = steps_by_run[run_id]
        for k in sorted(set(int(s) for s in path)):
            runs[k].append(run_id)
        for k, a, b in _visits(path):
            dwell_ckpt[k].append(b - a)
            dwell_steps[k].append(float(steps[min(b, len(steps) - 1)] - steps[a]))
    return runs, [_mean_or_nan(x) for x in dwell_ckpt], [_mean_or_nan(x) for x in dwell_steps]


def _state_metric_means(paths, metrics, n_states, names, model_means, features, zscore_first_n):
    """Per state and metric: raw mean over the checkpoints decoded as the state, and the
    mean in z units — the model's μ_k for the model's features, else the mean of the
    per-run z-scores (same z-scoring as the model) over those checkpoints. ``metrics``:
    per run, a frame with every column of ``names`` aligned with the run's path."""
    raw_sum = np.zeros((n_states, len(names)))
    raw_n = np.zeros((n_states, len(names)))
    z_sum = np.zeros((n_states, len(names)))
    z_n = np.zeros((n_states, len(names)))
    for run_id, path in paths.items():
        values = metrics[run_id][names].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            z, _ = zscore(values, zscore_first_n)
        onehot = np.eye(n_states)[path]  # (T, K)
        for arr, s, n in ((values, raw_sum, raw_n), (z, z_sum, z_n)):
            ok = np.isfinite(arr)
            s += onehot.T @ np.where(ok, arr, 0.0)
            n += onehot.T @ ok
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(raw_n > 0, raw_sum / raw_n, np.nan)
        zmean = np.where(z_n > 0, z_sum / z_n, np.nan)
    from_model = np.zeros(len(names), bool)
    for j, name in enumerate(names):
        if name in features:
            zmean[:, j] = np.asarray(model_means, float)[:, list(features).index(name)]
            from_model[j] = True
    return raw, zmean, from_model


def _lookup(conv, run_id, column, default=None):
    """``conv.loc[run_id, column]``, or ``default`` when the table, run or column is missing."""
    if conv is None or run_id not in conv.index or column not in conv.columns:
        return default
    return conv.loc[run_id, column]


def page_data(
    *,
    edges: pd.DataFrame,
    states: pd.DataFrame,
    model_means: np.ndarray,
    features: Sequence[str],
    metrics: Mapping[str, pd.DataFrame],
    logs: Mapping[str, pd.DataFrame | None],
    regression: RegressionRecord,
    coefficients: pd.DataFrame,
    convergence: pd.DataFrame,
    criterion: str,
    criterion_column: str | None = None,
    threshold: float | None = None,
    experiment: str = "",
    zscore_first_n: int = 1000,
    max_points: int = DEFAULT_MAX_POINTS,
    conditions: ConditionUse | None = None,
) -> dict:
    """Everything the page shows, as JSON-ready plain data.

    Parameters
    ----------
    edges : edges.csv (:func:`trainmap.analysis.training_map.training_map`).
    states : states.csv: ``run, step, state``, one row per decoded checkpoint.
    model_means : the HMM's state means (n_states, len(features)), z units.
    features : the model's feature columns, in model order.
    metrics : metrics.csv frame per run id (``step`` and the statistics, raw units).
    logs : log.csv frame per run id (None when a run has none).
    regression : regression.json (:class:`~trainmap.io.contracts.RegressionRecord`; NaN
        and the keys older files lack show as "–").
    coefficients : coefficients.csv (``state, coefficient, p_value, detour``).
    convergence : per run id (index): ``convergence_step``, ``converged`` and, optionally,
        ``first_detour_step`` (the first step decoded in a detour state; NaN: never).
    criterion : the convergence criterion as shown (e.g. ``eval_accuracy > 0.9``).
    criterion_column, threshold : the log column and value of the criterion, drawn as a
        line on that column's chart.
    zscore_first_n : per-run z-scoring window (for metrics the model does not use).
    max_points : points per run kept for drawing (every state change is kept too).
    conditions : for a comparison's joint map (``regression`` is then its
        :class:`~trainmap.io.contracts.CompareRecord`): each run's condition and how each
        condition uses every state and edge, shown beside the totals.
    """
    n_states = int(np.asarray(model_means).shape[0])
    names = list(metric_names())
    frame = states.astype({RUN: str})
    run_ids = list(dict.fromkeys(frame[RUN]))
    paths, steps_by_run = {}, {}
    for run_id, group in frame.groupby(RUN, sort=False):
        group = group.sort_values(STEP, kind="stable")
        paths[run_id] = group[STATE].to_numpy(int)
        steps_by_run[run_id] = group[STEP].to_numpy(np.int64)
    conv = convergence.copy() if convergence is not None else None
    if conv is not None:
        conv.index = conv.index.astype(str)

    visiting, dwell_ckpt, dwell_steps = _state_visits(paths, steps_by_run, n_states)
    aligned = {r: _aligned_metrics(metrics.get(r), steps_by_run[r]) for r in run_ids}
    raw, zmean, from_model = _state_metric_means(paths, aligned, n_states, names, model_means, features,
                                                 zscore_first_n)
    coef = coefficients.set_index(coefficients[STATE].astype(int)) if coefficients is not None else None
    detours = {int(s) for s in regression.detour_states}
    state_rows = []
    for k in range(n_states):
        state_rows.append({
            **(conditions.state_rows(k) if conditions is not None else {}),
            "state": k,
            "runs": visiting[k],
            "dwell_checkpoints": _num(dwell_ckpt[k], 4),
            "dwell_steps": _num(dwell_steps[k], 6),
            "coefficient": _num(coef.loc[k, "coefficient"]) if coef is not None and k in coef.index else None,
            "coefficient_p": _num(coef.loc[k, "p_value"], 3) if coef is not None and k in coef.index
            and "p_value" in coef.columns else None,
            "detour": k in detours,
            "raw": [_num(v, 5) for v in raw[k]],
            "z": [_num(v, 3) for v in zmean[k]],
        })

    top_k = sum(1 for c in edges.columns if c.startswith("feature_"))
    edge_rows = []
    for e in edges.to_dict("records"):
        edge_rows.append({
            **(conditions.edge_rows(int(e["source"]), int(e["target"])) if conditions is not None else {}),
            "source": int(e["source"]),
            "target": int(e["target"]),
            "n_runs": int(e["n_runs"]),
            "n_runs_total": int(e["n_runs_total"]),
            "transition_prob": _num(e["transition_prob"], 4),
            "convergence_mean": _num(e["convergence_mean"]),
            "convergence_sd": _num(e["convergence_sd"]),
            "features": [
                {"name": str(e[f"feature_{r}"]), "label": feature_label(str(e[f"feature_{r}"])),
                 "shift": _num(e[f"shift_{r}"], 3), "importance": _num(e[f"importance_{r}"], 3)}
                for r in range(1, top_k + 1) if isinstance(e.get(f"feature_{r}"), str)
            ],
            "runs": [r for r in str(e["runs"]).split(";") if r],
        })

    log_columns: list[str] = []
    run_rows = []
    for run_id in run_ids:
        path, steps = paths[run_id], steps_by_run[run_id]
        change = np.nonzero(path[1:] != path[:-1])[0] + 1
        idx = _thin(len(path), max_points, np.concatenate([change - 1, change]))
        m = aligned[run_id]
        row = {
            "run": run_id,
            "convergence_step": _num(_lookup(conv, run_id, "convergence_step")),
            "converged": bool(_lookup(conv, run_id, "converged", False)),
            "first_detour_step": _num(_lookup(conv, run_id, "first_detour_step")),
            "steps": [int(s) for s in steps[idx]],
            "states": [int(s) for s in path[idx]],
            "metrics": {c: _nums(m[c].to_numpy(float)[idx]) for c in names},
        }
        row["log"] = _log_payload(logs.get(run_id), steps, path, max_points, row["convergence_step"])
        for c in row["log"]["columns"]:
            if c not in log_columns:
                log_columns.append(c)
        run_rows.append(row)

    return {
        "experiment": experiment,
        "criterion": criterion,
        "criterion_column": criterion_column,
        "threshold": _num(threshold),
        "n_runs": len(run_ids),
        "n_states": n_states,
        **(_comparison_numbers(regression, conv) if conditions is not None else _experiment_numbers(regression)),
        "r2": _num(regression.r2, 4),
        "r2_loo": _num(regression.r2_loo, 4),
        "p_value": _num(regression.p_value, 3),
        "notes": [str(n) for n in regression.notes],
        "detour_states": sorted(detours),
        "conditions": conditions.legend() if conditions is not None else None,
        "metric_names": names,
        "metric_labels": [feature_label(c) for c in names],
        "z_from_model": [bool(x) for x in from_model],
        "log_columns": _order_log_columns(log_columns, criterion_column),
        "colors": list(STATE_COLORS),
        "states": state_rows,
        "edges": edge_rows,
        "runs": run_rows,
    }


def _experiment_numbers(regression: RegressionRecord) -> dict:
    """The key numbers only an experiment's regression.json has."""
    return {
        "n_runs_regression": regression.n_runs_regression,
        "n_censored": regression.n_censored,
        "covariance": (regression.hmm or {}).get("covariance"),
        "concordance": _num(regression.concordance, 4),
        "dissimilarity": _num(regression.dissimilarity, 4),
        "forking": regression.forking,
    }


def _comparison_numbers(regression: CompareRecord, convergence: pd.DataFrame | None) -> dict:
    """A comparison's: its regression uses every run (condition indicators as covariates);
    dissimilarity is per pair of conditions (table_compare), not one number; no Cox model."""
    censored = None if convergence is None else int((~convergence["converged"].astype(bool)).sum())
    return {"n_runs_regression": regression.n_runs, "n_censored": censored, "covariance": None,
            "concordance": None, "dissimilarity": None, "forking": None}


@dataclass(frozen=True)
class ConditionUse:
    """A comparison's conditions on its joint map: each run's condition and how each
    condition uses the states and edges, as the compare stage computed them once
    (:func:`trainmap.analysis.compare.occupancy_table`, :func:`~trainmap.analysis.compare.transition_table`).
    """

    of: Mapping[str, str]  # run id -> condition
    occupancy: pd.DataFrame  # condition, state, runs_visiting, n_runs, mean_occupancy
    transitions: pd.DataFrame  # condition, source, target, n_runs, n_runs_total
    colors: Mapping[str, str]  # condition -> its colour on the joint map
    criteria: Mapping[str, str]  # condition -> its convergence criterion, as text

    def legend(self) -> list[dict]:
        counts = pd.Series(self.of).value_counts()
        return [{"name": c, "color": self.colors[c], "n_runs": int(counts.get(c, 0)), "criterion": self.criteria.get(c)}
                for c in self.colors]

    def state_rows(self, state: int) -> dict:
        mine = self.occupancy[self.occupancy[STATE] == state]
        return {"by_condition": [{"condition": str(r.condition), "runs": int(r.runs_visiting), "n_runs": int(r.n_runs),
                                  "occupancy": _num(r.mean_occupancy, 4)} for r in mine.itertuples(index=False)]}

    def edge_rows(self, source: int, target: int) -> dict:
        t = self.transitions
        mine = t[(t["source"] == source) & (t["target"] == target)]
        return {"by_condition": [{"condition": str(r.condition), "n_runs": int(r.n_runs),
                                  "n_runs_total": int(r.n_runs_total)} for r in mine.itertuples(index=False)]}


def _aligned_metrics(frame: pd.DataFrame | None, steps: np.ndarray) -> pd.DataFrame:
    """The metrics rows at the decoded steps (NaN where a statistic or step is missing)."""
    names = list(metric_names())
    out = pd.DataFrame({STEP: steps})
    if frame is None:
        for c in names:
            out[c] = np.nan
        return out
    cols = [c for c in names if c in frame.columns]
    right = frame[[STEP, *cols]].copy()
    right[STEP] = pd.to_numeric(right[STEP], errors="coerce")
    out = out.merge(right.drop_duplicates(STEP), on=STEP, how="left")
    for c in names:
        if c not in out.columns:
            out[c] = np.nan
    return out


def _order_log_columns(columns: list[str], first: str | None) -> list[str]:
    """Eval columns first (the criterion's column at the head), then the rest."""
    return sorted(columns, key=lambda c: (c != first, not c.startswith("eval"), columns.index(c)))


def _log_payload(log, steps, path, max_points, conv_step) -> dict:
    """A run's logged curves, thinned, each point with the state decoded at the last
    checkpoint at or before its step (the first state before the first checkpoint)."""
    if log is None or STEP not in log.columns or len(log) == 0:
        return {"steps": [], "states": [], "columns": {}}
    log = log.sort_values(STEP, kind="stable")
    log_steps = pd.to_numeric(log[STEP], errors="coerce").to_numpy(float)
    at = np.clip(np.searchsorted(steps, log_steps, side="right") - 1, 0, len(path) - 1)
    log_states = path[at]
    change = np.nonzero(log_states[1:] != log_states[:-1])[0] + 1
    keep = list(change - 1) + list(change)
    if conv_step is not None:
        keep += list(np.nonzero(log_steps == conv_step)[0])
    idx = _thin(len(log), max_points, keep)
    columns = {}
    for c in log.columns:
        if c in _NOT_CURVES:
            continue
        values = pd.to_numeric(log[c], errors="coerce").to_numpy(float)
        if np.isfinite(values).any():
            columns[c] = _nums(values[idx])
    return {"steps": [int(s) for s in log_steps[idx]], "states": [int(s) for s in log_states[idx]],
            "columns": columns}


def _graph_svg(edges: pd.DataFrame, states: pd.DataFrame, n_states: int, detour_states) -> str:
    """The static map's Graphviz drawing (same layout, no title or edge table) as inline SVG."""
    paths = {r: g.sort_values(STEP)[STATE].to_numpy(int) for r, g in states.astype({RUN: str}).groupby(RUN)}
    summary = state_summary(paths, n_states)
    top_k = sum(1 for c in edges.columns if c.startswith("feature_"))
    graph = training_map_graph(edges, summary, n_runs=len(paths), detour_states=detour_states, title="",
                               edge_table=False, top_k=max(top_k, 1))
    svg = graph.pipe(format="svg").decode("utf-8")
    return svg[svg.index("<svg"):]


def _script_json(data: dict) -> str:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&`` written as
    ``\\u`` escapes, so no string (a run id, say) can end the element or open a comment."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def training_map_html(data: dict, *, edges: pd.DataFrame, states: pd.DataFrame, graph=None) -> str:
    """The page for ``data`` (from :func:`page_data`), with the graph drawn by Graphviz
    from ``edges`` and ``states`` exactly as the static map (without its edge table), or
    ``graph`` (a ``graphviz.Digraph`` whose nodes are ``s{k}``: a comparison's joint map)."""
    if graph is None:
        svg = _graph_svg(edges, states, int(data["n_states"]), data["detour_states"])
    else:
        svg = graph.pipe(format="svg").decode("utf-8")
        svg = svg[svg.index("<svg"):]
    title = "Training map" + (f" — {data['experiment']}" if data.get("experiment") else "")
    parts = {
        "STYLE": (_ASSETS / "page.css").read_text(encoding="utf-8"),
        "SCRIPT": (_ASSETS / "page.js").read_text(encoding="utf-8"),
        "DATA": _script_json(data),
        "TITLE": html.escape(title),
        "GRAPH": svg,
    }
    template = (_ASSETS / "page.html").read_text(encoding="utf-8")
    # One pass, so that no inserted text is itself searched for placeholders.
    return re.sub(r"/\*(STYLE|SCRIPT|DATA)\*/|<!--(TITLE|GRAPH)-->",
                  lambda m: parts[m.group(1) or m.group(2)], template)


def write_training_map_html(path: str | os.PathLike, *, graph=None, **inputs) -> dict:
    """Build the page from the plain inputs of :func:`page_data` and write it atomically to
    ``path`` (``graph``: as in :func:`training_map_html`). Returns the payload."""
    data = page_data(**inputs)
    atomic.write_bytes(path, training_map_html(data, edges=inputs["edges"], states=inputs["states"],
                                               graph=graph).encode("utf-8"))
    return data

"""The training map: the HMM's transition graph pruned to the transitions that decoded runs
actually take, with edge annotations (docs/design.md step 4, paper Section 2.2, Figure 2).

For every edge i → j (i ≠ j) used by some run:

* ``n_runs`` runs use it (of ``n_runs_total``), ``n_transitions`` times in all;
* ``transition_prob`` is the learned ``transmat[i, j]``;
* ``convergence_mean`` ± ``convergence_sd`` (sample sd, ddof 1) is over the runs that use it;
* the destination state's top features: the importance vectors
  ``|∂ log p(s_t=j | z_1:t)/∂z_t|`` (:mod:`trainmap.analysis.importance`) averaged over
  every (run, t) where a run enters j from i; the ``top_k`` features by that average, each
  with its mean shift ``μ_j − μ_i`` in z units, labelled like the paper ("L2 ↓0.59").
  ``importance_r`` is feature r's share of the averaged vector's L1 norm, and
  ``log10_importance`` the log10 of that norm (the averaging is done in log scale, so
  near-certain posteriors, whose importances are astronomically small, still rank
  features correctly).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from trainmap.analysis.importance import filtered_posterior, scaled_importance

__all__ = [
    "FEATURE_LABELS",
    "feature_label",
    "shift_label",
    "transitions",
    "edge_table",
    "forking",
    "state_summary",
    "edge_columns",
]

#: Readable names of the 14 statistics, as in the paper's Table 3.
FEATURE_LABELS: dict[str, str] = {
    "l1": "L1",
    "l2": "L2",
    "code_sparsity": "L1/L2",
    "trace": "trace",
    "spectral": "λmax",
    "computational_sparsity": "trace/λmax",
    "mean_lambda": "μ(λ)",
    "variance_lambda": "σ(λ)",
    "mean_w": "μ(w)",
    "median_w": "median(w)",
    "var_w": "σ(w)",
    "mean_b": "μ(b)",
    "median_b": "median(b)",
    "var_b": "σ(b)",
}


def feature_label(name: str) -> str:
    """Readable name of a feature (``l2`` → ``L2``, ``mean_lambda`` → ``μ(λ)``)."""
    return FEATURE_LABELS.get(name, name)


def shift_label(name: str, shift: float) -> str:
    """Paper-style label of a mean shift: ``shift_label("l2", -0.59) == "L2 ↓0.59"``."""
    arrow = "↑" if shift > 0 else "↓" if shift < 0 else "→"
    return f"{feature_label(name)} {arrow}{abs(shift):.2f}"


def edge_columns(top_k: int = 3) -> list[str]:
    """Columns of the edge table (edges.csv)."""
    cols = [
        "source", "target", "n_runs", "n_runs_total", "n_transitions", "transition_prob",
        "convergence_mean", "convergence_sd", "log10_importance", "label",
    ]
    for r in range(1, top_k + 1):
        cols += [f"feature_{r}", f"shift_{r}", f"importance_{r}"]
    return cols + ["runs"]


def transitions(states: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Every state change in the decoded paths: columns ``run``, ``t`` (index of the
    checkpoint entering the new state), ``source``, ``target``."""
    rows = []
    for run_id, path in states.items():
        path = np.asarray(path, dtype=int)
        change = np.nonzero(path[1:] != path[:-1])[0] + 1
        for t in change:
            rows.append((str(run_id), int(t), int(path[t - 1]), int(path[t])))
    return pd.DataFrame(rows, columns=["run", "t", "source", "target"])


def edge_table(
    model,
    sequences: Mapping[str, np.ndarray],
    states: Mapping[str, np.ndarray],
    features: Sequence[str],
    convergence: Mapping[str, float] | pd.Series | None = None,
    *,
    top_k: int = 3,
) -> pd.DataFrame:
    """Pruned, annotated edges of the training map, one row per edge (columns
    :func:`edge_columns`), ordered by source then target.

    Parameters
    ----------
    model : the fitted ``GaussianHMM``.
    sequences : z-scored features per run id (T_i, d), as the model was fitted on.
    states : decoded state path per run id (T_i,).
    features : feature names, in model column order.
    convergence : convergence step per run id (NaN or missing → left out of the mean/sd).
    top_k : features reported per edge.

    ``runs`` lists the run ids using the edge, separated by ``;``.
    """
    features = list(features)
    top_k = min(top_k, len(features))
    means = np.asarray(model.means_, dtype=float)
    transmat = np.asarray(model.transmat_, dtype=float)
    conv = pd.Series(dict(convergence)) if convergence is not None and not isinstance(convergence, pd.Series) else convergence
    if conv is not None:
        conv = conv.copy()
        conv.index = conv.index.astype(str)
    moves = transitions(states)
    n_total = len(states)
    if moves.empty:
        return pd.DataFrame(columns=edge_columns(top_k))
    # Importance of the destination state at each entering checkpoint, per edge, kept as
    # (log scale, direction) so that near-certain posteriors do not underflow to zero.
    scales: dict[tuple[int, int], list[float]] = {}
    directions: dict[tuple[int, int], list[np.ndarray]] = {}
    for run_id, group in moves.groupby("run", sort=False):
        Z = np.asarray(sequences[run_id], dtype=float)
        Z_head = Z[: int(group["t"].max()) + 1]  # the filtered posterior at t needs only z_1..z_t
        log_scale, direction = scaled_importance(model, Z_head, filtered_posterior(model, Z_head, log=True))
        for t, i, j in group[["t", "source", "target"]].itertuples(index=False):
            scales.setdefault((int(i), int(j)), []).append(float(log_scale[t, j]))
            directions.setdefault((int(i), int(j)), []).append(direction[t, j])
    rows = []
    for (i, j), group in moves.groupby(["source", "target"], sort=True):
        runs = list(dict.fromkeys(group["run"]))
        avg, log10_norm = _average_importance(np.array(scales[(i, j)]), np.array(directions[(i, j)]))
        total = avg.sum()
        order = np.argsort(-avg, kind="stable")[:top_k]
        row = {
            "source": int(i),
            "target": int(j),
            "n_runs": len(runs),
            "n_runs_total": n_total,
            "n_transitions": len(group),
            "transition_prob": float(transmat[i, j]),
        }
        steps = conv.reindex(runs).to_numpy(float) if conv is not None else np.array([])
        steps = steps[np.isfinite(steps)]
        row["convergence_mean"] = float(steps.mean()) if len(steps) else np.nan
        row["convergence_sd"] = float(steps.std(ddof=1)) if len(steps) > 1 else np.nan
        row["log10_importance"] = log10_norm
        labels = []
        for r, f in enumerate(order, 1):
            shift = float(means[j, f] - means[i, f])
            row[f"feature_{r}"] = features[f]
            row[f"shift_{r}"] = shift
            row[f"importance_{r}"] = float(avg[f] / total) if total > 0 else np.nan
            labels.append(shift_label(features[f], shift))
        row["label"] = ", ".join(labels)
        row["runs"] = ";".join(runs)
        rows.append(row)
    return pd.DataFrame(rows, columns=edge_columns(top_k))


def _average_importance(log_scales: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean of ``exp(log_scale) * direction`` over entries, up to a positive factor, and
    log10 of the L1 norm of the true mean (−inf when every importance is zero)."""
    finite = np.isfinite(log_scales)
    if not finite.any():
        return np.zeros(directions.shape[1]), float("-inf")
    top = log_scales[finite].max()
    weights = np.where(finite, np.exp(np.where(finite, log_scales, top) - top), 0.0)
    avg = (weights[:, None] * directions).sum(axis=0) / len(log_scales)  # true mean × exp(−top)
    total = avg.sum()
    log10_norm = (top + np.log(total)) / np.log(10) if total > 0 else float("-inf")
    return avg, float(log10_norm)


def forking(states: Mapping[str, np.ndarray]) -> bool:
    """Whether some state has at least two outgoing edges to other states in the decoded
    paths ``states`` (run id → state per checkpoint) — docs/design.md step 7; the edges
    are those of :func:`edge_table`."""
    moves = transitions(states)
    return bool(len(moves)) and bool((moves.groupby("source")["target"].nunique() >= 2).any())


def state_summary(states: Mapping[str, np.ndarray], n_states: int) -> pd.DataFrame:
    """Per state: ``runs_visiting``, ``runs_starting`` (first checkpoint in it),
    ``runs_ending`` (last checkpoint in it) and ``mean_occupancy``."""
    visiting = np.zeros(n_states, int)
    starting = np.zeros(n_states, int)
    ending = np.zeros(n_states, int)
    occ = np.zeros(n_states)
    for path in states.values():
        path = np.asarray(path, dtype=int)
        visiting[np.unique(path)] += 1
        starting[path[0]] += 1
        ending[path[-1]] += 1
        occ += np.bincount(path, minlength=n_states) / len(path)
    return pd.DataFrame({
        "state": np.arange(n_states),
        "runs_visiting": visiting,
        "runs_starting": starting,
        "runs_ending": ending,
        "mean_occupancy": occ / max(len(states), 1),
    })

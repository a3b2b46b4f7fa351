"""How early the map knows (docs/analysis.md "How early the map knows"): decode every run's
prefix up to k % of its training with the experiment's fitted HMM, regress the run's
convergence step on the prefix's state occupancy, and report the leave-one-out R² of the
OLS and the Cox model's concordance against k.

A prefix is the run's checkpoints at steps up to ``first + k/100 · (last − first)``; it is
z-scored as the model was fitted (the model's features, each run standardised over its own
first ``zscore_first_n`` checkpoints) but only from what the prefix holds, as it would be
known at that point of training, and Viterbi-decoded. The convergence steps are those of
``regress`` (convergence.csv), the regressions those of
:func:`~trainmap.analysis.regression.state_regression` (on the converged runs) and
:func:`~trainmap.analysis.regression.cox_regression` (on every run).
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from trainmap.io import contracts
from trainmap.analysis.hmm_model import decode_states
from trainmap.analysis.regression import cox_regression, occupancy, state_regression
from trainmap.analysis.runs import Run, prepare_trajectories

__all__ = ["PERCENTS", "EARLY_COLUMNS", "USEFUL_R2", "prefix", "prefix_paths", "early_table", "first_useful",
           "early_sentence", "early_figure"]

#: The prefixes (percent of training).
PERCENTS: tuple[int, ...] = tuple(range(10, 101, 10))
#: Columns of early.csv.
EARLY_COLUMNS = ("percent", "n_runs", "n_converged", "mean_checkpoints", "r2", "r2_loo", "concordance")
#: The LOO R² from which the summary calls the prediction useful.
USEFUL_R2 = 0.5


def prefix(run: Run, percent: float) -> Run:
    """``run`` cut to its checkpoints at steps up to ``percent`` % of its training (at least
    its first two)."""
    steps = run.metrics[contracts.STEP].to_numpy()
    last = steps[0] + percent / 100.0 * (steps[-1] - steps[0])
    n = max(int(np.searchsorted(steps, last, side="right")), min(2, len(steps)))
    return dataclasses.replace(run, metrics=run.metrics.iloc[:n].reset_index(drop=True))


def prefix_paths(runs: Sequence[Run], saved, percent: float) -> dict[str, np.ndarray]:
    """Viterbi paths of every run's prefix (runs the model cannot read are left out)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # prefixes too short to z-score a column are reported by the counts
        traj = prepare_trajectories([prefix(r, percent) for r in runs], features=saved.features,
                                    zscore_first_n=saved.zscore_first_n, min_runs=1)
    return dict(zip(traj.run_ids, decode_states(saved.model, traj.data)))


def early_table(runs: Sequence[Run], saved, convergence: pd.DataFrame,
                percents: Sequence[float] = PERCENTS) -> pd.DataFrame:
    """One row per prefix: runs decoded, converged runs in the OLS, mean checkpoints per
    prefix, R², LOO R² and the Cox concordance. ``convergence`` is indexed by run with
    ``convergence_step`` and ``converged`` (convergence.csv)."""
    n_states = int(saved.model.n_components)
    rows = []
    for percent in percents:
        paths = prefix_paths(runs, saved, percent)
        paths = {r: p for r, p in paths.items() if r in convergence.index}
        occ = occupancy(paths, n_states)
        conv = convergence.loc[occ.index]
        converged = conv["converged"].astype(bool)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ols = state_regression(occ, conv["convergence_step"].where(converged))
            cox = cox_regression(occ, conv["convergence_step"], converged)
        rows.append({"percent": percent, "n_runs": len(occ), "n_converged": int(ols.n_runs),
                     "mean_checkpoints": float(np.mean([len(p) for p in paths.values()])) if paths else math.nan,
                     "r2": ols.r2, "r2_loo": ols.r2_loo, "concordance": cox.concordance})
    return pd.DataFrame(rows, columns=list(EARLY_COLUMNS))


def first_useful(table: pd.DataFrame, level: float = USEFUL_R2) -> float | None:
    """The first percent from which LOO R² is at least ``level`` at every longer prefix, full
    length included, or None. A curve that crosses ``level`` and falls back below it says
    nothing early: with few runs per state the LOO R² of one prefix can be high by chance."""
    ok = (table["r2_loo"] >= level).to_numpy()  # NaN (undefined) is not useful
    for i in range(len(ok)):
        if ok[i:].all():
            return float(table["percent"].iloc[i])
    return None


def early_sentence(table: pd.DataFrame, level: float = USEFUL_R2) -> str:
    """The summary's sentence: ``by 20 % of training the map predicts convergence with LOO
    R² 0.61 (concordance 0.80)``; or that it never reaches ``level``; or that it reaches it
    only at some prefixes (naming the first and the worst later one), which is no answer."""
    k = first_useful(table, level)
    if k is None:
        reached = table[table["r2_loo"] >= level]
        if len(reached):
            first = reached.iloc[0]
            later = table[table["percent"] > first["percent"]]
            worst = later.loc[later["r2_loo"].fillna(-np.inf).idxmin()]
            worst_text = f"{worst['r2_loo']:.2f}" if np.isfinite(worst["r2_loo"]) else "undefined"
            return (f"the map's prediction of convergence is not stable over training: LOO R² reaches {level} at "
                    f"{first['percent']:g} % but is {worst_text} at {worst['percent']:g} %, so no prefix can be "
                    f"trusted (too few runs for the states: see the warnings)")
        best = table["r2_loo"].max()
        shown = f"{best:.2f}" if np.isfinite(best) else "undefined"
        return f"the map's prediction of convergence never reaches LOO R² {level} (best {shown}, at full length included)"
    row = table[table["percent"] == k].iloc[0]
    conc = f" (concordance {row['concordance']:.2f})" if np.isfinite(row["concordance"]) else ""
    return (f"by {k:g} % of training the map predicts convergence with LOO R² {row['r2_loo']:.2f}{conc}, "
            f"and stays at least {level} to the end")


def early_figure(table: pd.DataFrame, *, title: str = "", level: float = USEFUL_R2):
    """LOO R² and concordance against the percent of training decoded."""
    from trainmap.analysis.figures import _figure

    fig = _figure(6.0, 3.8)
    ax = fig.subplots()
    ax.plot(table["percent"], table["r2_loo"], "o-", color="#2f4b7c", label="leave-one-out R² (OLS, converged runs)")
    ax.plot(table["percent"], table["concordance"], "s--", color="#e17c05", label="concordance (Cox, all runs)")
    ax.axhline(level, color="#999999", lw=0.8, ls=":", label=f"LOO R² {level}")
    ax.set_xlabel("prefix of each run decoded (% of its training)")
    ax.set_ylabel("prediction of the convergence step")
    ax.set_xlim(0, 105)
    low = np.nanmin(table[["r2_loo", "concordance"]].to_numpy()) if len(table) else 0.0
    ax.set_ylim(min(0.0, low - 0.05) if np.isfinite(low) else 0.0, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    # The summary's sentence is longer than the axes are wide: wrap each title line so
    # none is cut off at the figure's edges.
    lines = [textwrap.fill(line, 70) for line in (title or "How early the map knows").split("\n")]
    ax.set_title("\n".join(lines), fontsize=10)
    return fig

"""Several experiments (conditions) on one training map (config ``compare:``; docs/analysis.md
"Comparing setups").

One HMM is selected and fitted on the runs of every condition together, with the selection,
z-scoring and restarts of a single experiment (:func:`trainmap.analysis.stages.compare_select`
calls the same code as ``hmm-select``), so every run is decoded into the same states. Each run
is named ``{condition}/{run}`` (:data:`trainmap.io.contracts.CONDITION_SEP`). This module
computes, from the decoded paths and the convergence steps, what differs between conditions:
occupancy of each state, states only one condition visits, transitions, convergence (mean,
sd, censored), trajectory dissimilarity within and between conditions, and the regression
of convergence on occupancy with the condition as covariate; and draws the joint map and
the occupancy-over-training figure.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from trainmap.io import contracts
from trainmap.io.contracts import CompareRecord
from trainmap.analysis.early import PERCENTS, prefix_paths
from trainmap.analysis.errors import AnalysisError
from trainmap.analysis.regression import occupancy, state_regression, total_variation
from trainmap.analysis.runs import Run, load_runs
from trainmap.analysis.training_map import transitions

__all__ = [
    "NAME_PATTERN",
    "check_name",
    "condition_runs",
    "condition_of",
    "occupancy_table",
    "transition_table",
    "dissimilarity_table",
    "convergence_summary",
    "condition_regression",
    "compare_table",
    "table_markdown",
    "joint_map_graph",
    "occupancy_figure",
    "EARLY_COMPARE_COLUMNS",
    "RANK_PERCENT",
    "early_differences",
    "stability_order",
    "early_markdown",
    "early_figure",
]

#: Names of comparisons and conditions: they become directories and run-name prefixes.
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_name(name: str, what: str) -> str:
    """``name`` when it is a safe comparison or condition name, else an error naming ``what``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or len(name) > 64:
        raise AnalysisError(f"{what}: {name!r} is not a valid name (a letter, then letters, digits or _; "
                            "at most 64 characters)")
    return name


def condition_runs(conditions: Mapping[str, Sequence[str | os.PathLike]]) -> tuple[list[Run], dict[str, str]]:
    """Every condition's runs, read once, each renamed ``{condition}/{run}``; and the
    condition of every renamed run. At least two conditions, each with runs."""
    if len(conditions) < 2:
        raise AnalysisError(f"a comparison needs at least two conditions, got {len(conditions)}")
    runs: list[Run] = []
    of: dict[str, str] = {}
    for name, dirs in conditions.items():
        check_name(name, "condition")
        if not dirs:
            raise AnalysisError(f"condition {name}: no run directories")
        for run in load_runs(dirs):
            rid = f"{name}{contracts.CONDITION_SEP}{run.run_id}"
            runs.append(dataclasses.replace(run, run_id=rid))
            of[rid] = name
    return runs, of


def condition_of(run_ids: Sequence[str]) -> dict[str, str]:
    """The condition of every prefixed run name (the part before the first separator)."""
    return {r: str(r).split(contracts.CONDITION_SEP, 1)[0] for r in run_ids}


def _ordered(conditions: Mapping[str, str]) -> list[str]:
    return list(dict.fromkeys(conditions.values()))


def occupancy_table(paths: Mapping[str, np.ndarray], conditions: Mapping[str, str], n_states: int) -> pd.DataFrame:
    """Per condition and state: ``runs_visiting``, ``n_runs``, ``mean_occupancy`` (mean over
    the condition's runs of the share of its checkpoints in the state) and ``exclusive``
    (the only condition whose runs visit the state)."""
    occ = occupancy(paths, n_states)
    names = _ordered(conditions)
    rows = []
    visiting = {c: (occ.loc[[r for r in occ.index if conditions[r] == c]] > 0).sum(axis=0) for c in names}
    for c in names:
        mine = occ.loc[[r for r in occ.index if conditions[r] == c]]
        for k in range(n_states):
            others = sum(int(visiting[o][k]) for o in names if o != c)
            rows.append({contracts.CONDITION: c, contracts.STATE: k, "runs_visiting": int(visiting[c][k]),
                         "n_runs": len(mine), "mean_occupancy": float(mine[k].mean()),
                         "exclusive": bool(visiting[c][k] > 0 and others == 0)})
    return pd.DataFrame(rows)


def transition_table(paths: Mapping[str, np.ndarray], conditions: Mapping[str, str]) -> pd.DataFrame:
    """Per condition and edge i→j (i ≠ j) its runs take: ``n_runs`` (runs taking it),
    ``n_runs_total`` (the condition's runs) and ``n_transitions``."""
    moves = transitions(paths)
    columns = [contracts.CONDITION, "source", "target", "n_runs", "n_runs_total", "n_transitions"]
    if not len(moves):
        return pd.DataFrame(columns=columns)
    moves[contracts.CONDITION] = moves["run"].map(conditions)
    totals = pd.Series(conditions).value_counts()
    table = (moves.groupby([contracts.CONDITION, "source", "target"], sort=False)
             .agg(n_runs=("run", "nunique"), n_transitions=("run", "size")).reset_index())
    table["n_runs_total"] = table[contracts.CONDITION].map(totals).astype(int)
    order = {c: i for i, c in enumerate(_ordered(conditions))}
    table = table.sort_values([contracts.CONDITION, "source", "target"],
                              key=lambda s: s.map(order) if s.name == contracts.CONDITION else s)
    return table[columns].reset_index(drop=True)


def dissimilarity_table(paths: Mapping[str, np.ndarray], conditions: Mapping[str, str], n_states: int) -> pd.DataFrame:
    """Trajectory dissimilarity (paper Eq. 1) within each condition (mean over its pairs of
    runs) and between each pair of conditions (mean over pairs of one run of each): the
    total-variation distance between state distributions. NaN within a condition of one run."""
    occ = occupancy(paths, n_states)
    names = _ordered(conditions)
    groups = {c: occ.loc[[r for r in occ.index if conditions[r] == c]].to_numpy() for c in names}
    rows = []
    for i, a in enumerate(names):
        for b in names[i:]:
            A, B = groups[a], groups[b]
            if a == b:
                d = [total_variation(A[x], A[y]) for x in range(len(A)) for y in range(x + 1, len(A))]
            else:
                d = [total_variation(p, q) for p in A for q in B]
            rows.append({"condition_a": a, "condition_b": b, "dissimilarity": float(np.mean(d)) if d else np.nan})
    return pd.DataFrame(rows, columns=["condition_a", "condition_b", "dissimilarity"])


def convergence_summary(convergence: pd.DataFrame, conditions: Mapping[str, str]) -> pd.DataFrame:
    """Per condition from a convergence table (:func:`~trainmap.analysis.convergence.convergence_table`,
    indexed by prefixed run): ``n_runs``, ``n_converged``, ``n_censored``, and the mean and
    sample sd (ddof 1) of the converged runs' convergence steps (NaN when undefined)."""
    rows = []
    for c in _ordered(conditions):
        mine = convergence.loc[[r for r in convergence.index if conditions.get(r) == c]]
        done = mine.loc[mine["converged"], "convergence_step"].astype(float)
        rows.append({contracts.CONDITION: c, "n_runs": len(mine), "n_converged": int(len(done)),
                     "n_censored": int(len(mine) - len(done)),
                     "convergence_mean": float(done.mean()) if len(done) else np.nan,
                     "convergence_sd": float(done.std(ddof=1)) if len(done) > 1 else np.nan})
    return pd.DataFrame(rows)


def condition_indicators(conditions: Mapping[str, str], run_ids: Sequence[str]) -> pd.DataFrame:
    """0/1 indicators of every condition but the first (the reference), indexed by run."""
    names = _ordered(conditions)
    return pd.DataFrame({f"{contracts.CONDITION}[{c}]": [float(conditions[r] == c) for r in run_ids]
                         for c in names[1:]}, index=list(run_ids))


def condition_regression(occ: pd.DataFrame, convergence: pd.DataFrame, conditions: Mapping[str, str]):
    """OLS of the converged runs' convergence step on state occupancy with condition
    indicators (reference: the first condition) as covariates
    (:func:`~trainmap.analysis.regression.state_regression`)."""
    y = convergence["convergence_step"].where(convergence["converged"]).reindex(occ.index)
    return state_regression(occ, y, covariates=condition_indicators(conditions, list(occ.index)))


def compare_table(occ_table: pd.DataFrame, conv_summary: pd.DataFrame, dissim: pd.DataFrame,
                  n_states: int) -> pd.DataFrame:
    """table_compare.csv: one row per condition — runs, converged, censored, convergence
    mean and sd, dissimilarity within the condition and (mean) to the other conditions,
    states visited, states only it visits, and ``occupancy_{k}`` for every state."""
    rows = []
    for c in conv_summary[contracts.CONDITION]:
        mine = occ_table[occ_table[contracts.CONDITION] == c].set_index(contracts.STATE)
        within = dissim[(dissim.condition_a == c) & (dissim.condition_b == c)]["dissimilarity"]
        between = dissim[(dissim.condition_a != dissim.condition_b)
                         & ((dissim.condition_a == c) | (dissim.condition_b == c))]["dissimilarity"]
        row = conv_summary[conv_summary[contracts.CONDITION] == c].iloc[0].to_dict()
        row["dissimilarity_within"] = float(within.iloc[0]) if len(within) else np.nan
        row["dissimilarity_between"] = float(between.mean()) if len(between) else np.nan
        row["states_visited"] = " ".join(str(k) for k in range(n_states) if mine.loc[k, "runs_visiting"] > 0)
        row["exclusive_states"] = " ".join(str(k) for k in range(n_states) if mine.loc[k, "exclusive"])
        for k in range(n_states):
            row[f"occupancy_{k}"] = float(mine.loc[k, "mean_occupancy"])
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(x, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    return f"{x:,.{digits}f}" if isinstance(x, (float, np.floating)) else str(x)


def table_markdown(name: str, table: pd.DataFrame, dissim: pd.DataFrame, regression: CompareRecord,
                   criteria: Mapping[str, str], n_states: int) -> str:
    """table_compare.md: the table, the dissimilarity matrix and the covariate regression."""
    lines = [f"# Comparison {name}", "",
             f"One HMM with {n_states} states fitted on the runs of all conditions; convergence: "
             + "; ".join(f"{c}: {t}" for c, t in criteria.items()) + ".", "",
             "| condition | runs | converged | censored | convergence mean ± sd | dissimilarity within | "
             "between | states visited | only this condition | " + " | ".join(f"occ. {k}" for k in range(n_states)) + " |",
             "|" + "---|" * (9 + n_states)]
    for r in table.to_dict("records"):
        lines.append(
            f"| {r[contracts.CONDITION]} | {r['n_runs']} | {r['n_converged']} | {r['n_censored']} | "
            f"{_fmt(r['convergence_mean'])} ± {_fmt(r['convergence_sd'])} | {_fmt(r['dissimilarity_within'], 3)} | "
            f"{_fmt(r['dissimilarity_between'], 3)} | {r['states_visited'] or '—'} | {r['exclusive_states'] or '—'} | "
            + " | ".join(_fmt(r[f'occupancy_{k}'], 2) for k in range(n_states)) + " |")
    names = list(table[contracts.CONDITION])
    lines += ["", "Trajectory dissimilarity (mean total variation between runs' state distributions):", "",
              "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lookup = {}
    for d in dissim.itertuples(index=False):
        lookup[(d.condition_a, d.condition_b)] = lookup[(d.condition_b, d.condition_a)] = d.dissimilarity
    for a in names:
        lines.append(f"| {a} | " + " | ".join(_fmt(lookup.get((a, b), np.nan), 3) for b in names) + " |")
    lines += ["", f"Regression of convergence step on state occupancy with the condition as covariate "
                  f"(reference {names[0]}; {regression.n_runs} converged runs): "
                  f"R² {_fmt(regression.r2, 2)}, LOO R² {_fmt(regression.r2_loo, 2)}.", ""]
    converged = dict(zip(names, table["n_converged"]))
    if sum(n > 0 for n in converged.values()) == 1:
        only = next(c for c, n in converged.items() if n > 0)
        lines += [f"Only {only} has converged runs: the regression explains convergence within {only} alone, "
                  "and says nothing about the difference between the conditions.", ""]
    for c in regression.covariates:
        condition = c["covariate"].removeprefix("condition[").removesuffix("]")
        if np.isfinite(c["coefficient"]):
            lines.append(f"- {c['covariate']}: {_fmt(c['coefficient'])} steps (p = {_fmt(c['p_value'], 3)})")
        elif converged.get(condition) == 0:
            lines.append(f"- {c['covariate']}: not estimable, no run of {condition} converged (every one is censored)")
        else:
            lines.append(f"- {c['covariate']}: not estimable from these runs (collinear with the state occupancies)")
    for s in regression.states:
        if s["identifiable"]:
            lines.append(f"- state {s['state']}: {_fmt(s['coefficient'])} steps beyond the condition "
                         f"(p = {_fmt(s['p_value'], 3)})")
    return "\n".join(lines) + "\n"


_PALETTE = ("#2f4b7c", "#e17c05", "#59a14f", "#b2182b", "#8c6bb1", "#17becf", "#7f7f7f", "#bcbd22")


def condition_colors(occ_table: pd.DataFrame) -> dict[str, str]:
    """Each condition's colour on the joint map (static and interactive), in table order."""
    names = list(dict.fromkeys(occ_table[contracts.CONDITION]))
    return {c: _PALETTE[i % len(_PALETTE)] for i, c in enumerate(names)}


def joint_map_graph(occ_table: pd.DataFrame, trans: pd.DataFrame, n_states: int, *, title: str = "",
                    key: bool = True):
    """The joint training map (``graphviz.Digraph``): every state and edge labelled with the
    conditions whose runs use it and how often (``condition k/N``); a state only one
    condition visits is filled in that condition's colour, one no run visits is dashed.
    ``key``: explain k/N under the legend (the interactive page explains it beside)."""
    import graphviz

    from trainmap.analysis.figures import _FONT

    colour = condition_colors(occ_table)
    names = list(colour)
    g = graphviz.Digraph("joint_training_map")
    g.attr(rankdir="TB", fontname=_FONT, fontsize="16", labelloc="t", label=title, nodesep="0.6", ranksep="0.7")
    g.attr("node", fontname=_FONT, fontsize="12", shape="box", style="rounded,filled", fillcolor="#f2f2f2",
           color="#44546a")
    g.attr("edge", fontname=_FONT, fontsize="10", color="#44546a")
    for k in range(n_states):
        mine = occ_table[occ_table[contracts.STATE] == k]
        used = mine[mine["runs_visiting"] > 0]
        parts = [f'<FONT COLOR="{colour[r.condition]}">{r.condition} {int(r.runs_visiting)}/{int(r.n_runs)}'
                 f" ({r.mean_occupancy:.0%})</FONT>" for r in used.itertuples(index=False)]
        label = f"<<B>state {k}</B><BR/>" + ("<BR/>".join(parts) if parts else "not visited") + ">"
        if not len(used):
            g.node(f"s{k}", label, style="rounded,dashed", fontcolor="#999999", color="#999999")
        elif len(used) == 1:
            g.node(f"s{k}", label, fillcolor="#ffffff", color=colour[used.iloc[0][contracts.CONDITION]], penwidth="3")
        else:
            g.node(f"s{k}", label)
    for (source, target), group in trans.groupby(["source", "target"], sort=True):
        label = "\n".join(f"{r.condition} {int(r.n_runs)}/{int(r.n_runs_total)}" for r in group.itertuples(index=False))
        share = float((group["n_runs"] / group["n_runs_total"]).max())
        only = group.iloc[0][contracts.CONDITION] if len(group) == 1 else None
        g.edge(f"s{int(source)}", f"s{int(target)}", label=label, penwidth=f"{1 + 3 * share:.2f}",
               color=colour[only] if only else "#44546a", fontcolor=colour[only] if only else "#000000")
    with g.subgraph(name="legend") as sub:
        sub.attr(rank="sink")
        rows = "".join(f'<TR><TD><FONT COLOR="{colour[c]}">■ {c}</FONT></TD></TR>' for c in names)
        if key:
            rows += "<TR><TD>k/N: runs of the condition using the state or edge (share of their checkpoints)</TD></TR>"
        sub.node("legend", f'<<TABLE BORDER="0" CELLBORDER="0">{rows}</TABLE>>', shape="plain", style="")
    return g


def occupancy_figure(paths: Mapping[str, np.ndarray], conditions: Mapping[str, str], n_states: int, *,
                     bins: int = 20, title: str = ""):
    """Each condition's state occupancy over training: in each of ``bins`` equal bins of
    training progress (share of a run's checkpoints), the share of the condition's
    checkpoints there in each state, stacked; one panel per condition."""
    from matplotlib import colormaps

    from trainmap.analysis.figures import _figure

    names = _ordered(conditions)
    cmap = colormaps["tab10"] if n_states <= 10 else colormaps["tab20"]
    fig = _figure(4.0 * len(names) + 1.0, 3.6)
    axes = fig.subplots(1, len(names), sharey=True, squeeze=False)[0]
    edges = np.linspace(0, 1, bins + 1)
    for ax, c in zip(axes, names):
        counts = np.zeros((bins, n_states))
        runs = [r for r in paths if conditions[r] == c]
        for r in runs:
            path = np.asarray(paths[r], dtype=int)
            where = np.minimum((np.arange(len(path)) / max(len(path), 1) * bins).astype(int), bins - 1)
            np.add.at(counts, (where, path), 1)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.stackplot(edges * 100, np.vstack([share, share[-1:]]).T, step="post", labels=[f"state {k}" for k in range(n_states)],
                     colors=[cmap(k) for k in range(n_states)])
        ax.set_title(f"{c} ({len(runs)} runs)")
        ax.set_xlabel("training progress (% of the run's checkpoints)")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("share of checkpoints in state")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# --- how early the conditions differ: a sweep sorted by predicted stability ----------------

#: Columns of a comparison's early.csv.
EARLY_COMPARE_COLUMNS = ("percent", contracts.CONDITION, "n_runs", "dissimilarity_within", "occupancy_shift",
                         "rank", "convergence_sd", "n_censored")
#: The prefix the comparison's table ranks the conditions at (% of training).
RANK_PERCENT = 20


def early_differences(runs: Sequence[Run], saved, conditions: Mapping[str, str], conv_summary: pd.DataFrame,
                      percents: Sequence[float] = PERCENTS) -> pd.DataFrame:
    """A comparison's early.csv: for every prefix (``percent`` of training, decoded with the
    comparison's model as :mod:`trainmap.analysis.early` does) and condition, the trajectory
    dissimilarity within the condition on the prefixes (how much its seeds already disagree),
    the ``occupancy_shift`` (total variation between the condition's mean prefix occupancy and
    that of the other conditions' runs pooled), and the condition's ``rank`` by early
    dissimilarity (1: its seeds agree most, the setting predicted most stable). The
    condition's actual convergence spread (``convergence_sd``, ``n_censored`` of the whole
    runs) is repeated on every row, to read the prediction next to the outcome."""
    n_states = int(saved.model.n_components)
    names = _ordered(conditions)
    actual = conv_summary.set_index(contracts.CONDITION)
    rows = []
    for percent in percents:
        paths = prefix_paths(runs, saved, percent)
        of = {r: conditions[r] for r in paths}
        occ = occupancy(paths, n_states)
        dissim = dissimilarity_table(paths, of, n_states)
        within = {d.condition_a: d.dissimilarity for d in dissim.itertuples(index=False) if d.condition_a == d.condition_b}
        for c in names:
            mine = [r for r in occ.index if of[r] == c]
            others = [r for r in occ.index if of[r] != c]
            shift = (total_variation(occ.loc[mine].mean().to_numpy(), occ.loc[others].mean().to_numpy())
                     if mine and others else np.nan)
            rows.append({"percent": percent, contracts.CONDITION: c, "n_runs": len(mine),
                         "dissimilarity_within": float(within.get(c, np.nan)), "occupancy_shift": float(shift),
                         "convergence_sd": float(actual.loc[c, "convergence_sd"]) if c in actual.index else np.nan,
                         "n_censored": int(actual.loc[c, "n_censored"]) if c in actual.index else 0})
    table = pd.DataFrame(rows)
    table["rank"] = (table.groupby("percent")["dissimilarity_within"].rank(method="min", na_option="bottom")
                     .astype(int))
    return table[list(EARLY_COMPARE_COLUMNS)].reset_index(drop=True)


def stability_order(conv_summary: pd.DataFrame) -> list[str]:
    """The conditions from the most to the least stable as they turned out: fewest runs that
    never converged (as a share of the condition's runs) first, then the smallest spread of
    the convergence step."""
    t = conv_summary.assign(_censored=conv_summary["n_censored"] / conv_summary["n_runs"].clip(lower=1),
                            _sd=conv_summary["convergence_sd"].fillna(np.inf))
    return list(t.sort_values(["_censored", "_sd"], kind="stable")[contracts.CONDITION])


def early_markdown(early: pd.DataFrame, conv_summary: pd.DataFrame, percent: float = RANK_PERCENT) -> str:
    """table_compare.md's section on predicted stability: the conditions sorted by their
    dissimilarity within the first ``percent`` % of training, next to how they turned out,
    and whether the two orders agree."""
    shown = [k for k in (10, 20, 30, 50, 100) if k in set(early["percent"])]
    at = early[early["percent"] == percent].sort_values(["rank", contracts.CONDITION])
    if not len(at):
        return ""
    predicted = list(at[contracts.CONDITION])
    outcome = stability_order(conv_summary)
    lines = [f"## Predicted stability from the first {percent:g} % of training", "",
             "Dissimilarity within each condition on the runs' prefixes (lower: its seeds already agree), the shift "
             "of its early occupancy from the other conditions, and, to the right, how its runs turned out.", "",
             "| rank | condition | " + " | ".join(f"within at {k} %" for k in shown)
             + f" | occupancy shift at {percent:g} % | convergence sd | never converged |",
             "|" + "---|" * (5 + len(shown))]
    for r in at.to_dict("records"):
        c = r[contracts.CONDITION]
        mine = early[early[contracts.CONDITION] == c].set_index("percent")
        lines.append(f"| {r['rank']} | {c} | " + " | ".join(_fmt(float(mine.loc[k, 'dissimilarity_within']), 3) for k in shown)
                     + f" | {_fmt(float(r['occupancy_shift']), 3)} | {_fmt(float(r['convergence_sd']))} | "
                     f"{r['n_censored']} of {r['n_runs']} |")
    verdict = ("the same order" if predicted == outcome else
               f"a different order: {', '.join(outcome)} (fewest never-converged runs, then smallest spread)")
    lines += ["", f"Sorted by early dissimilarity (most stable first): {', '.join(predicted)}; "
                  f"the runs' outcome gives {verdict}."]
    return "\n".join(lines) + "\n"


def early_figure(early: pd.DataFrame, *, title: str = ""):
    """Each condition's dissimilarity within its runs against the prefix decoded (% of training)."""
    from trainmap.analysis.figures import _figure

    fig = _figure(6.0, 3.8)
    ax = fig.subplots()
    for i, (c, part) in enumerate(early.groupby(contracts.CONDITION, sort=False)):
        sd = part["convergence_sd"].iloc[0]
        label = f"{c} (convergence sd {_fmt(float(sd))}, never converged {int(part['n_censored'].iloc[0])})"
        ax.plot(part["percent"], part["dissimilarity_within"], "o-", color=_PALETTE[i % len(_PALETTE)], label=label)
    ax.set_xlabel("prefix of each run decoded (% of its training)")
    ax.set_ylabel("dissimilarity within the condition")
    ax.set_xlim(0, 105)
    ax.set_ylim(0, max(0.05, float(np.nanmax(early["dissimilarity_within"].to_numpy(dtype=float), initial=0.0)) * 1.1))
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "How early the conditions' seeds disagree", fontsize=10)
    return fig

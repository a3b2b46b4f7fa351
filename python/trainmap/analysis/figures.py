"""Figures for people: the training map (Graphviz, like the paper's Figure 2), model
selection curves (Appendix H), the convergence-time histogram (Appendix I) and training
trajectories coloured by decoded state.

Matplotlib is used through ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no
global backend switch); Graphviz through the ``graphviz`` package, which needs the ``dot``
program on PATH. Every ``save_*``/``write_*`` function writes atomically.
"""

from __future__ import annotations

import html
import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from trainmap.io import atomic, contracts

__all__ = [
    "training_map_graph",
    "write_graph",
    "selection_figure",
    "convergence_histogram",
    "trajectories_figure",
    "save_figure",
    "STATE_COLORS",
]

#: Background colour of state k in trajectory plots (cycled).
STATE_COLORS = (
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1",
    "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac",
)
_FONT = "DejaVu Sans"


def _fmt_step(x: float) -> str:
    if not np.isfinite(x):
        return "–"
    return f"{x:,.0f}"


def _cell(text: str, *, bold: bool = False, align: str = "LEFT") -> str:
    body = html.escape(text)
    if bold:
        body = f"<B>{body}</B>"
    return f'<TD ALIGN="{align}">{body}</TD>'


def _edge_table_html(edges: pd.DataFrame, top_k: int) -> str:
    rows = [
        "<TR>" + "".join(_cell(h, bold=True) for h in
                         ("Edge", f"Top-{top_k} feature changes", "Frequency", "Convergence step")) + "</TR>"
    ]
    for e in edges.itertuples(index=False):
        changes = ", ".join(
            p for p in (str(getattr(e, "label", "") or "")).split(", ") if p
        )
        mean, sd = float(e.convergence_mean), float(e.convergence_sd)
        conv = _fmt_step(mean) + (f" ± {_fmt_step(sd)}" if np.isfinite(sd) else "")
        rows.append(
            "<TR>"
            + _cell(f"{e.source} → {e.target}")
            + _cell(changes)
            + _cell(f"{e.n_runs} / {e.n_runs_total}", align="RIGHT")
            + _cell(conv, align="RIGHT")
            + "</TR>"
        )
    return '<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">' + "".join(rows) + "</TABLE>>"


def training_map_graph(
    edges: pd.DataFrame,
    states: pd.DataFrame,
    *,
    n_runs: int,
    detour_states: Sequence[int] = (),
    title: str = "",
    edge_table: bool = True,
    top_k: int = 3,
):
    """The training map as a ``graphviz.Digraph``.

    Parameters
    ----------
    edges : from :func:`trainmap.analysis.training_map.edge_table`.
    states : from :func:`trainmap.analysis.training_map.state_summary` (one row per state).
    n_runs : runs decoded (the N of "k / N").
    detour_states : states drawn apart (orange, bold border, "detour").
    title : shown above the map.
    edge_table : add the Figure-2-style table (edge, top feature changes, "k / N",
        convergence step mean ± sd) below the map.

    States no run visits are drawn dashed and grey ("not visited"); a start marker points at
    the states runs begin in. Edge labels: run count and the top feature changes.
    """
    import graphviz

    detours = {int(s) for s in detour_states}
    g = graphviz.Digraph("training_map")
    g.attr(rankdir="TB", fontname=_FONT, fontsize="16", labelloc="t", label=title, nodesep="0.5", ranksep="0.6")
    g.attr("node", fontname=_FONT, fontsize="13", shape="circle", style="filled", fillcolor="#dce6f2",
           color="#2f4b7c", width="0.9", fixedsize="false")
    g.attr("edge", fontname=_FONT, fontsize="11", color="#44546a")
    for s in states.itertuples(index=False):
        k = int(s.state)
        visits = int(s.runs_visiting)
        sub = f"{visits}/{n_runs} runs" if visits else "not visited"
        if k in detours:
            g.node(f"s{k}", f"<<B>{k}</B><BR/><FONT POINT-SIZE=\"10\">{sub}<BR/>detour</FONT>>",
                   fillcolor="#f4a582", color="#b2182b", penwidth="3")
        elif visits == 0:
            g.node(f"s{k}", f"<<B>{k}</B><BR/><FONT POINT-SIZE=\"10\">{sub}</FONT>>",
                   style="dashed", color="#999999", fontcolor="#999999")
        else:
            g.node(f"s{k}", f"<<B>{k}</B><BR/><FONT POINT-SIZE=\"10\">{sub}</FONT>>")
    starts = states[states["runs_starting"] > 0]
    if len(starts):
        g.node("start", "", shape="point", width="0.15", fillcolor="black")
        for s in starts.itertuples(index=False):
            g.edge("start", f"s{int(s.state)}", label=f" {int(s.runs_starting)}/{n_runs}" if len(starts) > 1 else "",
                   style="dashed", arrowsize="0.7")
    max_runs = max(int(edges["n_runs"].max()), 1) if len(edges) else 1
    for e in edges.itertuples(index=False):
        parts = [f"{int(e.n_runs)}/{int(e.n_runs_total)} runs"]
        parts += [p for p in str(e.label or "").split(", ") if p]
        g.edge(f"s{int(e.source)}", f"s{int(e.target)}", label="\n".join(parts),
               penwidth=f"{1 + 3 * int(e.n_runs) / max_runs:.2f}")
    if edge_table and len(edges):
        with g.subgraph(name="table_rank") as sub:
            sub.attr(rank="sink")
            sub.node("edge_table", _edge_table_html(edges, top_k), shape="plain", style="", fillcolor="white")
    return g


def write_graph(graph, svg: str | os.PathLike | None = None, png: str | os.PathLike | None = None, *, dpi: int = 150) -> None:
    """Render a ``graphviz.Digraph`` to SVG and/or PNG, atomically."""
    if svg is not None:
        atomic.write_bytes(svg, graph.pipe(format="svg"))
    if png is not None:
        g = graph.copy()
        g.attr(dpi=str(dpi))
        atomic.write_bytes(png, g.pipe(format="png"))


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, stem: str | os.PathLike, formats: Sequence[str] = ("png", "svg"), *, dpi: int = 150) -> list[Path]:
    """Save a matplotlib ``Figure`` as ``stem.png`` and ``stem.svg`` (atomically); returns the paths."""
    out = []
    for fmt in formats:
        path = Path(f"{os.fspath(stem)}.{fmt}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi)
        atomic.write_bytes(path, buffer.getvalue())
        out.append(path)
    return out


#: Columns of selection.csv that :func:`selection_figure` draws.
SELECTION_COLUMNS = ("covariance", "n_components", "fold", "status", "best_for_n", "chosen", "test_loglik",
                     "n_params", "n_test_obs", "bic")
# One colour per covariance type in the selection figure.
_COVARIANCE_COLORS = {"full": "#2f4b7c", "diag": "#e17c05", "tied": "#59a14f"}


def selection_figure(selection: pd.DataFrame, *, title: str = "", rule: str = "best"):
    """Model-selection curves (Appendix H): held-out log-likelihood and BIC against the
    number of states, one line per covariance type (summed over the folds, by the
    selection ``rule``), with the spread over folds as error bars and every fold's best
    restart as a dot (its BIC scaled to all held-out checkpoints); the chosen model starred;
    failed fits counted in the title, and a warning when the choice sits at the largest n
    tried (more states might fit better: raise max_components)."""
    from trainmap.analysis.hmm_select import REFIT_FOLD, selection_summary

    summary = selection_summary(selection, rule)
    scored = selection[(selection["fold"] != REFIT_FOLD) & (selection["status"] == "ok")]
    best = scored[scored["best_for_n"].astype(bool)]
    folds = int(summary["folds"].max()) if len(summary) else 1
    fig = _figure(11, 4.6)
    axes = fig.subplots(1, 2, sharex=True)
    for covariance, group in summary.groupby("covariance", sort=False):
        color = _COVARIANCE_COLORS.get(str(covariance), "#444444")
        group = group.sort_values("n_components")
        dots = best[best["covariance"] == covariance]
        total = group.set_index("n_components")["n_test_obs"]
        scale = dots["n_components"].map(total) / dots["n_test_obs"]
        n = group["n_components"].to_numpy(float)
        axes[0].plot(n, group["test_loglik"].to_numpy(float), "o-", color=color, label=str(covariance), zorder=3)
        axes[1].errorbar(n, group["bic"].to_numpy(float), yerr=group["bic_sd"].to_numpy(float) if folds > 1 else None,
                         fmt="o-", color=color, capsize=3, label=str(covariance), zorder=3)
        if folds > 1:
            penalty = dots["n_params"] * np.log(dots["n_components"].map(total))
            axes[1].scatter(dots["n_components"], -2 * dots["test_loglik"] * scale + penalty, s=10, color=color,
                            alpha=0.35, zorder=2)
    # The model kept is the table's chosen row (its candidate was chosen by the rule the
    # selection ran with); the curves are drawn by ``rule``.
    kept = selection[selection["chosen"].astype(bool)]
    chosen = summary.iloc[0:0]
    if len(kept):
        chosen = summary[(summary["covariance"] == kept["covariance"].iloc[0])
                         & (summary["n_components"] == kept["n_components"].iloc[0])]
    if len(chosen):
        pick = chosen.iloc[0]
        label = f"chosen: {pick['covariance']}, n = {int(pick['n_components'])}"
        axes[0].scatter([pick["n_components"]], [pick["test_loglik"]], marker="*", s=260, color="#d62728", zorder=4)
        axes[1].scatter([pick["n_components"]], [pick["bic"]], marker="*", s=260, color="#d62728", label=label,
                        zorder=4)
    how = f"summed over {folds} folds of runs" if folds > 1 else "on the held-out runs"
    for ax, name in zip(axes, ("held-out log-likelihood", "held-out BIC")):
        ax.set_xlabel("number of hidden states n", fontsize=11)
        ax.set_ylabel(name, fontsize=11)
        better = "higher" if "likelihood" in name else "lower"
        ax.set_title(f"{name} ({better} is better)\n{how}", fontsize=11)
        ax.grid(alpha=0.3)
    axes[0].set_xticks(sorted(selection["n_components"].unique()))
    axes[1].legend(fontsize=9, title="covariance" + (" (bars: sd over folds)" if folds > 1 else ""),
                   title_fontsize=9)
    failed = int((selection["status"] != "ok").sum())
    head = "HMM model selection" + (f" — {title}" if title else "")
    if failed:
        head += f"  ({failed} of {len(selection)} fits failed, not shown)"
    if len(chosen) and int(chosen["n_components"].iloc[0]) == int(selection["n_components"].max()) > 1:
        head += "\nchosen n is the largest tried: more states may fit better (raise max_components)"
    fig.suptitle(head, fontsize=13)
    return fig


def convergence_histogram(convergence: pd.DataFrame, criterion, *, title: str = ""):
    """Histogram of convergence steps (Appendix I) under ``criterion``
    (:class:`~trainmap.analysis.convergence.Criterion`, None when no run was decoded); runs
    that never met it (censored) are drawn as a separate hatched bar at their own last step."""
    fig = _figure(7, 4.2)
    ax = fig.subplots()
    defined = convergence[np.isfinite(convergence["convergence_step"].astype(float))]
    conv = defined[defined["converged"].astype(bool)]["convergence_step"].astype(float)
    never = defined[~defined["converged"].astype(bool)]["convergence_step"].astype(float)
    values = pd.concat([conv, never])
    if len(values):
        lo, hi = float(values.min()), float(values.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1, min(20, max(5, len(values) // 2)) + 1)
        if len(conv):
            ax.hist(conv, bins=bins, color="#4e79a7", edgecolor="white", label=f"converged ({len(conv)} runs)")
        if len(never):
            ax.hist(never, bins=bins, color="#e15759", hatch="//", edgecolor="white",
                    label=f"censored: never converged ({len(never)} runs), at their last step")
        ax.legend(fontsize=9)
    else:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes, fontsize=11)
    ax.set_xlabel("convergence step" + (f" ({criterion.describe()})" if criterion else ""), fontsize=11)
    ax.set_ylabel("number of runs", fontsize=11)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title("Convergence time" + (f" — {title}" if title else ""), fontsize=13)
    return fig


def _panels(columns: list[str], criterion_column: str | None) -> list[str]:
    """log.csv columns drawn per run: the criterion's column, then an accuracy and a loss
    (eval preferred) that are not it."""
    panels = [criterion_column] if criterion_column in columns else []
    for pair in ((contracts.EVAL_ACCURACY, contracts.TRAIN_ACCURACY), (contracts.EVAL_LOSS, contracts.TRAIN_LOSS)):
        present = [c for c in pair if c in columns]
        if present and not set(pair) & set(panels):
            panels.append(present[0])
    return panels


def _segments(states: np.ndarray) -> list[tuple[int, int, int]]:
    """(start index, end index exclusive, state) of each run of equal states."""
    states = np.asarray(states, dtype=int)
    change = np.nonzero(np.diff(states))[0] + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(states)]])
    return [(int(a), int(b), int(states[a])) for a, b in zip(starts, ends)]


def trajectories_figure(
    logs: Mapping[str, pd.DataFrame],
    states: Mapping[str, pd.DataFrame],
    convergence: pd.DataFrame,
    criterion,
    *,
    n_fast: int = 3,
    n_slow: int = 3,
    title: str = "",
):
    """Accuracy and loss against step for the ``n_fast`` fastest and ``n_slow`` slowest
    runs, the decoded HMM state as background colour; the criterion's column comes first,
    with its threshold drawn.

    ``logs``: log.csv per run id; ``states``: per run id a frame with ``step`` and
    ``state``; ``convergence``: from :func:`~trainmap.analysis.convergence.convergence_table`.
    Runs without a convergence step are ordered last; with no convergence at all the first
    runs are shown.
    """
    from matplotlib.patches import Patch

    run_ids = [r for r in states if r in logs]
    conv = convergence.reindex(run_ids)["convergence_step"].astype(float) if len(convergence) else pd.Series(np.nan, index=run_ids)
    def natural(r: str) -> tuple:
        return (0, int(r), "") if r.isdigit() else (1, 0, r)

    def order_key(r: str) -> tuple:
        c = conv.get(r, np.nan)
        return (not np.isfinite(c), c if np.isfinite(c) else 0.0, natural(r))

    order = sorted(run_ids, key=order_key)
    defined = [r for r in order if np.isfinite(conv.get(r, np.nan))]
    if defined:
        fast = defined[:n_fast]
        slow = [r for r in defined[::-1][:n_slow] if r not in fast][::-1]
        chosen = [(r, "fast") for r in fast] + [(r, "slow") for r in slow]
    else:
        chosen = [(r, "") for r in order[: n_fast + n_slow]]
    sample_log = next(iter(logs.values())) if logs else pd.DataFrame()
    panels = _panels(list(sample_log.columns), criterion.column if criterion else None)
    if not panels or not chosen:
        fig = _figure(7, 3)
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no accuracy or loss columns in log.csv", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    n_states = int(max(int(np.max(states[r]["state"])) for r, _ in chosen)) + 1
    fig = _figure(5.5 * len(panels), 2.2 * len(chosen) + 0.8)
    axes = np.atleast_2d(fig.subplots(len(chosen), len(panels), sharex=False, squeeze=False))
    for row, (run_id, kind) in enumerate(chosen):
        log = logs[run_id]
        st = states[run_id]
        steps = st["step"].to_numpy(float)
        bounds = np.concatenate([[steps[0]], (steps[1:] + steps[:-1]) / 2, [steps[-1]]])
        for col, name in enumerate(panels):
            ax = axes[row, col]
            for a, b, s in _segments(st["state"].to_numpy()):
                ax.axvspan(bounds[a], bounds[b], color=STATE_COLORS[s % len(STATE_COLORS)], alpha=0.22, lw=0)
            ax.plot(log["step"], log[name], color="black", lw=1.2)
            c = conv.get(run_id, np.nan)
            if criterion is not None and name == criterion.column:
                ax.axhline(criterion.threshold, color="#d62728", ls="--", lw=1, label=f"threshold {criterion.threshold:g}")
            if np.isfinite(c):
                ax.axvline(c, color="#d62728", ls=":", lw=1.2)
            ax.set_ylabel(name.replace("_", " "), fontsize=10)
            ax.grid(alpha=0.25)
            if row == len(chosen) - 1:
                ax.set_xlabel("step", fontsize=10)
            if col == 0:
                converged = bool(convergence.loc[run_id, "converged"]) if run_id in convergence.index else False
                label = (f"converged at step {c:,.0f}" if converged else
                         "never converged" if np.isfinite(c) else "convergence undefined")
                ax.set_title(f"run {run_id}" + (f" ({kind})" if kind else "") + f" — {label}", fontsize=10, loc="left")
    handles = [Patch(color=STATE_COLORS[k % len(STATE_COLORS)], alpha=0.5, label=f"state {k}") for k in range(n_states)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(n_states, 8), fontsize=9, title="decoded HMM state")
    fig.suptitle(("Fastest and slowest runs" if defined else "Runs") + (f" — {title}" if title else "")
                 + "\n(dotted line: convergence step)", fontsize=12)
    return fig

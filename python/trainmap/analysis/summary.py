"""What happened, in words: per experiment, the numbers a reader checks first and every
warning the stages recorded, from regression.json (written by ``regress``, which carries
the HMM stage's warnings along). Written to ``results/summary.md`` by the tables stage and
printed on the console when a workflow run ends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from trainmap.io import atomic
from trainmap.analysis import display
from trainmap.io.contracts import ExperimentPaths, RegressionFileError, RegressionRecord
from trainmap.io.fileguard import input_file

__all__ = ["headline", "table_notes", "render_summary", "write_summary"]


def headline(reg: RegressionRecord) -> str:
    """One line of key numbers: ``10 runs (2 censored), 4 states (diag), R² 0.830 (LOO
    0.610), concordance 0.780``."""
    runs = f"{reg.n_runs} runs"
    if reg.n_censored:
        runs += f" ({reg.n_censored} censored)"
    covariance = (reg.hmm or {}).get("covariance")
    states = f"{reg.n_states} state{'s' if reg.n_states != 1 else ''}"
    if covariance:
        states += f" ({covariance})"
    return (f"{runs}, {states}, R² {display.r2(reg.r2)} (LOO {display.r2(reg.r2_loo)}), "
            f"concordance {display.r2(reg.concordance)}")


def table_notes(reg: RegressionRecord) -> str:
    """The short ``notes`` cell of Table 1: what limits the row's numbers."""
    notes = []
    if reg.n_states == 1:
        notes.append("1 state chosen")
    loo = reg.r2_loo
    notes_text = [str(n) for n in reg.notes or []]
    if not display.missing(loo) and float(loo) < 0:
        notes.append("LOO R² < 0")
    elif any(n.startswith("leave-one-out R2 undefined") for n in notes_text):
        notes.append("LOO R² undefined")
    if any("is the largest tried" in n for n in notes_text):
        notes.append("most states tried")
    if reg.n_censored:
        notes.append(f"{reg.n_censored} censored")
    if reg.n_converged == 0:
        notes.append("no run converged")
    failed = (reg.hmm or {}).get("failed_fits")
    if failed:
        notes.append(f"{failed} failed fits")
    if any("another step" in n or "another number of checkpoints" in n for n in notes_text):
        notes.append("unequal runs")
    if any("not identifiable" in n for n in notes_text):
        notes.append("unidentifiable coefficients")
    return "; ".join(notes)


def _read(directory) -> tuple[RegressionRecord | None, str]:
    path = ExperimentPaths.at(directory).regression_json
    if input_file(path, required=False, what="regression.json") is None:
        return None, f"not analysed yet ({path} is missing)"
    try:
        return RegressionRecord.read(path), ""
    except RegressionFileError as exc:
        return None, str(exc)


def _early_line(directory) -> str:
    """The sentence of early.csv (how early the map knows), or '' when there is none."""
    path = ExperimentPaths.at(directory).early_csv
    if input_file(path, required=False, what="early.csv") is None:
        return ""
    import pandas as pd

    from trainmap.analysis.early import early_sentence

    try:
        return early_sentence(pd.read_csv(path))
    except (ValueError, KeyError) as exc:
        return f"{path}: unreadable ({exc})"


def render_summary(experiments: Mapping[str, str | os.PathLike]) -> str:
    """The summary of ``experiments`` (name → ``results/{exp}``) as Markdown: a table of
    key numbers, then each experiment's warnings."""
    lines = ["# trainmap summary", "",
             "| experiment | runs | checkpoints per run | states | covariance | failed fits | converged | censored "
             "| R² | LOO R² | concordance | detour states |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    details = []
    earliness: list[str] = []
    for name, directory in experiments.items():
        reg, problem = _read(directory)
        if reg is None:
            lines.append(f"| {name} | {problem} |" + " |" * 10)
            continue
        hmm = reg.hmm or {}
        per_run = reg.checkpoints_per_run or {}
        checkpoints = (f"{per_run.get('min')}–{per_run.get('max')}" if per_run.get("min") != per_run.get("max")
                       else f"{per_run.get('min')}") if per_run else "?"
        failed = f"{hmm.get('failed_fits', 0)} of {hmm.get('fits', '?')}" if hmm else "?"
        detours = ", ".join(str(s) for s in reg.detour_states) or "none"
        unknown = lambda x: "?" if x is None else x  # noqa: E731  (keys older files lack)
        lines.append(
            f"| {name} | {reg.n_runs} | {checkpoints} | {reg.n_states} | {hmm.get('covariance', '?')} "
            f"| {failed} | {unknown(reg.n_converged)} | {unknown(reg.n_censored)} | {display.r2(reg.r2)} "
            f"| {display.r2(reg.r2_loo)} | {display.r2(reg.concordance)} | {detours} |")
        notes = [str(n) for n in reg.notes]
        early = _early_line(directory)
        if early:
            earliness.append(f"- **{name}**: {early}.")
        if notes:
            details.append(f"\n**{name}** ({reg.criterion_text}):\n")
            details += [f"- {note}" for note in notes]
    if earliness:
        lines += ["", "## How early the map knows", "",
                  "(first prefix of training from which the decoded states predict the convergence step with "
                  "leave-one-out R² of at least 0.5 at every longer prefix; early.csv)", ""] + earliness
    if details:
        lines += ["", "## Warnings"] + details
    else:
        lines += ["", "No warnings."]
    return "\n".join(lines) + "\n"


def write_summary(experiments: Mapping[str, str | os.PathLike], path: str | os.PathLike) -> Path:
    """Write :func:`render_summary` to ``path`` (atomically); returns the path."""
    atomic.write_text(path, render_summary(experiments))
    return Path(path)

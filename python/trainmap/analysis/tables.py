"""Cross-experiment tables like the paper's Tables 1, 2 and 4.

An experiment directory ``DIR`` (``results/{exp}``) provides:

* ``DIR/regression.json`` (:class:`~trainmap.io.contracts.RegressionRecord`; a file
  without one of its keys is one error naming the file, except the keys older files lack,
  ``REGRESSION_OPTIONAL``, which show as empty) — Table 1 (convergence criterion, runs, censored runs,
  checkpoints per run, states and covariance, R², adjusted and leave-one-out R², p-value,
  the Cox model's concordance, dissimilarity, forking, and a short ``notes`` cell);
* ``DIR/coefficients.csv`` — Table 2 (state, coefficient, runs_visiting, detour, hazard
  ratio and its p-value, and why a coefficient is not identifiable);
* ``DIR/hmm/selection.csv`` — the HMM row of Table 4 (chosen n and its held-out BIC, summed
  over folds: :func:`~trainmap.analysis.hmm_select.selection_summary`);

Numbers in the CSV tables are rounded as they are shown (:mod:`trainmap.analysis.display`:
R² to three decimals, never ``2.2e-16``); regression.json and coefficients.csv keep full
precision.
* ``DIR/baselines.csv`` — the k-means and HMM-on-l2 rows of Table 4 (optional: missing
  means those rows are left out, with a warning).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from trainmap.io import atomic
from trainmap.analysis import display
from trainmap.analysis.errors import AnalysisError
from trainmap.analysis.hmm_select import SUMMARY_INPUT_COLUMNS, selection_summary
from trainmap.analysis.summary import table_notes, write_summary
from trainmap.io.contracts import SUMMARY_MD, TABLES, ExperimentPaths, RegressionFileError, RegressionRecord
from trainmap.io.fileguard import InputFileError, input_file, read_csv


__all__ = [
    "TABLE1_COLUMNS",
    "TABLE2_COLUMNS",
    "TABLE4_COLUMNS",
    "table1",
    "table2",
    "table4",
    "markdown_table",
    "write_tables",
]

TABLE1_COLUMNS = ["experiment", "convergence", "n_runs", "n_censored", "checkpoints", "n_states", "covariance", "r2",
                  "r2_adjusted", "r2_loo", "p_value", "concordance", "dissimilarity", "forking", "notes"]
TABLE2_COLUMNS = ["experiment", "state", "coefficient", "runs_visiting", "detour", "hazard_ratio", "hazard_p_value",
                  "note"]
# Rounding of the CSV tables (as shown): column -> decimals.
_ROUND = {"r2": 3, "r2_adjusted": 3, "r2_loo": 3, "concordance": 3, "dissimilarity": 3, "coefficient": 1}
TABLE4_COLUMNS = ["experiment", "method", "components", "bic"]


def _need(path: Path) -> Path:
    if input_file(path, required=False, what=path.name) is None:
        raise AnalysisError(f"{path}: missing (run the earlier stages for this experiment first)")
    return path


def _read_regression(path: Path) -> RegressionRecord:
    try:
        return RegressionRecord.read(_need(path))
    except RegressionFileError as exc:
        raise AnalysisError(str(exc)) from None


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A CSV input of the tables with the columns they use, or one error naming the file."""
    try:
        return read_csv(_need(path), columns=columns, what=path.name)
    except InputFileError as exc:
        raise AnalysisError(str(exc)) from None


def _field(record: Mapping, key: str, kind: Callable, path: Path, default=None):
    """``kind(record[key])`` (``default`` when absent or null), or an error naming file and key."""
    value = record.get(key)
    if value is None:
        return default
    try:
        if isinstance(value, (dict, list)) or (kind is not bool and isinstance(value, (bool, str))):
            raise TypeError(type(value).__name__)
        return kind(value)
    except (TypeError, ValueError):
        expected = {int: "an integer", float: "a number", bool: "true or false"}[kind]
        raise AnalysisError(f"{path}: key {key!r} must be {expected}, found {value!r}") from None


def table1(experiments: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """Table 1: one row per experiment from ``DIR/regression.json``."""
    rows = []
    for name, directory in experiments.items():
        path = ExperimentPaths.at(directory).regression_json
        reg = _read_regression(path)
        nan = float("nan")
        per_run = reg.checkpoints_per_run or {}
        hmm = reg.hmm or {}
        # Keys older files lack (REGRESSION_OPTIONAL) show as 0 censored, an empty cell or NaN.
        rows.append({
            "experiment": name,
            "convergence": reg.criterion_text,
            "n_runs": reg.n_runs,
            "n_censored": reg.n_censored or 0,
            "checkpoints": _field(per_run, "median", float, path, nan),
            "n_states": reg.n_states,
            "covariance": str(hmm.get("covariance") or ""),
            "r2": reg.r2,
            "r2_adjusted": reg.r2_adjusted,
            "r2_loo": reg.r2_loo,
            "p_value": reg.p_value,
            "concordance": nan if reg.concordance is None else reg.concordance,
            "dissimilarity": reg.dissimilarity,
            "forking": bool(reg.forking),
            "notes": table_notes(reg),
        })
    return _rounded(pd.DataFrame(rows, columns=TABLE1_COLUMNS))


def _rounded(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its numbers rounded as shown (``_ROUND``; p-values to 4 significant
    digits; -0.0 as 0.0)."""
    frame = frame.copy()
    for column, digits in _ROUND.items():
        if column in frame:
            frame[column] = frame[column].astype(float).round(digits) + 0.0
    for column in ("p_value", "hazard_p_value", "hazard_ratio"):
        if column in frame:
            frame[column] = [float(f"{x:.4g}") if np.isfinite(x) else np.nan for x in frame[column].astype(float)]
    return frame


def table2(experiments: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """Table 2: one row per (experiment, state) from ``DIR/coefficients.csv``."""
    frames = []
    for name, directory in experiments.items():
        coef = _read_table(ExperimentPaths.at(directory).coefficients_csv, ("state", "coefficient"))
        frame = coef.reindex(columns=["state", "coefficient", "runs_visiting", "detour", "hazard_ratio",
                                      "hazard_p_value", "note", "hazard_note"]).copy()
        frame.insert(0, "experiment", name)
        frame["detour"] = frame["detour"].fillna(False).astype(bool)
        frame["note"] = [_state_note(ols, cox) for ols, cox in
                         zip(_text(frame["note"]), _text(frame["hazard_note"]))]
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=TABLE2_COLUMNS)
    return _rounded(pd.concat(frames, ignore_index=True)[TABLE2_COLUMNS])


def _text(column: pd.Series) -> list[str]:
    """A notes column as text: an empty cell (NaN, read back from an empty CSV field) is ''."""
    return ["" if pd.isna(v) else str(v) for v in column]


def _state_note(ols: str, cox: str) -> str:
    """One note of why a state's coefficient and/or hazard ratio are not identifiable."""
    if not cox or cox == ols:
        return ols
    return "; ".join(([f"coefficient: {ols}"] if ols else []) + [f"hazard ratio: {cox}"])


def table4(experiments: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """Table 4: per experiment, the chosen number of components and held-out BIC of
    k-means, the HMM on ``l2`` and the full HMM."""
    rows = []
    for name, directory in experiments.items():
        paths = ExperimentPaths.at(directory)
        base_path = paths.baselines_csv
        if input_file(base_path, required=False, what="baselines.csv") is not None:
            base = _read_table(base_path, ("method", "chosen", "n_components", "bic"))
            for method in ("kmeans", "hmm_l2"):
                chosen = base[(base["method"] == method) & base["chosen"].astype(bool)]
                if len(chosen):
                    rows.append({"experiment": name, "method": method,
                                 "components": int(chosen["n_components"].iloc[0]), "bic": float(chosen["bic"].iloc[0])})
                else:
                    rows.append({"experiment": name, "method": method, "components": pd.NA, "bic": np.nan})
        else:
            warnings.warn(f"{base_path}: missing, Table 4 has no baseline rows for {name}", RuntimeWarning, stacklevel=2)
        sel = _read_table(paths.selection_csv, SUMMARY_INPUT_COLUMNS)
        summary = selection_summary(sel)
        chosen = summary[summary["chosen"].astype(bool)]
        rows.append({"experiment": name, "method": "hmm",
                     "components": int(chosen["n_components"].iloc[0]) if len(chosen) else pd.NA,
                     "bic": float(chosen["bic"].iloc[0]) if len(chosen) else np.nan})
    frame = pd.DataFrame(rows, columns=TABLE4_COLUMNS)
    frame["components"] = frame["components"].astype("Int64")
    return frame


def _fmt_plain(x) -> str:
    return display.DASH if x is None or x is pd.NA or (isinstance(x, float) and not np.isfinite(x)) else str(x)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: ``|`` escaped, line breaks as spaces."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame, formats: Mapping[str, Callable[[object], str]] | None = None,
                   headers: Mapping[str, str] | None = None, bold_rows: pd.Series | None = None) -> str:
    """A GitHub-flavoured Markdown table of ``frame`` (``formats`` per column, ``headers``
    renaming columns, ``bold_rows`` a boolean mask of rows set in bold)."""
    formats = dict(formats or {})
    headers = dict(headers or {})
    cols = list(frame.columns)
    lines = ["| " + " | ".join(headers.get(c, c) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for i in range(len(frame)):
        # column by column: iterrows would turn integers into floats in mixed frames
        cells = [_cell(formats.get(c, _fmt_plain)(frame[c].iloc[i])) for c in cols]
        if bold_rows is not None and bool(bold_rows.iloc[i]):
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(experiments: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write table1/2/4 as CSV and Markdown, and summary.md, into ``out_dir`` (atomically);
    returns the paths."""
    if not experiments:
        raise AnalysisError("no experiments given")
    out_dir = Path(out_dir)
    t1, t2, t4 = table1(experiments), table2(experiments), table4(experiments)
    paths = {}
    for name, frame in zip((f"table{n}" for n in TABLES), (t1, t2, t4)):
        paths[f"{name}.csv"] = out_dir / f"{name}.csv"
        atomic.write_csv(paths[f"{name}.csv"], frame)
    md1 = ("Table 1: predictability of the convergence step (first step meeting the convergence "
           "criterion) from the bag of states. R², adjusted R², leave-one-out cross-validated R² (each run "
           "predicted by the fit on the others) and the F-test p-value are those of the paper's OLS, on the runs "
           "that converged; censored runs (never meeting the criterion) are counted, and enter the Cox model, "
           "whose concordance index (0.5 chance, 1 perfect) uses every run. Trajectory dissimilarity (Eq. 1) "
           "and whether the training map forks; notes say what limits a row.\n\n"
           + markdown_table(
               t1,
               {"r2": display.r2, "r2_adjusted": display.r2, "r2_loo": display.r2, "p_value": display.p_value,
                "concordance": display.r2, "dissimilarity": display.r2, "checkpoints": display.steps,
                "forking": lambda x: "✓" if bool(x) else ""},
               {"convergence": "Convergence", "n_runs": "runs", "n_censored": "censored",
                "checkpoints": "checkpoints/run", "n_states": "states", "covariance": "covariance", "r2": "R²",
                "r2_adjusted": "adj. R²", "r2_loo": "LOO R²", "p_value": "p-value", "concordance": "concordance",
                "dissimilarity": "Dissimilarity", "forking": "Forking", "experiment": "Experiment", "notes": "notes"},
           ))
    md2 = ("Table 2: per state, the OLS coefficient (effect on the convergence step, in steps, of moving "
           "occupancy into the state from the average run's mix) and the Cox model's hazard ratio for the same "
           "move (below 1: slower convergence). Detour states are bold; a coefficient the data cannot identify "
           "is blank, with the reason.\n\n"
           + markdown_table(
               t2, {"coefficient": display.steps, "detour": lambda x: "detour" if bool(x) else "",
                    "hazard_ratio": display.ratio, "hazard_p_value": display.p_value},
               {"experiment": "Experiment", "state": "State", "coefficient": "Coefficient",
                "runs_visiting": "Runs visiting", "detour": "Detour", "hazard_ratio": "Hazard ratio",
                "hazard_p_value": "p (hazard)", "note": "Note"},
               bold_rows=t2["detour"].astype(bool),
           ))
    md4 = ("Table 4: number of components chosen by held-out BIC, and that BIC, for k-means, an HMM on "
           "the L2 norm alone and the full HMM (BICs are not comparable across model classes).\n\n"
           + markdown_table(
               t4.assign(method=t4["method"].map({"kmeans": "k-means", "hmm_l2": "HMM-1 (L2)", "hmm": "HMM"})),
               {"bic": display.bic},
               {"experiment": "Experiment", "method": "Method", "components": "Components", "bic": "BIC"},
           ))
    for name, text in (("table1.md", md1), ("table2.md", md2), ("table4.md", md4)):
        paths[name] = out_dir / name
        atomic.write_text(paths[name], text)
    paths[SUMMARY_MD] = write_summary(experiments, out_dir / SUMMARY_MD)
    return paths

"""Cross-experiment tables like the paper's Tables 1, 2 and 4.

An experiment directory ``DIR`` (``results/{exp}``) provides:

* ``DIR/regression.json`` — Table 1 (convergence criterion, n_runs, n_states, r2,
  r2_adjusted, r2_loo, p_value, dissimilarity, forking);
* ``DIR/coefficients.csv`` — Table 2 (state, coefficient, runs_visiting, detour);
* ``DIR/hmm/selection.csv`` — the HMM row of Table 4 (chosen n and its held-out BIC);
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

from trainmap import atomic
from trainmap.analysis.errors import AnalysisError
from trainmap.contracts import TABLES, ExperimentPaths
from trainmap.fileguard import InputFileError, input_file, read_csv, read_json_object

# Columns of selection.csv Table 4 reads.
_SELECTION_COLUMNS = ("n_components", "chosen", "bic")

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

TABLE1_COLUMNS = ["experiment", "convergence", "n_runs", "n_states", "r2", "r2_adjusted", "r2_loo", "p_value",
                  "dissimilarity", "forking"]
TABLE2_COLUMNS = ["experiment", "state", "coefficient", "runs_visiting", "detour"]
TABLE4_COLUMNS = ["experiment", "method", "components", "bic"]


def _need(path: Path) -> Path:
    if input_file(path, required=False, what=path.name) is None:
        raise AnalysisError(f"{path}: missing (run the earlier stages for this experiment first)")
    return path


def _read_json(path: Path) -> dict:
    try:
        return read_json_object(_need(path), what=path.name)
    except InputFileError as exc:
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
        reg = _read_json(path)
        nan = float("nan")
        rows.append({
            "experiment": name,
            "convergence": str((reg.get("convergence") if isinstance(reg.get("convergence"), dict) else {}).get("text", "")),
            "n_runs": _field(reg, "n_runs", int, path, 0),
            "n_states": _field(reg, "n_states", int, path, 0),
            "r2": _field(reg, "r2", float, path, nan),
            "r2_adjusted": _field(reg, "r2_adjusted", float, path, nan),
            "r2_loo": _field(reg, "r2_loo", float, path, nan),
            "p_value": _field(reg, "p_value", float, path, nan),
            "dissimilarity": _field(reg, "dissimilarity", float, path, nan),
            "forking": _field(reg, "forking", bool, path, False),
        })
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)


def table2(experiments: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """Table 2: one row per (experiment, state) from ``DIR/coefficients.csv``."""
    frames = []
    for name, directory in experiments.items():
        coef = _read_table(ExperimentPaths.at(directory).coefficients_csv, ("state", "coefficient"))
        frame = coef.reindex(columns=["state", "coefficient", "runs_visiting", "detour"]).copy()
        frame.insert(0, "experiment", name)
        frame["detour"] = frame["detour"].fillna(False).astype(bool)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=TABLE2_COLUMNS)
    return pd.concat(frames, ignore_index=True)[TABLE2_COLUMNS]


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
        sel = _read_table(paths.selection_csv, _SELECTION_COLUMNS)
        chosen = sel[sel["chosen"].astype(bool)]
        rows.append({"experiment": name, "method": "hmm",
                     "components": int(chosen["n_components"].iloc[0]) if len(chosen) else pd.NA,
                     "bic": float(chosen["bic"].iloc[0]) if len(chosen) else np.nan})
    frame = pd.DataFrame(rows, columns=TABLE4_COLUMNS)
    frame["components"] = frame["components"].astype("Int64")
    return frame


def _fmt_float(digits: int) -> Callable[[object], str]:
    def fmt(x) -> str:
        if x is None or (isinstance(x, float) and not np.isfinite(x)) or x is pd.NA:
            return "–"
        return f"{float(x):.{digits}f}"
    return fmt


def _fmt_p(x) -> str:
    if x is None or x is pd.NA or not np.isfinite(float(x)):
        return "–"
    return "< 0.001" if float(x) < 0.001 else f"{float(x):.3f}"


def _fmt_bic(x) -> str:
    if x is None or x is pd.NA or not np.isfinite(float(x)):
        return "–"
    return f"{float(x):.4g}" if abs(float(x)) < 1e4 else f"{float(x):.0f}"


def _fmt_plain(x) -> str:
    return "–" if x is None or x is pd.NA or (isinstance(x, float) and not np.isfinite(x)) else str(x)


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
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(experiments: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write table1/2/4 as CSV and Markdown into ``out_dir`` (atomically); returns the paths."""
    if not experiments:
        raise AnalysisError("no experiments given")
    out_dir = Path(out_dir)
    t1, t2, t4 = table1(experiments), table2(experiments), table4(experiments)
    paths = {}
    for name, frame in zip((f"table{n}" for n in TABLES), (t1, t2, t4)):
        paths[f"{name}.csv"] = out_dir / f"{name}.csv"
        atomic.write_csv(paths[f"{name}.csv"], frame)
    md1 = ("Table 1: predictability of the convergence step (first step meeting the convergence "
           "criterion) from the bag of states: centred R², adjusted R², leave-one-out cross-validated R² "
           "(each run predicted by the fit on the others), F-test p-value; trajectory dissimilarity (Eq. 1) "
           "and whether the training map forks.\n\n"
           + markdown_table(
               t1,
               {"r2": _fmt_float(3), "r2_adjusted": _fmt_float(3), "r2_loo": _fmt_float(3), "p_value": _fmt_p,
                "dissimilarity": _fmt_float(3), "forking": lambda x: "✓" if bool(x) else ""},
               {"convergence": "Convergence", "n_runs": "runs", "n_states": "states", "r2": "R²",
                "r2_adjusted": "adj. R²", "r2_loo": "LOO R²", "p_value": "p-value",
                "dissimilarity": "Dissimilarity", "forking": "Forking", "experiment": "Experiment"},
           ))
    md2 = ("Table 2: regression coefficients per state (effect on the convergence step, in steps, of "
           "moving occupancy into the state). Detour states are bold.\n\n"
           + markdown_table(
               t2, {"coefficient": _fmt_float(1), "detour": lambda x: "detour" if bool(x) else ""},
               {"experiment": "Experiment", "state": "State", "coefficient": "Coefficient",
                "runs_visiting": "Runs visiting", "detour": "Detour"},
               bold_rows=t2["detour"].astype(bool),
           ))
    md4 = ("Table 4: number of components chosen by held-out BIC, and that BIC, for k-means, an HMM on "
           "the L2 norm alone and the full HMM (BICs are not comparable across model classes).\n\n"
           + markdown_table(
               t4.assign(method=t4["method"].map({"kmeans": "k-means", "hmm_l2": "HMM-1 (L2)", "hmm": "HMM"})),
               {"bic": _fmt_bic},
               {"experiment": "Experiment", "method": "Method", "components": "Components", "bic": "BIC"},
           ))
    for name, text in (("table1.md", md1), ("table2.md", md2), ("table4.md", md4)):
        paths[name] = out_dir / name
        atomic.write_text(paths[name], text)
    return paths

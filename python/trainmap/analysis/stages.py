"""File-in, file-out stages of the analysis, one per CLI command (and Snakemake rule).

Each function reads run directories and earlier outputs, calls the library, and writes its
outputs atomically. They hold no logic of their own beyond wiring; see ``docs/analysis.md``
for the files and their columns.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from trainmap import atomic
from trainmap.analysis import baselines as _baselines
from trainmap.analysis import figures as _figures
from trainmap.analysis.errors import RunFormatError
from trainmap.analysis.hmm import (
    DEFAULT_MIN_COVAR,
    DEFAULT_N_ITER,
    DEFAULT_TOL,
    decode_states,
    load_model,
    save_model,
    select_hmm,
)
from trainmap.analysis.regression import (
    RegressionResult,
    convergence_table,
    dissimilarity,
    occupancy,
    state_regression,
)
from trainmap.analysis.runs import MIN_RUNS, Run, Trajectories, load_runs, prepare_trajectories
from trainmap.analysis.tables import write_tables
from trainmap.analysis.training_map import forking, state_summary, training_map

__all__ = [
    "hmm_select",
    "hmm_decode",
    "read_states",
    "map_stage",
    "regress",
    "baselines",
    "figures",
    "tables",
    "experiment_name",
]

Progress = Callable[[int, int], object]


def experiment_name(run_dirs: Sequence[str | os.PathLike]) -> str:
    """Experiment name implied by the layout ``results/{exp}/runs/{seed}`` (the directory
    above ``runs``), else the common parent's name."""
    parents = {Path(d).resolve().parent for d in run_dirs}
    if len(parents) == 1:
        parent = parents.pop()
        return parent.parent.name if parent.name == "runs" else parent.name
    return ""


def hmm_select(
    run_dirs: Sequence[str | os.PathLike],
    selection_path: str | os.PathLike,
    model_path: str | os.PathLike,
    *,
    max_components: int = 8,
    restarts: int = 5,
    covariance: str = "full",
    zscore_first_n: int = 1000,
    min_checkpoints: int = 2,
    min_runs: int = MIN_RUNS,
    test_fraction: float = 0.2,
    seed: int = 0,
    n_iter: int = DEFAULT_N_ITER,
    tol: float = DEFAULT_TOL,
    min_covar: float = DEFAULT_MIN_COVAR,
    threads: int = 1,
    progress: Progress | None = None,
):
    """``trainmap hmm-select``: z-score the runs, select the HMM by held-out BIC, write
    selection.csv and model.npz. Returns the :class:`~trainmap.analysis.hmm.HMMSelection`."""
    runs = load_runs(run_dirs)
    traj = prepare_trajectories(runs, zscore_first_n=zscore_first_n, min_checkpoints=min_checkpoints, min_runs=min_runs)
    sel = select_hmm(
        traj.data, max_components=max_components, n_restarts=restarts, covariance_type=covariance,
        test_fraction=test_fraction, seed=seed, n_iter=n_iter, tol=tol, min_covar=min_covar,
        threads=threads, run_ids=traj.run_ids, progress=progress,
    )
    metadata = {
        "seed": seed,
        "n_restarts": restarts,
        "max_components": max_components,
        "restart": sel.restart,
        "test_fraction": test_fraction,
        "train_runs": [str(r) for r in sel.train_runs],
        "test_runs": [str(r) for r in sel.test_runs],
        "excluded_runs": sorted(traj.excluded),
        "dropped_columns": sorted(traj.dropped_columns),
    }
    save_model(model_path, sel.model, features=traj.features, zscore_first_n=zscore_first_n, metadata=metadata)
    atomic.write_csv(selection_path, sel.table)
    return sel


def _decoding_inputs(run_dirs, model_path) -> tuple[object, Trajectories, list[Run]]:
    saved = load_model(model_path)
    runs = load_runs(run_dirs)
    traj = prepare_trajectories(runs, features=saved.features, zscore_first_n=saved.zscore_first_n, min_runs=1)
    return saved, traj, runs


def hmm_decode(run_dirs: Sequence[str | os.PathLike], model_path: str | os.PathLike,
               states_path: str | os.PathLike) -> pd.DataFrame:
    """``trainmap hmm-decode``: Viterbi path of every usable run → states.csv (``run``,
    ``step``, ``state``). Returns the frame."""
    saved, traj, _ = _decoding_inputs(run_dirs, model_path)
    paths = decode_states(saved.model, traj.data)
    frame = pd.concat(
        [pd.DataFrame({"run": rid, "step": steps, "state": path})
         for rid, steps, path in zip(traj.run_ids, traj.steps, paths)],
        ignore_index=True,
    )
    atomic.write_csv(states_path, frame)
    return frame


def read_states(path: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """states.csv as ``{run_id: frame(step, state)}`` in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    frame = pd.read_csv(path, dtype={"run": str})
    missing = {"run", "step", "state"} - set(frame.columns)
    if missing:
        raise RunFormatError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    out = {}
    for run_id, group in frame.groupby("run", sort=False):
        out[str(run_id)] = group[["step", "state"]].astype({"step": "int64", "state": "int64"}).reset_index(drop=True)
    if not out:
        raise RunFormatError(f"{path}: no decoded runs")
    return out


def _runs_for_states(run_dirs, states: Mapping[str, pd.DataFrame]) -> dict[str, Run]:
    runs = {r.run_id: r for r in load_runs(run_dirs)}
    absent = [r for r in states if r not in runs]
    if absent:
        raise RunFormatError(
            f"states.csv has run(s) {', '.join(absent[:10])} that are not among the run directories given"
        )
    extra = [r for r in runs if r not in states]
    if extra:
        warnings.warn(f"run(s) not in states.csv (left out when decoding) are ignored: {', '.join(extra[:20])}",
                      RuntimeWarning, stacklevel=3)
    return {r: runs[r] for r in states}


def _convergence(runs: Mapping[str, Run], threshold: float, column: str) -> pd.DataFrame:
    return convergence_table({rid: run.log for rid, run in runs.items()}, threshold, column)


def _n_states(states: Mapping[str, pd.DataFrame], model_path) -> int:
    if model_path is not None:
        return int(load_model(model_path).model.n_components)
    return int(max(int(f["state"].max()) for f in states.values())) + 1


def _regression(states, n_states, conv) -> tuple[RegressionResult, pd.DataFrame]:
    occ = occupancy({r: f["state"].to_numpy() for r, f in states.items()}, n_states)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported by the regress stage itself
        result = state_regression(occ, conv["convergence_step"])
    return result, occ


def map_stage(
    run_dirs: Sequence[str | os.PathLike],
    model_path: str | os.PathLike,
    states_path: str | os.PathLike,
    edges_path: str | os.PathLike,
    *,
    threshold: float,
    svg_path: str | os.PathLike | None = None,
    png_path: str | os.PathLike | None = None,
    experiment: str | None = None,
    accuracy_column: str = "eval_accuracy",
    top_k: int = 3,
    html_path: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """``trainmap map``: edges.csv and the training map drawing, and with ``html_path``
    the interactive page (:mod:`trainmap.analysis.interactive`). Detour states are taken
    from the same regression as ``trainmap regress`` (computed here too, so the map does
    not depend on the regression's outputs). Returns the edge frame."""
    saved, traj, all_runs = _decoding_inputs(run_dirs, model_path)
    states = read_states(states_path)
    z_by_run = dict(zip(traj.run_ids, traj.data))
    steps_by_run = dict(zip(traj.run_ids, traj.steps))
    for rid, frame in states.items():
        if rid not in z_by_run:
            raise RunFormatError(f"run {rid} is in states.csv but cannot be read with the model's features")
        if not np.array_equal(frame["step"].to_numpy(), steps_by_run[rid]):
            raise RunFormatError(f"states.csv does not match the checkpoints of run {rid}: rerun hmm-decode")
    runs = {r.run_id: r for r in all_runs if r.run_id in states}
    conv = _convergence(runs, threshold, accuracy_column)
    paths = {r: f["state"].to_numpy() for r, f in states.items()}
    edges = training_map(saved.model, {r: z_by_run[r] for r in states}, paths, saved.features,
                         conv["convergence_step"], top_k=top_k)
    atomic.write_csv(edges_path, edges)
    n_states = int(saved.model.n_components)
    result, _ = _regression(states, n_states, conv)
    summary = state_summary(paths, n_states)
    name = experiment if experiment is not None else experiment_name(run_dirs)
    title = f"Training map — {name}" if name else "Training map"
    title += f"\n{len(states)} runs, {n_states}-state HMM"
    if result.detour_states:
        title += f", detour state(s): {', '.join(map(str, result.detour_states))}"
    if svg_path is not None or png_path is not None:
        graph = _figures.training_map_graph(edges, summary, n_runs=len(states), detour_states=result.detour_states,
                                            title=title, top_k=top_k)
        _figures.write_graph(graph, svg=svg_path, png=png_path)
    if html_path is not None:
        _interactive_map(html_path, edges=edges, states=states, saved=saved, runs=runs, result=result,
                         conv=conv, threshold=threshold, accuracy_column=accuracy_column, experiment=name)
    return edges


# --- the interactive map page (map stage) ------------------------------------------------

def _interactive_map(path, *, edges, states, saved, runs, result, conv, threshold, accuracy_column, experiment):
    """Write the interactive training map: regression.json's and coefficients.csv's content
    (the same regression as ``regress``), the model's means, and every run's metrics and log."""
    from trainmap.analysis.interactive import write_training_map_html
    from trainmap.contracts import RUN, STATES_COLUMNS

    occ = occupancy({r: f["state"].to_numpy() for r, f in states.items()}, int(saved.model.n_components))
    regression = {**result.to_dict(), "n_runs_regression": result.n_runs,
                  "dissimilarity": dissimilarity(occ.to_numpy()), "forking": forking(edges)}
    table = pd.concat([f.assign(**{RUN: r}) for r, f in states.items()], ignore_index=True)[list(STATES_COLUMNS)]
    write_training_map_html(
        path, edges=edges, states=table, model_means=saved.model.means_, features=saved.features,
        metrics={r: run.metrics for r, run in runs.items()}, logs={r: run.log for r, run in runs.items()},
        regression=regression, coefficients=result.coefficients, convergence=conv,
        criterion=f"first logged step with {accuracy_column} > {threshold:g}",
        criterion_column=accuracy_column, threshold=threshold, experiment=experiment,
        zscore_first_n=saved.zscore_first_n,
    )


def regress(
    run_dirs: Sequence[str | os.PathLike],
    states_path: str | os.PathLike,
    edges_path: str | os.PathLike,
    out_path: str | os.PathLike,
    coefficients_path: str | os.PathLike,
    *,
    threshold: float,
    model_path: str | os.PathLike | None = None,
    experiment: str | None = None,
    accuracy_column: str = "eval_accuracy",
    convergence_path: str | os.PathLike | None = None,
) -> dict:
    """``trainmap regress``: regression.json (everything Table 1 needs) and
    coefficients.csv (Table 2), optionally convergence.csv. Returns the JSON dict."""
    states = read_states(states_path)
    runs = _runs_for_states(run_dirs, states)
    conv = _convergence(runs, threshold, accuracy_column)
    n_states = _n_states(states, model_path)
    occ = occupancy({r: f["state"].to_numpy() for r, f in states.items()}, n_states)
    result = state_regression(occ, conv["convergence_step"])
    edges = pd.read_csv(edges_path) if Path(edges_path).is_file() else None
    if edges is None:
        raise FileNotFoundError(f"{edges_path}: no such file (run `trainmap map` first)")
    undefined = [r for r in conv.index if not np.isfinite(conv.loc[r, "convergence_step"])]
    never = [r for r in conv.index if np.isfinite(conv.loc[r, "convergence_step"]) and not conv.loc[r, "converged"]]
    name = experiment if experiment is not None else experiment_name(run_dirs)
    out = {
        "experiment": name,
        "threshold": float(threshold),
        "accuracy_column": accuracy_column,
        "n_runs": len(states),
        "n_runs_regression": result.n_runs,
        **{k: v for k, v in result.to_dict().items() if k != "n_runs"},
        "dissimilarity": dissimilarity(occ.to_numpy()),
        "forking": forking(edges),
        "never_converged": never,
        "undefined_convergence": undefined,
        "runs": [
            {"run": r,
             "convergence_step": float(conv.loc[r, "convergence_step"]),
             "converged": bool(conv.loc[r, "converged"]),
             "fitted": float(result.fitted.get(r, np.nan)) if len(result.fitted) else float("nan"),
             "occupancy": [float(x) for x in occ.loc[r]]}
            for r in conv.index
        ],
    }
    atomic.write_csv(coefficients_path, result.coefficients)
    if convergence_path is not None:
        atomic.write_csv(convergence_path, conv.reset_index())
    atomic.write_json(out_path, out)
    return out


def baselines(
    run_dirs: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    max_components: int = 8,
    restarts: int = 5,
    zscore_first_n: int = 1000,
    min_checkpoints: int = 2,
    min_runs: int = MIN_RUNS,
    test_fraction: float = 0.2,
    seed: int = 0,
    n_iter: int = DEFAULT_N_ITER,
    tol: float = DEFAULT_TOL,
    min_covar: float = DEFAULT_MIN_COVAR,
    threads: int = 1,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """``trainmap baselines``: k-means and HMM-on-l2 rows for every k/n → baselines.csv."""
    runs = load_runs(run_dirs)
    traj = prepare_trajectories(runs, zscore_first_n=zscore_first_n, min_checkpoints=min_checkpoints, min_runs=min_runs)
    table = _baselines.baseline_table(
        traj.data, traj.features, max_components=max_components, n_restarts=restarts,
        test_fraction=test_fraction, seed=seed, n_iter=n_iter, tol=tol, min_covar=min_covar,
        threads=threads, progress=progress,
    )
    atomic.write_csv(out_path, table)
    return table


def figures(
    run_dirs: Sequence[str | os.PathLike],
    selection_path: str | os.PathLike,
    states_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    threshold: float,
    experiment: str | None = None,
    n_fast: int = 3,
    n_slow: int = 3,
    accuracy_column: str = "eval_accuracy",
) -> list[Path]:
    """``trainmap figures``: model_selection, convergence_histogram and trajectories, each
    as PNG and SVG in ``out_dir``. Returns the written paths."""
    out_dir = Path(out_dir)
    name = experiment if experiment is not None else experiment_name(run_dirs)
    selection = pd.read_csv(selection_path)
    states = read_states(states_path)
    runs = _runs_for_states(run_dirs, states)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined convergence is reported by regress and in the figures
        conv = _convergence(runs, threshold, accuracy_column)
    written = []
    written += _figures.save_figure(_figures.selection_figure(selection, title=name), out_dir / "model_selection")
    written += _figures.save_figure(
        _figures.convergence_histogram(conv, threshold=threshold, title=name, accuracy_column=accuracy_column),
        out_dir / "convergence_histogram",
    )
    logs = {r: run.log for r, run in runs.items() if run.log is not None}
    written += _figures.save_figure(
        _figures.trajectories_figure(logs, states, conv, threshold=threshold, n_fast=n_fast, n_slow=n_slow,
                                     title=name, accuracy_column=accuracy_column),
        out_dir / "trajectories",
    )
    return written


def tables(experiments: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, Path]:
    """``trainmap tables``: results/table{1,2,4}.{csv,md}."""
    return write_tables(experiments, out_dir)

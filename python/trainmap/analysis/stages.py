"""File-in, file-out stages of the analysis: one function per CLI command and Snakemake rule,
with the same name (rule ``hmm_select`` → ``trainmap hmm-select`` → :func:`hmm_select`;
the table is in docs/design.md).

Each stage reads its run directories once (:func:`~trainmap.analysis.runs.load_runs`) and
earlier outputs, calls the library, and writes its outputs atomically. Each quantity is
computed by one stage and read by the later ones: convergence steps, detour states and
forking by ``regress`` (regression.json, convergence.csv), read by ``map`` and ``figures``.
See ``docs/analysis.md`` for the files and their columns.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from trainmap.io import atomic, contracts
from trainmap.io.contracts import CompareRecord, RegressionFileError, RegressionRecord, RunPaths
from trainmap.analysis import baselines as _baselines
from trainmap.analysis import figures as _figures
from trainmap.analysis.convergence import (
    CONVERGENCE_COLUMNS,
    Criterion,
    check_log_steps,
    convergence_table,
    never_met_message,
)
from trainmap.analysis.errors import AnalysisError, RunFormatError
from trainmap.analysis.hmm_model import decode_states, load_model, save_model
from trainmap.analysis.hmm_select import HMMSelection, select_hmm
from trainmap.analysis.regression import cox_regression, dissimilarity, occupancy, state_regression
from trainmap.analysis.runs import Run, Trajectories, grid_differences, load_runs, prepare_trajectories
from trainmap.analysis.summary import headline, write_summary
from trainmap.analysis.tables import write_tables
from trainmap.analysis.training_map import edge_table, forking, state_summary
from trainmap.options import (
    BaselineOptions,
    FiguresOptions,
    HMMSelectOptions,
    MapOptions,
    RegressOptions,
)
from trainmap.io.fileguard import read_csv

__all__ = [
    "hmm_select",
    "hmm_decode",
    "regress",
    "map",
    "baselines",
    "figures",
    "tables",
    "compare_select",
    "compare",
    "early",
    "read_states",
    "check_states",
    "experiment_name",
]

Progress = Callable[[int, int], object]


def experiment_name(run_dirs: Sequence[str | os.PathLike]) -> str:
    """Experiment name implied by the layout ``results/{exp}/runs/{run}`` (the directory
    above ``runs``), else the common parent's name."""
    parents = {Path(d).resolve().parent for d in run_dirs}
    if len(parents) == 1:
        parent = parents.pop()
        return parent.parent.name if parent.name == "runs" else parent.name
    return ""


def _name(options, run_dirs) -> str:
    return options.experiment if options.experiment is not None else experiment_name(run_dirs)


def _fit_inputs(run_dirs, options, runs: Sequence[Run] | None = None) -> Trajectories:
    """Usable runs, z-scored, for hmm-select and baselines (the same runs for both);
    ``runs`` already read (a comparison's renamed runs) instead of ``run_dirs``."""
    return prepare_trajectories(list(runs) if runs is not None else load_runs(run_dirs), zscore_first_n=options.zscore_first_n,
                                min_checkpoints=options.min_checkpoints, min_runs=options.min_runs)


def hmm_select(run_dirs: Sequence[str | os.PathLike], selection_path: str | os.PathLike,
               model_path: str | os.PathLike, options: HMMSelectOptions | None = None, *,
               progress: Progress | None = None, runs: Sequence[Run] | None = None) -> HMMSelection:
    """``trainmap hmm-select``: z-score the runs, select the covariance and number of
    states by held-out BIC, write selection.csv and model.npz. What a reader should know
    (runs left out, failed fits, one state chosen, unequal runs...) is warned and kept in
    the model's metadata (``warnings``), from where regress carries it into regression.json.
    ``runs``: runs already read, used instead of ``run_dirs`` (:func:`compare_select`)."""
    options = options or HMMSelectOptions()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traj = _fit_inputs(run_dirs, options, runs)
    for w in caught:  # shown as they came, and kept
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    sel = select_hmm(traj.data, options, run_ids=traj.run_ids, progress=progress)
    found = grid_differences(traj.run_ids, traj.steps) + _selection_notes(sel, options)
    for note in found:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    notes = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] + found
    metadata = {
        "seed": options.seed,
        "n_restarts": options.restarts,
        "max_components": options.max_components,
        "selection": options.selection,
        "covariance": sel.covariance,
        "covariance_option": options.covariance,
        "folds": sel.folds,
        "fits": len(sel.table),
        "failed_fits": sel.failed_fits,
        "failure_reasons": sel.failure_reasons(),
        "restart": sel.restart,
        "test_fraction": options.test_fraction,
        "train_runs": [str(r) for r in sel.train_runs],
        "test_runs": [str(r) for r in sel.test_runs],
        "excluded_runs": sorted(traj.excluded),
        "dropped_columns": sorted(traj.dropped_columns),
        "warnings": notes,
    }
    save_model(model_path, sel.model, features=traj.features, zscore_first_n=options.zscore_first_n,
               metadata=metadata)
    atomic.write_csv(selection_path, sel.table)
    return sel


def _selection_notes(sel: HMMSelection, options: HMMSelectOptions) -> list[str]:
    """Sentences about a selection a reader should not miss."""
    notes = []
    if sel.failed_fits:
        notes.append(f"{sel.failed_fits} of {len(sel.table)} HMM fits failed ({'; '.join(sel.failure_reasons())}); "
                     "see selection.csv")
    if sel.n_components == 1:
        notes.append("the held-out BIC chose 1 state: these runs show no structure the data can support "
                     "(more runs or more records per run may reveal some; see `trainmap check`)")
    elif sel.n_components == options.max_components:
        notes.append(f"the chosen number of states is the largest tried ({options.max_components}): more states may "
                     "fit better (raise hmm max_components)")
    return notes


def _model_trajectories(runs: Sequence[Run], saved) -> Trajectories:
    """The runs z-scored as the model was fitted (its features and window)."""
    return prepare_trajectories(runs, features=saved.features, zscore_first_n=saved.zscore_first_n, min_runs=1)


def hmm_decode(run_dirs: Sequence[str | os.PathLike], model_path: str | os.PathLike,
               states_path: str | os.PathLike) -> pd.DataFrame:
    """``trainmap hmm-decode``: Viterbi path of every usable run → states.csv (``run``,
    ``step``, ``state``). Returns the frame."""
    saved = load_model(model_path)
    traj = _model_trajectories(load_runs(run_dirs), saved)
    paths = decode_states(saved.model, traj.data)
    frame = pd.concat(
        [pd.DataFrame({contracts.RUN: rid, contracts.STEP: steps, contracts.STATE: path})
         for rid, steps, path in zip(traj.run_ids, traj.steps, paths)],
        ignore_index=True,
    )
    atomic.write_csv(states_path, frame)
    return frame


def read_states(path: str | os.PathLike, n_states: int | None = None) -> dict[str, pd.DataFrame]:
    """states.csv as ``{run_id: frame(step, state)}`` in file order. A step or state that is
    not an integer (``1.5`` is not truncated), and with ``n_states`` a state outside
    ``0..n_states-1`` (:func:`check_states`), is an error naming the file."""
    path = Path(path)
    frame = read_csv(path, columns=contracts.STATES_COLUMNS, what="states.csv", dtype={contracts.RUN: str})
    for column in (contracts.STEP, contracts.STATE):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | (values != np.round(values))
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise RunFormatError(f"{path}: run {frame[contracts.RUN].iloc[i]} has {column} "
                                 f"{frame[column].iloc[i]!r}, not an integer")
        frame[column] = values.astype("int64")
    out = {str(run_id): group[[contracts.STEP, contracts.STATE]].reset_index(drop=True)
           for run_id, group in frame.groupby(contracts.RUN, sort=False)}
    if not out:
        raise RunFormatError(f"{path}: no decoded runs")
    if n_states is not None:
        check_states(out, n_states, path)
    return out


def check_states(states: Mapping[str, pd.DataFrame], n_states: int, path) -> None:
    """Refuse decoded states outside ``0..n_states-1`` (a states file of another model),
    naming the file, the run and the state."""
    for run_id, frame in states.items():
        values = frame[contracts.STATE].to_numpy()
        outside = (values < 0) | (values >= n_states)
        if outside.any():
            state = int(values[np.argmax(outside)])
            raise RunFormatError(f"{path}: state {state} (run {run_id}) is not a state of the model, which has "
                                 f"{n_states} (0–{n_states - 1}): rerun hmm-decode with this model")


def _decoded_runs(run_dirs, states: Mapping[str, pd.DataFrame]) -> dict[str, Run]:
    """The run directories' runs that states.csv decodes, loaded once; runs left out when
    decoding are ignored with a warning, decoded runs not given are an error."""
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


def _paths(states: Mapping[str, pd.DataFrame]) -> dict[str, np.ndarray]:
    return {r: f[contracts.STATE].to_numpy() for r, f in states.items()}


def regress(run_dirs: Sequence[str | os.PathLike], states_path: str | os.PathLike, model_path: str | os.PathLike,
            out_path: str | os.PathLike, coefficients_path: str | os.PathLike,
            convergence_path: str | os.PathLike, options: RegressOptions) -> RegressionRecord:
    """``trainmap regress``: convergence steps with censoring (convergence.csv), the
    bag-of-states OLS on the converged runs with detour states, the Cox model on every run,
    dissimilarity and forking (regression.json, everything Table 1 and the summary need)
    and coefficients.csv (Table 2). Returns the record written."""
    if options.convergence is None:
        raise ValueError("regress needs a convergence criterion (--convergence or --threshold)")
    states = read_states(states_path)
    saved = load_model(model_path)
    n_states = int(saved.model.n_components)
    check_states(states, n_states, states_path)
    runs = _decoded_runs(run_dirs, states)
    sources = {rid: str(RunPaths(run.path).log_csv) for rid, run in runs.items()}
    logs = {rid: run.log for rid, run in runs.items()}
    conv = convergence_table(logs, options.convergence, sources)
    for rid, run in runs.items():
        check_log_steps(run.log[contracts.STEP], run.metrics[contracts.STEP], sources[rid])
    notes = [str(n) for n in saved.metadata.get("warnings", [])]
    never = never_met_message(logs, options.convergence)
    if never:
        warnings.warn(never, RuntimeWarning, stacklevel=2)
        notes.append(never)
    paths = _paths(states)
    occ = occupancy(paths, n_states)
    converged = conv["converged"]
    result = state_regression(occ, conv["convergence_step"].where(converged))
    cox = cox_regression(occ, conv["convergence_step"], converged)
    censored = [r for r in conv.index if not conv.loc[r, "converged"]]
    checkpoints = [len(f) for f in states.values()]
    coefficients = result.coefficients.merge(cox.coefficients, on=contracts.STATE, how="left")
    notes += [n for n in result.notes + cox.notes if n not in notes]
    out = RegressionRecord(
        experiment=_name(options, run_dirs),
        convergence=options.convergence.to_dict(),
        n_runs=len(states),
        n_runs_regression=result.n_runs,
        n_converged=int(converged.sum()),
        n_censored=len(censored),
        censored_runs=censored,
        **{k: v for k, v in result.to_dict().items() if k not in ("n_runs", "notes")},
        cox=cox.to_dict(),
        concordance=cox.concordance,
        dissimilarity=dissimilarity(occ.to_numpy()),
        forking=forking(paths),
        checkpoints_per_run={"min": min(checkpoints), "median": float(np.median(checkpoints)),
                             "max": max(checkpoints)},
        hmm={key: saved.metadata.get(key) for key in ("covariance", "folds", "fits", "failed_fits",
                                                       "failure_reasons", "excluded_runs")},
        notes=notes,
        runs=[
            {"run": r,
             "convergence_step": float(conv.loc[r, "convergence_step"]),
             "converged": bool(conv.loc[r, "converged"]),
             "fitted": float(result.fitted.get(r, np.nan)) if len(result.fitted) else float("nan"),
             "occupancy": [float(x) for x in occ.loc[r]]}
            for r in conv.index
        ],
    )
    conv["first_detour_step"] = pd.Series(first_detour_steps(states, result.detour_states))
    atomic.write_csv(coefficients_path, coefficients)
    atomic.write_csv(convergence_path, conv.reset_index()[CONVERGENCE_COLUMNS], index=False)
    out.write(out_path)
    return out


def first_detour_steps(states: Mapping[str, pd.DataFrame], detours: Sequence[int]) -> dict[str, float]:
    """Per run, the first step decoded in one of the ``detours`` states (NaN: never)."""
    out = {}
    for rid, frame in states.items():
        hit = np.isin(frame[contracts.STATE].to_numpy(), list(detours))
        out[rid] = float(frame[contracts.STEP].to_numpy()[np.argmax(hit)]) if hit.any() else float("nan")
    return out


def _check_criterion(given: Criterion | None, recorded: str, source) -> None:
    """``--convergence`` given to map/figures must be the one regress used."""
    if given is not None and str(given) != recorded:
        raise AnalysisError(f"{source} was computed with convergence {recorded}, not {given}: "
                            "rerun regress with the new criterion (or leave out --convergence)")


def read_regression(path: str | os.PathLike) -> RegressionRecord:
    """regression.json (:class:`~trainmap.io.contracts.RegressionRecord`), or one error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (run `trainmap regress` first)")
    try:
        return RegressionRecord.read(path)
    except RegressionFileError as exc:
        raise AnalysisError(str(exc)) from None


def map(run_dirs: Sequence[str | os.PathLike], model_path: str | os.PathLike, states_path: str | os.PathLike,
        regression_path: str | os.PathLike, edges_path: str | os.PathLike, options: MapOptions | None = None, *,
        svg_path: str | os.PathLike | None = None, png_path: str | os.PathLike | None = None,
        html_path: str | os.PathLike | None = None,
        coefficients_path: str | os.PathLike | None = None) -> pd.DataFrame:
    """``trainmap map``: edges.csv, the training map drawing and, with ``html_path``, the
    interactive page (:mod:`trainmap.analysis.interactive`). Detour states and convergence
    steps come from regression.json, the page's coefficients from ``coefficients_path``
    (default: the coefficients.csv beside regression.json; both written by ``regress``).
    Returns the edge frame."""
    options = options or MapOptions()
    states = read_states(states_path)
    saved = load_model(model_path)
    check_states(states, int(saved.model.n_components), states_path)
    reg = read_regression(regression_path)
    _check_criterion(options.convergence, reg.criterion_text, regression_path)
    runs = _decoded_runs(run_dirs, states)
    traj = _model_trajectories(list(runs.values()), saved)
    z_by_run = dict(zip(traj.run_ids, traj.data))
    steps_by_run = dict(zip(traj.run_ids, traj.steps))
    for rid, frame in states.items():
        if rid not in z_by_run:
            raise RunFormatError(f"run {rid} is in states.csv but cannot be read with the model's features")
        if not np.array_equal(frame[contracts.STEP].to_numpy(), steps_by_run[rid]):
            raise RunFormatError(f"states.csv does not match the checkpoints of run {rid}: rerun hmm-decode")
    conv = pd.Series({r["run"]: np.nan if r["convergence_step"] is None else float(r["convergence_step"])
                      for r in reg.runs}, dtype=float)
    paths = _paths(states)
    edges = edge_table(saved.model, z_by_run, paths, saved.features, conv, top_k=options.top_features)
    atomic.write_csv(edges_path, edges)
    if svg_path is not None or png_path is not None:
        n_states = int(saved.model.n_components)
        detours = list(reg.detour_states)
        name = _name(options, run_dirs)
        title = (f"Training map — {name}" if name else "Training map") + f"\n{headline(reg)}"
        title += f"\nconvergence: {reg.criterion_text}"
        if detours:
            title += f"; detour state(s): {', '.join(str(s) for s in detours)}"
        graph = _figures.training_map_graph(edges, state_summary(paths, n_states), n_runs=len(states),
                                            detour_states=detours, title=title, top_k=options.top_features)
        _figures.write_graph(graph, svg=svg_path, png=png_path)
    if html_path is not None:
        _interactive_map(html_path, edges=edges, states=states, saved=saved, runs=runs, reg=reg,
                         coefficients_path=coefficients_path or Path(regression_path).with_name(contracts.COEFFICIENTS_CSV),
                         experiment=_name(options, run_dirs) or "")
    return edges


def _interactive_map(path, *, edges, states, saved, runs, reg, coefficients_path, experiment) -> None:
    """Write the interactive training map from regress's outputs, the model's means and
    every run's metrics and log."""
    from trainmap.analysis.interactive import write_training_map_html

    criterion = Criterion.parse(reg.criterion_text, "regression.json convergence")
    conv = pd.DataFrame(
        {"convergence_step": [np.nan if r["convergence_step"] is None else float(r["convergence_step"])
                              for r in reg.runs],
         "converged": [bool(r["converged"]) for r in reg.runs]},
        index=[r["run"] for r in reg.runs])
    conv["first_detour_step"] = pd.Series(first_detour_steps(states, reg.detour_states), dtype=float)
    coefficients = read_csv(coefficients_path, columns=(contracts.STATE, "coefficient"), what="coefficients.csv")
    table = pd.concat([f.assign(**{contracts.RUN: r}) for r, f in states.items()],
                      ignore_index=True)[list(contracts.STATES_COLUMNS)]
    write_training_map_html(
        path, edges=edges, states=table, model_means=saved.model.means_, features=saved.features,
        metrics={r: run.metrics for r, run in runs.items()}, logs={r: run.log for r, run in runs.items()},
        regression=reg, coefficients=coefficients, convergence=conv, criterion=str(criterion),
        criterion_column=criterion.column, threshold=criterion.threshold, experiment=experiment,
        zscore_first_n=saved.zscore_first_n,
    )


def baselines(run_dirs: Sequence[str | os.PathLike], out_path: str | os.PathLike,
              options: BaselineOptions | None = None, *, progress: Progress | None = None) -> pd.DataFrame:
    """``trainmap baselines``: k-means and HMM-on-l2 rows for every k/n → baselines.csv."""
    options = options or BaselineOptions()
    traj = _fit_inputs(run_dirs, options)
    table = _baselines.baseline_table(traj.data, traj.features, options, progress=progress)
    atomic.write_csv(out_path, table)
    return table


def read_convergence(path: str | os.PathLike) -> pd.DataFrame:
    """convergence.csv indexed by run, checked for its columns and a single criterion."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (run `trainmap regress` first)")
    frame = pd.read_csv(path, dtype={contracts.RUN: str, "criterion": str})
    missing = [c for c in CONVERGENCE_COLUMNS if c not in frame.columns]
    if missing:
        raise AnalysisError(f"{path}: missing column(s) {', '.join(missing)} (rerun regress)")
    if frame["criterion"].nunique() > 1:
        raise AnalysisError(f"{path}: more than one convergence criterion")
    frame["converged"] = frame["converged"].astype(bool)
    return frame.set_index(contracts.RUN)


def figures(run_dirs: Sequence[str | os.PathLike], selection_path: str | os.PathLike,
            states_path: str | os.PathLike, convergence_path: str | os.PathLike, out_dir: str | os.PathLike,
            options: FiguresOptions | None = None) -> list[Path]:
    """``trainmap figures``: model_selection, convergence_histogram and trajectories, each
    as PNG and SVG in ``out_dir``; convergence steps from convergence.csv. Returns the paths."""
    options = options or FiguresOptions()
    out_dir = Path(out_dir)
    name = _name(options, run_dirs)
    selection = read_csv(selection_path, columns=_figures.SELECTION_COLUMNS, what="selection.csv")
    states = read_states(states_path)
    conv = read_convergence(convergence_path)
    criterion = Criterion.parse(conv["criterion"].iloc[0], str(convergence_path)) if len(conv) else None
    if criterion is not None:
        _check_criterion(options.convergence, str(criterion), convergence_path)
    runs = _decoded_runs(run_dirs, states)
    written = []
    written += _figures.save_figure(_figures.selection_figure(selection, title=name), out_dir / "model_selection")
    written += _figures.save_figure(_figures.convergence_histogram(conv, criterion, title=name),
                                    out_dir / "convergence_histogram")
    logs = {r: run.log for r, run in runs.items() if run.log is not None}
    written += _figures.save_figure(
        _figures.trajectories_figure(logs, states, conv, criterion, n_fast=options.fast, n_slow=options.slow,
                                     title=name),
        out_dir / "trajectories",
    )
    return written


def tables(experiments: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, Path]:
    """``trainmap tables``: results/table{1,2,4}.{csv,md}."""
    return write_tables(experiments, out_dir)


# --- comparisons: several experiments on one map (config ``compare:``) -----------------------

def compare_select(conditions: Mapping[str, Sequence[str | os.PathLike]], selection_path: str | os.PathLike,
                   model_path: str | os.PathLike, options: HMMSelectOptions | None = None, *,
                   progress: Progress | None = None) -> HMMSelection:
    """``trainmap compare-select``: :func:`hmm_select` on the runs of every condition
    together, each run named ``{condition}/{run}`` (the same selection, z-scoring and
    restarts as one experiment)."""
    from trainmap.analysis import compare as _compare

    runs, _ = _compare.condition_runs(conditions)
    return hmm_select([r.path for r in runs], selection_path, model_path, options, progress=progress, runs=runs)


def compare(conditions: Mapping[str, Sequence[str | os.PathLike]], criteria: Mapping[str, Criterion],
            model_path: str | os.PathLike, out_dir: str | os.PathLike, *, name: str | None = None) -> CompareRecord:
    """``trainmap compare``: decode every condition's runs with the comparison's model
    (states.csv), then per condition occupancy, the states only it visits, transitions,
    convergence (each condition under its own criterion), dissimilarity within and between
    conditions, the regression with condition indicators, table_compare.{csv,md}, the joint
    map and the occupancy figure, all under ``out_dir`` (:class:`contracts.ComparePaths`).
    Returns regression.json's record."""
    from trainmap.analysis import compare as _compare

    out = contracts.ComparePaths.at(out_dir)
    name = name or out.name
    missing = [c for c in conditions if c not in criteria]
    if missing:
        raise AnalysisError(f"no convergence criterion for condition(s) {', '.join(missing)} (--convergence NAME CRITERION)")
    saved = load_model(model_path)
    n_states = int(saved.model.n_components)
    runs, of = _compare.condition_runs(conditions)
    traj = _model_trajectories(runs, saved)
    by_id = {r.run_id: r for r in runs}
    paths = dict(zip(traj.run_ids, decode_states(saved.model, traj.data)))
    of = {r: of[r] for r in traj.run_ids}
    runs_used = [by_id[r] for r in traj.run_ids]
    if len(set(of.values())) < 2:
        raise AnalysisError("after leaving out unusable runs, fewer than two conditions have runs to compare")
    frame = pd.concat(
        [pd.DataFrame({contracts.CONDITION: of[rid], contracts.RUN: rid, contracts.STEP: steps,
                       contracts.STATE: paths[rid]})
         for rid, steps in zip(traj.run_ids, traj.steps)], ignore_index=True)
    conv_parts = []
    for c in dict.fromkeys(of.values()):
        mine = [r for r in traj.run_ids if of[r] == c]
        logs = {r: by_id[r].log for r in mine}
        sources = {r: str(RunPaths(by_id[r].path).log_csv) for r in mine}
        conv_parts.append(convergence_table(logs, criteria[c], sources))
    conv = pd.concat(conv_parts)
    occ = occupancy(paths, n_states)
    occ_table = _compare.occupancy_table(paths, of, n_states)
    trans = _compare.transition_table(paths, of)
    dissim = _compare.dissimilarity_table(paths, of, n_states)
    summary = _compare.convergence_summary(conv, of)
    table = _compare.compare_table(occ_table, summary, dissim, n_states)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = _compare.condition_regression(occ, conv, of)
    notes = [str(w.message) for w in caught] + list(fit.notes)
    reg = CompareRecord(
        comparison=name,
        conditions={c: [r for r in traj.run_ids if of[r] == c] for c in dict.fromkeys(of.values())},
        convergence={c: str(criteria[c]) for c in dict.fromkeys(of.values())},
        **{"n_states": n_states, **{k: v for k, v in fit.to_dict().items() if k != "notes"}},
        covariates=[{k: (bool(v) if k == "identifiable" else v if isinstance(v, str) else float(v))
                     for k, v in row.items()} for row in fit.covariates.to_dict("records")],
        states=[{"state": int(r["state"]), "coefficient": float(r["coefficient"]),
                 "p_value": float(r["p_value"]), "identifiable": bool(r["identifiable"]), "note": str(r["note"])}
                for r in fit.coefficients.to_dict("records")],
        dissimilarity=dissim.to_dict("records"),
        notes=notes,
        excluded_runs=sorted(traj.excluded),
    )
    criteria_text = {c: str(criteria[c]) for c in dict.fromkeys(of.values())}
    atomic.write_csv(out.states_csv, frame)
    atomic.write_csv(out.occupancy_csv, occ_table)
    atomic.write_csv(out.transitions_csv, trans)
    atomic.write_csv(out.dissimilarity_csv, dissim)
    conv["first_detour_step"] = pd.Series(first_detour_steps(
        {r: frame[frame[contracts.RUN] == r][[contracts.STEP, contracts.STATE]] for r in traj.run_ids},
        fit.detour_states))
    conv_out = conv.reset_index()[CONVERGENCE_COLUMNS]
    conv_out.insert(0, contracts.CONDITION, conv_out[contracts.RUN].map(of))
    atomic.write_csv(out.convergence_csv, conv_out, index=False)
    atomic.write_csv(out.coefficients_csv, fit.coefficients)
    atomic.write_csv(out.table_csv, table)
    early = _compare.early_differences(runs_used, saved, of, summary)
    atomic.write_csv(out.early_csv, early, index=False)
    atomic.write_text(out.table_md, _compare.table_markdown(name, table, dissim, reg, criteria_text, n_states)
                      + "\n" + _compare.early_markdown(early, summary))
    reg.write(out.regression_json)
    title = f"Joint training map — {name}: " + " vs ".join(criteria_text)
    _figures.write_graph(_compare.joint_map_graph(occ_table, trans, n_states, title=title),
                         svg=out.map_svg, png=out.map_png)
    _joint_interactive_map(out.map_html, name=name, saved=saved, traj=traj, paths=paths, frame=frame,
                           runs=runs_used, conv=conv, reg=reg, coefficients=fit.coefficients, of=of,
                           occ_table=occ_table, trans=trans, criteria={c: criteria[c] for c in criteria_text})
    _figures.save_figure(_compare.occupancy_figure(paths, of, n_states, title=f"State occupancy over training — {name}"),
                         out.occupancy_figure("png").with_suffix(""))
    _figures.save_figure(_compare.early_figure(early, title=f"How early the conditions' seeds disagree — {name}"),
                         out.early_figure("png").with_suffix(""))
    return reg


def _joint_interactive_map(path, *, name, saved, traj, paths, frame, runs, conv, reg, coefficients, of, occ_table,
                           trans, criteria: Mapping[str, Criterion]) -> None:
    """A comparison's interactive joint map: the experiment page (:mod:`trainmap.analysis.interactive`)
    over every condition's runs, drawn as the joint map, each state and edge also by condition
    (from the occupancy and transition tables the compare stage computed)."""
    from trainmap.analysis import compare as _compare
    from trainmap.analysis.interactive import ConditionUse, write_training_map_html

    use = ConditionUse(of=of, occupancy=occ_table, transitions=trans, colors=_compare.condition_colors(occ_table),
                       criteria={c: str(crit) for c, crit in criteria.items()})
    edges = edge_table(saved.model, dict(zip(traj.run_ids, traj.data)), paths, saved.features,
                       conv["convergence_step"])
    given = list(criteria.values())
    column = given[0].column if len({c.column for c in given}) == 1 else None
    threshold = given[0].threshold if len({(c.column, c.threshold) for c in given}) == 1 else None
    write_training_map_html(
        path, graph=_compare.joint_map_graph(occ_table, trans, int(saved.model.n_components), key=False),
        edges=edges, states=frame[list(contracts.STATES_COLUMNS)],
        model_means=saved.model.means_, features=saved.features,
        metrics={r.run_id: r.metrics for r in runs}, logs={r.run_id: r.log for r in runs},
        regression=reg, coefficients=coefficients, convergence=conv,
        criterion="; ".join(f"{c}: {text}" for c, text in use.criteria.items()), criterion_column=column,
        threshold=threshold, experiment=f"{name} (" + " vs ".join(use.criteria) + ")",
        zscore_first_n=saved.zscore_first_n, conditions=use,
    )


def early(run_dirs: Sequence[str | os.PathLike], model_path: str | os.PathLike, convergence_path: str | os.PathLike,
          early_path: str | os.PathLike, figure_stem: str | os.PathLike | None = None, *,
          experiment: str | None = None) -> pd.DataFrame:
    """``trainmap early``: how early the map knows (:mod:`trainmap.analysis.early`) →
    early.csv and, with ``figure_stem``, its figure (.png and .svg). Returns the table."""
    from trainmap.analysis import early as _early

    saved = load_model(model_path)
    conv = read_convergence(convergence_path)
    runs = [r for r in load_runs(run_dirs) if r.run_id in conv.index]
    if len(runs) < 2:
        raise AnalysisError(f"{convergence_path}: fewer than two of the given runs have a convergence step")
    table = _early.early_table(runs, saved, conv)
    atomic.write_csv(early_path, table)
    if figure_stem is not None:
        name = experiment or experiment_name(run_dirs)
        title = f"How early the map knows — {name}\n{_early.early_sentence(table)}"
        _figures.save_figure(_early.early_figure(table, title=title), figure_stem)
    return table

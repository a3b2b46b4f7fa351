"""Command-line interface: ``trainmap <command> ...``.

Each command parses its arguments and calls the package's functions; no logic lives here.
User errors (bad input files, bad options) print one line and exit with status 2; set
``TRAINMAP_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path

from trainmap.io.contracts import MAP_HTML, MAP_PNG, MAP_SVG
from trainmap.options import (
    BaselineOptions,
    FiguresOptions,
    HMMSelectOptions,
    MapOptions,
    MetricsOptions,
    RegressOptions,
)


# --- options every command declares the same way ------------------------------------------
#
# Paths are declared by role, so that the check that no output overwrites an input
# (_check_outputs) covers every command without a table to keep in step: _output (a file the
# command writes, in a format), _input (a file or directory it reads; a directory stands for
# the files directly inside it) and _place (a directory to write into, a path relative to
# another: not checked).


def _path(value: str) -> Path:
    """argparse type of every path option (declared through _output, _input or _place)."""
    return Path(value)


def _declare(p: argparse.ArgumentParser, key: str, dest: str, value) -> None:
    p.set_defaults(**{key: {**(p.get_default(key) or {}), dest: value}})


def _output(p: argparse.ArgumentParser, *flags: str, fmt: str, **kwargs) -> None:
    """An option naming a file the command writes in ``fmt`` (csv, json, npz, svg, png, html)."""
    action = p.add_argument(*flags, type=_path, **kwargs)
    _declare(p, "file_outputs", action.dest, (action.option_strings[-1], fmt))


def _input(p: argparse.ArgumentParser, *flags: str, **kwargs) -> None:
    """An argument naming files or directories the command reads."""
    action = p.add_argument(*flags, type=_path, **kwargs)
    _declare(p, "file_inputs", action.dest, True)


def _place(p: argparse.ArgumentParser, *flags: str, **kwargs) -> None:
    """A directory the command writes into, or a path relative to another argument."""
    action = p.add_argument(*flags, type=_path, **kwargs)
    _declare(p, "other_paths", action.dest, True)


def _add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N``: the same meaning in every command (capped in main)."""
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="use at most N CPU threads (default: the CPUs this process may use; when training, "
                   "torch's own default, which is never more); more than those is lowered to them, with a warning")


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")


def _add_metrics(subparsers) -> None:
    p = subparsers.add_parser(
        "metrics",
        help="compute the 14 weight statistics of checkpoints",
        description="Compute the 14 weight statistics of safetensors checkpoints with the Rust "
        "engine and write one CSV row per checkpoint. A directory stands for all its "
        "*.safetensors files, ordered by step.",
    )
    _input(p, "inputs", nargs="+", metavar="CHECKPOINT_OR_DIR")
    _output(p, "-o", "--output", fmt="csv", required=True, help="CSV file to write (atomically)")
    _add_threads(p)
    MetricsOptions.add_arguments(p)
    _add_device_argument(p)
    _add_progress(p)
    p.set_defaults(run=_run_metrics)


def _add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (a CUDA GPU when torch sees one, else the Rust engine), cpu (the engine), "
                   "cuda or cuda:N (torch on that GPU; singular values always exact there)")


def _run_metrics(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from trainmap.io import atomic, owner
    from trainmap.metrics.engine import checkpoint_paths, trajectory_metrics

    paths: list[Path] = []
    for item in map(Path, args.inputs):
        paths.extend(checkpoint_paths(item) if item.is_dir() else [item])
    options = MetricsOptions.from_args(args)
    # Into a run directory (RUN/metrics.csv): under its lock, listed in its owner file as trainmap's.
    with owner.listed_output(args.output, purpose="trainmap metrics"), \
            tqdm(total=len(paths), unit="ckpt", desc="metrics", disable=args.no_progress, file=sys.stderr) as bar:
        frame = trajectory_metrics(
            paths,
            threads=args.threads,
            svd=options.svd,
            include=options.include,
            exclude=options.exclude,
            exact_max_dim=options.exact_max_dim,
            rank=options.rank,
            progress=lambda done: bar.update(done - bar.n),
            device=args.device,
        )
        atomic.write_csv(args.output, frame)
    print(f"wrote {len(frame)} rows to {args.output}", file=sys.stderr)
    return 0


def _add_train(subparsers) -> None:
    from trainmap.train.tasks import TASKS

    p = subparsers.add_parser(
        "train",
        help="train one seed of a task into a run directory",
        description="Train one seed of a task and write DIR/checkpoints/step*.safetensors, DIR/log.csv "
        "and, when the run ends, DIR/run.json. A killed run started again with the same command "
        f"continues where it stopped; a finished one is left alone. Tasks: {', '.join(TASKS)}. "
        "See docs/training.md for every task's settings.",
    )
    p.add_argument("task", metavar="TASK", help=f"one of: {', '.join(TASKS)}")
    p.add_argument("--seed", type=int, required=True, help="random seed (initialisation and data order)")
    _place(p, "--out", required=False, metavar="DIR", help="run directory to write")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (repeatable), e.g. --set epochs=5 --set lr=0.01")
    _add_threads(p)
    p.add_argument("--wait-for-lock", type=float, default=0.0, metavar="SECONDS",
                   help="when another process is writing DIR, wait up to SECONDS for it to finish instead of "
                   "stopping at once (default: 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--resume-interval", type=float, default=10.0, metavar="SECONDS",
                   help="write checkpoints that come faster than this in batches, with the log and the resume "
                   "state, every SECONDS (0: each at once); bounds the work a kill can lose (default: 10)")
    p.add_argument("--show-settings", action="store_true",
                   help="print the task's settings (with --set applied) as JSON and exit without training")
    _add_progress(p)
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import json

    from trainmap.train import resolve_settings, train_run
    from trainmap.train.tasks import parse_assignments

    overrides = parse_assignments(args.assignments)
    if args.show_settings:
        print(json.dumps(resolve_settings(args.task, overrides), indent=2))
        return 0
    if args.out is None:
        raise ValueError("--out DIR is required to train")
    record = train_run(args.task, args.seed, args.out, overrides, threads=args.threads, device=args.device,
                       progress=not args.no_progress, resume_interval_s=args.resume_interval,
                       lock_wait_s=args.wait_for_lock)
    final = record["final"]
    print(f"{args.out}: {record['status']} at step {record['final_step']}, {record['checkpoints']} checkpoints, "
          f"eval accuracy {final['eval_accuracy']:.4f}", file=sys.stderr)
    return 0


def _add_train_sweep(subparsers) -> None:
    from trainmap.train.tasks import BATCHED_TASKS

    p = subparsers.add_parser(
        "train-sweep",
        help="train many seeds of a task as one batched model (one run directory per seed)",
        description="Train several seeds of a task in one process as one batched model and write, per seed, "
        "DIR/SEED/ exactly as trainmap train does (checkpoints, log.csv, run.json recording the batch). "
        "Each seed keeps its initial weights, data order and optimiser state; a killed sweep started again "
        f"continues every seed. Batched tasks: {', '.join(BATCHED_TASKS)}. See docs/training.md, 'Seed sweeps'.",
    )
    p.add_argument("--task", required=True, metavar="TASK", help=f"one of: {', '.join(BATCHED_TASKS)}")
    p.add_argument("--seeds", required=True, metavar="SEEDS", help="seeds: 0-39, 3 or 0-3,8,10-11")
    _place(p, "--out-dir", required=True, metavar="DIR",
                   help="parent directory: seed S is written to DIR/S")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (repeatable), e.g. --set epochs=5 --set lr=0.01")
    _add_threads(p)
    p.add_argument("--wait-for-lock", type=float, default=0.0, metavar="SECONDS",
                   help="when another process is writing a seed's directory, wait up to SECONDS for it (default: 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--resume-interval", type=float, default=10.0, metavar="SECONDS",
                   help="write checkpoints that come faster than this in batches, with the logs and resume "
                   "states, every SECONDS (0: each at once); bounds the work a kill can lose (default: 10)")
    p.add_argument("--replace-other-settings", action="store_true",
                   help="train again a seed whose finished run (written by trainmap) has other settings, replacing "
                   "its files (the workflow's, when settings change); default: refuse such a directory")
    _output(p, "--group-file", fmt="json", metavar="JSON",
                   help="when every seed has ended, write JSON listing the seeds and their status (the workflow's "
                   "marker of a sweep job)")
    p.add_argument("--no-checkpoints", action="store_true",
                   help="compute the 14 weight statistics of every seed at every checkpoint step in the loop and write "
                   "DIR/SEED/metrics.csv (as trainmap metrics computes them, without its path column) instead of "
                   "checkpoint files; the metrics options below apply")
    MetricsOptions.add_arguments(p)
    p.add_argument("--metrics-device", default="auto",
                   help="with --no-checkpoints, where the statistics are computed: auto (where the weights are), cpu "
                   "(the Rust engine) or cuda[:N] (torch on that GPU)")
    _add_progress(p)
    p.set_defaults(run=_run_train_sweep)


def _run_train_sweep(args: argparse.Namespace) -> int:
    from trainmap.train.sweep import InLoopStatistics, parse_seeds, train_sweep
    from trainmap.train.tasks import parse_assignments

    overrides = parse_assignments(args.assignments)
    seeds = parse_seeds(args.seeds)
    statistics = None
    if args.no_checkpoints:
        statistics = InLoopStatistics(MetricsOptions.from_args(args), args.metrics_device)
    records = train_sweep(args.task, seeds, args.out_dir, overrides, threads=args.threads, device=args.device,
                          resume_interval_s=args.resume_interval, lock_wait_s=args.wait_for_lock,
                          replace_other_settings=args.replace_other_settings, statistics=statistics,
                          progress=not args.no_progress)
    if args.group_file is not None:
        from trainmap.io import atomic

        atomic.write_json(args.group_file, {"task": args.task, "seeds": seeds,
                                            "status": {str(s): r["status"] for s, r in records.items()}})
    for seed, record in records.items():
        print(f"{args.out_dir / str(seed)}: {record['status']} at step {record['final_step']}, "
              f"{record['checkpoints']} {'checkpoint steps' if statistics else 'checkpoints'}, eval accuracy {record['final']['eval_accuracy']:.4f}",
              file=sys.stderr)
    return 0


def _add_import(subparsers) -> None:
    p = subparsers.add_parser(
        "import",
        help="copy a series of released checkpoints into a run directory (series-metrics reads one in place)",
        description="Import released checkpoints (one sub-directory per step, e.g. step_20k/ or "
        "step143000/, holding model.safetensors or pytorch_model.bin) as DIR/checkpoints/"
        "step*.safetensors, DIR/log.csv (the metrics the source has) and DIR/run.json.",
    )
    _input(p, "source", metavar="SRC", help="directory of per-step checkpoint directories")
    _place(p, "--out", required=True, metavar="DIR", help="run directory to write")
    _add_progress(p)
    p.set_defaults(run=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from trainmap.train import import_series

    record = import_series(args.source, args.out, progress=not args.no_progress)
    print(f"{args.out}: imported {record['checkpoints']} checkpoints "
          f"(steps {min(map(int, record['source_files']))}..{record['last_checkpoint_step']})", file=sys.stderr)
    return 0


def _add_series_metrics(subparsers) -> None:
    p = subparsers.add_parser(
        "series-metrics",
        help="the weight statistics of a run directory you already have, read in place",
        description="Read a run directory where it lies (a trainmap.Recorder run, step*.safetensors files, "
        "one sub-directory per step such as checkpoint-500/ or step_20k/ with model.safetensors, sharded "
        "safetensors or pytorch_model.bin, torch.save files (.pt, .pth, .ckpt, .tar) or Lightning's "
        "lightning_logs/version_N/checkpoints/; with log.csv, trainer_state.json, Lightning's metrics.csv or "
        "TensorBoard event files) and write OUT/metrics.csv, OUT/log.csv, OUT/integrity.json and OUT/run.json, "
        "as for a trained run. Nothing is copied or unpickled; a Recorder's metrics.csv is adopted when its "
        "engine and options equal these. See docs/your-runs.md.",
    )
    _input(p, "source", metavar="SRC", help="the run directory")
    _place(p, "--out-dir", required=True, metavar="OUT", help="where to write (results/EXP/runs/RUN)")
    _place(p, "--log", default=None, metavar="PATH",
                   help="the run's log, relative to SRC, instead of the one found there: a CSV, a TensorBoard event "
                   "file, or a directory of event files (config log: {path})")
    p.add_argument("--log-step", default=None, metavar="COLUMN",
                   help="the CSV log's step column (default: step; _step for a W&B history; config log: {step})")
    _add_threads(p)
    MetricsOptions.add_arguments(p)
    _add_device_argument(p)
    _input(p, "--from-chunks", nargs="+", default=None, metavar="CHUNK",
                   help="gather metrics computed by series-metrics-chunk instead of computing them")
    _add_progress(p)
    p.set_defaults(run=_run_series_metrics)


def _add_series_metrics_chunk(subparsers) -> None:
    p = subparsers.add_parser(
        "series-metrics-chunk",
        help="the weight statistics of one chunk of a run directory's checkpoints",
        description="Compute the metrics of checkpoints INDEX*SIZE .. INDEX*SIZE+SIZE-1 (in step order) of a "
        "run directory read in place and write them to a JSON chunk file, which series-metrics "
        "--from-chunks gathers into the run's metrics.csv (config metrics: {chunk: SIZE}).",
    )
    _input(p, "source", metavar="SRC", help="the run directory")
    p.add_argument("--index", required=True, type=int, help="which chunk (0-based)")
    p.add_argument("--size", required=True, type=int, help="checkpoints per chunk")
    _output(p, "-o", "--output", fmt="json", required=True, help="chunk file to write (JSON, atomically)")
    _add_threads(p)
    MetricsOptions.add_arguments(p)
    _add_device_argument(p)
    _add_progress(p)
    p.set_defaults(run=_run_series_metrics_chunk)


def _run_series_metrics_chunk(args: argparse.Namespace) -> int:
    from trainmap.metrics.series_chunks import write_chunk

    options = MetricsOptions.from_args(args)
    bar, progress = _progress_bar(f"metrics {args.source.name} chunk {args.index}", args.no_progress, unit="ckpt")
    with bar:
        record = write_chunk(args.source, args.output, index=args.index, size=args.size,
                             options=dataclasses.asdict(options),
                             threads=args.threads, device=args.device, progress=progress)
    print(f"{args.output}: metrics of {len(record['steps'])} checkpoints from {record['source']}", file=sys.stderr)
    return 0


def _run_series_metrics(args: argparse.Namespace) -> int:
    from trainmap.metrics.series_metrics import series_metrics

    options = MetricsOptions.from_args(args)
    bar, progress = _progress_bar(f"metrics {args.source.name}", args.no_progress, unit="ckpt")
    with bar:
        record = series_metrics(args.source, args.out_dir, **dataclasses.asdict(options),
                                threads=args.threads, device=args.device, progress=progress,
                                chunk_files=args.from_chunks, log_path=args.log, log_step=args.log_step)
    unit = "" if record["step_unit"] == "step" else f", numbered by {record['step_unit']}"
    logs = _log_summary(record["log_sources"])
    print(f"{args.out_dir}: {record['metrics']} metrics of {record['checkpoints']} checkpoints "
          f"({record['layout']} layout{unit}) from {record['source']}; log: {logs}", file=sys.stderr)
    return 0


def _log_summary(sources) -> str:
    """The log sources of a run.json, one phrase per kind: ``lightning_csv PATH``, ``12 trainer_state files``."""
    paths: dict[str, list[str]] = {}
    for source in sources:
        paths.setdefault(source["kind"], []).append(source["path"])
    return ", ".join(f"{kind} {found[0]}" if len(found) == 1 else f"{len(found)} {kind} files"
                     for kind, found in paths.items()) or "none"


# --- analysis stages (trainmap.analysis.stages, same names); options from trainmap.options ---

def _progress_bar(desc: str, disable: bool, unit: str = "fit"):
    """A tqdm bar on stderr and a ``progress(done, total)`` callback feeding it."""
    from tqdm import tqdm

    bar = tqdm(total=0, unit=unit, desc=desc, disable=disable, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    return bar, progress


def _stage_parser(subparsers, command: str, help: str, description: str):
    p = subparsers.add_parser(command, help=help, description=description)
    _input(p, "run_dirs", nargs="+", metavar="RUN_DIR")
    return p


def _add_hmm_select(subparsers) -> None:
    p = _stage_parser(
        subparsers, "hmm-select",
        "choose the covariance and number of HMM states by held-out BIC; write selection.csv and model.npz",
        "Z-score every run's statistics over its first checkpoints; hold runs out (folds over runs below 30 "
        "runs, each run once; else a seeded 80/20 split); fit Gaussian HMMs with 1..max-components states, "
        "each covariance type of --covariance and several restarts on the training runs; score the held-out "
        "runs (log-likelihood, AIC, BIC) and keep the candidate with the lowest BIC (refitted on all runs "
        "when there are folds).")
    _output(p, "--selection-csv", fmt="csv", required=True,
                   help="selection.csv to write: one row per fit (covariance, n, fold, restart)")
    _output(p, "--model", fmt="npz", required=True, help="model.npz to write (no pickle)")
    HMMSelectOptions.add_arguments(p)
    _add_progress(p)
    p.set_defaults(run=_run_hmm_select)


def _run_hmm_select(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    bar, progress = _progress_bar("hmm-select", args.no_progress)
    with bar:
        sel = stages.hmm_select(args.run_dirs, args.selection_csv, args.model, HMMSelectOptions.from_args(args),
                                progress=progress)
    held_out = f"{sel.folds} folds over runs" if sel.folds > 1 else "one split of runs"
    print(f"chose {sel.n_components} state{'s' if sel.n_components != 1 else ''} with {sel.covariance} covariance "
          f"({held_out}); {len(sel.table)} fits, {sel.failed_fits} failed; wrote {args.selection_csv} and {args.model}",
          file=sys.stderr)
    return 0


def _add_hmm_decode(subparsers) -> None:
    p = _stage_parser(
        subparsers, "hmm-decode", "Viterbi-decode every run with a fitted model; write states.csv",
        "Decode every run (z-scored as the model was fitted) with the Viterbi algorithm and write one row "
        "per checkpoint: run, step, state.")
    _input(p, "--model", required=True, help="model.npz from hmm-select")
    _output(p, "--states", fmt="csv", required=True, help="states.csv to write")
    p.set_defaults(run=_run_hmm_decode)


def _run_hmm_decode(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    frame = stages.hmm_decode(args.run_dirs, args.model, args.states)
    print(f"decoded {frame['run'].nunique()} runs ({len(frame)} checkpoints) into {args.states}", file=sys.stderr)
    return 0


def _add_regress(subparsers) -> None:
    p = _stage_parser(
        subparsers, "regress",
        "convergence steps and the regression on state occupancy; write regression.json, coefficients.csv, "
        "convergence.csv",
        "Convergence step per run under the convergence criterion (a run that never meets it is censored at its "
        "own last step), OLS on the empirical state distributions of the converged runs (no separate intercept; "
        "centred, adjusted and leave-one-out R², F-test against the intercept-only model), one coefficient per "
        "state (or why it is not identifiable), detour states, a Cox model of every run (hazard ratios, "
        "concordance), trajectory dissimilarity and forking.")
    _input(p, "--states", required=True, help="states.csv from hmm-decode")
    _input(p, "--model", required=True, help="model.npz from hmm-select (number of states)")
    _output(p, "--out", fmt="json", required=True, help="regression.json to write")
    _output(p, "--coefficients", fmt="csv", required=True, help="coefficients.csv to write")
    _output(p, "--convergence-csv", fmt="csv", required=True,
                   help="convergence.csv to write (per-run convergence steps)")
    RegressOptions.add_arguments(p)
    p.set_defaults(run=_run_regress)


def _run_regress(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    out = stages.regress(args.run_dirs, args.states, args.model, args.out, args.coefficients, args.convergence_csv,
                         RegressOptions.from_args(args))
    from trainmap.analysis import display

    print(f"convergence {out.criterion_text}: {out.n_converged} of {out.n_runs} runs converged "
          f"({out.n_censored} censored); R2 {display.r2(out.r2)} (adjusted {display.r2(out.r2_adjusted)}, "
          f"leave-one-out {display.r2(out.r2_loo)}), p {display.p_value(out.p_value)}, concordance "
          f"{display.r2(out.concordance)}, detour states {out.detour_states}; wrote {args.out}", file=sys.stderr)
    return 0


def _add_map(subparsers) -> None:
    p = _stage_parser(
        subparsers, "map", "build the training map: edges.csv and training_map.{svg,png}",
        "Keep the transitions decoded runs take, annotate each with run counts, the learned transition "
        "probability, the convergence step of its runs and the destination state's most important features "
        "(Appendix A), and draw the map with Graphviz; detour states and convergence steps come from "
        "regression.json.")
    _input(p, "--model", required=True, help="model.npz from hmm-select")
    _input(p, "--states", required=True, help="states.csv from hmm-decode")
    _input(p, "--regression", required=True, help="regression.json from regress")
    _output(p, "--edges", fmt="csv", required=True, help="edges.csv to write")
    _place(p, "--figure-dir", default=None,
                   help="write DIR/training_map.svg, DIR/training_map.png and DIR/training_map.html")
    _output(p, "--svg", fmt="svg", default=None, help="SVG path (overrides --figure-dir for the SVG)")
    _output(p, "--png", fmt="png", default=None, help="PNG path (overrides --figure-dir for the PNG)")
    _output(p, "--html", fmt="html", default=None,
                   help="interactive page, one self-contained HTML file (overrides --figure-dir for the page)")
    _input(p, "--coefficients", default=None,
                   help="coefficients.csv from regress, shown on the interactive page "
                   "(default: the coefficients.csv beside --regression)")
    MapOptions.add_arguments(p, require_convergence=False)
    p.set_defaults(run=_run_map)


def _run_map(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    svg = args.svg or (args.figure_dir / MAP_SVG if args.figure_dir else None)
    png = args.png or (args.figure_dir / MAP_PNG if args.figure_dir else None)
    page = args.html or (args.figure_dir / MAP_HTML if args.figure_dir else None)
    edges = stages.map(args.run_dirs, args.model, args.states, args.regression, args.edges,
                       MapOptions.from_args(args), svg_path=svg, png_path=png, html_path=page,
                       coefficients_path=args.coefficients)
    print(f"wrote {len(edges)} edges to {args.edges}" + (f", map to {svg} and {png}" if svg or png else "")
          + (f", interactive map to {page}" if page else ""), file=sys.stderr)
    return 0


def _add_baselines(subparsers) -> None:
    p = _stage_parser(
        subparsers, "baselines", "k-means and HMM-on-l2 baselines by held-out BIC (Table 4); write baselines.csv",
        "Appendix C baselines on the same z-scored runs and split as hmm-select: k-means (k = 1..max-components, "
        "spherical-Gaussian BIC) and a Gaussian HMM on the l2 column alone (n = 1..max-components).")
    _output(p, "--out", fmt="csv", required=True, help="baselines.csv to write")
    BaselineOptions.add_arguments(p)
    _add_progress(p)
    p.set_defaults(run=_run_baselines)


def _run_baselines(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    bar, progress = _progress_bar("baselines", args.no_progress)
    with bar:
        table = stages.baselines(args.run_dirs, args.out, BaselineOptions.from_args(args), progress=progress)
    chosen = table[table["chosen"]]
    summary = ", ".join(f"{m}: {int(n)}" for m, n in zip(chosen["method"], chosen["n_components"]))
    print(f"components by BIC: {summary}; wrote {args.out}", file=sys.stderr)
    return 0


def _add_figures(subparsers) -> None:
    p = _stage_parser(
        subparsers, "figures", "model-selection curves, convergence histogram and trajectories (PNG and SVG)",
        "Write model_selection, convergence_histogram and trajectories figures, each as .png and .svg, into "
        "the output directory; convergence steps come from convergence.csv.")
    _input(p, "--selection-csv", required=True,
                   help="selection.csv from hmm-select")
    _input(p, "--states", required=True, help="states.csv from hmm-decode")
    _input(p, "--convergence-csv", required=True,
                   help="convergence.csv from regress")
    _place(p, "--out-dir", required=True, help="directory for the figures")
    FiguresOptions.add_arguments(p, require_convergence=False)
    p.set_defaults(run=_run_figures)


def _run_figures(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    written = stages.figures(args.run_dirs, args.selection_csv, args.states, args.convergence_csv, args.out_dir,
                             FiguresOptions.from_args(args))
    print(f"wrote {len(written)} figure files to {args.out_dir}", file=sys.stderr)
    return 0


def _add_check(subparsers) -> None:
    p = subparsers.add_parser(
        "check",
        help="what run directories hold and what the analysis can support with them (run this first)",
        description="For each run directory (a Recorder run, a directory of checkpoints, a run trained here): "
        "its kind and layout, records, step range and grid, log and scalar columns, and with a convergence "
        "criterion the first step meeting it; then a verdict (enough runs? how many states can the records "
        "support? censored runs? unequal runs?) with advice. Reads no tensor.")
    _input(p, "run_dirs", nargs="+", metavar="RUN_DIR")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--convergence", type=_criterion_arg, metavar="CRITERION",
                       help="convergence criterion COLUMN<X or COLUMN>X on the log (e.g. 'eval_loss<2.5')")
    group.add_argument("--threshold", dest="convergence", type=_threshold_arg, metavar="X",
                       help="shorthand for --convergence 'eval_accuracy>X'")
    _output(p, "--json", fmt="json", help="also write the report as JSON to this file")
    p.set_defaults(run=_run_check)


def _criterion_arg(text: str):
    from trainmap.analysis.convergence import Criterion

    try:
        return Criterion.parse(text, "--convergence")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _threshold_arg(text: str):
    from trainmap.analysis.convergence import Criterion

    try:
        return Criterion.from_threshold(float(text), "--threshold")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run_check(args: argparse.Namespace) -> int:
    from trainmap.io import atomic
    from trainmap.analysis.check import check_runs, to_json

    report = check_runs(args.run_dirs, args.convergence)
    print(report.render(), end="")
    if args.json is not None:
        atomic.write_text(args.json, to_json(report))
    return 0


def _experiment_arg(text: str) -> tuple[str, Path]:
    name, sep, directory = text.partition("=")
    if not sep or not name or not directory:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, Path(directory)


def _add_tables(subparsers) -> None:
    p = subparsers.add_parser(
        "tables",
        help="cross-experiment Tables 1, 2 and 4 (CSV and Markdown)",
        description="Read each experiment directory's regression.json, coefficients.csv, "
        "hmm/selection.csv and baselines.csv; write table1/2/4 .csv and .md.",
    )
    p.add_argument("--experiment", action="append", required=True, type=_experiment_arg, metavar="NAME=DIR",
                   help="an experiment and its results directory (repeat, in table order)")
    _place(p, "--out-dir", required=True, help="directory for the tables")
    p.set_defaults(run=_run_tables)


def _run_tables(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    experiments = dict(args.experiment)
    if len(experiments) != len(args.experiment):
        raise ValueError("an experiment name is given twice")
    paths = stages.tables(experiments, args.out_dir)
    print(f"wrote {', '.join(sorted(p.name for p in paths.values()))} to {args.out_dir}", file=sys.stderr)
    return 0


def _conditions(values) -> dict:
    """``--condition NAME RUN_DIR...`` given several times → ``{NAME: [RUN_DIR, ...]}``."""
    out: dict = {}
    for item in values or []:
        if len(item) < 2:
            raise ValueError(f"--condition {' '.join(item)}: give a name and at least one run directory")
        name, *dirs = item
        if name in out:
            raise ValueError(f"--condition {name}: given twice")
        out[name] = [Path(d) for d in dirs]
    return out


def _add_compare_select(subparsers) -> None:
    p = subparsers.add_parser(
        "compare-select", help="select and fit one HMM on the runs of several experiments (conditions) together",
        description="hmm-select on the runs of every condition together (each run named CONDITION/RUN): the same "
        "z-scoring, held-out BIC selection and restarts as one experiment, so every condition is decoded into "
        "the same states.")
    p.add_argument("--condition", action="append", nargs="+", required=True, metavar=("NAME", "RUN_DIR"),
                   help="a condition's name and its run directories (give it for each condition)")
    _output(p, "--selection-csv", fmt="csv", required=True, help="selection.csv to write")
    _output(p, "--model", fmt="npz", required=True, help="model.npz to write (no pickle)")
    HMMSelectOptions.add_arguments(p)
    _add_progress(p)
    p.set_defaults(run=_run_compare_select)


def _run_compare_select(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    bar, progress = _progress_bar("compare-select", args.no_progress)
    with bar:
        sel = stages.compare_select(_conditions(args.condition), args.selection_csv, args.model,
                                    HMMSelectOptions.from_args(args), progress=progress)
    print(f"chose {sel.n_components} states with {sel.covariance} covariance on the runs of "
          f"{len(args.condition)} conditions; wrote {args.selection_csv} and {args.model}", file=sys.stderr)
    return 0


def _add_compare(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="decode several experiments with their shared HMM and compare them (table, joint map)",
        description="Decode every condition's runs with the model from compare-select, then write into OUT_DIR: "
        "states.csv, occupancy.csv, transitions.csv, dissimilarity.csv, convergence.csv, coefficients.csv, "
        "regression.json (convergence on occupancy with the condition as covariate), table_compare.csv/.md, "
        "the joint training map (training_map.svg/.png) and occupancy.png/.svg.")
    p.add_argument("--condition", action="append", nargs="+", required=True, metavar=("NAME", "RUN_DIR"),
                   help="a condition's name and its run directories (give it for each condition)")
    p.add_argument("--convergence", action="append", nargs=2, required=True, metavar=("NAME", "CRITERION"),
                   help="a condition's convergence criterion, COLUMN>X or COLUMN<X (give it for each condition)")
    _input(p, "--model", required=True, help="model.npz from compare-select")
    _place(p, "--out-dir", required=True,
                   help="the comparison's directory (results/compare/NAME)")
    p.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    from trainmap.analysis.convergence import Criterion

    criteria = {name: Criterion.parse(text, f"--convergence {name}") for name, text in args.convergence}
    reg = stages.compare(_conditions(args.condition), criteria, args.model, args.out_dir)
    print(f"compared {', '.join(reg.conditions)} on {reg.n_states} shared states; wrote {args.out_dir}",
          file=sys.stderr)
    return 0


def _add_early(subparsers) -> None:
    p = _stage_parser(
        subparsers, "early", "how early the map predicts convergence: LOO R² and concordance against the prefix decoded",
        "Decode every run's prefix up to k % of its training (k = 10, 20, ..., 100) with the fitted model, regress "
        "the convergence step (convergence.csv from regress) on the prefix's state occupancy, and write one row per "
        "k: runs, converged runs, mean checkpoints, R², leave-one-out R², Cox concordance.")
    _input(p, "--model", required=True, help="model.npz from hmm-select")
    _input(p, "--convergence-csv", required=True,
                   help="convergence.csv from regress")
    _output(p, "--out", fmt="csv", required=True, help="early.csv to write")
    _place(p, "--figure", metavar="STEM", help="write the figure as STEM.png and STEM.svg")
    p.add_argument("--experiment", help="name shown in the figure (default: from the run directories)")
    p.set_defaults(run=_run_early)


def _run_early(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages
    from trainmap.analysis.early import early_sentence

    table = stages.early(args.run_dirs, args.model, args.convergence_csv, args.out, args.figure,
                         experiment=args.experiment)
    print(f"{early_sentence(table)}; wrote {args.out}", file=sys.stderr)
    return 0


# --- outputs never clobber inputs ---------------------------------------------------------


def _input_files(values) -> list[Path]:
    """The files the given input paths stand for (a directory: the files directly in it)."""
    files: list[Path] = []
    for value in values:
        path = Path(value)
        files.extend(sorted(path.iterdir()) if path.is_dir() else [path])
    return files


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs of the wrong format or that are inputs of the command
    (the options declared with _output and _input)."""
    from trainmap.io.fileguard import check_output_format, refuse_clobber

    given = {}
    for dest, (option, fmt) in (getattr(args, "file_outputs", None) or {}).items():
        value = getattr(args, dest)
        if value is not None:
            given[option] = check_output_format(value, fmt, option=option)
    values = []
    for dest in getattr(args, "file_inputs", None) or {}:
        value = getattr(args, dest)
        values += value if isinstance(value, list) else [value] if value is not None else []
    refuse_clobber(given, _input_files(values))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainmap", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_metrics(subparsers)
    _add_train(subparsers)
    _add_train_sweep(subparsers)
    _add_import(subparsers)
    _add_series_metrics(subparsers)
    _add_series_metrics_chunk(subparsers)
    for add in (_add_check, _add_hmm_select, _add_hmm_decode, _add_regress, _add_map, _add_baselines, _add_figures,
                _add_tables, _add_compare_select, _add_compare, _add_early):
        add(subparsers)
    return parser


def _version() -> str:
    from trainmap import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `trainmap` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    default_format = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest, **kw: (
        f"trainmap {args.command}: warning: {message}\n"
    )
    try:
        if getattr(args, "threads", None) is not None:
            from trainmap.io.limits import cap_workers

            args.threads = cap_workers(args.threads, "--threads")
        _check_outputs(args)
        return args.run(args)
    except (ValueError, OSError) as exc:
        if os.environ.get("TRAINMAP_DEBUG"):
            raise
        print(f"trainmap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"trainmap {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = default_format


if __name__ == "__main__":
    sys.exit(main())

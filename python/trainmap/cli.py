"""Command-line interface: ``trainmap <command> ...``.

Each command parses its arguments and calls the package's functions; no logic lives here.
User errors (bad input files, bad options) print one line and exit with status 2; set
``TRAINMAP_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path


def _add_metrics(subparsers) -> None:
    p = subparsers.add_parser(
        "metrics",
        help="compute the 14 weight statistics of checkpoints",
        description="Compute the 14 weight statistics of safetensors checkpoints with the Rust "
        "engine and write one CSV row per checkpoint. A directory stands for all its "
        "*.safetensors files, ordered by step.",
    )
    p.add_argument("inputs", nargs="+", metavar="CHECKPOINT_OR_DIR")
    p.add_argument("-o", "--output", required=True, type=Path, help="CSV file to write (atomically)")
    _add_metric_options(p)
    p.add_argument("--device", default="auto",
                   help="auto (a CUDA GPU when torch sees one, else the Rust engine), cpu (the engine), "
                   "cuda or cuda:N (torch on that GPU; singular values always exact there)")
    p.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")
    p.set_defaults(run=_run_metrics)


def _add_metric_options(p) -> None:
    """The engine's options, shared by the metrics and metrics-series commands."""
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all available CPUs)")
    p.add_argument("--svd", choices=("auto", "exact", "randomized"), default="auto")
    p.add_argument("--exact-max-dim", type=int, default=None,
                   help="with --svd auto, matrices whose smaller side is at most this are exact; above it, "
                        "the cheaper path by the engine's cost model")
    p.add_argument("--rank", type=int, default=None, help="singular values computed in randomized mode")
    p.add_argument("--include", default=None, help="regex: only tensors whose name matches count")
    p.add_argument("--exclude", default=None,
                   help="regex replacing the default exclusion of embeddings and norm layers ('' excludes nothing)")


def _run_metrics(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from trainmap import atomic
    from trainmap.metrics import checkpoint_paths, trajectory_metrics

    paths: list[Path] = []
    for item in map(Path, args.inputs):
        paths.extend(checkpoint_paths(item) if item.is_dir() else [item])
    with tqdm(total=len(paths), unit="ckpt", desc="metrics", disable=args.no_progress, file=sys.stderr) as bar:
        frame = trajectory_metrics(
            paths,
            threads=args.threads,
            svd=args.svd,
            include=args.include,
            exclude=args.exclude,
            exact_max_dim=args.exact_max_dim,
            rank=args.rank,
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
    p.add_argument("--out", type=Path, required=False, metavar="DIR", help="run directory to write")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (repeatable), e.g. --set epochs=5 --set lr=0.01")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--resume-interval", type=float, default=10.0, metavar="SECONDS",
                   help="write checkpoints that come faster than this in batches, with the log and the resume "
                   "state, every SECONDS (0: each at once); bounds the work a kill can lose (default: 10)")
    p.add_argument("--show-settings", action="store_true",
                   help="print the task's settings (with --set applied) as JSON and exit without training")
    p.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")
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
                       progress=not args.no_progress, resume_interval_s=args.resume_interval)
    final = record["final"]
    print(f"{args.out}: {record['status']} at step {record['final_step']}, {record['checkpoints']} checkpoints, "
          f"eval accuracy {final['eval_accuracy']:.4f}", file=sys.stderr)
    return 0


def _add_import(subparsers) -> None:
    p = subparsers.add_parser(
        "import",
        help="turn a series of released checkpoints into a run directory",
        description="Import released checkpoints (one sub-directory per step, e.g. step_20k/ or "
        "step143000/, holding model.safetensors or pytorch_model.bin) as DIR/checkpoints/"
        "step*.safetensors, DIR/log.csv (the metrics the source has) and DIR/run.json.",
    )
    p.add_argument("source", type=Path, metavar="SRC", help="directory of per-step checkpoint directories")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="run directory to write")
    p.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")
    p.set_defaults(run=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from trainmap.train import import_series

    record = import_series(args.source, args.out, progress=not args.no_progress)
    print(f"{args.out}: imported {record['checkpoints']} checkpoints "
          f"(steps {min(map(int, record['source_files']))}..{record['last_checkpoint_step']})", file=sys.stderr)
    return 0


def _add_metrics_series(subparsers) -> None:
    p = subparsers.add_parser(
        "metrics-series",
        help="the weight statistics of a run directory you already have, read in place",
        description="Read a run directory where it lies (a trainmap.Recorder run, step*.safetensors files, "
        "or one sub-directory per step such as checkpoint-500/ or step_20k/ with model.safetensors, sharded "
        "safetensors or pytorch_model.bin, plus log.csv or trainer_state.json) and write OUT/metrics.csv, "
        "OUT/log.csv, OUT/integrity.json and OUT/run.json, as for a trained run. Nothing is copied; a "
        "Recorder's metrics.csv is adopted when its engine and options equal these. See docs/your-runs.md.",
    )
    p.add_argument("source", type=Path, metavar="SRC", help="the run directory")
    p.add_argument("--out-dir", required=True, type=Path, metavar="OUT", help="where to write (results/EXP/runs/RUN)")
    _add_metric_options(p)
    p.add_argument("--from-chunks", nargs="+", type=Path, default=None, metavar="CHUNK",
                   help="gather metrics computed by metrics-chunk instead of computing them")
    p.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")
    p.set_defaults(run=_run_metrics_series)


def _add_metrics_chunk(subparsers) -> None:
    p = subparsers.add_parser(
        "metrics-chunk",
        help="the weight statistics of one chunk of a run directory's checkpoints",
        description="Compute the metrics of checkpoints INDEX*SIZE .. INDEX*SIZE+SIZE-1 (in step order) of a "
        "run directory read in place and write them to a JSON chunk file, which metrics-series "
        "--from-chunks gathers into the run's metrics.csv (config metrics: {chunk: SIZE}).",
    )
    p.add_argument("source", type=Path, metavar="SRC", help="the run directory")
    p.add_argument("--index", required=True, type=int, help="which chunk (0-based)")
    p.add_argument("--size", required=True, type=int, help="checkpoints per chunk")
    p.add_argument("-o", "--output", required=True, type=Path, help="chunk file to write (JSON, atomically)")
    _add_metric_options(p)
    p.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")
    p.set_defaults(run=_run_metrics_chunk)


def _run_metrics_chunk(args: argparse.Namespace) -> int:
    from trainmap.series_chunks import write_chunk

    options = {"svd": args.svd, "include": args.include, "exclude": args.exclude,
               "exact_max_dim": args.exact_max_dim, "rank": args.rank}
    bar, progress = _progress_bar(f"metrics {args.source.name} chunk {args.index}", args.no_progress, unit="ckpt")
    with bar:
        record = write_chunk(args.source, args.output, index=args.index, size=args.size, options=options,
                             threads=args.threads, progress=progress)
    print(f"{args.output}: metrics of {len(record['steps'])} checkpoints from {record['source']}", file=sys.stderr)
    return 0


def _run_metrics_series(args: argparse.Namespace) -> int:
    from trainmap.series_metrics import series_metrics

    bar, progress = _progress_bar(f"metrics {args.source.name}", args.no_progress, unit="ckpt")
    with bar:
        record = series_metrics(args.source, args.out_dir, svd=args.svd, include=args.include, exclude=args.exclude,
                                exact_max_dim=args.exact_max_dim, rank=args.rank, threads=args.threads,
                                progress=progress, chunk_files=args.from_chunks)
    print(f"{args.out_dir}: {record['metrics']} metrics of {record['checkpoints']} checkpoints "
          f"({record['layout']} layout) from {record['source']}", file=sys.stderr)
    return 0


# --- analysis stage (trainmap.analysis.stages); flags documented in docs/analysis.md ---------

def _progress_bar(desc: str, disable: bool, unit: str = "fit"):
    """A tqdm bar on stderr and a ``progress(done, total)`` callback feeding it."""
    from tqdm import tqdm

    bar = tqdm(total=0, unit=unit, desc=desc, disable=disable, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    return bar, progress


def _add_fit_options(p, *, restarts_help: str) -> None:
    p.add_argument("--max-components", type=int, default=8, help="try 1..N hidden states (default 8)")
    p.add_argument("--restarts", type=int, default=5, help=restarts_help)
    p.add_argument("--zscore-first-n", type=int, default=1000,
                   help="z-score each run with the mean/sd of its first N checkpoints (default 1000)")
    p.add_argument("--min-checkpoints", type=int, default=2, help="leave out runs with fewer checkpoints (default 2)")
    p.add_argument("--min-runs", type=int, default=5, help="fewer usable runs is an error (default 5)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of runs held out for BIC (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split and of every restart (default 0)")
    p.add_argument("--n-iter", type=int, default=None, help="most EM iterations per fit (default 1000)")
    p.add_argument("--tol", type=float, default=None,
                   help="EM stops when the training log-likelihood gains less than this per checkpoint (default 1e-4)")
    p.add_argument("--min-covar", type=float, default=None, help="floor on covariance diagonals (default 1e-3)")
    p.add_argument("--threads", type=int, default=1, help="worker processes for restarts (default 1)")
    p.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")


def _fit_kwargs(args: argparse.Namespace) -> dict:
    from trainmap.analysis.hmm import DEFAULT_MIN_COVAR, DEFAULT_N_ITER, DEFAULT_TOL

    return dict(
        max_components=args.max_components, restarts=args.restarts, zscore_first_n=args.zscore_first_n,
        min_checkpoints=args.min_checkpoints, min_runs=args.min_runs, test_fraction=args.test_fraction, seed=args.seed,
        n_iter=args.n_iter if args.n_iter is not None else DEFAULT_N_ITER,
        tol=args.tol if args.tol is not None else DEFAULT_TOL,
        min_covar=args.min_covar if args.min_covar is not None else DEFAULT_MIN_COVAR,
        threads=args.threads,
    )


def _add_hmm_select(subparsers) -> None:
    p = subparsers.add_parser(
        "hmm-select",
        help="choose the number of HMM states by held-out BIC; write selection.csv and model.npz",
        description="Z-score every run's statistics over its first checkpoints, split runs 80/20 "
        "(seeded), fit Gaussian HMMs with 1..max-components states and several restarts on the "
        "training runs, score the held-out runs (log-likelihood, AIC, BIC) and keep the fit with "
        "the lowest held-out BIC.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--selection", required=True, type=Path, help="selection.csv to write: one row per (n, restart)")
    p.add_argument("--model", required=True, type=Path, help="model.npz to write (no pickle)")
    p.add_argument("--covariance", choices=("full", "diag"), default="full", help="covariance type (default full)")
    _add_fit_options(p, restarts_help="random restarts per number of states (default 5)")
    p.set_defaults(run=_run_hmm_select)


def _run_hmm_select(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    bar, progress = _progress_bar("hmm-select", args.no_progress)
    with bar:
        sel = stages.hmm_select(args.run_dirs, args.selection, args.model, covariance=args.covariance,
                                progress=progress, **_fit_kwargs(args))
    failed = int((sel.table["status"] != "ok").sum())
    print(f"chose {sel.n_components} states (restart {sel.restart}); {len(sel.table)} fits, {failed} failed; "
          f"wrote {args.selection} and {args.model}", file=sys.stderr)
    return 0


def _add_hmm_decode(subparsers) -> None:
    p = subparsers.add_parser(
        "hmm-decode",
        help="Viterbi-decode every run with a fitted model; write states.csv",
        description="Decode every run (z-scored as the model was fitted) with the Viterbi "
        "algorithm and write one row per checkpoint: run, step, state.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--model", required=True, type=Path, help="model.npz from hmm-select")
    p.add_argument("--states", required=True, type=Path, help="states.csv to write")
    p.set_defaults(run=_run_hmm_decode)


def _run_hmm_decode(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    frame = stages.hmm_decode(args.run_dirs, args.model, args.states)
    print(f"decoded {frame['run'].nunique()} runs ({len(frame)} checkpoints) into {args.states}", file=sys.stderr)
    return 0


def _add_threshold(p) -> None:
    p.add_argument("--threshold", required=True, type=float,
                   help="convergence: first step whose accuracy exceeds this (e.g. 0.9)")
    p.add_argument("--accuracy-column", default="eval_accuracy",
                   help="log.csv column compared with the threshold (default eval_accuracy)")
    p.add_argument("--experiment", default=None,
                   help="name shown in titles and regression.json (default: from results/{exp}/runs/{seed})")


def _add_map(subparsers) -> None:
    p = subparsers.add_parser(
        "map",
        help="build the training map: edges.csv and training_map.{svg,png}",
        description="Keep the transitions decoded runs take, annotate each with run counts, the "
        "learned transition probability, the convergence step of its runs and the destination "
        "state's most important features (Appendix A), and draw the map with Graphviz.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--model", required=True, type=Path, help="model.npz from hmm-select")
    p.add_argument("--states", required=True, type=Path, help="states.csv from hmm-decode")
    p.add_argument("--edges", required=True, type=Path, help="edges.csv to write")
    p.add_argument("--figure-dir", type=Path, default=None,
                   help="write DIR/training_map.svg and DIR/training_map.png")
    p.add_argument("--svg", type=Path, default=None, help="SVG path (overrides --figure-dir for the SVG)")
    p.add_argument("--png", type=Path, default=None, help="PNG path (overrides --figure-dir for the PNG)")
    p.add_argument("--top-features", type=int, default=3, help="features reported per edge (default 3)")
    _add_threshold(p)
    p.set_defaults(run=_run_map)


def _run_map(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    svg = args.svg or (args.figure_dir / "training_map.svg" if args.figure_dir else None)
    png = args.png or (args.figure_dir / "training_map.png" if args.figure_dir else None)
    edges = stages.map_stage(args.run_dirs, args.model, args.states, args.edges, threshold=args.threshold,
                             svg_path=svg, png_path=png, experiment=args.experiment,
                             accuracy_column=args.accuracy_column, top_k=args.top_features)
    print(f"wrote {len(edges)} edges to {args.edges}" + (f", map to {svg} and {png}" if svg or png else ""),
          file=sys.stderr)
    return 0


def _add_regress(subparsers) -> None:
    p = subparsers.add_parser(
        "regress",
        help="regress convergence step on state occupancy; write regression.json and coefficients.csv",
        description="Convergence step per run, OLS on the empirical state distributions (no "
        "separate intercept; centred R², F-test against the intercept-only model), one "
        "coefficient per state, detour states, trajectory dissimilarity and forking.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--states", required=True, type=Path, help="states.csv from hmm-decode")
    p.add_argument("--edges", required=True, type=Path, help="edges.csv from map (for 'forking')")
    p.add_argument("--out", required=True, type=Path, help="regression.json to write")
    p.add_argument("--coefficients", required=True, type=Path, help="coefficients.csv to write")
    p.add_argument("--model", type=Path, default=None,
                   help="model.npz: number of states (default: largest decoded state + 1)")
    p.add_argument("--convergence", type=Path, default=None, help="also write per-run convergence.csv here")
    _add_threshold(p)
    p.set_defaults(run=_run_regress)


def _run_regress(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    out = stages.regress(args.run_dirs, args.states, args.edges, args.out, args.coefficients,
                         threshold=args.threshold, model_path=args.model, experiment=args.experiment,
                         accuracy_column=args.accuracy_column, convergence_path=args.convergence)
    print(f"R2 {out['r2']:.3f}, p {out['p_value']:.3g}, detour states {out['detour_states']}; wrote {args.out}",
          file=sys.stderr)
    return 0


def _add_baselines(subparsers) -> None:
    p = subparsers.add_parser(
        "baselines",
        help="k-means and HMM-on-l2 baselines by held-out BIC (Table 4); write baselines.csv",
        description="Appendix C baselines on the same z-scored runs and split as hmm-select: "
        "k-means (k = 1..max-components, spherical-Gaussian BIC) and a Gaussian HMM on the l2 "
        "column alone (n = 1..max-components).",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, type=Path, help="baselines.csv to write")
    _add_fit_options(p, restarts_help="random restarts of the HMM-on-l2 per n (default 5)")
    p.set_defaults(run=_run_baselines)


def _run_baselines(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    bar, progress = _progress_bar("baselines", args.no_progress)
    with bar:
        table = stages.baselines(args.run_dirs, args.out, progress=progress, **_fit_kwargs(args))
    chosen = table[table["chosen"]]
    summary = ", ".join(f"{m}: {int(n)}" for m, n in zip(chosen["method"], chosen["n_components"]))
    print(f"components by BIC: {summary}; wrote {args.out}", file=sys.stderr)
    return 0


def _add_figures(subparsers) -> None:
    p = subparsers.add_parser(
        "figures",
        help="model-selection curves, convergence histogram and trajectories (PNG and SVG)",
        description="Write model_selection, convergence_histogram and trajectories figures, each "
        "as .png and .svg, into the output directory.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--selection", required=True, type=Path, help="selection.csv from hmm-select")
    p.add_argument("--states", required=True, type=Path, help="states.csv from hmm-decode")
    p.add_argument("--out-dir", required=True, type=Path, help="directory for the figures")
    p.add_argument("--fast", type=int, default=3, help="fastest runs shown in trajectories (default 3)")
    p.add_argument("--slow", type=int, default=3, help="slowest runs shown in trajectories (default 3)")
    _add_threshold(p)
    p.set_defaults(run=_run_figures)


def _run_figures(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    written = stages.figures(args.run_dirs, args.selection, args.states, args.out_dir, threshold=args.threshold,
                             experiment=args.experiment, n_fast=args.fast, n_slow=args.slow,
                             accuracy_column=args.accuracy_column)
    print(f"wrote {len(written)} figure files to {args.out_dir}", file=sys.stderr)
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
    p.add_argument("--out-dir", required=True, type=Path, help="directory for the tables")
    p.set_defaults(run=_run_tables)


def _run_tables(args: argparse.Namespace) -> int:
    from trainmap.analysis import stages

    experiments = dict(args.experiment)
    if len(experiments) != len(args.experiment):
        raise ValueError("an experiment name is given twice")
    paths = stages.tables(experiments, args.out_dir)
    print(f"wrote {', '.join(sorted(p.name for p in paths.values()))} to {args.out_dir}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainmap", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_metrics(subparsers)
    _add_train(subparsers)
    _add_import(subparsers)
    _add_metrics_series(subparsers)
    _add_metrics_chunk(subparsers)
    for add in (_add_hmm_select, _add_hmm_decode, _add_map, _add_regress, _add_baselines, _add_figures, _add_tables):
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

"""Command-line interface: ``trainmap <command> ...``.

Each command parses its arguments and calls the package's functions; no logic lives here.
User errors (bad input files, bad options) print one line and exit with status 2; set
``TRAINMAP_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
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
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all available CPUs)")
    p.add_argument("--svd", choices=("auto", "exact", "randomized"), default="auto")
    p.add_argument("--exact-max-dim", type=int, default=None,
                   help="with --svd auto, matrices whose smaller side exceeds this use randomized SVD")
    p.add_argument("--rank", type=int, default=None, help="singular values computed in randomized mode")
    p.add_argument("--include", default=None, help="regex: only tensors whose name matches count")
    p.add_argument("--exclude", default=None,
                   help="regex replacing the default exclusion of embeddings and norm layers ('' excludes nothing)")
    p.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")
    p.set_defaults(run=_run_metrics)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainmap", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_metrics(subparsers)
    _add_train(subparsers)
    _add_import(subparsers)
    return parser


def _version() -> str:
    from trainmap import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `trainmap` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())

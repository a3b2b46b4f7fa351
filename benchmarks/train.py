"""Benchmark of the training stage on CPU (not a test).

Prints, per task, seconds per seed and the share of wall time spent writing checkpoints,
logs and resume state:

* ``parities`` at its default length (500 epochs) with a checkpoint every epoch;
* ``modular_stable`` until its eval accuracy reaches 0.9 (``stop_at_eval_accuracy``).

Goals on a 2-core machine: parities <= 10 s per seed; checkpoint I/O < 10 % of wall time.

    .venv/bin/python benchmarks/train.py                 # 3 parities seeds, 1 modular_stable seed
    .venv/bin/python benchmarks/train.py --workers 2     # seeds in parallel, 1 thread each

Times come from run.json's ``timing`` (train, eval, checkpoint I/O, wall), measured inside
the training loop. A fresh process also pays a one-off start-up (importing torch and
torch.optim, which pulls in TorchDynamo); it is measured and printed separately, because
it does not depend on the task.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

CASES = {
    "parities": {"overrides": {}, "what": "default length (500 epochs), checkpoint every epoch"},
    "modular_stable": {"overrides": {"stop_at_eval_accuracy": 0.9}, "what": "until eval accuracy >= 0.9"},
}


def one_seed(task: str, seed: int, overrides: dict, threads: int, root: str) -> dict:
    """Train one seed in this process and return its run.json (with the wall time seen here)."""
    from trainmap.train import train_run

    started = time.perf_counter()
    record = train_run(
        task, seed, Path(root) / f"{task}-{seed}", overrides, threads=threads, progress=False, device="cpu"
    )
    record["outer_wall_s"] = time.perf_counter() - started
    return record


def warm_up(threads: int, root: str) -> None:
    """A tiny run, so lazy imports inside torch (optimisers import TorchDynamo) are not
    charged to the first measured seed."""
    import os

    from trainmap.train import train_run

    train_run(
        "parities",
        0,
        Path(root) / f"warm-up-{os.getpid()}",
        {"epochs": 1, "n_train": 64},
        threads=threads,
        progress=False,
        device="cpu",
    )


def startup_seconds() -> float:
    """Wall time of a fresh interpreter importing what a training process needs."""
    code = "import torch, torch.optim, trainmap.train; torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def _worker_init(threads: int, root: str) -> None:
    warm_up(threads, root)


def run_case(task: str, seeds: list[int], threads: int, workers: int, root: str) -> tuple[list[dict], float]:
    """Train ``seeds`` of ``task``; return the records and the elapsed wall time."""
    overrides = CASES[task]["overrides"]
    started = time.perf_counter()
    if workers == 1:
        records = [one_seed(task, seed, overrides, threads, root) for seed in seeds]
    else:
        with ProcessPoolExecutor(workers, initializer=_worker_init, initargs=(threads, root)) as pool:
            records = list(
                pool.map(
                    one_seed,
                    [task] * len(seeds),
                    seeds,
                    [overrides] * len(seeds),
                    [threads] * len(seeds),
                    [root] * len(seeds),
                )
            )
    return records, time.perf_counter() - started


def report(task: str, records: list[dict], elapsed: float, workers: int) -> None:
    walls = [r["timing"]["wall_s"] for r in records]
    io = sum(r["timing"]["checkpoint_io_s"] for r in records)
    evals = sum(r["timing"]["eval_s"] for r in records)
    train = sum(r["timing"]["train_s"] for r in records)
    total = sum(walls)
    print(f"\n{task}: {CASES[task]['what']}")
    for r in records:
        t = r["timing"]
        print(
            f"  seed {r['seed']}: {t['wall_s']:6.1f} s  ({r['final_step']} steps, {r['checkpoints']} checkpoints, "
            f"eval acc {r['final']['eval_accuracy']:.3f}; train {t['train_s']:.1f} s, eval {t['eval_s']:.1f} s, "
            f"checkpoint I/O {t['checkpoint_io_s']:.2f} s)"
        )
    print(f"  seconds per seed: mean {statistics.mean(walls):.1f}, min {min(walls):.1f}, max {max(walls):.1f}")
    if workers > 1:
        print(f"  with {workers} seeds in parallel: {elapsed / len(records):.1f} s of elapsed time per seed")
    print(
        f"  share of wall time: training {train / total:.1%}, evaluation {evals / total:.1%}, "
        f"checkpoint/log/resume writes {io / total:.1%}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parities-seeds", type=int, default=3)
    parser.add_argument("--stable-seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="seeds trained in parallel processes (default 1)")
    args = parser.parse_args(argv)

    import torch

    print(f"torch {torch.__version__}, {args.threads} thread(s) per run, {args.workers} worker process(es)")
    print(f"fresh-process start-up (python + torch + torch.optim imports): {startup_seconds():.1f} s per process")
    with tempfile.TemporaryDirectory(prefix="trainmap-bench-") as root:
        if args.workers == 1:
            warm_up(args.threads, root)
        for task, n in (("parities", args.parities_seeds), ("modular_stable", args.stable_seeds)):
            if n:
                records, elapsed = run_case(task, list(range(n)), args.threads, args.workers, root)
                report(task, records, elapsed, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())

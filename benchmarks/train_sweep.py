"""Benchmark of seed sweeps (issue 21; not a test): one process per seed against one batched job.

For each case, in the same run on the same machine:

* one process per seed: ``trainmap train TASK --seed S`` run one after the other (as
  subprocesses, each paying its own start-up, as the workflow's one-job-per-seed does);
* one batched job: ``trainmap train-sweep --task TASK --seeds 0-(N-1)`` (one subprocess).

Printed per case and mode: wall time, optimiser steps per second (all seeds), peak memory
(largest resident set of a child process, ``resource.getrusage(RUSAGE_CHILDREN)`` measured in
a helper process per mode), the training loop's own time (run.json ``timing``: train, eval,
checkpoint I/O summed over seeds) and the ratio one-process-per-seed / batched.

Cases: parities (config.yaml's ``parities`` experiment: the task's default, paper settings)
with 40 seeds; modular_stable with 8 seeds. ``--epochs`` / ``--modular-epochs`` shorten
training (the full parities length takes ~20 min per mode on the shared 2-core machine).

    .venv/bin/python benchmarks/train_sweep.py --epochs 20 --modular-epochs 2 --single-seeds 3
    .venv/bin/python benchmarks/train_sweep.py --profile   # where the batched job's time goes

``--with-statistics``: training + statistics instead of training alone: one process per
seed then its metrics job (``trainmap train`` + ``trainmap metrics DIR/checkpoints -o
DIR/metrics.csv --threads 1 --device cpu``, the workflow's two jobs per seed) against one
batched job with the statistics in the loop (``trainmap train-sweep --no-checkpoints
--metrics-device cpu``, config ``keep_checkpoints: false``).

    .venv/bin/python benchmarks/train_sweep.py --with-statistics --seeds 8 --epochs 20 --modular-seeds 0
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAINMAP = [sys.executable, "-m", "trainmap.cli"]


def _sets(overrides: dict) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]


def mode_main(args: argparse.Namespace) -> None:
    """Helper process: run one mode's subprocesses; print wall time and the children's peak RSS."""
    overrides = json.loads(args.overrides)
    out = Path(args.out)
    started = time.perf_counter()
    if args.mode == "single":
        for seed in range(args.single_seeds):
            subprocess.run([*TRAINMAP, "train", args.task, "--seed", str(seed), "--out", str(out / str(seed)),
                            "--threads", "1", "--no-progress", *_sets(overrides)], check=True,
                           stderr=subprocess.DEVNULL)
            if args.statistics:
                subprocess.run([*TRAINMAP, "metrics", str(out / str(seed) / "checkpoints"), "-o",
                                str(out / str(seed) / "metrics.csv"), "--threads", "1", "--device", "cpu",
                                "--no-progress"], check=True, stderr=subprocess.DEVNULL)
    else:
        in_loop = ["--no-checkpoints", "--metrics-device", "cpu"] if args.statistics else []
        subprocess.run([*TRAINMAP, "train-sweep", "--task", args.task, "--seeds", f"0-{args.seeds - 1}",
                        "--out-dir", str(out), "--threads", "1", *in_loop, *_sets(overrides)], check=True,
                       stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_mb": peak_mb}))


def run_mode(mode: str, task: str, seeds: int, overrides: dict, root: Path, single_seeds: int,
             statistics: bool = False) -> dict:
    """One mode in a helper process. ``single_seeds`` < ``seeds``: only that many per-seed
    processes are run and wall time, steps and loop times are scaled by seeds/single_seeds
    (every seed costs the same: same steps, same start-up); printed as extrapolated."""
    out = root / f"{task}-{mode}"
    measured = single_seeds if mode == "single" else seeds
    done = subprocess.run([sys.executable, __file__, "--_mode", mode, "--_task", task, "--seeds", str(seeds),
                           "--single-seeds", str(single_seeds), *(["--with-statistics"] if statistics else []),
                           "--_out", str(out), "--_overrides", json.dumps(overrides)],
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    steps, loop = 0, {"train_s": 0.0, "eval_s": 0.0, "checkpoint_io_s": 0.0}
    for seed in range(measured):
        record = json.loads((out / str(seed) / "run.json").read_text())
        steps += record["final_step"]
        for key in loop:
            loop[key] += record["timing"][key]
    scale = seeds / measured
    result["wall_s"] *= scale
    result.update(steps=steps * scale, steps_per_s=steps / (result["wall_s"] / scale),
                  extrapolated_from=measured if scale != 1 else None, **{k: v * scale for k, v in loop.items()})
    return result


def in_process(task: str, seeds: int, overrides: dict, root: Path) -> tuple[float, float]:
    """Seconds to train ``seeds`` seeds one after the other with train_run, and as one
    train_sweep, in this process (no start-up: the training loops alone)."""
    from trainmap.train import train_run
    from trainmap.train.sweep import train_sweep

    train_run(task, 10**6, root / f"warm-{task}", {**overrides, "max_steps": 1}, threads=1, progress=False)  # imports
    started = time.perf_counter()
    for seed in range(seeds):
        train_run(task, seed, root / f"{task}-inproc-single" / str(seed), overrides, threads=1, progress=False)
    single = time.perf_counter() - started
    started = time.perf_counter()
    train_sweep(task, list(range(seeds)), root / f"{task}-inproc-batched", overrides, threads=1)
    return single, time.perf_counter() - started


def profile_batched(task: str, seeds: int, overrides: dict, root: Path) -> None:
    import cProfile
    import pstats

    from trainmap.train.sweep import train_sweep

    profiler = cProfile.Profile()
    profiler.enable()
    train_sweep(task, list(range(seeds)), root / "profile", overrides, threads=1)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40, help="parities seeds (default 40; 0: skip)")
    parser.add_argument("--epochs", type=int, default=500, help="parities epochs (default 500, the paper's)")
    parser.add_argument("--modular-seeds", type=int, default=8, help="modular_stable seeds (default 8; 0: skip)")
    parser.add_argument("--modular-epochs", type=int, default=300, help="modular_stable epochs (default 300)")
    parser.add_argument("--single-seeds", type=int, default=0,
                        help="run only this many one-seed processes and extrapolate to --seeds (0: all)")
    parser.add_argument("--profile", action="store_true", help="profile the batched parities job in-process instead")
    parser.add_argument("--skip-in-process", action="store_true",
                        help="skip the in-process comparison (40 train_run calls: ~5 min at full length)")
    parser.add_argument("--with-statistics", action="store_true",
                        help="training + statistics: per seed train + metrics job, against a sweep with the "
                        "statistics in the loop (no checkpoint files)")
    parser.add_argument("--_mode")
    parser.add_argument("--_task")
    parser.add_argument("--_out")
    parser.add_argument("--_overrides")
    args = parser.parse_args()
    if args._mode:
        mode_main(argparse.Namespace(mode=args._mode, task=args._task, seeds=args.seeds, out=args._out,
                                     overrides=args._overrides, single_seeds=args.single_seeds or args.seeds,
                                     statistics=args.with_statistics))
        return
    cases = [("parities", args.seeds, {"epochs": args.epochs})] if args.seeds else []
    if args.modular_seeds:
        cases.append(("modular_stable", args.modular_seeds, {"epochs": args.modular_epochs}))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.profile:
            profile_batched("parities", args.seeds, {"epochs": args.epochs}, root)
            return
        for task, seeds, overrides in cases:
            what = "training + statistics" if args.with_statistics else "training"
            print(f"{task}: {seeds} seeds, {overrides}, 1 thread, {what}", flush=True)
            if not args.with_statistics and not args.skip_in_process:
                single_s, batched_s = in_process(task, seeds, overrides, root)
                print(f"  in one process (no start-up): {seeds} x train_run {single_s:.1f} s, train_sweep "
                      f"{batched_s:.1f} s, ratio {single_s / batched_s:.1f}x", flush=True)
            k = min(args.single_seeds or seeds, seeds)
            results = {mode: run_mode(mode, task, seeds, overrides, root, k, args.with_statistics)
                       for mode in ("single", "batched")}
            for mode, r in results.items():
                label = "one process per seed" if mode == "single" else "one batched job"
                if args.with_statistics:
                    label = "train + metrics per seed" if mode == "single" else "sweep, stats in loop"
                if r.get("extrapolated_from"):
                    label += f" (ran {r['extrapolated_from']}, x{seeds / r['extrapolated_from']:.0f})"
                print(f"  {label:21s} wall {r['wall_s']:8.1f} s  {r['steps_per_s']:9.0f} steps/s  "
                      f"peak {r['peak_mb']:7.0f} MB  loop: train {r['train_s']:.1f} s, eval {r['eval_s']:.1f} s, "
                      f"checkpoint I/O {r['checkpoint_io_s']:.1f} s", flush=True)
            single, batched = results["single"], results["batched"]
            print(f"  ratio (one process per seed / batched): wall {single['wall_s'] / batched['wall_s']:.1f}x, "
                  f"training loop {single['train_s'] / batched['train_s']:.1f}x, "
                  f"peak memory {batched['peak_mb'] / single['peak_mb']:.1f}x (batched / single)", flush=True)


if __name__ == "__main__":
    main()

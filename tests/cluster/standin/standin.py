"""Helpers of the stand-in workflow (tests/cluster/standin/Snakefile).

    python standin.py train --seed 3 --steps 0,10,20 --out results/standin/runs/3
    python standin.py table runs/*/metrics.csv -o table.csv

`train` writes tiny deterministic safetensors checkpoints (a 2-layer MLP whose weights
drift with the step) and job.json saying where it ran: the SLURM job id when it ran in
a SLURM job, so the cluster test can tie outputs to SLURM's own job records. `table`
gathers one row per seed: its last checkpoint's statistics.
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from trainmap import atomic


def train(seed: int, steps: list[int], out: Path) -> None:
    rng = np.random.default_rng(seed)
    weights = {
        "fc1.weight": rng.standard_normal((16, 8)),
        "fc1.bias": rng.standard_normal(16),
        "fc2.weight": rng.standard_normal((4, 16)),
        "fc2.bias": rng.standard_normal(4),
    }
    drift = {name: rng.standard_normal(w.shape) for name, w in weights.items()}
    for step in steps:
        tensors = {name: (w + 0.01 * step * drift[name]).astype(np.float32) for name, w in weights.items()}
        target = out / "checkpoints" / f"step{step:08d}.safetensors"
        with atomic.atomic_path(target) as tmp:
            save_file(tensors, str(tmp))
        print(f"seed {seed}: wrote {target}", file=sys.stderr)
    atomic.write_json(
        out / "job.json",
        {
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "host": socket.gethostname(),
            "seed": seed,
        },
    )


def table(inputs: list[Path], output: Path) -> None:
    rows = []
    for path in inputs:
        with open(path, newline="") as fh:
            last = list(csv.DictReader(fh))[-1]
        seed = path.parent.name
        rows.append({"seed": seed, **{k: v for k, v in last.items() if k != "path"}})
    rows.sort(key=lambda r: int(r["seed"]))
    with atomic.atomic_path(output) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {output}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--steps", required=True, help="comma-separated steps")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("table")
    p.add_argument("inputs", nargs="+", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args.seed, [int(s) for s in args.steps.split(",")], args.out)
    else:
        table(args.inputs, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

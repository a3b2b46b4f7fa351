"""Benchmark of a seed sweep's statistics in the loop (issue 21; not a test): the 14
statistics of every seed at one checkpoint step, three ways, in one process:

* ``engine``: one Rust engine call over every seed's host copy, the seeds in parallel on
  ``--threads`` threads (``engine.models_weights_metrics``: the sweep's CPU path, and its
  path with ``metrics.device: cpu`` on a GPU);
* ``torch per seed``: ``metrics_torch.tensors_metrics`` once per seed on ``--device`` (what
  the sweep did on a GPU before the stacked path);
* ``torch stacked``: ``metrics_torch.stacked_tensors_metrics`` of the stacked parameters,
  all seeds at once on ``--device`` (the sweep's GPU path now).

The weights are the task's real initial models (``build_model``, default settings), stacked
as a sweep holds them. Printed: milliseconds per checkpoint step (all seeds; the best of
``--repeats``), the ratios, and the largest relative difference between the ways' numbers.

    .venv/bin/python benchmarks/stacked_statistics.py                      # CPU (torch's CPU backend)
    .venv/bin/python benchmarks/stacked_statistics.py --device cuda --threads 16
"""

from __future__ import annotations

import argparse
import math
import time
import torch

from trainmap.metrics import metrics_torch
from trainmap.metrics.engine import METRIC_NAMES, models_weights_metrics
from trainmap.train.components import build_model
from trainmap.train.tasks import resolve_settings


def best_of(repeats: int, work, device: torch.device) -> tuple[float, list]:
    best, result = math.inf, None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        result = work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best, result


def largest_difference(a: list[dict], b: list[dict]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        for name in METRIC_NAMES:
            if math.isfinite(x[name]) and math.isfinite(y[name]):
                worst = max(worst, abs(x[name] - y[name]) / max(abs(y[name]), 1e-300))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="modular", help="task whose model is stacked (default modular)")
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--device", default="cpu", help="torch device of the torch ways (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="engine threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    settings = resolve_settings(args.task)
    models = [build_model(args.task, settings, seed) for seed in range(args.seeds)]
    names = [name for name, _ in models[0].named_parameters()]
    stacked = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).to(device)
               for name in names}
    per_seed = [{name: t[i] for name, t in stacked.items()} for i in range(args.seeds)]
    values = sum(math.prod(t.shape[1:]) for t in stacked.values())
    print(f"{args.task}: {args.seeds} seeds x {values:,} parameters ({len(names)} tensors), torch on {device}, "
          f"engine on {args.threads} threads", flush=True)

    def engine():
        return models_weights_metrics([{n: t.cpu() for n, t in w.items()} for w in per_seed], svd="exact",
                                      threads=args.threads)

    engine_s, engine_results = best_of(args.repeats, engine, device)

    def torch_per_seed():
        return [metrics_torch.tensors_metrics(list(w.items()), device=device)[0] for w in per_seed]

    def torch_stacked():
        return [r for r, _ in metrics_torch.stacked_tensors_metrics(list(stacked.items()), device=device)]

    per_seed_s, per_seed_results = best_of(args.repeats, torch_per_seed, device)
    stacked_s, stacked_results = best_of(args.repeats, torch_stacked, device)
    for label, seconds in (("engine", engine_s), ("torch per seed", per_seed_s), ("torch stacked", stacked_s)):
        print(f"  {label:15s} {seconds * 1e3:9.1f} ms per checkpoint step ({seconds * 1e3 / args.seeds:.2f} ms per seed)")
    print(f"  ratio: torch per seed / stacked {per_seed_s / stacked_s:.1f}x, engine / stacked {engine_s / stacked_s:.1f}x")
    print(f"  largest relative difference: stacked vs per seed {largest_difference(stacked_results, per_seed_results):.1e}, "
          f"stacked vs engine {largest_difference(stacked_results, engine_results):.1e}")


if __name__ == "__main__":
    main()

"""Cost of the engine's singular-value paths, per matrix shape (docs/metrics.md, "Which
algorithm auto picks").

For each shape, on one thread, times `tensor_metrics` on one float32 Gaussian matrix with
svd="exact", "randomized" and "auto", and numpy's float64 `X @ X.T` + `eigvalsh` of the
smaller Gram matrix (what the exact path computes). Prints the ratios auto/exact (must stay
≤ 1.1), exact/numpy (target ≤ 1.3) and randomized/exact, and which path auto took.

Usage: python benchmarks/svd_cost.py [--shapes 1024x4096,2048x8192,...] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one thread for numpy too: a fair comparison
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from trainmap import _rust_metrics as engine  # noqa: E402
from trainmap.options import MetricsOptions  # noqa: E402

DEFAULT_SHAPES = "1024x1024,3072x1024,1024x4096,4096x1024,2048x2048,2048x8192,3072x3072"


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def numpy_gram_eig(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    gram = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
    return np.linalg.eigvalsh(gram)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(f"{'shape':>11} {'exact s':>8} {'rand s':>8} {'auto s':>8} {'numpy s':>8} "
          f"{'auto/ex':>7} {'ex/np':>6} {'rand/ex':>7} auto picks")
    for text in args.shapes.split(","):
        rows, cols = map(int, text.split("x"))
        x = np.random.default_rng(0).standard_normal((rows, cols), dtype=np.float32)
        item = [("w.weight", "F32", [rows, cols], x)]
        run = {mode: (lambda m=mode: engine.tensor_metrics(item, MetricsOptions(svd=m), threads=1)) for mode in ("exact", "randomized", "auto")}
        times = {mode: best_time(fn, args.repeat) for mode, fn in run.items()}
        t_numpy = best_time(lambda: numpy_gram_eig(x), args.repeat)
        picks = run["auto"]()["svd"]
        print(f"{text:>11} {times['exact']:8.2f} {times['randomized']:8.2f} {times['auto']:8.2f} {t_numpy:8.2f} "
              f"{times['auto'] / times['exact']:7.2f} {times['exact'] / t_numpy:6.2f} "
              f"{times['randomized'] / times['exact']:7.2f} {picks}", flush=True)


if __name__ == "__main__":
    main()

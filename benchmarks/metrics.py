"""Benchmark of the metrics engine against the named baselines (issue: foundation).

Writes a BERT-base-shaped float32 checkpoint (12 layers of 4 × 768×768, 768×3072 and
3072×768 weight matrices with biases) and times, in one process:

* the engine (`trainmap.metrics.engine.checkpoint_metrics`), svd="exact" and svd="auto";
* numpy: per matrix, float64 `np.linalg.svd(compute_uv=False)` plus the norms;
* the original authors' torch path: per matrix `torch.svd` plus `matrix_norm(ord=2)`.

It checks that the engine's numbers equal numpy's to 1e-6 and prints the speed-up ratios.
Then, in a child process, it measures the engine's peak anonymous (private resident)
memory on a ~2 GB checkpoint and compares it with 4 × the largest tensor + 200 MB.

Usage: python benchmarks/metrics.py [--threads 2] [--workdir DIR] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def write_bert_like(path: Path, layers: int, d_model: int, d_ff: int, seed: int = 0) -> int:
    """Write a BERT-shaped float32 checkpoint layer by layer; return the largest tensor's bytes."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    shapes = {
        "attention.self.query": (d_model, d_model),
        "attention.self.key": (d_model, d_model),
        "attention.self.value": (d_model, d_model),
        "attention.output.dense": (d_model, d_model),
        "intermediate.dense": (d_ff, d_model),
        "output.dense": (d_model, d_ff),
    }
    for layer in range(layers):
        for name, shape in shapes.items():
            prefix = f"encoder.layer.{layer}.{name}"
            tensors[f"{prefix}.weight"] = (rng.standard_normal(shape, dtype=np.float32) * 0.02)
            tensors[f"{prefix}.bias"] = rng.standard_normal(shape[0], dtype=np.float32) * 0.01
        tensors[f"encoder.layer.{layer}.output.LayerNorm.weight"] = np.ones(d_model, np.float32)
    save_file(tensors, str(path))
    return max(t.nbytes for t in tensors.values())


def weight_matrices(path: Path):
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        for name in f.keys():
            if name.endswith(".weight") and "LayerNorm" not in name:
                yield name, f.get_tensor(name)


def numpy_baseline(path: Path) -> dict[str, float]:
    l1, l2, spectral, mean_lambda = [], [], [], []
    for _, w in weight_matrices(path):
        w = w.astype(np.float64)
        s = np.linalg.svd(w, compute_uv=False)
        l1.append(np.abs(w).sum())
        l2.append(np.linalg.norm(w))
        spectral.append(s[0])
        mean_lambda.append(s.mean())
    return {"l1": np.mean(l1), "l2": np.mean(l2), "spectral": np.mean(spectral), "mean_lambda": np.mean(mean_lambda)}


def torch_baseline(path: Path) -> dict[str, float]:
    import torch

    spectral, mean_lambda = [], []
    for _, w in weight_matrices(path):
        t = torch.from_numpy(w)
        _, s, _ = torch.svd(t)
        spectral.append(torch.linalg.matrix_norm(t, ord=2).item())
        mean_lambda.append(s.mean().item())
    return {"spectral": float(np.mean(spectral)), "mean_lambda": float(np.mean(mean_lambda))}


def timed(fn, repeats: int = 1):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def speed(workdir: Path, threads: int) -> None:
    import torch

    from trainmap.metrics.engine import checkpoint_metrics

    torch.set_num_threads(threads)
    path = workdir / "bert_base.safetensors"
    write_bert_like(path, layers=12, d_model=768, d_ff=3072)
    print(f"checkpoint: {path} ({path.stat().st_size / 1e6:.0f} MB, 72 weight matrices), threads={threads}")

    t_exact, exact = timed(lambda: checkpoint_metrics(path, svd="exact", threads=threads), repeats=2)
    t_auto, auto = timed(lambda: checkpoint_metrics(path, svd="auto", threads=threads), repeats=2)
    t_rand, _ = timed(lambda: checkpoint_metrics(path, svd="randomized", threads=threads), repeats=2)
    t_numpy, ref = timed(lambda: numpy_baseline(path))
    t_torch, ref_torch = timed(lambda: torch_baseline(path))

    worst = max(abs(exact[k] - v) / abs(v) for k, v in ref.items())
    worst_auto = max(abs(auto[k] - v) / abs(v) for k, v in ref.items())
    print(f"engine exact        {t_exact:8.2f} s")
    print(f"engine auto         {t_auto:8.2f} s   (all 72 matrices ≤ exact_max_dim: exact)")
    print(f"engine randomized   {t_rand:8.2f} s   (for reference; rank 64)")
    print(f"numpy float64 svd   {t_numpy:8.2f} s")
    print(f"torch svd (authors) {t_torch:8.2f} s")
    print(f"ratio numpy / engine exact : {t_numpy / t_exact:5.2f}x  (target >= 4)")
    print(f"ratio torch / engine exact : {t_torch / t_exact:5.2f}x  (target >= 5)")
    print(f"ratio numpy / engine auto  : {t_numpy / t_auto:5.2f}x")
    print(f"max relative difference engine exact vs numpy: {worst:.2e} (target <= 1e-6)")
    print(f"max relative difference engine auto  vs numpy: {worst_auto:.2e}")
    print(f"torch float32 spectral vs numpy float64: {abs(ref_torch['spectral'] - ref['spectral']) / ref['spectral']:.1e}")


def _memory_child(path: str, threads: int) -> None:
    """Run in a child process: compute the metrics while a thread samples RssAnon."""
    from trainmap.metrics.engine import checkpoint_metrics

    def rss_anon_kb() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        raise RuntimeError("no RssAnon in /proc/self/status")

    baseline = rss_anon_kb()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_anon_kb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    checkpoint_metrics(path, svd="auto", threads=threads)
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    print(json.dumps({"baseline_kb": baseline, "peak_kb": peak, "seconds": elapsed}))


def memory(workdir: Path, threads: int) -> None:
    path = workdir / "two_gb.safetensors"
    largest = write_bert_like(path, layers=40, d_model=1024, d_ff=4096, seed=1)
    size = path.stat().st_size
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(path), "--threads", str(threads)],
        check=True, capture_output=True, text=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    used_mb = (report["peak_kb"] - report["baseline_kb"]) / 1024
    limit_mb = 4 * largest / 2**20 + 200
    print(f"memory checkpoint: {size / 2**30:.2f} GiB, largest tensor {largest / 2**20:.0f} MiB, "
          f"{report['seconds']:.1f} s")
    print(f"peak anonymous memory above interpreter baseline: {used_mb:.0f} MiB "
          f"(limit 4 x largest + 200 = {limit_mb:.0f} MiB): {'OK' if used_mb <= limit_mb else 'OVER'}")
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(args.memory_child, args.threads)
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        speed(Path(tmp), args.threads)
        if not args.skip_memory:
            memory(Path(tmp), args.threads)


if __name__ == "__main__":
    main()

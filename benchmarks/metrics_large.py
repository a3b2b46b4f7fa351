"""Benchmark of the metrics engine on Pythia-sized checkpoints (issue: scale).

Writes bf16 checkpoints shaped like Pythia-410M (24 layers of 3072×1024, 1024×1024,
4096×1024 and 1024×4096 weight matrices) and Pythia-1B (16 layers of 6144×2048, 2048×2048,
8192×2048 and 2048×8192), each with biases and excluded LayerNorm/embedding tensors, in two
spectra: random init (Gaussian, std 0.02) and trained-like (a power-law head of 256
directions, σᵢ ∝ i^-0.7, over a Gaussian bulk). For each it times, each in a fresh child
process (so peak memory is the method's own):

* the engine (`trainmap.metrics.engine.checkpoint_metrics`, device="cpu"): svd exact, randomized, auto;
* numpy Gram + `eigvalsh` in float64 per matrix, with the norms and moments (no median):
  the limit of the engine's exact algorithm in numpy/LAPACK;
* numpy `svd(compute_uv=False)` in float64 per matrix;
* WeightWatcher's `analyze()` on the same safetensors file (the peer tool; its own
  float32 SVDs and power-law fits, one layer at a time, single-threaded BLAS);

and prints time, peak anonymous memory (sampled RssAnon above the interpreter's baseline:
the engine reads the file into small buffers; the page cache it fills is not the
process's), VmHWM (all resident pages, file-backed included), and the largest relative error
of the method's statistics against engine exact. Ratios: exact / numpy limit (goal ≤ 1.3),
auto / exact (goal ≤ 1.10), WeightWatcher / engine exact. Memory goal for the exact path on
the 1B shape: ≤ 4 × the largest matrix in float64 + 300 MB.

Every method's time is linear in the number of layers (all layers have the same shapes),
so `--layers L` (default 1) keeps the default run under ~10 minutes on 2 cores; the full
models take 24× (410M) and 16× (1B) the printed times. The methods the ratios compare are
timed best of `--repeats` (default 2). There is no GPU
here; on a CUDA machine `--device cuda` adds the torch path (trainmap.metrics.metrics_torch).

Usage: python benchmarks/metrics_large.py [--layers 1] [--repeats 2] [--threads 2] [--workdir DIR]
       [--models 410m,1b] [--spectra random,trained] [--skip-ww] [--skip-svd] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SHAPES = {
    "410m": {"layers": 24, "d": 1024, "matrices": {"attention.query_key_value": (3072, 1024), "attention.dense": (1024, 1024),
                                                 "mlp.dense_h_to_4h": (4096, 1024), "mlp.dense_4h_to_h": (1024, 4096)}},
    "1b": {"layers": 16, "d": 2048, "matrices": {"attention.query_key_value": (6144, 2048), "attention.dense": (2048, 2048),
                                               "mlp.dense_h_to_4h": (8192, 2048), "mlp.dense_4h_to_h": (2048, 8192)}},
}
METHODS = ("engine-exact", "engine-randomized", "engine-auto", "numpy-gram-eigvalsh", "numpy-svdvals", "weightwatcher")
RATIO_METHODS = ("engine-exact", "engine-auto", "numpy-gram-eigvalsh")
HEAD_RANK = 256


def trained_like(rows: int, cols: int, generator) -> "torch.Tensor":
    """Power-law head (σᵢ ≈ 0.5·i^-0.7·√max-side for i ≤ 256) over a Gaussian bulk of std 0.01."""
    import torch

    u = torch.randn(rows, HEAD_RANK, generator=generator) / math.sqrt(rows)
    v = torch.randn(HEAD_RANK, cols, generator=generator) / math.sqrt(cols)
    head = 0.5 * math.sqrt(max(rows, cols)) * torch.arange(1, HEAD_RANK + 1, dtype=torch.float32) ** -0.7
    return (u * head * 0.02) @ v + 0.01 * torch.randn(rows, cols, generator=generator)


def write_checkpoint(path: Path, model: str, spectrum: str, layers: int, seed: int = 0) -> int:
    """Write a Pythia-shaped bf16 checkpoint of ``layers`` layers; return the largest
    weight matrix's float64 size in bytes."""
    import torch
    from safetensors.torch import save_file

    spec = SHAPES[model]
    generator = torch.Generator().manual_seed(seed)
    tensors = {"gpt_neox.embed_in.weight": (0.02 * torch.randn(1000, spec["d"], generator=generator)).bfloat16()}
    for layer in range(layers):
        prefix = f"gpt_neox.layers.{layer}"
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"{prefix}.{norm}.weight"] = torch.ones(spec["d"], dtype=torch.bfloat16)
            tensors[f"{prefix}.{norm}.bias"] = torch.zeros(spec["d"], dtype=torch.bfloat16)
        for name, (rows, cols) in spec["matrices"].items():
            if spectrum == "random":
                weight = 0.02 * torch.randn(rows, cols, generator=generator)
            else:
                weight = trained_like(rows, cols, generator)
            tensors[f"{prefix}.{name}.weight"] = weight.bfloat16()
            tensors[f"{prefix}.{name}.bias"] = (0.01 * torch.randn(rows, generator=generator)).bfloat16()
    save_file(tensors, str(path))
    return max(rows * cols * 8 for rows, cols in spec["matrices"].values())


# --- child process: one method on one checkpoint -------------------------------------------

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _weight_matrices(path: str):
    """(name, float64 numpy matrix) of every counted weight matrix, one at a time."""
    import torch
    from safetensors import safe_open

    from trainmap import _rust_metrics

    with safe_open(path, framework="pt") as f:
        entries = [(name, f.get_slice(name).get_shape()) for name in f.keys()]
        for name, role in _rust_metrics.select_tensors(entries):
            if role == "matrix":
                t = f.get_tensor(name)
                yield name, t.to(torch.float64).reshape(t.shape[0], -1).numpy()


def _numpy_stats(path: str, singular_values, threads: int) -> dict[str, float]:
    """Per-matrix spectrum, norms and moments in numpy float64, ``threads`` matrices at a
    time (LAPACK releases the GIL; each call single-threaded, as the engine's workers are)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    def summary(a):
        sigma = singular_values(a)
        return (np.abs(a).sum(), math.sqrt((a * a).sum()), np.trace(a), sigma.max(), sigma.mean(), sigma.var(),
                a.size, a.sum())

    rows, batch = [], []
    with ThreadPoolExecutor(threads) as pool:
        for _, a in _weight_matrices(path):
            batch.append(a)
            if len(batch) == threads:
                rows += pool.map(summary, batch)
                batch = []
        rows += pool.map(summary, batch)
    cols = list(zip(*rows))
    names = ("l1", "l2", "trace", "spectral", "mean_lambda", "variance_lambda")
    stats = {name: float(np.mean(col)) for name, col in zip(names, cols)}
    stats["mean_w"] = float(sum(cols[7]) / sum(cols[6]))
    return stats


def _gram_eigvalsh(a):
    import numpy as np

    short = a if a.shape[0] <= a.shape[1] else a.T
    return np.sqrt(np.clip(np.linalg.eigvalsh(short @ short.T), 0, None))


def _svdvals(a):
    import numpy as np

    return np.linalg.svd(a, compute_uv=False)


def _run_method(method: str, path: str, threads: int, device: str) -> tuple[dict[str, float], dict]:
    if method.startswith("engine"):
        from trainmap.metrics.engine import checkpoint_metrics

        if method == "engine-torch":
            return checkpoint_metrics(path, svd="exact", device=device), {}
        svd = method.split("-", 1)[1]
        return checkpoint_metrics(path, svd=svd, threads=threads, device="cpu"), {}
    if method == "numpy-gram-eigvalsh":
        return _numpy_stats(path, _gram_eigvalsh, threads), {}
    if method == "numpy-svdvals":
        return _numpy_stats(path, _svdvals, threads), {}
    if method == "weightwatcher":
        import logging

        import weightwatcher

        logging.getLogger("weightwatcher").setLevel(logging.ERROR)
        details = weightwatcher.WeightWatcher(model=str(Path(path).parent)).analyze()
        return {}, {"ww_layers": int(len(details)), "ww_alpha_mean": float(details["alpha"].mean())}
    raise ValueError(method)


def child(method: str, path: str, threads: int, device: str) -> None:
    """Time ``method`` on ``path`` while a thread samples RssAnon; print one JSON line."""
    baseline = _status_kb("RssAnon")
    hwm_before = _status_kb("VmHWM")
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _status_kb("RssAnon"))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    stats, extra = _run_method(method, path, threads, device)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    numbers = {k: float(v) for k, v in stats.items() if k not in ("svd", "content_hash")}
    print(json.dumps({"seconds": seconds, "anon_mb": (peak - baseline) / 1024, "hwm_mb": _status_kb("VmHWM") / 1024,
                      "hwm_before_mb": hwm_before / 1024, "stats": numbers, "svd": stats.get("svd", ""), **extra}))


# --- parent ---------------------------------------------------------------------------------

def measure(method: str, path: Path, threads: int, device: str) -> dict:
    """Run one method in a fresh interpreter. BLAS is single-threaded there: the engine and
    the numpy methods parallelise over matrices instead, and on a shared machine OpenBLAS's
    own threads spin (eigvalsh of 1024² took 25x longer with 2 threads under load)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", method, str(path), "--threads", str(threads),
                          "--device", device], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worst_error(stats: dict[str, float], exact: dict[str, float]) -> float:
    """Largest relative difference over the statistics ``stats`` has (NaN-free ones)."""
    errors = [abs(v - exact[k]) / abs(exact[k]) for k, v in stats.items()
              if k in exact and exact[k] != 0 and not math.isnan(exact[k])]
    return max(errors) if errors else float("nan")


def bench_one(workdir: Path, model: str, spectrum: str, args) -> dict:
    path = workdir / f"{model}-{spectrum}" / "model.safetensors"
    path.parent.mkdir()
    largest_f64 = write_checkpoint(path, model, spectrum, args.layers)
    print(f"\n== Pythia-{model.upper()}-shaped, {spectrum} spectrum, {args.layers} of {SHAPES[model]['layers']} layers "
          f"({4 * args.layers} matrices), bf16 {path.stat().st_size / 2**20:.0f} MiB, threads={args.threads}")
    print(f"{'method':22s} {'time s':>8s} {'anon MB':>8s} {'VmHWM MB':>9s} {'max rel err vs exact':>21s}  svd")
    methods = [m for m in METHODS if not (args.skip_ww and m == "weightwatcher") and not (args.skip_svd and m == "numpy-svdvals")]
    if args.device.startswith("cuda"):
        methods.append("engine-torch")
    results = {}
    for method in methods:
        # The ratios' terms are timed best of --repeats (the machine may be shared).
        repeats = args.repeats if method in RATIO_METHODS else 1
        r = min((measure(method, path, args.threads, args.device) for _ in range(repeats)), key=lambda r: r["seconds"])
        results[method] = r
        err = worst_error(r["stats"], results["engine-exact"]["stats"]) if r["stats"] else float("nan")
        print(f"{method:22s} {r['seconds']:8.2f} {r['anon_mb']:8.0f} {r['hwm_mb']:9.0f} {err:21.1e}  {r['svd']}")
    t = {m: r["seconds"] for m, r in results.items()}
    print(f"ratio engine exact / numpy Gram+eigvalsh : {t['engine-exact'] / t['numpy-gram-eigvalsh']:5.2f}  (goal <= 1.3)")
    print(f"ratio engine auto / engine exact         : {t['engine-auto'] / t['engine-exact']:5.2f}  (goal <= 1.10)")
    if "numpy-svdvals" in t:
        print(f"ratio numpy svdvals / engine exact       : {t['numpy-svdvals'] / t['engine-exact']:5.2f}")
    if "weightwatcher" in t:
        print(f"ratio WeightWatcher / engine exact       : {t['weightwatcher'] / t['engine-exact']:5.2f}  "
              f"(ww: {results['weightwatcher'].get('ww_layers')} layers analysed)")
    if model == "1b":
        limit = 4 * largest_f64 / 2**20 + 300
        used = results["engine-exact"]["anon_mb"]
        print(f"engine exact peak anonymous memory {used:.0f} MB; goal 4 x largest f64 matrix + 300 = {limit:.0f} MB: "
              f"{'OK' if used <= limit else 'OVER'}")
    path.unlink()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1, help="layers per checkpoint (times scale linearly)")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for the methods the ratios compare")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--models", default="410m,1b")
    parser.add_argument("--spectra", default="random,trained")
    parser.add_argument("--skip-ww", action="store_true", help="leave out WeightWatcher")
    parser.add_argument("--skip-svd", action="store_true", help="leave out numpy svdvals")
    parser.add_argument("--device", default="cpu", help="cuda[:N] adds the torch path")
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.threads, args.device)
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for model in args.models.split(","):
            for spectrum in args.spectra.split(","):
                bench_one(Path(tmp), model, spectrum, args)


if __name__ == "__main__":
    main()

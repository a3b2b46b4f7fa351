"""Benchmark (not a test): the fast E-step against plain hmmlearn, same data, same process.

For each covariance type and number of states, fits the same sequences (the paper's shape:
runs × checkpoints × 14 features, sampled from a known HMM) with a fixed number of EM
iterations (tol 0, so every variant does the same work) three ways:

* ``fast``    — trainmap.analysis.hmm_estep's ``FastGaussianHMM`` (log-space forward-backward),
* ``log``     — ``hmmlearn.hmm.GaussianHMM(implementation="log")`` (what fitting would use otherwise),
* ``scaling`` — ``GaussianHMM(implementation="scaling")``,

and prints the best-of-``--repeat`` CPU time of each and the ratios log/fast and scaling/fast
(> 1: the fast E-step wins). One BLAS thread, so the numbers do not depend on the load of
other cores.

    .venv/bin/python benchmarks/estep.py [--runs 32] [--length 1000] [--iters 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def _fit_time(cls, X, lengths, n, cov, iters, implementation, repeat) -> tuple[float, float]:
    best, loglik = float("inf"), float("nan")
    for _ in range(repeat):
        model = cls(n_components=n, covariance_type=cov, n_iter=iters, tol=0.0, random_state=0,
                    implementation=implementation)
        start = time.process_time()
        model.fit(X, lengths)
        best = min(best, time.process_time() - start)
        loglik = model.monitor_.history[-1]
    return best, loglik


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--features", type=int, default=14)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--states", type=int, nargs="+", default=[2, 5, 8])
    args = parser.parse_args()

    from hmmlearn.hmm import GaussianHMM
    from threadpoolctl import threadpool_limits

    from trainmap.analysis.hmm_estep import fast_gaussian_hmm_class

    sys.path.insert(0, str(Path(__file__).parent))
    from hmm import sample_runs  # benchmarks/hmm.py: the same synthetic runs

    runs = sample_runs(args.runs, args.length, args.features, 5, seed=0)
    X = np.concatenate(runs)
    lengths = [len(r) for r in runs]
    fast_cls = fast_gaussian_hmm_class()
    print(f"E-step benchmark: {args.runs} runs x {args.length} checkpoints x {args.features} features, "
          f"{args.iters} EM iterations per fit, best CPU time of {args.repeat}, 1 BLAS thread")
    print(f"{'cov':5} {'n':>2} {'fast s':>8} {'log s':>8} {'scaling s':>9} {'log/fast':>9} {'scaling/fast':>12} "
          f"{'|dLL| fast-log':>14}")
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cov in ("full", "diag", "tied"):
            for n in args.states:
                fast, ll_fast = _fit_time(fast_cls, X, lengths, n, cov, args.iters, "log", args.repeat)
                log, ll_log = _fit_time(GaussianHMM, X, lengths, n, cov, args.iters, "log", args.repeat)
                scaling, _ = _fit_time(GaussianHMM, X, lengths, n, cov, args.iters, "scaling", args.repeat)
                print(f"{cov:5} {n:>2} {fast:8.2f} {log:8.2f} {scaling:9.2f} {log / fast:9.2f} {scaling / fast:12.2f} "
                      f"{abs(ll_fast - ll_log):14.2e}")


if __name__ == "__main__":
    main()

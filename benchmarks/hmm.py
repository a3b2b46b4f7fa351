"""Benchmark (not a test): HMM model selection at the paper's scale.

40 runs × 1000 checkpoints × 14 features, n = 1..8 states, 5 restarts, full covariance —
the workload of one experiment's ``trainmap hmm-select``. Runs are sampled from a known
5-state left-to-right Gaussian HMM and z-scored per run, like real metrics. Prints the wall
time, the chosen number of states and how many fits converged.

    .venv/bin/python benchmarks/hmm.py [--threads 2] [--runs 40] [--length 1000]

Goal (issue 4): at most 3 minutes with 2 threads on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np


def sample_runs(n_runs: int, length: int, n_features: int, n_states: int, seed: int) -> list[np.ndarray]:
    """Per-run z-scored sequences sampled from a left-to-right Gaussian HMM."""
    from hmmlearn.hmm import GaussianHMM

    from trainmap.analysis.runs import zscore

    rng = np.random.default_rng(seed)
    model = GaussianHMM(n_components=n_states, covariance_type="full")
    model.n_features = n_features
    model.startprob_ = np.eye(n_states)[0]
    stay = 0.995
    transmat = np.zeros((n_states, n_states))
    for k in range(n_states):
        if k == n_states - 1:
            transmat[k, k] = 1.0
        else:
            transmat[k, k] = stay
            transmat[k, k + 1 :] = (1 - stay) / (n_states - 1 - k)
    model.transmat_ = transmat
    model.means_ = rng.normal(0.0, 2.0, size=(n_states, n_features))
    covars = []
    for _ in range(n_states):
        a = rng.normal(size=(n_features, n_features)) / np.sqrt(n_features)
        covars.append(a @ a.T + 0.3 * np.eye(n_features))
    model.covars_ = np.array(covars)
    runs = []
    for i in range(n_runs):
        X, _ = model.sample(length, random_state=int(rng.integers(2**31)))
        runs.append(zscore(X, 1000)[0])
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--features", type=int, default=14)
    parser.add_argument("--max-components", type=int, default=8)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--true-states", type=int, default=5)
    args = parser.parse_args()

    from trainmap.analysis.hmm_select import select_hmm

    runs = sample_runs(args.runs, args.length, args.features, args.true_states, seed=0)
    print(f"model selection: {args.runs} runs x {args.length} checkpoints x {args.features} features, "
          f"n = 1..{args.max_components}, {args.restarts} restarts, full covariance, {args.threads} threads")
    start = time.perf_counter()
    cpu0 = time.process_time()
    sel = select_hmm(runs, max_components=args.max_components, n_restarts=args.restarts,
                     covariance_type="full", threads=args.threads, seed=0)
    wall = time.perf_counter() - start
    if args.threads > 1:  # reap the worker processes so that their CPU time is counted
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - cpu0 + children.ru_utime + children.ru_stime
    load = os.getloadavg()[0]
    table = sel.table
    ok = table["status"] == "ok"
    print(f"wall time: {wall:.1f} s ({wall / 60:.2f} min; goal <= 3 min, ratio {wall / 180:.2f})")
    print(f"CPU time, all processes: {cpu:.1f} s (CPU / threads = {cpu / args.threads:.1f} s: the wall time "
          f"on otherwise idle cores); 1-min load average at the end: {load:.1f}")
    print(f"chosen n: {sel.n_components} (true {args.true_states}), restart {sel.restart}")
    print(f"fits: {len(table)}, ok {int(ok.sum())}, failed {int((~ok).sum())}, "
          f"converged {int(table['converged'].sum())}")
    print("EM iterations per n (mean over restarts):",
          ", ".join(f"{n}: {g['n_iter'].mean():.0f}" for n, g in table.groupby("n_components")))


if __name__ == "__main__":
    main()

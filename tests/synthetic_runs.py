"""Synthetic run directories with a known latent structure, for analysis and workflow tests.

Every run walks a left-to-right chain of latent states:

    state 0 ("init")  →  [state 1 ("detour"), taken by some runs]  →  state 2 ("converged")

and writes what the training and metrics stages would: ``metrics.csv`` (``path``,
``step``, the 14 statistics, ``svd``), ``log.csv`` (``step``, ``epoch``, ``train_loss``,
``train_accuracy``, ``eval_loss``, ``eval_accuracy``) and ``run.json``. Each state emits
the statistics around its own mean (``l2`` falls 10 → 9 → 7; the other columns get
seeded, well separated means). ``eval_accuracy`` stays below the threshold until shortly (0–3
checkpoints) after the run enters state 2 and jumps above it there, so the convergence step
follows the step at which a run first reaches state 2 — later for runs through the detour
state, which therefore carries a positive regression coefficient.

The first ``zscore_first_n`` (= ``n_checkpoints // 10``) checkpoints are the same in every
run, so that z-scoring over them standardises all runs alike and the three states keep the
same z-scored means in every run (per-run z-scoring over whole runs would otherwise shift
the states of detour runs against the others and blur the planted structure). Pass
``exp.zscore_first_n`` to the HMM stage.

Usage::

    from synthetic_runs import write_synthetic_runs
    exp = write_synthetic_runs(tmp_path / "runs", n_runs=12)
    exp.run_dirs, exp.true_states, exp.convergence, exp.detour_runs
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = (
    "l1", "l2", "code_sparsity", "trace", "spectral", "computational_sparsity", "mean_lambda",
    "variance_lambda", "mean_w", "median_w", "var_w", "mean_b", "median_b", "var_b",
)
INIT, DETOUR, CONVERGED = 0, 1, 2
THRESHOLD = 0.9


@dataclass
class SyntheticExperiment:
    """What :func:`write_synthetic_runs` wrote, and the truth behind it."""

    root: Path
    run_dirs: list[Path]
    run_ids: list[str]
    true_states: dict[str, np.ndarray]
    convergence: dict[str, int | None]
    detour_runs: list[str]
    steps: np.ndarray
    state_means: np.ndarray
    zscore_first_n: int
    extra: dict = field(default_factory=dict)


def state_means(seed: int = 1234) -> np.ndarray:
    """Raw-scale mean of every statistic in each of the three states, shape (3, 14)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(1.0, 5.0, size=len(METRICS))
    means = np.stack([base, base + rng.choice([-1, 1], len(METRICS)) * rng.uniform(0.6, 1.2, len(METRICS)),
                      base + rng.choice([-1, 1], len(METRICS)) * rng.uniform(1.5, 2.5, len(METRICS))])
    means[:, METRICS.index("l2")] = [10.0, 9.0, 7.0]
    return means


def write_synthetic_runs(
    root: str | Path,
    n_runs: int = 12,
    n_checkpoints: int = 120,
    *,
    detour_fraction: float = 0.5,
    step_every: int = 10,
    seed: int = 0,
    noise: float = 0.3,
    no_biases: bool = False,
    constant_column: str | None = None,
    nan_runs: tuple[int, ...] = (),
    short_runs: tuple[int, ...] = (),
    drop_log_columns: tuple[str, ...] = (),
    never_converge: tuple[int, ...] = (),
) -> SyntheticExperiment:
    """Write ``n_runs`` run directories ``root/<seed>/`` and return their ground truth.

    Parameters
    ----------
    n_runs, n_checkpoints : runs and checkpoints per run (logged every ``step_every`` steps).
    detour_fraction : share of runs that pass through the detour state (at least one run
        takes it and at least one does not, when ``n_runs >= 2``, unless it is exactly 0 or
        1: none or every run; a condition of a comparison that never or always detours).
    seed : seeds of the runs are ``seed*1000 + i``; all randomness derives from it.
    noise : standard deviation of the statistics around their state mean, relative to the
        gap between states (which is ~1 in raw units).
    no_biases : write ``mean_b``, ``median_b``, ``var_b`` as NaN in every run (a model
        without biases).
    constant_column : write this statistic as the same constant in every run.
    nan_runs : indices of runs given a NaN row (the HMM stage must leave them out).
    short_runs : indices of runs cut to a single checkpoint.
    drop_log_columns : columns left out of every log.csv (e.g. ``("eval_accuracy",)``).
    never_converge : indices of runs that enter the detour state and stay there, their
        accuracy never exceeding the threshold (``convergence`` truth None).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    means = state_means()
    n_detour = int(round(detour_fraction * n_runs))
    if n_runs >= 2 and 0 < detour_fraction < 1:
        n_detour = min(max(n_detour, 1), n_runs - 1)
    takes_detour = np.zeros(n_runs, bool)
    takes_detour[rng.permutation(n_runs)[:n_detour]] = True
    steps = np.arange(n_checkpoints) * step_every
    # Every run starts with the same `common_start` checkpoints (all in state 0), so that
    # z-scoring over them (zscore_first_n = common_start) standardises all runs alike.
    common_start = n_checkpoints // 10
    shared_start = means[INIT] + noise * rng.standard_normal((common_start, len(METRICS)))
    run_dirs, run_ids, truth, conv, detours = [], [], {}, {}, []
    for i in range(n_runs):
        run_seed = seed * 1000 + i
        t_init = int(rng.integers(n_checkpoints // 6, n_checkpoints // 4))
        t_detour = int(rng.integers(n_checkpoints // 5, n_checkpoints // 3)) if takes_detour[i] else 0
        if i in never_converge:  # stuck in the detour state until the end
            takes_detour[i] = True
            t_detour = n_checkpoints - t_init
        path = np.full(n_checkpoints, CONVERGED)
        path[:t_init] = INIT
        path[t_init:t_init + t_detour] = DETOUR
        values = means[path] + noise * rng.standard_normal((n_checkpoints, len(METRICS)))
        values[:common_start] = shared_start
        if no_biases:
            values[:, [METRICS.index(c) for c in ("mean_b", "median_b", "var_b")]] = np.nan
        if constant_column is not None:
            values[:, METRICS.index(constant_column)] = 0.5
        if i in nan_runs:
            values[n_checkpoints // 2, METRICS.index("spectral")] = np.nan
        n_keep = 1 if i in short_runs else n_checkpoints
        # Accuracy crosses the threshold 0-3 checkpoints after the run enters state 2.
        converged_at = min(t_init + t_detour + int(rng.integers(0, 4)), n_checkpoints - 1)
        acc = np.where(np.arange(n_checkpoints) >= converged_at, 0.95, 0.3) + 0.02 * rng.standard_normal(n_checkpoints)
        acc = np.clip(acc, 0.0, 1.0)
        acc[: converged_at] = np.minimum(acc[:converged_at], THRESHOLD - 0.05)
        acc[converged_at:] = np.maximum(acc[converged_at:], THRESHOLD + 0.01)
        if i in never_converge:
            acc = np.minimum(acc, THRESHOLD - 0.05)
        run_dir = root / str(run_seed)
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics = pd.DataFrame(values[:n_keep], columns=list(METRICS))
        metrics.insert(0, "step", steps[:n_keep])
        metrics.insert(0, "path", [str(run_dir / "checkpoints" / f"step{s:08d}.safetensors") for s in steps[:n_keep]])
        metrics["svd"] = "exact"
        metrics.to_csv(run_dir / "metrics.csv", index=False)
        log = pd.DataFrame({
            "step": steps[:n_keep],
            "epoch": steps[:n_keep] // 100,
            "train_loss": np.exp(-steps[:n_keep] / (step_every * n_checkpoints / 4)),
            "train_accuracy": np.minimum(1.0, 0.5 + steps[:n_keep] / (step_every * n_checkpoints / 2)),
            "eval_loss": 2.0 - 1.5 * acc[:n_keep],
            "eval_accuracy": acc[:n_keep],
        }).drop(columns=list(drop_log_columns))
        log.to_csv(run_dir / "log.csv", index=False)
        (run_dir / "run.json").write_text(json.dumps({"task": "synthetic", "seed": run_seed, "status": "complete"}))
        run_dirs.append(run_dir)
        run_ids.append(str(run_seed))
        truth[str(run_seed)] = path[:n_keep]
        conv[str(run_seed)] = None if i in never_converge else int(steps[converged_at])
        if takes_detour[i]:
            detours.append(str(run_seed))
    return SyntheticExperiment(
        root=root, run_dirs=run_dirs, run_ids=run_ids, true_states=truth, convergence=conv,
        detour_runs=detours, steps=steps, state_means=means, zscore_first_n=common_start,
    )


def write_planted_runs(
    root: str | Path,
    n_runs: int = 10,
    n_records: int = 50,
    *,
    detour_fraction: float = 0.5,
    step_every: int = 10,
    seed: int = 0,
    separation: float = 3.0,
    n_factors: int = 3,
) -> SyntheticExperiment:
    """Runs with a planted three-state structure as real weight statistics have it, for
    model-selection studies at the sizes researchers have (5–40 runs of 20–200 records).

    Unlike :func:`write_synthetic_runs` nothing is shared between runs and the 14 statistics
    are strongly correlated: they are ``n_factors`` latent factors seen through a fixed
    random loading matrix (each statistic in its own units), plus a little independent
    noise. Each state has its own factor mean (states ``separation`` factor standard
    deviations apart) and its own factor covariance. Every run goes init (state 0) →
    [detour (state 1), for ``detour_fraction`` of the runs] → converged (state 2), with
    random dwell times; ``eval_accuracy`` crosses 0.9 0–3 records after the run reaches
    state 2, so the detour delays convergence. The pipeline's own z-scoring applies (the
    default ``zscore_first_n`` covers the whole run: ``zscore_first_n`` here is 1000).
    """
    root = Path(root)
    rng = np.random.default_rng([seed, 0xD70])
    d = len(METRICS)
    loadings = rng.normal(size=(d, n_factors))
    offsets = rng.uniform(1.0, 5.0, d)
    scales = rng.uniform(0.2, 3.0, d)
    directions = rng.normal(size=(3, n_factors))
    factor_means = np.cumsum(separation * directions / np.linalg.norm(directions, axis=1, keepdims=True), axis=0)
    factor_chol = [np.linalg.cholesky(0.4 * np.eye(n_factors) + 0.6 * np.cov(rng.normal(size=(n_factors, 3 * n_factors))))
                   for _ in range(3)]
    n_detour = min(max(int(round(detour_fraction * n_runs)), 1), n_runs - 1) if n_runs >= 2 else 0
    takes_detour = np.zeros(n_runs, bool)
    takes_detour[rng.permutation(n_runs)[:n_detour]] = True
    steps = np.arange(n_records) * step_every
    run_dirs, run_ids, truth, conv, detours = [], [], {}, {}, []
    for i in range(n_runs):
        t_init = int(rng.integers(max(1, n_records // 6), max(2, n_records // 4) + 1))
        t_detour = int(rng.integers(max(1, n_records // 5), max(2, n_records // 3) + 1)) if takes_detour[i] else 0
        t_detour = min(t_detour, n_records - t_init - 2)
        path = np.full(n_records, CONVERGED)
        path[:t_init] = INIT
        path[t_init:t_init + t_detour] = DETOUR
        factors = np.stack([factor_means[s] + factor_chol[s] @ rng.standard_normal(n_factors) for s in path])
        values = offsets + scales * (factors @ loadings.T + 0.15 * rng.standard_normal((n_records, d)))
        converged_at = min(t_init + t_detour + int(rng.integers(0, 4)), n_records - 1)
        acc = np.where(np.arange(n_records) >= converged_at, THRESHOLD + 0.05, THRESHOLD - 0.3)
        acc = acc + 0.01 * rng.standard_normal(n_records)
        run_id = str(seed * 1000 + i)
        run_dir = root / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics = pd.DataFrame(values, columns=list(METRICS))
        metrics.insert(0, "step", steps)
        metrics["svd"] = "exact"
        metrics.to_csv(run_dir / "metrics.csv", index=False)
        pd.DataFrame({"step": steps, "eval_accuracy": np.clip(acc, 0, 1)}).to_csv(run_dir / "log.csv", index=False)
        (run_dir / "run.json").write_text(json.dumps({"task": "planted", "seed": int(run_id), "status": "complete"}))
        run_dirs.append(run_dir)
        run_ids.append(run_id)
        truth[run_id] = path
        conv[run_id] = int(steps[converged_at])
        if takes_detour[i]:
            detours.append(run_id)
    return SyntheticExperiment(
        root=root, run_dirs=run_dirs, run_ids=run_ids, true_states=truth, convergence=conv, detour_runs=detours,
        steps=steps, state_means=factor_means, zscore_first_n=1000,
    )

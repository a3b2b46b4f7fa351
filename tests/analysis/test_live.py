"""The live state (Recorder(..., model=...)): the filtered posterior of the run so far against
an independent forward pass, the log.csv columns, the one detour warning, and agreement with
hmm-decode afterwards."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from existing_runs import weights
from synthetic_runs import write_synthetic_runs
from trainmap import Recorder
from trainmap.io import contracts
from trainmap.analysis import stages
from trainmap.analysis.convergence import Criterion
from trainmap.analysis.runs import zscore
from trainmap.analysis.live import LIVE_DETOUR, LIVE_PROBABILITY, LIVE_STATE, LiveMap
from trainmap.options import HMMSelectOptions, RegressOptions


def forward_filter(model, z: np.ndarray) -> np.ndarray:
    """p(s_t | z_1..t) for every t, by the forward recursion in log space (numpy/scipy)."""
    K = model.n_components
    covars = np.asarray(model._covars_full if hasattr(model, "_covars_full") else model.covars_)
    log_b = np.column_stack([multivariate_normal(model.means_[k], covars[k], allow_singular=True).logpdf(z)
                             for k in range(K)])
    log_a = np.log(np.maximum(model.transmat_, 1e-300))
    out = np.empty((len(z), K))
    alpha = np.log(np.maximum(model.startprob_, 1e-300)) + log_b[0]
    out[0] = np.exp(alpha - logsumexp(alpha))
    for t in range(1, len(z)):
        alpha = logsumexp(alpha[:, None] + log_a, axis=0) + log_b[t]
        out[t] = np.exp(alpha - logsumexp(alpha))
    return out


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    exp = write_synthetic_runs(root / "runs", 10, 60, detour_fraction=0.5, seed=7)
    out = contracts.ExperimentPaths("planted", root / "results")
    stages.hmm_select(exp.run_dirs, out.selection_csv, out.model_npz,
                      HMMSelectOptions(max_components=3, restarts=2, covariance="diag", zscore_first_n=exp.zscore_first_n))
    stages.hmm_decode(exp.run_dirs, out.model_npz, out.states_csv)
    stages.regress(exp.run_dirs, out.states_csv, out.model_npz, out.regression_json, out.coefficients_csv,
                   out.convergence_csv, RegressOptions(convergence=Criterion.from_threshold(0.9)))
    return exp, out


def test_live_posterior_is_the_forward_filter_of_the_prefix(fitted):
    exp, out = fitted
    live = LiveMap(out.model_npz)
    run = exp.run_dirs[0]
    metrics = pd.read_csv(run / "metrics.csv")
    for t in (1, 3, exp.zscore_first_n, 20, 45, 60):
        prefix = metrics.iloc[:t]
        z, _ = zscore(prefix[live.features].to_numpy(float), live.zscore_first_n)
        expect = forward_filter(live.model, z)[-1]
        np.testing.assert_allclose(live.posterior(prefix), expect, atol=1e-8)


def test_live_state_agrees_with_decoding_afterwards_and_knows_detours(fitted):
    exp, out = fitted
    live = LiveMap(out.model_npz)
    import json

    assert live.detours == set(json.loads(out.regression_json.read_text())["detour_states"]) and live.detours
    states = stages.read_states(out.states_csv)
    agree = []
    for run_id, run in zip(exp.run_ids, exp.run_dirs):
        metrics = pd.read_csv(run / "metrics.csv")
        decoded = states[run_id][contracts.STATE].to_numpy()
        # Once z-scoring is settled (after zscore_first_n records) the filtered state is
        # the smoothed one except near a change of state.
        for t in range(exp.zscore_first_n, len(metrics)):
            agree.append(live.state(metrics.iloc[: t + 1]).state == decoded[t])
    assert np.mean(agree) > 0.9


def test_recorder_logs_the_live_state_and_warns_once(tmp_path):
    """Recorder runs of a drifting model: fit a 2-state map on five of them, then record a
    sixth with model=...: log.csv has the live columns, equal to LiveMap on metrics.csv."""
    steps = list(range(0, 200, 10))
    dirs = []
    for seed in range(5):
        d = tmp_path / "results" / "toy" / "runs" / str(seed)
        with Recorder(d, seed=seed, threads=1) as rec:
            for step in steps:
                rec.record(step, weights(seed, step, max(steps), 0.3 + 0.08 * seed),
                           eval_accuracy=float(step / max(steps) > 0.3 + 0.08 * seed))
        dirs.append(d)
    out = contracts.ExperimentPaths("toy", tmp_path / "results")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stages.hmm_select(dirs, out.selection_csv, out.model_npz,
                          HMMSelectOptions(max_components=2, restarts=2, covariance="diag", min_runs=4))
    new = tmp_path / "new"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Recorder(new, seed=9, threads=1, model=out.model_npz) as rec:
            for step in steps:
                rec.record(step, weights(9, step, max(steps), 0.5), eval_accuracy=0.5)
    log = pd.read_csv(new / "log.csv")
    assert {LIVE_STATE, LIVE_PROBABILITY, LIVE_DETOUR} <= set(log.columns)
    metrics = pd.read_csv(new / "metrics.csv")
    live = LiveMap(out.model_npz)
    for t in range(len(metrics)):
        expect = live.state(metrics.iloc[: t + 1])
        assert log[LIVE_STATE].iloc[t] == expect.state
        assert log[LIVE_PROBABILITY].iloc[t] == pytest.approx(expect.probability)
    assert set(log[LIVE_STATE]) == {0, 1}  # the switch is seen as it happens
    # No regression.json beside the model: no detour known, no warning.
    assert not log[LIVE_DETOUR].any()
    assert not [w for w in caught if "detour" in str(w.message)]


def test_recorder_warns_once_on_entering_a_detour(fitted, tmp_path, monkeypatch):
    exp, out = fitted
    live = LiveMap(out.model_npz)
    detour = sorted(live.detours)[0]
    import trainmap.analysis.live as live_module

    # Every record decodes to the detour state: the warning comes once, naming the state and its coefficient.
    monkeypatch.setattr(live_module.LiveMap, "state",
                        lambda self, metrics: live_module.LiveState(detour, 0.9, True, 123.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Recorder(tmp_path / "run", seed=1, threads=1, model=out.model_npz) as rec:
            for step in range(0, 50, 10):
                rec.record(step, weights(1, step, 40, 0.5))
    said = [str(w.message) for w in caught if "detour" in str(w.message)]
    assert len(said) == 1 and f"detour state {detour}" in said[0] and "+123 steps" in said[0]
    assert list(pd.read_csv(tmp_path / "run" / "log.csv")[LIVE_DETOUR]) == [1] * 5

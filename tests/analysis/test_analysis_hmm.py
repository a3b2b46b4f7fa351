"""HMM model selection, failure handling, determinism and the npz model round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hmmlearn.hmm import GaussianHMM
from sklearn.metrics import adjusted_rand_score

from trainmap.analysis import hmm_select as hmm_mod
from trainmap.analysis.errors import AnalysisError, ModelFormatError
from trainmap.analysis.hmm_estep import FAST_COVARIANCE_TYPES, fast_gaussian_hmm_class, regularized
from trainmap.analysis.hmm_model import decode_states, load_model, model_from_params, save_model
from trainmap.analysis.hmm_select import (
    AUTO_FOLDS,
    CV_MAX_RUNS,
    REFIT_FOLD,
    SELECTION_COLUMNS,
    choose,
    fit_hmm,
    information_criteria,
    n_folds,
    n_free_parameters,
    run_folds,
    select_hmm,
    selection_summary,
    split_runs,
)


def four_state_hmm() -> GaussianHMM:
    """A known 4-state Gaussian HMM over 3 features with sticky states."""
    rng = np.random.default_rng(42)
    n, d = 4, 3
    transmat = np.full((n, n), 0.02 / (n - 1))
    np.fill_diagonal(transmat, 0.98)
    means = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, -1.0], [0.0, 3.0, 1.0], [-2.0, -2.0, 3.0]])
    covars = []
    for _ in range(n):
        a = rng.normal(size=(d, d)) * 0.3
        covars.append(a @ a.T + 0.4 * np.eye(d))
    return model_from_params(np.full(n, 1 / n), transmat, means, np.array(covars))


@pytest.fixture(scope="module")
def sampled():
    truth = four_state_hmm()
    seqs, paths = [], []
    for i in range(40):
        X, s = truth.sample(150, random_state=i)
        seqs.append(X)
        paths.append(s)
    return truth, seqs, paths


def test_selection_recovers_the_true_number_of_states(sampled):
    truth, seqs, paths = sampled
    sel = select_hmm(seqs, max_components=6, restarts=2, covariance="full", seed=0)
    assert sel.n_components == 4
    table = sel.table
    assert list(table.columns) == SELECTION_COLUMNS
    assert len(table) == 6 * 2 and set(table["n_components"]) == set(range(1, 7))
    assert (table["fold"] == 0).all() and (table["covariance"] == "full").all()  # 40 runs: one split
    assert table["chosen"].sum() == 1 and table["best_for_n"].sum() == 6
    chosen = table[table["chosen"]].iloc[0]
    assert chosen["bic"] == table.loc[table["status"] == "ok", "bic"].min()
    assert sel.folds == 1 and sel.covariance == "full"
    assert table["converged"].all()
    # Decoded paths match the truth up to relabelling.
    decoded = decode_states(sel.model, seqs)
    assert adjusted_rand_score(np.concatenate(paths), np.concatenate(decoded)) > 0.95
    # Held-out split: 8 of 40 runs.
    assert len(sel.test_runs) == 8 and len(sel.train_runs) == 32
    assert not set(sel.test_runs) & set(sel.train_runs)


def test_criteria_match_hmmlearn_on_the_held_out_runs(sampled):
    _, seqs, _ = sampled
    sel = select_hmm(seqs[:10], max_components=3, restarts=1, covariance="diag", seed=3, folds=1)
    X_test = np.concatenate([seqs[i] for i in sel.test_runs])
    lengths = [len(seqs[i]) for i in sel.test_runs]
    chosen = sel.table[sel.table["chosen"]].iloc[0]
    assert chosen["test_loglik"] == pytest.approx(sel.model.score(X_test, lengths))
    assert chosen["bic"] == pytest.approx(sel.model.bic(X_test, lengths))
    assert chosen["aic"] == pytest.approx(sel.model.aic(X_test, lengths))
    assert chosen["n_test_obs"] == len(X_test)
    for cov in ("full", "diag", "tied"):
        for n in (1, 3, 5):
            m = GaussianHMM(n_components=n, covariance_type=cov)
            m.n_features = 7
            assert n_free_parameters(n, 7, cov) == sum(m._get_n_fit_scalars_per_param().values())
    aic, bic = information_criteria(-100.0, 10, 50)
    assert aic == pytest.approx(220.0) and bic == pytest.approx(200.0 + 10 * np.log(50))


def test_fast_estep_gives_hmmlearns_fit(sampled):
    _, seqs, _ = sampled
    # Fortran order, as pandas hands out metrics columns: hmmlearn's C++ kernels need C order.
    X = np.asfortranarray(np.concatenate(seqs[:6]))
    lengths = [len(s) for s in seqs[:6]]
    fast_cls = fast_gaussian_hmm_class()
    assert fast_cls is not GaussianHMM  # hmmlearn 0.3.x: the fast E-step is really in use
    for cov, n in (("full", 3), ("diag", 3), ("tied", 3), ("full", 2), ("diag", 2), ("tied", 2)):
        kw = dict(n_components=n, covariance_type=cov, random_state=1, n_iter=8, tol=0, implementation="log")
        fast, plain = fast_cls(**kw).fit(X, lengths), GaussianHMM(**kw).fit(X, lengths)
        for name in ("startprob_", "transmat_", "means_", "covars_"):
            np.testing.assert_allclose(getattr(fast, name), getattr(plain, name), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(fast.monitor_.history, plain.monitor_.history, rtol=1e-10)
    # Fitting uses it exactly where benchmarks/estep.py found it faster, always regularised.
    for cov in ("full", "diag", "tied"):
        model, _, _ = fit_hmm(X, lengths, 2, covariance_type=cov, n_iter=2)
        assert type(model).__mro__[1] is (fast_cls if cov in FAST_COVARIANCE_TYPES else GaussianHMM)
        plain, _, _ = fit_hmm(X, lengths, 2, covariance_type=cov, n_iter=2, fast=False)
        assert type(plain) is regularized(GaussianHMM)


def test_fast_density_handles_a_singular_covariance_like_hmmlearn(sampled):
    _, seqs, _ = sampled
    X = np.concatenate(seqs[:2])
    fast, _, _ = fit_hmm(X, [150, 150], 2, covariance_type="full", n_iter=2, fast=True)
    plain = GaussianHMM(n_components=2, covariance_type="full")
    plain.n_features = fast.n_features
    plain.startprob_, plain.transmat_, plain.means_ = fast.startprob_, fast.transmat_, fast.means_
    # A state collapsed onto a plane: its covariance is singular, as EM can leave it.
    singular = np.array([fast.covars_[0], np.diag([1.0, 1.0, 0.0])])
    fast._covars_ = plain._covars_ = singular
    np.testing.assert_allclose(fast._compute_log_likelihood(X), plain._compute_log_likelihood(X), rtol=1e-9)
    hopeless = np.array([fast.covars_[0], np.diag([1.0, -1.0, 0.0])])
    fast._covars_ = hopeless
    with pytest.raises(ValueError, match="positive-definite"):
        fast._compute_log_likelihood(X)


@pytest.mark.slow
def test_selection_does_not_depend_on_thread_count(sampled):
    _, seqs, _ = sampled
    kwargs = dict(max_components=3, restarts=2, covariance="full", seed=7)
    one = select_hmm(seqs[:10], workers=1, **kwargs)
    two = select_hmm(seqs[:10], workers=2, **kwargs)
    assert one.table.equals(two.table)
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_array_equal(getattr(one.model, name), getattr(two.model, name))
    other_seed = select_hmm(seqs[:10], workers=1, **{**kwargs, "seed": 8})
    assert not other_seed.table["seed"].equals(one.table["seed"])


def test_failed_restarts_are_recorded_and_skipped(sampled, monkeypatch):
    _, seqs, _ = sampled
    real_fit = hmm_mod.fit_hmm

    def flaky(X, lengths, n_components, **kw):
        if n_components == 2:
            raise ValueError("'covars' must be symmetric, positive-definite")
        model, converged, iters = real_fit(X, lengths, n_components, **kw)
        if n_components == 3 and kw["random_state"] % 2 == 0:
            model.means_ = np.full_like(model.means_, np.nan)
        return model, converged, iters

    monkeypatch.setattr(hmm_mod, "fit_hmm", flaky)
    sel = select_hmm(seqs[:10], max_components=3, restarts=3, covariance="diag", seed=0, folds=1)
    table = sel.table
    two = table[table["n_components"] == 2]
    assert (two["status"] == "failed").all()
    assert two["error"].str.contains("positive-definite").all()
    assert two["bic"].isna().all() and not two["best_for_n"].any()
    nan_rows = table[(table["n_components"] == 3) & (table["seed"] % 2 == 0)]
    assert (nan_rows["status"] == "failed").all()
    assert nan_rows["error"].str.contains("non-finite").all()
    assert sel.n_components in (1, 3) and (table["status"] == "ok").any()
    assert sel.failed_fits == len(two) + len(nan_rows)
    assert any("positive-definite (3×)" in reason for reason in sel.failure_reasons())


def test_every_fit_failing_is_a_clear_error(sampled, monkeypatch):
    _, seqs, _ = sampled

    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(hmm_mod, "fit_hmm", broken)
    with pytest.raises(AnalysisError, match="every HMM fit failed.*boom"):
        select_hmm(seqs[:6], max_components=2, restarts=1)


def test_fit_reports_non_convergence(sampled):
    _, seqs, _ = sampled
    X = np.concatenate(seqs[:4])
    _, converged, iters = fit_hmm(X, [150] * 4, 3, n_iter=2, tol=0.0)
    assert iters == 2 and not converged
    _, converged, _ = fit_hmm(X, [150] * 4, 3, n_iter=500)
    assert converged


def test_split_is_seeded_disjoint_and_complete():
    train, test = split_runs(40, 0.2, seed=1)
    assert len(test) == 8 and len(train) == 32
    assert sorted(np.concatenate([train, test])) == list(range(40))
    again = split_runs(40, 0.2, seed=1)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(test, split_runs(40, 0.2, seed=2)[1])
    assert len(split_runs(5, 0.2, 0)[1]) == 1
    with pytest.raises(ValueError):
        split_runs(10, 1.5, 0)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied"])
def test_model_round_trip_gives_identical_decoded_states(tmp_path, sampled, covariance_type):
    _, seqs, _ = sampled
    X = np.concatenate(seqs[:8])
    model, _, _ = fit_hmm(X, [150] * 8, 4, covariance_type=covariance_type, random_state=0, fast=False)
    features = ["l2", "μ(λ)", "trace"]  # unicode survives
    path = tmp_path / "model.npz"
    save_model(path, model, features=features, zscore_first_n=123,
               metadata={"seed": 5, "train_runs": ["1", "2"], "restart": 3})
    with np.load(path, allow_pickle=False) as data:  # readable without pickle
        assert data["covars"].shape == (4, 3, 3)
        assert str(data["covariance_type"]) == covariance_type
        assert list(data["features"]) == features
    saved = load_model(path)
    assert saved.features == features and saved.zscore_first_n == 123
    assert saved.metadata == {"seed": 5, "train_runs": ["1", "2"], "restart": 3}
    loaded = saved.model
    assert isinstance(loaded, GaussianHMM) and loaded.covariance_type == covariance_type
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    np.testing.assert_array_equal(loaded._covars_, model._covars_)
    for seq in seqs[8:20]:
        np.testing.assert_array_equal(loaded.predict(seq), model.predict(seq))
        assert loaded.score(seq) == model.score(seq)


def test_bad_model_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelFormatError, match="not a readable model file"):
        load_model(bad)
    other = tmp_path / "other.npz"
    np.savez(other, startprob=np.ones(2) / 2)
    with pytest.raises(ModelFormatError, match="not a trainmap model file"):
        load_model(other)
    with pytest.raises(ModelFormatError, match="inconsistent shapes"):
        model_from_params(np.ones(2) / 2, np.eye(2), np.zeros((2, 3)), np.zeros((3, 3, 3)))


def _saved(tmp_path, name, **changes):
    """A model file whose parameters are a valid 2-state model with ``changes`` applied."""
    params = dict(startprob=np.array([0.5, 0.5]), transmat=np.array([[0.9, 0.1], [0.2, 0.8]]),
                  means=np.zeros((2, 2)), covars=np.array([np.eye(2), np.eye(2)]))
    params.update(changes)
    arrays = {**params, "format": np.str_("trainmap-gaussianhmm-1"), "covariance_type": np.str_("full"),
              "min_covar": np.float64(1e-3), "features": np.array(["l1", "l2"]), "zscore_first_n": np.int64(10)}
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("name, changes, message", [
    ("nan_means", {"means": np.array([[0.0, np.nan], [1.0, 1.0]])}, "means has non-finite values"),
    ("inf_covars", {"covars": np.array([np.eye(2), np.diag([np.inf, 1.0])])}, "covars has non-finite values"),
    ("not_pd", {"covars": np.array([np.eye(2), np.diag([1.0, -1.0])])}, "state 1 is not positive definite"),
    ("asymmetric", {"covars": np.array([[[1.0, 0.5], [0.0, 1.0]], np.eye(2)])}, "state 0 is not symmetric"),
    ("start_sum", {"startprob": np.array([0.5, 0.6])}, "startprob is not a probability vector"),
    ("negative_start", {"startprob": np.array([1.5, -0.5])}, "startprob is not a probability vector"),
    ("trans_row", {"transmat": np.array([[0.9, 0.1], [0.3, 0.8]])}, "transmat row 1 is not a probability vector"),
    ("negative_trans", {"transmat": np.array([[1.1, -0.1], [0.2, 0.8]])}, "transmat row 0"),
])
def test_loading_validates_the_model_and_names_the_file(tmp_path, name, changes, message):
    assert load_model(_saved(tmp_path, "good")).model.n_components == 2
    path = _saved(tmp_path, name, **changes)
    with pytest.raises(ModelFormatError, match=message) as info:
        load_model(path)
    assert str(info.value).startswith(f"{path}: invalid model: ")


def _table(bics: dict[int, list[float]]) -> "pd.DataFrame":
    """A one-split selection table whose held-out BIC of (n, restart) is given (1 parameter,
    so that BIC = −2 LL + ln 10 and the rules compare the given numbers)."""
    import pandas as pd

    rows = [{"covariance": "full", "n_components": n, "fold": 0, "restart": r, "seed": r, "status": "ok",
             "converged": True, "n_iter": 5, "train_loglik": 0.0, "test_loglik": -(b - np.log(10)) / 2,
             "n_params": 1, "n_test_obs": 10, "aic": b, "bic": b, "error": ""}
            for n, values in bics.items() for r, b in enumerate(values)]
    return pd.DataFrame(rows)


def test_mean_and_best_selection_rules_can_choose_differently():
    # n = 3 has the single best restart (90) but is unreliable (mean 245); n = 2 is
    # steady (mean 200): best chooses 3, mean chooses 2, each keeping that n's best restart.
    table = _table({1: [500.0, 500.0], 2: [100.0, 300.0], 3: [90.0, 400.0]})
    best, mean = choose(table, "best"), choose(table, "mean")
    assert best.loc[best["chosen"], ["n_components", "bic"]].values.tolist() == [[3, 90.0]]
    assert mean.loc[mean["chosen"], ["n_components", "bic"]].values.tolist() == [[2, 100.0]]
    assert best["best_for_n"].tolist() == mean["best_for_n"].tolist() == [True, False, True, False, True, False]
    # failed restarts do not enter the mean; ties go to the smaller n
    failed = _table({1: [200.0], 2: [200.0, np.nan]})
    failed.loc[2, "status"] = "failed"
    assert choose(failed, "mean").loc[lambda t: t["chosen"], "n_components"].tolist() == [1]
    with pytest.raises(ValueError, match="selection must be"):
        choose(table, "median")


def test_select_hmm_records_the_rule(sampled):
    _, seqs, _ = sampled
    sel = select_hmm(seqs[:10], max_components=2, restarts=2, covariance="diag", selection="mean", seed=0,
                     folds=1)
    table = sel.table
    means = table[table["status"] == "ok"].groupby("n_components")["bic"].mean()
    assert sel.n_components == int(means.idxmin())


def test_folds_hold_every_run_out_once_and_are_chosen_from_the_number_of_runs():
    assert [n_folds(n) for n in (2, 4, 5, 10, CV_MAX_RUNS - 1, CV_MAX_RUNS, 40)] == [2, 4, 5, 5, 5, 1, 1]
    assert AUTO_FOLDS == 5 and n_folds(12, 3) == 3 and n_folds(4, 10) == 4 and n_folds(40, 1) == 1
    folds = run_folds(12, folds=0, seed=3)
    assert len(folds) == 5
    held_out = np.concatenate([test for _, test in folds])
    assert sorted(held_out) == list(range(12))  # every run exactly once
    for train, test in folds:
        assert not set(train) & set(test) and len(train) + len(test) == 12
    assert [t.tolist() for _, t in run_folds(12, seed=3)] == [t.tolist() for _, t in folds]  # seeded
    (train, test), = run_folds(40, seed=1)
    assert np.array_equal(test, split_runs(40, 0.2, 1)[1])  # 40 runs: the paper's one split


def test_cross_validated_selection_sums_the_folds_and_refits_on_all_runs(sampled):
    _, seqs, _ = sampled
    sel = select_hmm(seqs[:10], max_components=3, restarts=2, covariance="diag", seed=0)
    assert sel.folds == 5 and sel.test_runs == [] and sel.train_runs == list(range(10))
    table, summary = sel.table, sel.summary
    scored = table[table["fold"] != REFIT_FOLD]
    assert sorted(scored["fold"].unique()) == [0, 1, 2, 3, 4]
    assert len(scored) == 5 * 3 * 2 and len(table[table["fold"] == REFIT_FOLD]) == 2
    for _, row in summary.iterrows():
        mine = scored[scored["n_components"] == row["n_components"]]
        best = mine.groupby("fold")["test_loglik"].max()
        assert row["test_loglik"] == pytest.approx(best.sum())
        assert row["n_test_obs"] == 10 * 150  # every checkpoint held out once
        assert row["bic"] == pytest.approx(-2 * best.sum() + row["n_params"] * np.log(1500))
        assert row["bic_sd"] > 0
    assert summary.loc[summary["chosen"], "n_components"].tolist() == [sel.n_components]
    chosen = table[table["chosen"]].iloc[0]
    assert chosen["fold"] == REFIT_FOLD and chosen["n_components"] == sel.n_components
    # The model kept was fitted on all ten runs: its training log-likelihood is theirs.
    X, lengths = np.concatenate(seqs[:10]), [150] * 10
    assert chosen["train_loglik"] == pytest.approx(sel.model.score(X, lengths), rel=1e-6)


@pytest.mark.slow
def test_auto_covariance_prefers_what_generated_the_data():
    """Eight runs of 60 checkpoints from a 3-state HMM: with diagonal covariances a full
    covariance per state overfits and auto picks diag; with one shared correlated
    covariance, auto picks tied. Either way the 3 states are found."""
    for kind in ("diag", "tied"):
        rng = np.random.default_rng(5)
        d, n = 10, 3
        means = rng.normal(scale=4.0, size=(n, d))
        transmat = np.full((n, n), 0.1 / (n - 1))
        np.fill_diagonal(transmat, 0.9)
        if kind == "diag":
            covars = np.array([np.diag(rng.uniform(0.3, 2.0, d)) for _ in range(n)])
        else:
            a = rng.normal(size=(d, 3))
            covars = np.array([a @ a.T + 0.5 * np.eye(d)] * n)
        truth = model_from_params(np.full(n, 1 / n), transmat, means, covars)
        seqs = [truth.sample(60, random_state=i)[0] for i in range(8)]
        sel = select_hmm(seqs, max_components=4, restarts=2, seed=0)
        assert (sel.covariance, sel.n_components) == (kind, n)
        assert set(sel.summary["covariance"]) == {"full", "diag", "tied"}


def test_the_covariance_floor_keeps_small_data_fits_from_failing():
    """Five runs of 20 checkpoints, 14 features: plain hmmlearn's full-covariance M-step
    leaves states with fewer checkpoints than features singular (the fits fail, as the
    issue's users saw); the floor scaled to the data keeps every fit usable."""
    rng = np.random.default_rng(0)
    loadings = rng.normal(size=(14, 3))
    seqs = [np.cumsum(rng.normal(size=(20, 3)), axis=0) @ loadings.T + 0.01 * rng.normal(size=(20, 14))
            for _ in range(5)]
    X, lengths = np.concatenate(seqs), [20] * 5
    plain_failures = 0
    for seed in range(6):
        plain = GaussianHMM(n_components=6, covariance_type="full", random_state=seed, n_iter=200)
        try:
            plain.fit(X, lengths)
            for cov in plain.covars_:
                np.linalg.cholesky(cov)
            plain.score(X, lengths)
        except (ValueError, np.linalg.LinAlgError):
            plain_failures += 1
    assert plain_failures >= 3  # the data really breaks the unregularised fit
    sel = select_hmm(seqs, max_components=6, restarts=2, covariance="full", seed=0)
    assert sel.failed_fits == 0


def test_an_empty_state_keeps_its_parameters_in_the_m_step():
    model = regularized(GaussianHMM)(n_components=2, covariance_type="tied", init_params="", params="stmc")
    model.n_features = 2
    model.startprob_ = np.array([0.5, 0.5])
    model.transmat_ = np.array([[0.9, 0.1], [0.5, 0.5]])
    model.means_ = np.array([[0.0, 0.0], [5.0, 5.0]])
    model.covars_ = np.eye(2)
    model.covar_floor = np.array([0.1, 0.1])
    X = np.random.default_rng(0).normal(size=(30, 2))
    stats = model._initialize_sufficient_statistics()
    post = np.zeros((30, 2))
    post[:, 0] = 1.0  # state 1 gets no mass
    stats["post"] += post.sum(axis=0)
    stats["obs"] += post.T @ X
    stats["obs*obs.T"][0] += X.T @ X
    stats["trans"][0, 0] = 29.0
    stats["start"][0] = 1.0
    model._do_mstep(stats)
    np.testing.assert_allclose(model.means_[1], [5.0, 5.0])
    np.testing.assert_allclose(model.transmat_[1], [0.5, 0.5])
    # hmmlearn's tied M-step (its covars_prior 0.01 is added to every entry), then the floor;
    # the empty state's vanishing stand-in mass changes nothing visible.
    expected = (0.01 + 30 * np.cov(X.T, bias=True)) / 30 + np.diag([0.1, 0.1])
    np.testing.assert_allclose(model.covars_[0], expected, rtol=1e-8)
    assert np.all(np.isfinite(model.covars_))


def test_selection_summary_takes_the_chosen_candidate_across_covariances():
    table = pd.concat([_table({1: [500.0], 2: [300.0]}).assign(covariance="full"),
                       _table({1: [500.0], 2: [200.0]}).assign(covariance="diag")], ignore_index=True)
    summary = selection_summary(choose(table, "best"))
    assert summary[["covariance", "n_components", "chosen"]].values.tolist() == [
        ["full", 1, False], ["full", 2, False], ["diag", 1, False], ["diag", 2, True]]

"""Appendix A's closed-form importance against torch autograd of the forward algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hmmlearn.hmm import GaussianHMM

from trainmap.analysis.hmm_model import model_from_params
from trainmap.analysis.importance import (
    filtered_posterior,
    log_emission,
    posterior_gradient,
    posterior_importance,
    scaled_importance,
)


def random_hmm(covariance_type: str, n_states: int, n_features: int, seed: int) -> GaussianHMM:
    rng = np.random.default_rng(seed)
    startprob = rng.dirichlet(np.ones(n_states))
    transmat = rng.dirichlet(np.ones(n_states) * 2, size=n_states)
    means = rng.normal(0.0, 1.0, size=(n_states, n_features))
    if covariance_type == "full":
        covars = []
        for _ in range(n_states):
            a = rng.normal(size=(n_features, n_features))
            covars.append(a @ a.T / n_features + 0.5 * np.eye(n_features))
        covars = np.array(covars)
    else:
        covars = np.array([np.diag(rng.uniform(0.3, 2.0, n_features)) for _ in range(n_states)])
    return model_from_params(startprob, transmat, means, covars, covariance_type=covariance_type)


def torch_log_filtered(model: GaussianHMM, Z: torch.Tensor) -> torch.Tensor:
    """log p(s_t = k | z_1:t) by the forward algorithm, written independently in torch."""
    means = torch.tensor(model.means_, dtype=torch.float64)
    covars = torch.tensor(model.covars_, dtype=torch.float64)
    log_a = torch.log(torch.tensor(model.transmat_, dtype=torch.float64))
    log_pi = torch.log(torch.tensor(model.startprob_, dtype=torch.float64))
    dist = torch.distributions.MultivariateNormal(means, covariance_matrix=covars)
    log_b = dist.log_prob(Z[:, None, :])  # (T, K)
    out = []
    alpha = log_pi + log_b[0]
    out.append(alpha - torch.logsumexp(alpha, 0))
    for t in range(1, Z.shape[0]):
        alpha = torch.logsumexp(out[-1][:, None] + log_a, dim=0) + log_b[t]
        out.append(alpha - torch.logsumexp(alpha, 0))
    return torch.stack(out)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
@pytest.mark.parametrize("seed", [0, 1])
def test_posterior_importance_equals_autograd(covariance_type, seed):
    model = random_hmm(covariance_type, n_states=4, n_features=5, seed=seed)
    Z, _ = model.sample(25, random_state=seed)
    zt = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    log_post = torch_log_filtered(model, zt)

    ours_signed = posterior_gradient(model, Z)
    ours = posterior_importance(model, Z)
    assert ours.shape == (25, 4, 5)
    # The filtered posterior itself agrees with the torch forward pass.
    np.testing.assert_allclose(filtered_posterior(model, Z, log=True), log_post.detach().numpy(), atol=1e-9)
    for t in range(25):
        for k in range(4):
            (grad,) = torch.autograd.grad(log_post[t, k], zt, retain_graph=True)
            expected = grad[t].numpy()  # derivative with respect to z_t only
            np.testing.assert_allclose(ours_signed[t, k], expected, atol=1e-6, rtol=1e-6)
            np.testing.assert_allclose(ours[t, k], np.abs(expected), atol=1e-6, rtol=1e-6)


def test_filtered_posterior_matches_hmmlearn_at_the_last_step():
    # At the final checkpoint the filtered and smoothed posteriors coincide.
    model = random_hmm("full", n_states=3, n_features=4, seed=3)
    Z, _ = model.sample(40, random_state=3)
    post = filtered_posterior(model, Z)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(post[-1], model.predict_proba(Z)[-1], atol=1e-9)
    np.testing.assert_allclose(log_emission(model, Z), model._compute_log_likelihood(Z), atol=1e-9)


def test_scaled_importance_equals_importance_and_survives_certainty():
    model = random_hmm("full", n_states=3, n_features=4, seed=5)
    Z, _ = model.sample(30, random_state=5)
    log_scale, direction = scaled_importance(model, Z)
    np.testing.assert_allclose(np.exp(log_scale)[..., None] * direction, posterior_importance(model, Z),
                               rtol=1e-9, atol=1e-300)

    # Far-apart states: the posterior is certain, Appendix A's importance underflows to 0,
    # but the scaled form still gives a non-zero direction.
    far = model_from_params(model.startprob_, model.transmat_, model.means_ * 200, model.covars_)
    Zf, states = far.sample(30, random_state=6)
    assert np.all(posterior_importance(far, Zf)[np.arange(30), states] == 0.0)
    log_scale, direction = scaled_importance(far, Zf)
    rows = np.arange(30)
    assert np.all(np.isfinite(log_scale)) and np.all(log_scale[rows, states] < -700)
    assert np.all(direction[rows, states].sum(axis=1) > 0)


def test_single_state_importance_is_zero():
    model = model_from_params([1.0], [[1.0]], [[0.0, 1.0]], [np.eye(2)])
    Z = np.random.default_rng(0).normal(size=(10, 2))
    assert np.all(posterior_importance(model, Z) == 0)
    log_scale, direction = scaled_importance(model, Z)
    assert np.all(np.isneginf(log_scale)) and np.all(direction == 0)

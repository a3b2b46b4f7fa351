"""Training-map edges, their annotations, forking, and the Graphviz drawing."""

from __future__ import annotations

import numpy as np
import pytest

from trainmap.analysis.figures import training_map_graph, write_graph
from trainmap.analysis.hmm_model import model_from_params
from trainmap.analysis.importance import filtered_posterior, posterior_importance
from trainmap.analysis.training_map import (
    edge_columns,
    forking,
    shift_label,
    state_summary,
    edge_table,
    transitions,
)

FEATURES = ["l2", "mean_lambda", "trace", "code_sparsity"]


def small_model():
    """Three overlapping states (so importances do not vanish) over four features."""
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0, 0.0, 0.0], [-0.6, 0.8, 0.1, 0.2], [-1.2, 0.3, 0.9, -0.4]])
    covars = []
    for _ in range(3):
        a = rng.normal(size=(4, 4)) * 0.3
        covars.append(a @ a.T + 0.5 * np.eye(4))
    transmat = np.array([[0.9, 0.05, 0.05], [0.0, 0.9, 0.1], [0.0, 0.0, 1.0]])
    return model_from_params([1.0, 0.0, 0.0], transmat, means, np.array(covars))


def test_edges_counts_probabilities_convergence_and_features():
    model = small_model()
    paths = {
        "a": np.array([0, 0, 1, 1, 2, 2]),
        "b": np.array([0, 0, 0, 2, 2, 2]),
        "c": np.array([0, 1, 1, 2, 2, 2]),
        "d": np.array([0, 0, 0, 0, 0, 0]),
    }
    rng = np.random.default_rng(1)
    seqs = {r: model.means_[p] + 0.5 * rng.normal(size=(6, 4)) for r, p in paths.items()}
    conv = {"a": 500.0, "b": 100.0, "c": 300.0, "d": np.nan}
    edges = edge_table(model, seqs, paths, FEATURES, conv)
    assert list(edges.columns) == edge_columns(3)
    assert [(e.source, e.target) for e in edges.itertuples()] == [(0, 1), (0, 2), (1, 2)]
    e01, e02, e12 = (edges.iloc[i] for i in range(3))
    assert (e01.n_runs, e01.n_runs_total, e01.n_transitions, e01.runs) == (2, 4, 2, "a;c")
    assert e01.transition_prob == pytest.approx(0.05) and e12.transition_prob == pytest.approx(0.1)
    assert e01.convergence_mean == pytest.approx(400.0)
    assert e01.convergence_sd == pytest.approx(np.std([500.0, 300.0], ddof=1))
    assert e02.convergence_mean == pytest.approx(100.0) and np.isnan(e02.convergence_sd)

    # Top features: the average of the destination state's importance at the entering
    # checkpoints (a at t=2, c at t=1 for 0 -> 1), with shifts mu_j - mu_i.
    imp_a = posterior_importance(model, seqs["a"], filtered_posterior(model, seqs["a"], log=True))
    imp_c = posterior_importance(model, seqs["c"], filtered_posterior(model, seqs["c"], log=True))
    avg = (imp_a[2, 1] + imp_c[1, 1]) / 2
    order = np.argsort(-avg)[:3]
    assert [e01[f"feature_{r}"] for r in (1, 2, 3)] == [FEATURES[i] for i in order]
    for r, i in enumerate(order, 1):
        assert e01[f"shift_{r}"] == pytest.approx(model.means_[1, i] - model.means_[0, i])
        assert e01[f"importance_{r}"] == pytest.approx(avg[i] / avg.sum(), rel=1e-9)
    assert e01.log10_importance == pytest.approx(np.log10(avg.sum()), rel=1e-9)
    assert e01.label == ", ".join(
        shift_label(FEATURES[i], model.means_[1, i] - model.means_[0, i]) for i in order)


def test_shift_labels_read_like_the_paper():
    assert shift_label("l2", -0.591) == "L2 ↓0.59"
    assert shift_label("mean_lambda", 1.68) == "μ(λ) ↑1.68"
    assert shift_label("code_sparsity", 0.0) == "L1/L2 →0.00"
    assert shift_label("custom", 2.0) == "custom ↑2.00"


def test_transitions_and_summary():
    paths = {"x": np.array([2, 2, 0, 0, 1]), "y": np.array([2, 2, 2, 2, 2])}
    moves = transitions(paths)
    assert moves.to_dict("records") == [
        {"run": "x", "t": 2, "source": 2, "target": 0},
        {"run": "x", "t": 4, "source": 0, "target": 1},
    ]
    summary = state_summary(paths, 4)
    assert list(summary["runs_visiting"]) == [1, 1, 2, 0]
    assert list(summary["runs_starting"]) == [0, 0, 2, 0]
    assert list(summary["runs_ending"]) == [0, 1, 1, 0]
    np.testing.assert_allclose(summary["mean_occupancy"], [0.2, 0.1, 0.7, 0.0])


def test_forking_from_decoded_paths():
    # 0 -> 1 -> 2 -> 3 in every run: no state has two successors
    linear = {"a": np.array([0, 1, 1, 2, 3]), "b": np.array([0, 0, 1, 2, 2, 3])}
    assert not forking(linear)
    # state 0 goes to 1 in run a and to 2 in run b: a fork (as in the edge table)
    fork = {"a": np.array([0, 1, 2]), "b": np.array([0, 0, 2])}
    assert forking(fork)
    model = small_model()
    edges = edge_table(model, {r: model.means_[p] for r, p in fork.items()}, fork, FEATURES)
    assert (edges.groupby("source")["target"].nunique() >= 2).any()
    # a run that returns to a state it left is not a fork: 0 -> 1 -> 0 has one successor each
    assert not forking({"a": np.array([0, 1, 0, 1])})
    assert not forking({"a": np.array([2, 2, 2])})


def test_no_transitions_gives_an_empty_map():
    model = small_model()
    edges = edge_table(model, {"a": np.zeros((4, 4))}, {"a": np.zeros(4, int)}, FEATURES)
    assert len(edges) == 0 and list(edges.columns) == edge_columns(3)
    assert not forking({"a": np.zeros(4, int)})


def test_graph_styles_detours_and_unvisited_states_and_renders(tmp_path):
    model = small_model()
    paths = {"a": np.array([0, 0, 1, 1]), "b": np.array([0, 0, 0, 1])}
    seqs = {r: model.means_[p] for r, p in paths.items()}
    edges = edge_table(model, seqs, paths, FEATURES, {"a": 10.0, "b": 20.0})
    graph = training_map_graph(edges, state_summary(paths, 3), n_runs=2, detour_states=[1], title="Training map — t")
    source = graph.source
    assert "detour" in source and "not visited" in source  # state 2 is never visited
    assert "Top-3 feature changes" in source and "2 / 2" in source
    write_graph(graph, svg=tmp_path / "map.svg", png=tmp_path / "map.png")
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "map.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "L2" in svg

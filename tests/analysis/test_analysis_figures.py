"""The model-selection figure: one curve per covariance type summed over folds, the spread
over folds as error bars, the kept model starred, a choice at max_components flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainmap.analysis.figures import selection_figure
from trainmap.analysis.hmm_select import choose, selection_summary


def _table(lls: dict[tuple[str, int], list[list[float]]]) -> pd.DataFrame:
    """A selection table: held-out log-likelihoods per (covariance, n) → per fold → per
    restart; 10 held-out checkpoints per fold, n parameters per n states."""
    rows = [{"covariance": cov, "n_components": n, "fold": f, "restart": r, "seed": r, "status": "ok",
             "converged": True, "n_iter": 5, "train_loglik": 0.0, "test_loglik": ll, "n_params": n,
             "n_test_obs": 10, "aic": np.nan, "bic": -2 * ll + n * np.log(10), "error": ""}
            for (cov, n), folds in lls.items() for f, restarts in enumerate(folds) for r, ll in enumerate(restarts)]
    return pd.DataFrame(rows)


def _bic_lines(fig):
    ax = fig.axes[1]  # the BIC panel
    return {c.get_label(): c for c in ax.containers}


def test_selection_figure_draws_each_covariance_summed_over_folds_with_its_spread():
    table = choose(_table({
        ("full", 1): [[-100.0, -101.0], [-90.0, -95.0]], ("full", 2): [[-60.0, -80.0], [-70.0, -75.0]],
        ("diag", 1): [[-100.0, -100.0], [-90.0, -90.0]], ("diag", 2): [[-50.0, -55.0], [-40.0, -60.0]],
    }), "best")
    summary = selection_summary(table)
    fig = selection_figure(table, title="t")
    lines = _bic_lines(fig)
    assert set(lines) == {"full", "diag"}
    for cov, container in lines.items():
        mine = summary[summary["covariance"] == cov].sort_values("n_components")
        np.testing.assert_allclose(container.lines[0].get_ydata(), mine["bic"])
        assert container.has_yerr  # two folds: the spread is drawn
    # diag, 2 states: best restarts -50 and -40 summed; BIC over all 20 held-out checkpoints.
    chosen = summary[summary["chosen"]].iloc[0]
    assert (chosen["covariance"], chosen["n_components"]) == ("diag", 2)
    assert chosen["bic"] == -2 * (-90.0) + 2 * np.log(20)
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "chosen: diag, n = 2" in labels
    assert "2 folds of runs" in fig.axes[1].get_title()
    assert "chosen n is the largest tried" in fig._suptitle.get_text()


def test_selection_figure_of_one_split_has_no_error_bars_and_counts_failed_fits():
    table = _table({("full", 1): [[-100.0]], ("full", 2): [[-40.0]], ("full", 3): [[-60.0]]})
    table = pd.concat([table, table.iloc[[0]].assign(restart=1, status="failed", test_loglik=np.nan,
                                                    error="boom")], ignore_index=True)
    fig = selection_figure(choose(table, "best"))
    (container,) = _bic_lines(fig).values()
    assert not container.has_yerr
    assert "1 of 4 fits failed" in fig._suptitle.get_text()
    assert "largest tried" not in fig._suptitle.get_text()

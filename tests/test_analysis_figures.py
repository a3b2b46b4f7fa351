"""The model-selection figure: both selection rules drawn, a choice at max_components flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainmap.analysis.figures import selection_figure
from trainmap.analysis.hmm_select import choose


def _table(bics: dict[int, list[float]]) -> pd.DataFrame:
    rows = [{"n_components": n, "restart": r, "seed": r, "status": "ok", "converged": True, "n_iter": 5,
             "train_loglik": 0.0, "test_loglik": -b / 2, "n_params": 1, "n_test_obs": 10, "aic": b, "bic": b,
             "error": ""} for n, values in bics.items() for r, b in enumerate(values)]
    return pd.DataFrame(rows)


def _lines(fig, label):
    ax = fig.axes[2]  # the BIC panel
    return [line for line in ax.get_lines() if line.get_label() == label]


def test_selection_figure_draws_best_and_mean_curves():
    table = choose(_table({1: [500.0, 520.0], 2: [100.0, 300.0], 3: [90.0, 400.0], 4: [95.0, 97.0]}), "best")
    fig = selection_figure(table, title="t")
    (best,) = _lines(fig, "best restart per n")
    (mean,) = _lines(fig, "mean over restarts")
    np.testing.assert_allclose(best.get_ydata(), [500.0, 100.0, 90.0, 95.0])
    np.testing.assert_allclose(mean.get_ydata(), [510.0, 200.0, 245.0, 96.0])
    assert "largest tried" not in fig._suptitle.get_text()


def test_selection_figure_flags_a_choice_at_max_components():
    table = choose(_table({1: [500.0], 2: [300.0], 3: [90.0]}), "mean")
    assert table.loc[table["chosen"], "n_components"].tolist() == [3]
    assert "chosen n is the largest tried" in selection_figure(table)._suptitle.get_text()

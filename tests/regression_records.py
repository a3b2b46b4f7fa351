"""A regression.json with every key the contract requires (trainmap.io.contracts.RegressionRecord),
for tests that write a small one by hand: ``regression_dict(r2=0.5, ...)``."""

from __future__ import annotations

from trainmap.io.contracts import RegressionRecord


def regression_dict(**overrides) -> dict:
    """The keys every regression.json has (none of REGRESSION_OPTIONAL), with ``overrides``."""
    base = {
        "experiment": "e", "convergence": {"column": "eval_accuracy", "direction": "above", "threshold": 0.9,
                                           "text": "eval_accuracy>0.9"},
        "n_runs": 5, "n_runs_regression": 5, "n_states": 1, "design_states": [0], "unvisited_states": [],
        "r2": 0.5, "r2_adjusted": 0.5, "r2_loo": 0.4, "p_value": 0.1, "f_statistic": 1.0, "df_model": 1,
        "df_resid": 3, "intercept": 100.0, "detour_states": [], "parametrisation": "test",
        "dissimilarity": 0.2, "forking": False, "notes": [], "runs": [],
    }
    return {**base, **overrides}


def regression_record(**overrides) -> RegressionRecord:
    return RegressionRecord.from_dict(regression_dict(**overrides), "test")

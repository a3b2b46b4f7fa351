"""A warning while a run trains: the fitted training map applied to the run so far
(``Recorder(..., model="results/EXP/hmm/model.npz")``; docs/your-runs.md "Live state").

After each record the run's statistics so far are z-scored as the model was fitted (its
features; each run over its own first ``zscore_first_n`` checkpoints, here those recorded so
far) and forward-filtered: p(s_t = k | z_1..t), the filtered posterior of the newest record.
(hmmlearn's ``predict_proba`` on the prefix gives it: at the last step of a sequence the
smoothed posterior is the filtered one.) The state with the largest probability, that
probability and whether the state is a detour state of the experiment's regression
(regression.json and coefficients.csv beside ``hmm/``, when they exist) are logged.

Filtered and smoothed states may differ: ``hmm-decode`` (Viterbi) uses the whole run, the
live state only the past; and until ``zscore_first_n`` records exist the z-scoring itself
is provisional.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainmap.io.contracts import LIVE_DETOUR, LIVE_PROBABILITY, LIVE_STATE, ExperimentPaths, RegressionRecord

__all__ = ["LIVE_STATE", "LIVE_PROBABILITY", "LIVE_DETOUR", "LiveState", "LiveMap"]


@dataclass(frozen=True)
class LiveState:
    state: int
    probability: float
    detour: bool
    coefficient: float


class LiveMap:
    """A fitted model (model.npz) and its experiment's detour states, applied to a growing run."""

    def __init__(self, model_path: str | os.PathLike):
        from trainmap.analysis.hmm_model import load_model

        self.path = Path(model_path)
        saved = load_model(self.path)
        self.model = saved.model
        self.features = list(saved.features)
        self.zscore_first_n = int(saved.zscore_first_n)
        self.detours: set[int] = set()
        self.coefficients: dict[int, float] = {}
        experiment = ExperimentPaths.at(self.path.resolve().parent.parent)
        regression, coefficients = experiment.regression_json, experiment.coefficients_csv
        if regression.is_file():
            self.detours = set(RegressionRecord.read(regression).detour_states)
        if coefficients.is_file():
            table = pd.read_csv(coefficients)
            self.coefficients = {int(s): float(c) for s, c in zip(table["state"], table["coefficient"])}

    def posterior(self, metrics: pd.DataFrame) -> np.ndarray:
        """Filtered posterior of the newest row of ``metrics`` (the run so far, by step)."""
        from trainmap.analysis.runs import zscore

        missing = [f for f in self.features if f not in metrics.columns]
        if missing:
            raise ValueError(f"{self.path}: the model's feature(s) {', '.join(missing)} are not recorded")
        values = metrics[self.features].to_numpy(dtype=float)
        z, _ = zscore(values, self.zscore_first_n)
        if not np.isfinite(z).all():
            return np.full(self.model.n_components, np.nan)
        return np.asarray(self.model.predict_proba(z)[-1], dtype=float)

    def state(self, metrics: pd.DataFrame) -> LiveState:
        p = self.posterior(metrics)
        if not np.isfinite(p).all():
            return LiveState(-1, math.nan, False, math.nan)
        k = int(np.argmax(p))
        return LiveState(k, float(p[k]), k in self.detours, self.coefficients.get(k, math.nan))

"""The analysis stage: everything after the per-run metrics (docs/design.md "HMM and training
map", paper Sections 2.1–2.3, 3.4 and Appendices A, C, H, I).

Modules, one job each, plain numpy/pandas in and out:

* :mod:`~trainmap.analysis.runs` — load run directories, per-run z-scoring, bad-input handling;
* :mod:`~trainmap.analysis.hmm` — held-out BIC model selection, Viterbi decoding, npz model files;
* :mod:`~trainmap.analysis.importance` — forward algorithm and Appendix A's feature importance;
* :mod:`~trainmap.analysis.training_map` — pruned, annotated edges of the training map;
* :mod:`~trainmap.analysis.regression` — convergence steps, bag-of-states OLS, detours, dissimilarity;
* :mod:`~trainmap.analysis.baselines` — k-means and HMM-on-l2 baselines (Appendix C);
* :mod:`~trainmap.analysis.figures` — training map (Graphviz) and matplotlib figures;
* :mod:`~trainmap.analysis.tables` — the cross-experiment Tables 1, 2 and 4;
* :mod:`~trainmap.analysis.stages` — the file-in, file-out stages the CLI commands run.

See ``docs/analysis.md``.
"""

from trainmap.analysis.errors import AnalysisError, InsufficientRunsError, ModelFormatError, RunFormatError
from trainmap.analysis.hmm import (
    HMMSelection,
    decode_states,
    load_model,
    save_model,
    select_hmm,
)
from trainmap.analysis.importance import filtered_posterior, posterior_gradient, posterior_importance
from trainmap.analysis.regression import (
    convergence_step,
    convergence_table,
    dissimilarity,
    occupancy,
    state_regression,
)
from trainmap.analysis.runs import Run, Trajectories, load_run, load_runs, prepare_trajectories, zscore
from trainmap.analysis.training_map import forking, training_map

__all__ = [
    "AnalysisError",
    "InsufficientRunsError",
    "ModelFormatError",
    "RunFormatError",
    "HMMSelection",
    "Run",
    "Trajectories",
    "convergence_step",
    "convergence_table",
    "decode_states",
    "dissimilarity",
    "filtered_posterior",
    "forking",
    "load_model",
    "load_run",
    "load_runs",
    "occupancy",
    "posterior_gradient",
    "posterior_importance",
    "prepare_trajectories",
    "save_model",
    "select_hmm",
    "state_regression",
    "training_map",
    "zscore",
]

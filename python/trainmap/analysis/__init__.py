"""The analysis stage: everything after the per-run metrics (docs/design.md "HMM and training
map", paper Sections 2.1–2.3, 3.4 and Appendices A, C, H, I).

Modules, one job each, plain numpy/pandas in and out (import what you use from them):

* :mod:`~trainmap.analysis.runs` — load run directories, per-run z-scoring, bad-input handling;
* :mod:`~trainmap.analysis.hmm_select` — held-out BIC model selection (``best`` or ``mean`` rule);
* :mod:`~trainmap.analysis.hmm_model` — model validation, npz model files, Viterbi decoding;
* :mod:`~trainmap.analysis.hmm_estep` — the vectorised E-step used where it beats hmmlearn;
* :mod:`~trainmap.analysis.convergence` — the user's convergence criterion, convergence steps;
* :mod:`~trainmap.analysis.importance` — forward algorithm and Appendix A's feature importance;
* :mod:`~trainmap.analysis.training_map` — pruned, annotated edges of the training map, forking;
* :mod:`~trainmap.analysis.regression` — bag-of-states OLS, detours, dissimilarity;
* :mod:`~trainmap.analysis.baselines` — k-means and HMM-on-l2 baselines (Appendix C);
* :mod:`~trainmap.analysis.figures` — training map (Graphviz) and matplotlib figures;
* :mod:`~trainmap.analysis.tables` — the cross-experiment Tables 1, 2 and 4;
* :mod:`~trainmap.analysis.stages` — the file-in, file-out stages the CLI commands run.

Options of every stage: :mod:`trainmap.options`. See ``docs/analysis.md``.
"""

from trainmap.analysis.errors import AnalysisError, InsufficientRunsError, ModelFormatError, RunFormatError

__all__ = ["AnalysisError", "InsufficientRunsError", "ModelFormatError", "RunFormatError"]

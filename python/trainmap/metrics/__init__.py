"""The metrics stage: per-checkpoint weight statistics and the readers and writers around them.

- :mod:`trainmap.metrics.engine`: the facade of the Rust engine (``trajectory_metrics``,
  ``checkpoint_metrics``, ``weights_metrics``…); its public names are also this package's
  (``from trainmap.metrics.engine import trajectory_metrics``), loaded on first use.
- :mod:`trainmap.metrics.tensors`: which tensors count and ``CheckpointError`` (both backends).
- :mod:`trainmap.metrics.metrics_torch`: the torch/GPU backend.
- :mod:`trainmap.metrics.series`: the one reader of checkpoint series.
- :mod:`trainmap.metrics.checkpoint_results`, :mod:`trainmap.metrics.series_metrics`,
  :mod:`trainmap.metrics.series_chunks`: metrics of a run directory read in place.
- :mod:`trainmap.metrics.recorder`: the Recorder (``trainmap.Recorder``).
"""

__all__ = [
    "METRIC_NAMES", "DEFAULT_EXCLUDE", "DEFAULT_EXACT_MAX_DIM", "DEFAULT_DEVICE", "ENGINE_FINGERPRINT",
    "CheckpointError", "RESULT_COLUMNS", "SQUARED_STATISTICS", "checkpoint_metrics", "weights_metrics",
    "select_tensors", "file_entries", "check_countable", "counted_layout", "layout_warning",
    "metrics_frame", "trajectory_metrics", "checkpoint_paths",
]


def __getattr__(name: str):
    # The engine facade's public names, loaded on first use: importing a submodule (the
    # Recorder) stays cheap (no pandas).
    if name in __all__:
        from trainmap.metrics import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""One checkpoint's result dict and the options that decide it: the piece that
``series-metrics`` (:mod:`trainmap.metrics.series_metrics`) and its chunk jobs
(:mod:`trainmap.metrics.series_chunks`) share, so that neither imports the other's insides.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

from trainmap.metrics import series as series_reader
from trainmap.metrics.series import Checkpoint, Series, SeriesError

__all__ = ["OPTION_KEYS", "LAYOUT", "resolved_options", "checkpoint_result", "warn_of_other_models"]

#: Metric options that decide the numbers (a Recorder's run.json "options" has the same keys).
OPTION_KEYS: tuple[str, ...] = ("include", "exclude", "svd", "exact_max_dim", "rank")
#: Key of a checkpoint's result (in the partial and chunk files, not in metrics.csv) that
#: says which tensors counted (:func:`trainmap.metrics.engine.counted_layout`).
LAYOUT = "counted_layout"


def resolved_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Metric options with their defaults filled in, as a Recorder's run.json records them:
    the defaults of ``trainmap metrics`` (:class:`trainmap.options.MetricsOptions`) for
    absent or None values, the engine's default exclusion for ``exclude=None``; so that two
    spellings of the same settings compare equal."""
    from trainmap.metrics.engine import DEFAULT_EXCLUDE
    from trainmap.options import MetricsOptions

    given = {key: options[key] for key in OPTION_KEYS if options.get(key) is not None}
    chosen = MetricsOptions(**given)
    return {
        "include": chosen.include,
        "exclude": DEFAULT_EXCLUDE if chosen.exclude is None else chosen.exclude,
        "svd": chosen.svd,
        "exact_max_dim": chosen.exact_max_dim,
        "rank": chosen.rank,
    }


def checkpoint_result(checkpoint: Checkpoint, options: Mapping[str, Any], threads: int | None,
                       device: str = "cpu") -> dict:
    """The result dict of one checkpoint, its shards combined as one checkpoint (the means
    and medians are over all its matrices). Warnings name the checkpoint.

    Safetensors files (one, or every shard) go through the engine's guarded file reader,
    or are loaded one tensor at a time onto ``device`` when that is a GPU
    (:func:`trainmap.metrics.engine.checkpoint_metrics`); a ``.bin`` state dict is loaded on the
    host and computed by the engine or on that GPU."""
    from trainmap.metrics import engine as metrics

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if checkpoint.format in ("bin", "torch"):
                result = _state_dict_result(checkpoint, options, threads, device)
            else:
                files = checkpoint.files[0] if checkpoint.format == "safetensors" else list(checkpoint.files)
                result = metrics.checkpoint_metrics(files, threads=threads, device=device, **options)
                entries = metrics.file_entries(files)
                result[LAYOUT] = entries and metrics.counted_layout(entries, options.get("include"),
                                                                    options.get("exclude"))
        except ValueError as exc:
            message = str(exc)
            raise SeriesError(message if checkpoint.name in message else f"{checkpoint.name}: {message}") from None
    for warning in caught:
        message = str(warning.message)
        message = message if checkpoint.name in message else f"{checkpoint.name}: {message}"
        warnings.warn(message, warning.category, stacklevel=2)
    return result


def _state_dict_result(checkpoint: Checkpoint, options: Mapping[str, Any], threads: int | None, device: str) -> dict:
    """A ``.bin`` or ``torch.save`` checkpoint's floating-point state dict (only the state
    dict: :func:`trainmap.metrics.series.load_checkpoint`) through the engine, or on ``device`` when
    it resolves to a GPU."""
    from trainmap.metrics import engine as metrics

    tensors = {k: v for k, v in series_reader.load_checkpoint(checkpoint).items() if v.is_floating_point()}
    entries = [(name, list(t.shape)) for name, t in tensors.items()]
    metrics.check_countable(entries, checkpoint.name, options.get("include"), options.get("exclude"))
    layout = metrics.counted_layout(entries, options.get("include"), options.get("exclude"))
    gpu = metrics._torch_device(device, options.get("svd") or "auto")
    if gpu is None:
        return {**metrics.weights_metrics(tensors, threads=threads, **options), LAYOUT: layout}
    from trainmap.metrics import metrics_torch

    result, notes = metrics_torch.tensors_metrics(list(tensors.items()), device=gpu, include=options.get("include"),
                                                  exclude=options.get("exclude"), source=checkpoint.name)
    metrics._emit(notes)
    return {**metrics._checked_range(result, checkpoint.name), LAYOUT: layout}


def warn_of_other_models(series: Series, results: Sequence[Mapping[str, Any]]) -> None:
    """One warning naming the checkpoints whose counted tensors differ from most of the
    series' (results computed before the layout was recorded have none, and are not compared)."""
    from trainmap.metrics import engine as metrics

    message = metrics.layout_warning([c.name for c in series.checkpoints], [r.get(LAYOUT) for r in results])
    if message:
        warnings.warn(f"{series.source}: {message}", RuntimeWarning, stacklevel=3)

"""The metrics of a run directory read where it lies (``trainmap series-metrics``).

A run directory the researcher already has (:mod:`trainmap.metrics.series`: a Recorder run,
``step*.safetensors`` files, one directory per step with ``model.safetensors``, sharded
safetensors or ``pytorch_model.bin``, Lightning's checkpoints, or ``torch.save`` files)
becomes, in ``OUT`` (``results/<exp>/runs/<run>``)::

    OUT/metrics.csv     step, the 14 statistics, svd, content_hash (one row per checkpoint)
    OUT/log.csv         step + the columns of the run's log (trainmap.metrics.series.read_log)
    OUT/integrity.json  identical checkpoints, gaps in the step grid, steps that disagree
    OUT/run.json        kind "in_place", source directory, layout, steps; written last

so the analysis stages read it exactly as a trained run. No checkpoint is copied: a
safetensors file, or the shards of one checkpoint together (the means and medians are over
all its matrices), go through the engine's guarded file reader; the state dicts of
``.bin`` and ``torch.save`` files go through :func:`trainmap.metrics.engine.weights_metrics`. With ``device`` a CUDA GPU, both are
computed there (:mod:`trainmap.metrics.metrics_torch`; ``content_hash`` is then empty). A Recorder run's own metrics.csv is adopted when
its engine and options equal these (docs/design.md, "File contracts of runs read in place").
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from trainmap.io import atomic, owner
from trainmap.metrics import series as series_reader
from trainmap.io.contracts import (
    CHUNKS_DIR,
    CONTENT_HASH,
    INTEGRITY_JSON,
    LOG_COLUMNS,
    LOG_CSV,
    METRICS_CSV,
    RUN_JSON,
    STEP,
    RunPaths,
    parse_steps,
)
from trainmap.io.fileguard import OutputClobberError
from trainmap.io.runlock import RunLock
from trainmap.metrics.series import Checkpoint, Series, SeriesError
from trainmap.metrics.checkpoint_results import LAYOUT, OPTION_KEYS, resolved_options, warn_of_other_models
from trainmap.metrics.checkpoint_results import checkpoint_result as _checkpoint_result

__all__ = [
    "OPTION_KEYS",
    "INTEGRITY_JSON",
    "resolved_options",
    "adoption_differences",
    "integrity_report",
    "integrity_warning",
    "log_mismatch",
    "series_metrics",
]

#: Seconds between saves of the results computed so far (restart-safe long series).
SAVE_EVERY_S = 10.0
_PARTIAL = ".series_metrics.partial.json"
#: Every file series-metrics writes into OUT, listed in OUT's owner file before any is written.
OUTPUT_FILES: tuple[str, ...] = (METRICS_CSV, LOG_CSV, INTEGRITY_JSON, RUN_JSON, _PARTIAL)


def adoption_differences(record: Mapping[str, Any], options: Mapping[str, Any], engine: str) -> list[str]:
    """Why a Recorder run's metrics.csv cannot be adopted (empty: it can): its engine
    fingerprint and resolved options must equal ``engine`` and ``options``."""
    differences = []
    if record.get("engine") != engine:
        differences.append(f"engine {str(record.get('engine'))[:12]}… (run) vs {engine[:12]}… (this installation)")
    theirs = resolved_options(record.get("options") or {})
    ours = resolved_options(options)
    differences += [f"{key} {theirs[key]!r} (run) vs {ours[key]!r} (experiment)" for key in OPTION_KEYS
                    if theirs[key] != ours[key]]
    return differences


# --- integrity -------------------------------------------------------------------------------


def _grid_gaps(steps: Sequence[int]) -> list[dict[str, int]]:
    """Holes in a regular grid of steps.

    The grid interval d is the most common difference between consecutive steps (the
    smallest among equally common ones). A difference of k·d (k ≥ 2) whose neighbouring
    differences are d (those that exist) is a gap of k − 1 missing checkpoints. Schedules
    that change their spacing (Pythia's log-spaced start, MultiBERTs' 20k then 100k) are
    not gaps: there a wider difference does not sit between two grid intervals.
    """
    diffs = np.diff(np.asarray(steps, dtype=np.int64))
    if len(diffs) < 2:
        return []
    counts = Counter(int(d) for d in diffs if d > 0)
    if not counts:
        return []
    grid = min(d for d, n in counts.items() if n == max(counts.values()))
    gaps = []
    for i, diff in enumerate(int(d) for d in diffs):
        neighbours = [int(diffs[j]) for j in (i - 1, i + 1) if 0 <= j < len(diffs)]
        if diff > grid and diff % grid == 0 and all(n == grid for n in neighbours):
            gaps.append({"after": int(steps[i]), "before": int(steps[i + 1]), "missing": diff // grid - 1,
                         "grid": grid})
    return gaps


def integrity_report(
    steps: Sequence[int],
    hashes: Sequence[str | None],
    recorded_steps: Mapping[int, int] | None = None,
    named_steps: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """Integrity of a series: ``{"duplicates", "gaps", "out_of_order", "checked"}``.

    duplicates : ``{"step", "duplicate_of"}`` for each checkpoint whose ``content_hash``
        equals an earlier one's (byte- or tensor-identical counted tensors).
    gaps : :func:`_grid_gaps`.
    out_of_order : ``{"step", "recorded_step"}`` where the checkpoint's own record (the
        Trainer's ``global_step``) disagrees with the step in its name,
        ``{"step", "named_step"}`` where a ``torch.save`` file records step ``step`` (the
        one used) and its name gives ``named_step`` (``named_steps``), and
        ``{"step", "after"}`` where steps do not increase.
    checked : what could be checked (``content_hash`` is absent from metrics written by
        engines without it).
    """
    first: dict[str, int] = {}
    duplicates = []
    for step, digest in zip(steps, hashes, strict=True):
        if not isinstance(digest, str) or not digest:
            continue
        if digest in first:
            duplicates.append({"step": int(step), "duplicate_of": first[digest]})
        else:
            first[digest] = int(step)
    out_of_order = [{"step": int(s), "recorded_step": int(g)} for s, g in sorted((recorded_steps or {}).items())
                    if g != s]
    out_of_order += [{"step": int(s), "named_step": int(n)} for s, n in sorted((named_steps or {}).items()) if n != s]
    out_of_order += [{"step": int(b), "after": int(a)} for a, b in zip(steps, steps[1:]) if b <= a]
    return {
        "duplicates": duplicates,
        "gaps": _grid_gaps(steps),
        "out_of_order": out_of_order,
        "checked": {"content_hash": any(isinstance(h, str) and h for h in hashes),
                    "recorded_steps": bool(recorded_steps) or bool(named_steps)},
    }


def integrity_warning(report: Mapping[str, Any], where: str) -> str | None:
    """One line naming every problem of :func:`integrity_report`, or None when there is none."""
    parts = [f"step {d['step']} is identical to step {d['duplicate_of']}" for d in report["duplicates"]]
    parts += [f"{g['missing']} checkpoint(s) of the {g['grid']}-step grid missing between steps {g['after']} "
              f"and {g['before']}" for g in report["gaps"]]
    parts += [f"checkpoint of step {o['step']} records step {o['recorded_step']}" if "recorded_step" in o
              else f"checkpoint of step {o['step']} (recorded in the file) is named step {o['named_step']}"
              if "named_step" in o else f"step {o['step']} comes after step {o['after']}"
              for o in report["out_of_order"]]
    return f"{where}: checkpoint series integrity: {'; '.join(parts)}" if parts else None


# --- the output directory --------------------------------------------------------------------


def _check_out_dir(src: Path, out_dir: Path) -> set[str]:
    """Refuse an ``out_dir`` that is, or is inside, the run directory ``src`` (it would
    rewrite that run's own files), that holds another kind of run, or that holds a file
    trainmap did not write (:mod:`trainmap.io.owner`); return the files there it wrote."""
    source, out = src.resolve(), out_dir.resolve()
    if out == source or source in out.parents:
        where = "is" if out == source else "is inside"
        raise OutputClobberError(
            f"--out-dir {out_dir} {where} the run directory it reads ({src}); refusing to write over that run's "
            "own files: give a directory outside it (results/EXP/runs/RUN)"
        )
    record = owner.read_owner(out_dir)
    if record is not None and record.get("kind") != "in_place":
        raise owner.ForeignDirectoryError(
            f"{out_dir} holds a {record.get('kind')!r} run ({owner.OWNER_NAME}), not a run read in place; use another "
            "--out-dir"
        )
    listed = owner.listed_files(record)
    from_before_owner_files = False
    if listed is None:  # no owner file; or one from before it listed files: then run.json says whose it is
        previous = owner.read_record(out_dir / RUN_JSON, "delete it if it is not trainmap's")
        from_before_owner_files = (previous or {}).get("kind") == "in_place"
        listed = set(OUTPUT_FILES) if from_before_owner_files else set()
    listed.add(_PARTIAL)  # a killed job's saved results: trainmap's by its name, owner file or not
    chunks = out_dir / CHUNKS_DIR
    if chunks.is_dir():  # written by series_metrics_chunk jobs, named by their contract
        listed |= {f"{CHUNKS_DIR}/{p.name}" for p in chunks.iterdir() if p.stem.isdigit() and p.suffix == ".json"}
    if record is None and not from_before_owner_files:
        owner.refuse_foreign(out_dir, "series-metrics", option="--out-dir", allowed=listed)
    else:
        owner.refuse_unlisted(out_dir, listed, option="--out-dir")
    return listed


# --- computing -------------------------------------------------------------------------------


def _stamp(checkpoint: Checkpoint) -> str:
    """What identifies a checkpoint's computed result across restarts: its step and the
    path, size and modification time of each of its files."""
    files = [f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}" for path in checkpoint.files]
    return "|".join([str(checkpoint.step), *files])


def _read_partial(path: Path, key: Mapping[str, Any]) -> dict[str, dict]:
    """Results saved by an interrupted run under the same engine and options, by stamp."""
    from trainmap.metrics.engine import METRIC_NAMES

    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict) or any(saved.get(k) != v for k, v in key.items()):
        return {}
    nan = float("nan")  # JSON wrote NaN as null
    return {stamp: {k: nan if v is None and k in METRIC_NAMES else v for k, v in result.items()}
            for stamp, result in saved.get("results", {}).items()}


def _computed_frame(series: Series, options, threads, device, progress, partial: Path) -> pd.DataFrame:
    """Metrics of every checkpoint. Results are saved to ``partial`` every
    :data:`SAVE_EVERY_S` seconds, so a killed job started again continues where it stopped."""
    from trainmap.metrics import engine as metrics

    key = {"engine": metrics.ENGINE_FINGERPRINT, "options": resolved_options(options)}
    done = _read_partial(partial, key)
    results, saved_at = [], time.monotonic()
    for count, checkpoint in enumerate(series.checkpoints, start=1):
        stamp = _stamp(checkpoint)
        if stamp not in done:
            done[stamp] = _checkpoint_result(checkpoint, options, threads, device)
            if time.monotonic() - saved_at >= SAVE_EVERY_S:
                atomic.write_json(partial, {**key, "results": done})
                saved_at = time.monotonic()
        results.append(done[stamp])
        if progress is not None:
            progress(count)
    warn_of_other_models(series, results)
    return metrics.metrics_frame(series.steps, results)


def _adopted_frame(series: Series) -> pd.DataFrame:
    """A Recorder run's metrics.csv, checked to have the contract's columns and valid steps."""
    from trainmap.metrics.engine import RESULT_COLUMNS

    path = RunPaths(series.source).metrics_csv
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SeriesError(f"{path}: unreadable metrics ({exc})") from None
    columns = [STEP, *RESULT_COLUMNS]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SeriesError(f"{path}: not a Recorder metrics.csv (no {', '.join(missing)} column)")
    return frame[columns].assign(**{STEP: parse_steps(frame[STEP], path)})


def _log_frame(log: Mapping[int, Mapping[str, Any]]) -> pd.DataFrame:
    """The log as log.csv's frame: ``step``, trainmap's known columns present, then the rest by name."""
    present = {key for values in log.values() for key in values}
    known = [c for c in LOG_COLUMNS[1:] if c in present]
    columns = [STEP, *known, *sorted(present - set(known))]
    return pd.DataFrame([{STEP: step, **values} for step, values in log.items()], columns=columns)


def _recorded_steps(series: Series) -> dict[int, int]:
    """The step each checkpoint directory's own trainer_state.json records."""
    recorded = {}
    for checkpoint in series.checkpoints:
        if checkpoint.folder is not None:
            step = series_reader.trainer_global_step(checkpoint.folder)
            if step is not None:
                recorded[checkpoint.step] = step
    return recorded


def _named_steps(series: Series) -> dict[int, int]:
    """The step each ``torch.save`` file's name gives, where the file records its own."""
    return {c.step: c.named_step for c in series.checkpoints if c.named_step is not None}


def log_mismatch(series: Series, log: Mapping[int, Any], steps: Sequence[int]) -> str | None:
    """A warning when the log's steps and the checkpoints' cannot be matched, naming both.

    Log rows and checkpoints are matched by equal step (after a source's ``step_offset``:
    Lightning's loggers). A log none of whose steps is a checkpoint step most likely counts
    something else (epochs against steps, samples, Lightning's ``global_step - 1`` read
    from a CSV not recognised as Lightning's): the convergence step would be on another
    scale than the states. None when some step matches, or either side is empty.
    """
    if not log or not steps or set(log) & set(steps):
        return None
    names = ", ".join(str(source) for source in series.logs[:2]) + (
        f" and {len(series.logs) - 2} more" if len(series.logs) > 2 else "")
    return (f"{series.source}: no step of its log ({names}: {len(log)} steps, {min(log)}..{max(log)}) is the step of "
            f"a checkpoint ({len(steps)} checkpoints, {series.step_unit}s {min(steps)}..{max(steps)}); log rows are "
            "matched to checkpoints by equal step, so check that both count the same thing (name the log and its "
            "step column with the experiment's log: {path, step})")


def _metrics_source(series: Series, options: Mapping[str, Any], engine: str) -> tuple[str, list[str]]:
    """``("adopted" | "computed" | "recomputed", differences)`` for this series."""
    if series.recorder is None:
        return "computed", []
    differences = adoption_differences(series.recorder, options, engine)
    if not differences:
        return "adopted", []
    if not series.checkpoints:
        raise SeriesError(
            f"{series.source}: the Recorder's metrics.csv was computed with other settings ({'; '.join(differences)}) "
            "and the run kept no checkpoints to recompute them: record the run again with these settings, or "
            "set the experiment's metrics options to the run's"
        )
    return "recomputed", differences


def series_metrics(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    svd: str = "auto",
    include: str | None = None,
    exclude: str | None = None,
    exact_max_dim: int | None = None,
    rank: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    progress: Callable[[int, int], object] | None = None,
    chunk_files: Sequence[str | os.PathLike] | None = None,
    log_path: str | os.PathLike | None = None,
    log_step: str | None = None,
) -> dict[str, Any]:
    """Analyse the run directory ``src`` in place into ``out_dir``; return run.json's content.

    ``log_path``/``log_step``: the log and its step column, instead of the log found in
    ``src`` (:func:`trainmap.metrics.series.named_log`; config ``log: {path, step}``).

    ``device``: where checkpoints are computed (as in :func:`trainmap.metrics.engine.checkpoint_metrics`:
    ``auto`` is a CUDA GPU when torch sees one, else the engine).
    ``chunk_files``: the series' metrics already computed in chunks
    (:mod:`trainmap.metrics.series_chunks`), gathered instead of computing them here.

    Raises ``FileNotFoundError``/:class:`trainmap.metrics.series.SeriesError` naming the file for a
    series that cannot be read; nothing in ``out_dir`` is replaced then. Long series save
    their results as they go (``out_dir/.series_metrics.partial.json``): a killed call
    started again computes only the checkpoints not done yet (or changed since).
    """
    from trainmap.metrics import engine as metrics

    src, out_dir = Path(src), Path(out_dir)
    series = series_reader.discover(src, log_path, log_step)
    options = {"svd": svd, "include": include, "exclude": exclude, "exact_max_dim": exact_max_dim, "rank": rank}
    resolved = resolved_options(options)  # bad options and a bad log fail before the long part
    log = series_reader.read_log(series)
    how, differences = _metrics_source(series, options, metrics.ENGINE_FINGERPRINT)
    _check_out_dir(src, out_dir)  # before the lock: a refused directory gains no lock file
    with RunLock(out_dir, purpose=f"trainmap series-metrics {src}"):
        listed = _check_out_dir(src, out_dir)
        owner.write_owner(out_dir, {"kind": "in_place", "source": str(src.resolve())}, listed | set(OUTPUT_FILES))
        return _series_metrics_locked(series, out_dir, options, resolved, log, how, differences, threads, device,
                                      progress, chunk_files)


def _series_metrics_locked(series: Series, out_dir: Path, options, resolved, log, how: str, differences,
                           threads, device, progress, chunk_files) -> dict[str, Any]:
    """Compute (or adopt, or gather) the metrics of ``series`` and write the files of the
    claimed ``out_dir``; return run.json's content."""
    from trainmap import __version__
    from trainmap.metrics import engine as metrics

    src, out = series.source, RunPaths(out_dir)
    if how == "adopted":
        frame = _adopted_frame(series)
        if series.recorder.get("status") != "complete":
            warnings.warn(f"{src}: the Recorder run is still {series.recorder.get('status')!r}: its metrics up to "
                          f"step {frame[STEP].max()} are analysed (the job becomes stale as it records more)",
                          RuntimeWarning, stacklevel=2)
    else:
        total = len(series.checkpoints)
        if chunk_files is not None:
            from trainmap.metrics.series_chunks import gathered_frame

            frame = gathered_frame(series, chunk_files, options)
        else:
            frame = _computed_frame(series, options, threads, device, progress and (lambda done: progress(done, total)),
                                    out_dir / _PARTIAL)
    steps = [int(s) for s in frame[STEP]]
    report = integrity_report(steps, list(frame[CONTENT_HASH]), _recorded_steps(series), _named_steps(series))
    message = integrity_warning(report, str(src))
    if message:
        warnings.warn(f"{message} (recorded in {out_dir / INTEGRITY_JSON})", RuntimeWarning, stacklevel=2)
    if series.step_unit != "step":
        warnings.warn(f"{src}: its checkpoints give {series.step_unit}s, not steps (e.g. "
                      f"{series.checkpoints[0].files[0].name}: {series.step_unit} {series.checkpoints[0].step}): "
                      f"the step column of {out.metrics_csv} counts {series.step_unit}s, and so must the log's",
                      RuntimeWarning, stacklevel=2)
    if not log:
        found = (f"its log files ({', '.join(str(source) for source in series.logs)}) hold no logged values"
                 if series.logs else "no log (log.csv, trainer_state.json, Lightning's metrics.csv or TensorBoard "
                 "event files)")
        warnings.warn(
            f"{src}: {found}: {out.log_csv} has no logged values, so there is no eval column to find convergence "
            f"in (put a log.csv with a step column and eval columns in {src}, or name the log with the experiment's "
            "log: {path, step})", RuntimeWarning, stacklevel=2,
        )
    mismatch = log_mismatch(series, log, steps)
    if mismatch:
        warnings.warn(mismatch, RuntimeWarning, stacklevel=2)
    atomic.write_csv(out.metrics_csv, frame)
    atomic.write_csv(out.log_csv, _log_frame(log))
    atomic.write_json(out_dir / INTEGRITY_JSON, {"source": str(src.resolve()), **report})
    record = {
        "kind": "in_place",
        "seed": None,  # the run is known by its name (the directory in results/)
        "status": "complete",
        "source": str(src.resolve()),
        "layout": series.layout,
        "formats": sorted({c.format for c in series.checkpoints}),
        "step_unit": series.step_unit,
        "steps": steps,
        "checkpoints": len(steps),
        "metrics": how,
        "metrics_differences": differences,
        "options": resolved,
        "engine": metrics.ENGINE_FINGERPRINT,
        "log_files": [str(source.path) for source in series.logs],
        "log_sources": [{"path": str(source.path), "kind": source.kind, "step_column": source.step_column,
                         "step_offset": source.step_offset} for source in series.logs],
        "source_run": dict(series.recorder) if series.recorder is not None else None,
        "integrity": {key: len(report[key]) for key in ("duplicates", "gaps", "out_of_order")},
        "trainmap_version": __version__,
    }
    atomic.write_json(out.run_json, record)
    (out_dir / _PARTIAL).unlink(missing_ok=True)
    return record


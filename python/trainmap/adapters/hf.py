"""Record a Hugging Face ``transformers.Trainer`` run with :class:`trainmap.Recorder`.

>>> from trainmap.adapters.hf import TrainmapCallback
>>> trainer = Trainer(model, args, ..., callbacks=[TrainmapCallback("runs/seed3")])

The callback records the model at every evaluation during ``trainer.train()``, with the
Trainer's evaluation metrics (``eval_loss``, ``eval_accuracy`` from ``compute_metrics``, ...)
as the scalars of log.csv; with ``every_n_steps=N`` also every N optimiser steps (weights
only) between evaluations. Only the main process records. The run is marked complete when
training ends; a later ``train()`` (resumed from a checkpoint) continues it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trainmap.adapters import missing_extra, numeric_scalars

try:
    from transformers import TrainerCallback
except ImportError:
    raise missing_extra("transformers", "hf") from None

from trainmap.metrics.recorder import Recorder

__all__ = ["TrainmapCallback"]


class TrainmapCallback(TrainerCallback):
    """A ``transformers.TrainerCallback`` that records the run into ``directory``.

    Parameters
    ----------
    directory : the run directory (default: ``<output_dir>/trainmap``).
    every_n_steps : also record every N global steps (default: only at evaluations).
    seed : stored in run.json (default: ``TrainingArguments.seed``).
    **recorder_options : :class:`trainmap.Recorder` keywords (model for the live state, include, exclude, svd,
        exact_max_dim, rank, threads, keep_checkpoints).
    """

    def __init__(
        self,
        directory: str | os.PathLike | None = None,
        *,
        every_n_steps: int | None = None,
        seed: int | None = None,
        **recorder_options: Any,
    ):
        if every_n_steps is not None and (not isinstance(every_n_steps, int) or every_n_steps < 1):
            raise ValueError(f"every_n_steps must be a positive integer or None, not {every_n_steps!r}")
        self.directory = directory
        self.every_n_steps = every_n_steps
        self.seed = seed
        self.recorder_options = recorder_options
        self.recorder: Recorder | None = None  # open during trainer.train() on the main process
        self._last_step: int | None = None

    def _record(self, state, model, scalars) -> None:
        # Only during training (an evaluate() outside train() is not part of the run), and
        # one row per step: a second evaluation at the same step (several eval sets) is left out.
        if self.recorder is None or model is None or self._last_step == state.global_step:
            return
        self.recorder.record(state.global_step, model, **numeric_scalars(scalars))
        self._last_step = state.global_step

    def on_train_begin(self, args, state, control, **kwargs):
        if self.recorder is not None:  # a train() that stopped by an exception: its run continues
            self.recorder.close(complete=False)
            self.recorder = None
        if state.is_world_process_zero:
            directory = self.directory if self.directory is not None else Path(args.output_dir) / "trainmap"
            seed = self.seed if self.seed is not None else args.seed
            self.recorder = Recorder(directory, seed=seed, **self.recorder_options)
            self._last_step = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # When the Trainer evaluates at this step, on_evaluate records it with the metrics.
        due = self.every_n_steps is not None and state.global_step % self.every_n_steps == 0
        if due and not control.should_evaluate:
            self._record(state, model, {})

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        self._record(state, model, metrics)

    def on_train_end(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

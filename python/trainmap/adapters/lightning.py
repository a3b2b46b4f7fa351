"""Record a Lightning ``Trainer`` run with :class:`trainmap.Recorder`.

>>> from trainmap.adapters.lightning import TrainmapCallback
>>> trainer = lightning.Trainer(..., callbacks=[TrainmapCallback("runs/seed3")])

The callback records the LightningModule at the end of every validation run (not the
sanity check), at the trainer's global step, with the metrics logged so far
(``trainer.callback_metrics``: ``self.log("val_loss", ...)`` and the like) as the scalars
of log.csv. Only the global rank zero records. The run is marked complete when fit ends; a
later ``fit`` (resumed from a checkpoint) continues it; ``trainer.validate()`` outside
``fit`` is not recorded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trainmap.adapters import missing_extra, numeric_scalars

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:
    raise missing_extra("lightning", "lightning") from None

from trainmap.metrics.recorder import Recorder

__all__ = ["TrainmapCallback"]


class TrainmapCallback(Callback):
    """A Lightning ``Callback`` that records the run into ``directory``.

    Parameters
    ----------
    directory : the run directory (default: ``<default_root_dir>/trainmap``).
    seed : stored in run.json (default: the seed of ``lightning.seed_everything``, if any).
    **recorder_options : :class:`trainmap.Recorder` keywords (model for the live state, include, exclude, svd,
        exact_max_dim, rank, threads, keep_checkpoints).
    """

    def __init__(self, directory: str | os.PathLike | None = None, *, seed: int | None = None, **recorder_options: Any):
        self.directory = directory
        self.seed = seed
        self.recorder_options = recorder_options
        self.recorder: Recorder | None = None  # open during fit on global rank zero
        self._last_step: int | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._let_go()  # a fit that stopped by an exception without on_exception: its run continues
        if trainer.is_global_zero:
            directory = self.directory if self.directory is not None else Path(trainer.default_root_dir) / "trainmap"
            seed = self.seed
            if seed is None and os.environ.get("PL_GLOBAL_SEED", "").lstrip("-").isdigit():
                seed = int(os.environ["PL_GLOBAL_SEED"])
            self.recorder = Recorder(directory, seed=seed, **self.recorder_options)
            self._last_step = None

    def on_validation_end(self, trainer, pl_module) -> None:
        # One row per step: a second validation at the same global step is left out.
        if trainer.sanity_checking or not trainer.is_global_zero or self.recorder is None:
            return
        if self._last_step == trainer.global_step:
            return
        self.recorder.record(trainer.global_step, pl_module, **numeric_scalars(trainer.callback_metrics))
        self._last_step = trainer.global_step

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        # The run did not finish: run.json stays "running" and a later fit continues it.
        self._let_go()

    def _let_go(self) -> None:
        if self.recorder is not None:
            self.recorder.close(complete=False)
            self.recorder = None

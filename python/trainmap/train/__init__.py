"""Training stage: train seeds of the paper's setups, or import released checkpoint series,
into run directories of safetensors checkpoints, a log and a run record.

>>> from trainmap.train import train_run, default_settings, TASKS
>>> record = train_run("parities", seed=0, out="runs/parities/0", threads=1)
>>> record["status"]
'complete'

See docs/training.md for the tasks, their settings, the run layout and the determinism
and resume guarantees. The task registry is imported eagerly (it needs no torch, so the
command line and the workflow can validate settings quickly); everything else on first use.
"""

from importlib import import_module
from typing import Any

from trainmap.train.tasks import TASKS, SettingsError, default_settings, resolve_settings

# Public names defined in modules that import torch, loaded when first used.
_LAZY = {
    "train_run": "trainmap.train.loop",
    "import_series": "trainmap.train.importer",
    "LOG_COLUMNS": "trainmap.train.layout",
    "ResumeError": "trainmap.train.layout",
    "DataFileError": "trainmap.train.datafiles",
    "MissingDataError": "trainmap.train.datafiles",
}

__all__ = [
    "TASKS",
    "LOG_COLUMNS",
    "train_run",
    "import_series",
    "default_settings",
    "resolve_settings",
    "SettingsError",
    "DataFileError",
    "MissingDataError",
    "ResumeError",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

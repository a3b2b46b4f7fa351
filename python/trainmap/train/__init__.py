"""Training stage: train seeds of the paper's setups, or import released checkpoint series,
into run directories of safetensors checkpoints, a log and a run record.

>>> from trainmap.train import train_run, default_settings, TASKS
>>> record = train_run("parities", seed=0, out="runs/parities/0", threads=1)
>>> record["status"]
'complete'

See docs/training.md for the tasks, their settings, the run layout and the determinism
and resume guarantees.
"""

from trainmap.train.datafiles import DataFileError, MissingDataError
from trainmap.train.importer import import_series
from trainmap.train.layout import LOG_COLUMNS, ResumeError
from trainmap.train.loop import train_run
from trainmap.train.tasks import TASKS, SettingsError, default_settings, resolve_settings, task_description

__all__ = [
    "TASKS",
    "LOG_COLUMNS",
    "train_run",
    "import_series",
    "default_settings",
    "resolve_settings",
    "task_description",
    "SettingsError",
    "DataFileError",
    "MissingDataError",
    "ResumeError",
]

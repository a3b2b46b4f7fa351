"""One training run: train, checkpoint on a schedule, resume after a kill, finish once.

Guarantees (docs/training.md):

* Deterministic: initialisation comes from the seed alone, the data order of each epoch
  from (seed, epoch), augmentation from a generator seeded by the seed whose state is
  saved; with the same torch version, device and thread count, the same task, seed and
  settings give byte-identical checkpoints.
* Resumable: checkpoints are written together with the log and the resume state (model,
  optimiser, augmentation RNG, step), each file atomically and in that order: at every
  checkpoint when checkpoints are seconds apart, in batches every ``resume_interval_s``
  when they come faster. A restarted run loads the resume state, deletes checkpoints
  written after it, and continues; it ends byte-identical to an uninterrupted run.
* Finished once: run.json is written last, only when the run ends (complete or diverged);
  then the resume state is deleted. A run whose run.json exists is not touched again.
* Its own directory: one process at a time writes it (:class:`trainmap.io.runlock.RunLock`),
  and only when it is empty or holds this run's files (its owner file, or a resume state,
  of the same task, seed and settings). A directory holding other files is refused.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from trainmap.io import atomic
from trainmap.io.limits import cap_workers
from trainmap.io.contracts import RunPaths
from trainmap.io.runlock import RunLock
from trainmap.train import components, layout
from trainmap.train.tasks import SettingsError, resolve_settings

__all__ = ["train_run", "Schedule", "resolve_device"]

# Settings that say where data comes from, not what it is: a run may resume with others.
_LOCATION_SETTINGS = ("data_dir", "download")
_RESUME_FORMAT = 1
# Queued checkpoint bytes above which they are written whatever the time (memory bound).
_MAX_PENDING_BYTES = 64 << 20
# Seeds are stored as int64 (run.json, step-like file contracts).
_MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Schedule:
    """Training length and checkpoint steps of a run."""

    steps_per_epoch: int
    total_steps: int
    checkpoint_interval: int  # in steps

    @classmethod
    def of(cls, settings: Mapping[str, Any], n_train: int) -> "Schedule":
        steps_per_epoch = math.ceil(n_train / settings["batch_size"])
        total = settings["epochs"] * steps_per_epoch
        if settings["max_steps"]:
            total = min(total, settings["max_steps"])
        interval = settings["checkpoint_every"] * (steps_per_epoch if settings["checkpoint_unit"] == "epoch" else 1)
        return cls(steps_per_epoch, total, interval)

    def is_checkpoint(self, step: int) -> bool:
        """Step 0, every ``checkpoint_interval`` steps, and the last step."""
        return step % self.checkpoint_interval == 0 or step == self.total_steps


@dataclass
class _Clock:
    """Seconds spent per activity, summed over all sessions of a run."""

    train_s: float = 0.0
    eval_s: float = 0.0
    checkpoint_io_s: float = 0.0
    wall_s: float = 0.0
    sessions: int = 0
    _started: float = field(default_factory=time.perf_counter)

    @contextlib.contextmanager
    def measure(self, activity: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, activity, getattr(self, activity) + time.perf_counter() - start)

    def as_dict(self) -> dict[str, float]:
        wall = self.wall_s + time.perf_counter() - self._started
        return {
            "wall_s": wall,
            "train_s": self.train_s,
            "eval_s": self.eval_s,
            "checkpoint_io_s": self.checkpoint_io_s,
            "sessions": self.sessions,
        }

    def restore(self, saved: Mapping[str, float]) -> None:
        self.train_s, self.eval_s = saved["train_s"], saved["eval_s"]
        self.checkpoint_io_s, self.wall_s = saved["checkpoint_io_s"], saved["wall_s"]
        self.sessions = int(saved["sessions"])


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device, which must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise SettingsError(f"device {device!r} is not a torch device (use auto, cpu or cuda)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"device {device!r} asked for, but CUDA is not available")
    return resolved


@contextlib.contextmanager
def _torch_configured(threads: int | None, device: torch.device) -> Iterator[None]:
    """Thread count and deterministic algorithms for the run; torch's previous global
    settings are put back afterwards."""
    previous = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        # On CPU every op we use has a deterministic kernel; on GPU warn instead of failing.
        _set_deterministic(True, warn_only=device.type != "cpu")
        yield
    finally:
        torch.set_num_threads(previous[0])
        _set_deterministic(previous[1], warn_only=previous[2])


def _set_deterministic(mode: bool, warn_only: bool) -> None:
    """torch.use_deterministic_algorithms without its side trip into TorchInductor: the public
    function also sets an Inductor flag, importing torch._inductor (~1.5 s per process);
    nothing here is compiled, so only the kernel-selection flag matters."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # pragma: no cover - other torch versions
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        setter(mode, warn_only=warn_only)


@torch.no_grad()
def _evaluate(
    model: nn.Module, split, parts: components.Components, batch_size: int, limit: int = 0
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` (in eval mode) on the first ``limit`` examples of
    ``split`` (all when 0)."""
    n = len(split) if limit <= 0 else min(limit, len(split))
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        outputs = model(parts.prepare(split.inputs[start:stop], None))
        losses, hits = components.batch_loss(outputs, split.targets[start:stop], parts.loss)
        total_loss += losses.sum(dtype=torch.float64).item()
        correct += int(hits.sum().item())
    model.train(was_training)
    return total_loss / n, correct / n


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimiser's per-parameter state: tensors (for safetensors) and the rest (JSON)."""
    tensors, scalars = {}, {}
    for index, entry in optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, scalars


def _load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], scalars: Mapping[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer/"):
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in scalars.items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    # param_groups come from the freshly built optimiser: same settings, same values.
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def _differences(saved: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    keys = sorted((set(saved) | set(settings)) - set(_LOCATION_SETTINGS))
    return [f"{k}: {saved.get(k)!r} there, {settings.get(k)!r} now" for k in keys if saved.get(k) != settings.get(k)]


def _check_same_run(record: Mapping[str, Any], task: str, seed: int, settings: Mapping[str, Any], where: Path) -> None:
    """Refuse to continue or reuse a run directory that holds another run."""
    problems = []
    if record.get("task") != task:
        problems.append(f"task: {record.get('task')!r} there, {task!r} now")
    if record.get("seed") != seed:
        problems.append(f"seed: {record.get('seed')!r} there, {seed!r} now")
    problems += _differences(record.get("settings", {}), settings)
    if problems:
        raise SettingsError(
            f"{where} belongs to a different run ({'; '.join(problems)}); "
            "use another output directory, or delete that one to start over"
        )


def _identity(task: str, seed: int, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What the owner file of a training run directory records."""
    return {"kind": "train", "task": task, "seed": seed, "settings": dict(settings)}


def _check_claim(out: Path, task: str, seed: int, settings: Mapping[str, Any]) -> set[str]:
    """Refuse ``out`` unless it may become this run's directory (checked once before taking
    its lock, so a refused directory gains no lock file, and again with the lock held);
    return the files of ``out`` that trainmap wrote (:mod:`trainmap.io.owner`).

    * no owner file: ``out`` must be empty, or hold a resume state of this run (one begun
      before owner files existed) and nothing but a run's files;
    * an owner file of this run: continue;
    * an owner file of another training run: refused while its resume state is there (a
      half-finished run); otherwise the run has ended and Snakemake removed its run.json
      because the settings changed: the files its owner file lists are replaced;
    * an owner file of anything else (an import): refused;
    * in every case, a file the owner file does not list (trainmap did not write it) makes
      the directory refused, naming it: it is neither deleted nor mixed with the run.
    """
    owner = layout.read_owner(out)
    if owner is None:
        saved = layout.read_resume(out)
        if saved is None:
            layout.refuse_foreign(out, "training run")
            return set()
        _check_same_run(saved[1], task, seed, settings, layout.resume_path(out))  # before an owner file claims it
    elif owner.get("kind") != "train":
        raise layout.ForeignDirectoryError(
            f"{out} holds a {owner.get('kind')!r} run ({layout.OWNER_NAME}), not a training run; use another --out"
        )
    elif layout.resume_path(out).is_file():
        _check_same_run(owner, task, seed, settings, layout.resume_path(out))
    listed = layout.listed_files(owner)
    written = layout.run_files(out) if listed is None else listed
    layout.refuse_unlisted(out, written)
    return written


class _Run:
    """The mutable state of one training session."""

    #: What a run records in the checkpoint's place (None: checkpoint files). A seed sweep's
    #: runs with statistics in the loop (:mod:`trainmap.train.sweep`) set it; it is saved in
    #: the resume state, and a run resumes only with the same value.
    statistics_record: Mapping[str, Any] | None = None

    def __init__(
        self, task: str, seed: int, settings: dict[str, Any], out: Path, device: torch.device, resume_interval_s: float,
        written: set[str], parts: components.Components | None = None,
    ):
        self.task, self.seed, self.settings, self.out, self.device = task, seed, settings, out, device
        self.written = set(written)  # files of out trainmap wrote, as its owner file lists them
        # ``parts``: the task's components built for this seed (a seed sweep shares the data).
        self.parts = components.build(task, settings, seed) if parts is None else parts
        self.model = self.parts.model.to(device)
        self.optimizer = components.build_optimizer(self.model, settings)
        self.train = _to(self.parts.train, device)
        self.eval = _to(self.parts.eval, device)
        self.schedule = Schedule.of(settings, len(self.train))
        self.augment = torch.Generator().manual_seed(components.augment_seed(seed))
        self.step = 0
        self.rows: list[dict[str, Any]] = []
        self.clock = _Clock()
        self.resume_interval_s = resume_interval_s
        self.pending: list[tuple[Path, bytes]] = []  # checkpoint files not written yet
        self.pending_bytes = 0  # their size
        self.last_flush = time.perf_counter()
        self.bar = None

    # ---------------------------------------------------------------- resume

    def start(self) -> None:
        """Continue from the resume state if there is one, else start at step 0."""
        saved = layout.read_resume(self.out)
        if saved is None:
            # Files of a finished run of other settings, or of one killed before its first
            # resume state: start clean, deleting exactly what trainmap wrote.
            if self.written:
                layout.remove_listed(self.out, self.written)
                self.written.clear()
                layout.write_owner(self.out, _identity(self.task, self.seed, self.settings), self.written)
            self.clock.sessions = 1
            self.checkpoint()
            return
        tensors, state = saved
        if state.get("format") != _RESUME_FORMAT:
            raise layout.ResumeError(f"{layout.resume_path(self.out)}: unknown resume format {state.get('format')!r}")
        _check_same_run(state, self.task, self.seed, self.settings, layout.resume_path(self.out))
        if state.get("statistics") != self.statistics_record:
            raise layout.ResumeError(
                f"{layout.resume_path(self.out)}: begun {_recording(state.get('statistics'))}, continued "
                f"{_recording(self.statistics_record)}; continue it as it was begun, or delete {self.out} to start over"
            )
        model_state = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
        self.model.load_state_dict(model_state)
        _load_optimizer(self.optimizer, tensors, state["optimizer_scalars"])
        self.augment.set_state(tensors["rng/augment"])
        self.step, self.rows = state["step"], state["log"]
        self.clock.restore(state["clock"])
        self.clock.sessions += 1
        _warn_if_environment_changed(
            state.get("environment", {}), _environment(self.device), layout.resume_path(self.out)
        )
        # Checkpoints after the resume point come from a session killed mid-checkpoint.
        layout.remove_files(
            layout.checkpoint_path(self.out, s) for s in layout.checkpoint_steps(self.out) if s > self.step
        )
        layout.write_log(RunPaths(self.out).log_csv, self.rows)

    # ---------------------------------------------------------------- checkpoint

    def checkpoint(self) -> dict[str, Any]:
        """Evaluate the model and queue its checkpoint; write the queue with log.csv and the
        resume state when :meth:`due` says so."""
        with self.clock.measure("eval_s"):
            train_loss, train_acc, eval_loss, eval_acc = self.evaluate()
        row = {
            "step": self.step,
            "epoch": self.step / self.schedule.steps_per_epoch,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "eval_loss": eval_loss,
            "eval_accuracy": eval_acc,
        }
        self.rows.append(row)
        self.record_weights()
        with self.clock.measure("checkpoint_io_s"):
            if self.due():
                self.flush(with_resume_state=True)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{train_loss:.4g}", eval_acc=f"{eval_acc:.3f}", refresh=False)
        return row

    def record_weights(self) -> None:
        """Queue the checkpoint of the current weights (written at the next flush)."""
        with self.clock.measure("checkpoint_io_s"):
            data = layout.checkpoint_bytes(dict(self.model.named_parameters()))
            self.pending.append((layout.checkpoint_path(self.out, self.step), data))
            self.pending_bytes += len(data)

    def extra_files(self) -> list[tuple[Path, bytes]]:
        """Files written at each flush after the checkpoints, before log.csv (none here)."""
        return []

    def evaluate(self) -> tuple[float, float, float, float]:
        """Train loss and accuracy (on ``train_eval_size`` examples), eval loss and accuracy."""
        s = self.settings
        train = _evaluate(self.model, self.train, self.parts, s["eval_batch_size"], s["train_eval_size"])
        return (*train, *_evaluate(self.model, self.eval, self.parts, s["eval_batch_size"]))

    def due(self) -> bool:
        """Whether the queued checkpoints should be written now: when ``resume_interval_s``
        has passed since the last write, or the queue holds more than
        :data:`_MAX_PENDING_BYTES`.

        Tasks whose checkpoints are seconds apart write every one at once. Tasks that
        checkpoint many times a second (parities: an epoch is ~15 ms) write a batch every
        few seconds: one flush to disk for many small files costs a fraction of one flush
        per file, which would exceed the 10 % I/O budget on its own.
        """
        return time.perf_counter() - self.last_flush >= self.resume_interval_s or self.pending_bytes > _MAX_PENDING_BYTES

    def flush(self, with_resume_state: bool) -> None:
        """Write the queued checkpoints, log.csv and (optionally) the resume state.

        They become visible in that order, each atomically, so a resume state never runs
        ahead of the checkpoints it vouches for; a run killed before a flush resumes from
        the previous one and recomputes the lost checkpoints byte for byte.
        """
        _flush_runs([self], with_resume_state)

    def queued_files(self, with_resume_state: bool) -> list[tuple[Path, bytes]]:
        """The files a flush writes, in their order: the queued checkpoints, the extra
        files, log.csv and (``with_resume_state``) the resume state."""
        files = [*self.pending, *self.extra_files(), (RunPaths(self.out).log_csv, layout.log_text(self.rows).encode())]
        if with_resume_state:
            files.append((layout.resume_path(self.out), self._resume_bytes()))
        return files

    def list_files(self, paths: list[Path]) -> None:
        """List ``paths`` in the owner file (before they are written)."""
        owner = self.owner_listing(paths)
        if owner is not None:
            atomic.write_bytes(*owner)

    def owner_listing(self, paths: list[Path]) -> tuple[Path, bytes] | None:
        """The owner file listing ``paths`` as well, as (path, content), or None when it
        lists them already. It must be written before they are: a kill between writing
        their temporaries and renaming them must leave only files the owner file lists."""
        names = {path.relative_to(self.out).as_posix() for path in paths}
        if names <= self.written:
            return None
        self.written |= names
        return self.out / layout.OWNER_NAME, layout.owner_bytes(_identity(self.task, self.seed, self.settings),
                                                                self.written)

    def _resume_bytes(self) -> bytes:
        tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        optimizer_tensors, optimizer_scalars = _optimizer_tensors(self.optimizer)
        tensors.update(optimizer_tensors)
        tensors["rng/augment"] = self.augment.get_state()
        epoch, position = divmod(self.step, self.schedule.steps_per_epoch)
        state = {
            "format": _RESUME_FORMAT,
            "task": self.task,
            "seed": self.seed,
            "settings": self.settings,
            "step": self.step,
            "epoch": epoch,
            "batch_in_epoch": position,
            "log": self.rows,
            "optimizer_scalars": optimizer_scalars,
            "clock": self.clock.as_dict(),
            "environment": _environment(self.device),
        }
        if self.statistics_record is not None:
            state["statistics"] = self.statistics_record
        return layout.resume_bytes(tensors, state)

    # ---------------------------------------------------------------- training

    def train_until_done(self) -> tuple[str, int | None, bool]:
        """Train to the end of the schedule. Returns (status, step whose loss was not
        finite or None, whether the run stopped early on reaching its accuracy goal)."""
        schedule, batch_size = self.schedule, self.settings["batch_size"]
        goal = self.settings["stop_at_eval_accuracy"]
        if goal and self.rows and self.rows[-1]["eval_accuracy"] >= goal:
            return "complete", None, True
        order, order_epoch = None, -1
        self.model.train()
        while self.step < schedule.total_steps:
            with self.clock.measure("train_s"):
                epoch, position = divmod(self.step, schedule.steps_per_epoch)
                if epoch != order_epoch:
                    order = torch.from_numpy(components.epoch_order(self.seed, epoch, len(self.train))).to(self.device)
                    order_epoch = epoch
                batch = order[position * batch_size : (position + 1) * batch_size]
                inputs = self.parts.prepare(self.train.inputs.index_select(0, batch), self.augment)
                losses, _ = components.batch_loss(
                    self.model(inputs), self.train.targets.index_select(0, batch), self.parts.loss
                )
                loss = losses.mean()
                if not math.isfinite(loss.item()):  # (a GPU sync per step; cheap next to the step)
                    return "diverged", self.step, False
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.step += 1
            if self.bar is not None:
                self.bar.update(1)
            if schedule.is_checkpoint(self.step):
                row = self.checkpoint()
                if goal and row["eval_accuracy"] >= goal:
                    return "complete", None, True
        return "complete", None, False


def _recording(record: Mapping[str, Any] | None) -> str:
    """How a run records its weights, in words (resume errors)."""
    if record is None:
        return "writing checkpoint files"
    return f"computing statistics in the loop ({dict(record)})"


def _environment(device: torch.device) -> dict[str, Any]:
    """What byte-identity depends on besides task, seed and settings."""
    return {"torch_version": torch.__version__, "device_type": device.type, "threads": torch.get_num_threads()}


def _warn_if_environment_changed(saved: Mapping[str, Any], now: Mapping[str, Any], where: Path) -> None:
    """Resuming elsewhere is allowed, but the result may then differ in the last bits."""
    changed = [f"{key} {saved[key]!r} → {now[key]!r}" for key in now if key in saved and saved[key] != now[key]]
    if changed:
        warnings.warn(
            f"{where}: resuming with {', '.join(changed)}; the run will not be byte-identical "
            "to an uninterrupted one (floating-point reductions depend on these)",
            RuntimeWarning,
            stacklevel=3,
        )


def _to(split, device: torch.device):
    from trainmap.train.data import Split

    return Split(split.inputs.to(device), split.targets.to(device))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()})"


def _progress_bar(run: _Run):
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(
        total=run.schedule.total_steps,
        initial=run.step,
        desc=f"{run.task} seed {run.seed}",
        unit="step",
        file=sys.stderr,
        mininterval=0.5 if interactive else 30.0,
        dynamic_ncols=interactive,
    )


def train_run(
    task: str,
    seed: int,
    out: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    *,
    threads: int | None = None,
    device: str = "auto",
    progress: bool = True,
    resume_interval_s: float = 10.0,
    lock_wait_s: float = 0.0,
) -> dict[str, Any]:
    """Train ``task`` with ``seed`` into the run directory ``out``; return run.json's content.

    ``overrides`` replace default settings (:func:`trainmap.train.default_settings`); string
    values are parsed to the setting's type. ``threads`` sets torch's CPU thread count for
    the run; ``device`` is ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
    ``resume_interval_s``: checkpoints that come faster than this are queued and written in
    a batch, with log.csv and the resume state, once this many seconds have passed since the
    last write (0: every checkpoint at once). It bounds the work a kill can lose and never
    changes the result.

    A run killed at any moment and started again with the same arguments continues from its
    last checkpoint; a finished run (run.json present) is returned as it is.

    One process at a time trains into ``out``: another one holding it makes this call raise
    :class:`trainmap.io.runlock.RunLockedError` naming its PID and host, after waiting up to
    ``lock_wait_s`` seconds for it to let go. ``threads`` above the CPUs available is
    lowered to them with a warning.

    Raises :class:`SettingsError` (a ``ValueError``) for bad settings or a directory holding
    another run or foreign files, ``OSError`` for an output directory that cannot be
    written, and the data readers' errors for missing or corrupt data files.
    """
    settings = resolve_settings(task, overrides)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise SettingsError(f"seed must be an integer from 0 to {_MAX_SEED}, got {seed!r}")
    if threads is not None:
        try:
            threads = cap_workers(threads, "threads")
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    if not resume_interval_s >= 0:
        raise SettingsError(f"resume_interval_s must be a non-negative number of seconds, got {resume_interval_s!r}")
    out = Path(out)
    finished = layout.read_run_json(out)
    if finished is not None:
        _check_same_run(finished, task, seed, settings, RunPaths(out).run_json)
        return finished
    torch_device = resolve_device(device)
    _check_claim(out, task, seed, settings)
    layout.ensure_writable(out)
    with RunLock(out, purpose=f"trainmap train {task} --seed {seed}", wait_s=lock_wait_s):
        finished = layout.read_run_json(out)  # finished by a process this one waited for
        if finished is not None:
            _check_same_run(finished, task, seed, settings, RunPaths(out).run_json)
            return finished
        written = _check_claim(out, task, seed, settings)
        layout.write_owner(out, _identity(task, seed, settings), written)
        layout.remove_temporaries(out, written)  # what a killed session left half-written
        _train_locked(task, seed, out, settings, threads, torch_device, progress, resume_interval_s, written)
    return layout.read_run_json(out)  # exactly what was written (NaN became null)


def _train_locked(task: str, seed: int, out: Path, settings: dict[str, Any], threads: int | None,
                  torch_device: torch.device, progress: bool, resume_interval_s: float, written: set[str]) -> None:
    """Train (or resume) the claimed run in ``out`` to its end and write run.json.
    ``written``: the files of ``out`` trainmap wrote (listed in its owner file)."""
    with _torch_configured(threads, torch_device):
        run = _Run(task, seed, settings, out, torch_device, resume_interval_s, written)
        run.start()
        with contextlib.ExitStack() as stack:
            if progress:
                run.bar = stack.enter_context(_progress_bar(run))
            status, diverged_at, stopped_early = run.train_until_done()
        _finish(run, status, diverged_at, stopped_early, torch_device)


def _flush_runs(runs: Sequence[_Run], with_resume_state: bool) -> None:
    """Write every run's queued files (:meth:`_Run.queued_files`), each run's in its order:
    first the owner files that list them, then the files themselves, each batch with one
    flush to disk (:func:`trainmap.io.atomic.write_files`), however many runs (a seed
    sweep writes all its seeds' files at once)."""
    files = [run.queued_files(with_resume_state) for run in runs]
    owners = [run.owner_listing([path for path, _ in queued]) for run, queued in zip(runs, files)]
    atomic.write_files([owner for owner in owners if owner is not None])
    atomic.write_files([file for queued in files for file in queued])
    for run in runs:
        run.pending.clear()
        run.pending_bytes = 0
        run.last_flush = time.perf_counter()


def _finish(run: _Run, status: str, diverged_at: int | None, stopped_early: bool, device: torch.device,
            extra: Mapping[str, Any] | None = None) -> None:
    """Write a run's last checkpoints and log, then end it (:func:`_end`)."""
    with run.clock.measure("checkpoint_io_s"):
        run.flush(with_resume_state=False)  # the last checkpoints and the full log
    _end(run, status, diverged_at, stopped_early, device, extra)


def _end(run: _Run, status: str, diverged_at: int | None, stopped_early: bool, device: torch.device,
         extra: Mapping[str, Any] | None = None) -> None:
    """Write run.json (with ``extra`` entries) of a run whose files are all written, then
    delete its resume state."""
    record = {**_run_record(run, status, diverged_at, stopped_early, device), **(extra or {})}
    run.list_files([RunPaths(run.out).run_json])
    layout.write_run_json(run.out, record)
    layout.remove_files([layout.resume_path(run.out)])
    with contextlib.suppress(OSError):
        layout.resume_path(run.out).parent.rmdir()


def _run_record(
    run: _Run, status: str, diverged_at: int | None, stopped_early: bool, device: torch.device
) -> dict[str, Any]:
    """run.json's content."""
    from trainmap import __version__

    return {
        "task": run.task,
        "seed": run.seed,
        "status": status,
        "settings": run.settings,
        "final_step": run.step,
        "planned_steps": run.schedule.total_steps,
        "steps_per_epoch": run.schedule.steps_per_epoch,
        "checkpoints": len(run.rows),
        "last_checkpoint_step": run.rows[-1]["step"],
        "diverged_at_step": diverged_at,
        "stopped_at_eval_accuracy": stopped_early,
        "final": run.rows[-1],
        "data": run.parts.data_info,
        "n_parameters": sum(p.numel() for p in run.model.parameters()),
        "device": _device_name(device),
        # Which cluster job produced the run, when SLURM ran it (provenance).
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "trainmap_version": __version__,
        "python_version": platform.python_version(),
        "wall_time_s": run.clock.as_dict()["wall_s"],
        "timing": run.clock.as_dict(),
    }

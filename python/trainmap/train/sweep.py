"""A seed sweep in one job: train N seeds of one task in one process as one batched model.

Each seed is still its own run (:mod:`trainmap.train.loop`): its own run directory, lock,
owner file, ``log.csv``, checkpoints, resume state and ``run.json`` (which records the
batch under ``"batch"``). Only the training steps are batched: the seeds' parameters are
stacked along a leading seed axis and one forward/backward/optimiser step updates all of
them.

Identity of each seed (docs/training.md, "Seed sweeps"):

* initial weights: each seed's model is built by the single-seed code
  (:func:`trainmap.train.components.build_model`) and its parameters stacked, so they are
  bit-for-bit those of training the seed alone;
* data order: each seed draws its batches from :func:`components.epoch_order` of its own
  seed, as alone;
* optimiser state: SGD and AdamW are elementwise, so one optimiser over the stacked
  parameters is N independent ones; the loss is the SUM over seeds of each seed's mean
  loss, so each seed's gradient is its own (nothing is averaged or clipped across seeds);
* numbers: the batched matmuls (``torch.baddbmm``) sum in another order than
  ``nn.Linear``, so trajectories equal single-seed ones within a tolerance (float32
  rounding that grows with training; measured in tests/train/test_train_sweep.py), not bit for
  bit. The batched job itself is bit-for-bit deterministic on the CPU, and a seed's numbers
  do not depend on which other seeds share its batch (each seed's slice of a batched
  kernel is computed on its own).

Resume: all seeds of a batch write their checkpoints and resume states at the same steps.
A restarted job resumes each seed from its own resume state (the single-seed rule); seeds
found at different steps (a kill between two seeds' writes) are trained in sub-batches,
the furthest behind first, until they meet, then together. Finished seeds (run.json) are
left alone. A seed that diverges or reaches ``stop_at_eval_accuracy`` ends (its run.json is
written) and the others go on without it.

MLP tasks (parities, digits, mnist) use hand-written batched matmuls; the transformer tasks
(modular, modular_stable) use ``torch.func`` (``functional_call`` + ``vmap``), which on a
2-core CPU is slower than one seed per process and is meant for GPUs. Other tasks (ResNets:
batch norm, augmentation) are not in :data:`BATCHED_TASKS` and train one seed per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from trainmap.io.contracts import METRICS_CSV, RUN_JSON, RunPaths
from trainmap.io.limits import cap_workers
from trainmap.io.runlock import RunLock
from trainmap.train import components, layout
from trainmap.train.loop import (
    _MAX_PENDING_BYTES,
    _MAX_SEED,
    _check_claim,
    _check_same_run,
    _end,
    _finish,
    _flush_runs,
    _identity,
    _Run,
    _torch_configured,
    resolve_device,
)
from trainmap.options import MetricsOptions
from trainmap.train.tasks import BATCHED_TASKS, SettingsError, resolve_settings

__all__ = ["BATCHED_TASKS", "InLoopStatistics", "train_sweep", "parse_seeds"]

# Largest seeds x examples evaluated in one batched forward pass (memory bound).
_EVAL_ELEMENTS = 1 << 16
# Examples per batched forward pass of the MLP's evaluation on a CPU: the seeds' hidden
# layers of a chunk stay in the core's cache (40 parities seeds x 64 x 128 units: 1.3 MB)
# instead of going through memory (x 1,000: 20 MB), 11 -> 9 ms per evaluation. The same
# for any number of seeds, so a seed's numbers do not depend on its companions.
_MLP_CPU_EVAL_CHUNK = 64



def parse_seeds(text: str) -> list[int]:
    """``"0-39"``, ``"3"`` or ``"0-3,8,10-11"`` → a sorted list of distinct seeds."""
    seeds: set[int] = set()
    for part in str(text).split(","):
        first, sep, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if sep else low
        except ValueError:
            raise SettingsError(f"--seeds needs numbers or ranges like 0-39 or 0-3,8; got {text!r}") from None
        if low > high:
            raise SettingsError(f"--seeds range {part.strip()!r} runs backwards")
        seeds.update(range(low, high + 1))
    return sorted(seeds)


# ------------------------------------------------------------------ statistics in the loop

_METRICS_DEVICE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


@dataclass(frozen=True)
class InLoopStatistics:
    """Statistics in the loop instead of checkpoint files (config ``train: {keep_checkpoints:
    false}``, ``trainmap train-sweep --no-checkpoints``): the metrics stage's options
    (:class:`trainmap.options.MetricsOptions`) and where they are computed, as config
    ``metrics: {device}`` says it for the metrics jobs: ``auto`` (where the weights are: the
    Rust engine for a CPU model, torch for a CUDA one), ``cpu`` (the engine, from a host
    copy) or ``cuda[:N]`` (torch on that GPU)."""

    options: MetricsOptions = MetricsOptions()
    device: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not _METRICS_DEVICE.match(self.device):
            raise SettingsError(f"metrics device must be auto, cpu or cuda[:N], not {self.device!r}")

    @classmethod
    def of(cls, options: Mapping[str, Any] | None = None, device: str = "auto") -> "InLoopStatistics":
        """From the metrics options as a mapping (e.g. config ``metrics:`` less device and chunk)."""
        try:
            return cls(MetricsOptions(**dict(options or {})), device)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"statistics in the loop: {exc}") from None

    def record(self) -> dict[str, Any]:
        """What run.json and the resume state record (a run continues, and a finished run is
        kept, only under the same record): the options, the device and the engine."""
        from trainmap.metrics.engine import ENGINE_FINGERPRINT

        return {"options": dataclasses.asdict(self.options), "device": self.device, "engine": ENGINE_FINGERPRINT}

    def compute(self, model: torch.nn.Module, threads: int | None) -> dict[str, Any]:
        """The statistics of ``model``'s parameters (what a checkpoint file would hold), as
        :func:`trainmap.metrics.engine.weights_metrics` computes them for the Recorder."""
        from trainmap.metrics.engine import weights_metrics

        o = self.options
        return weights_metrics(self._tensors(model), svd=o.svd, include=o.include, exclude=o.exclude,
                               exact_max_dim=o.exact_max_dim, rank=o.rank, threads=threads)

    def compute_all(self, models: Sequence[torch.nn.Module], threads: int | None) -> list[dict[str, Any]]:
        """:meth:`compute` of each model (the same numbers), in one engine call
        (:func:`trainmap.metrics.engine.models_weights_metrics`), the models in parallel on
        ``threads`` threads."""
        from trainmap.metrics.engine import models_weights_metrics

        o = self.options
        return models_weights_metrics([self._tensors(model) for model in models], svd=o.svd, include=o.include,
                                      exclude=o.exclude, exact_max_dim=o.exact_max_dim, rank=o.rank,
                                      threads=threads)

    def _tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """``model``'s parameters where the statistics are computed (``device``)."""
        tensors = {name: p.detach() for name, p in model.named_parameters()}
        if self.device == "cpu":
            return {name: t.cpu() for name, t in tensors.items()}
        if self.device != "auto":
            return {name: t.to(self.device) for name, t in tensors.items()}
        return tensors

    def stacked_device(self, weights_device: torch.device) -> torch.device | None:
        """The GPU on which a group's statistics are computed together from its stacked
        parameters (``torch`` as :meth:`compute` would use it for each seed: ``auto`` with
        the model on a GPU, or ``cuda[:N]``; not for ``svd: randomized``, the engine's
        alone), or None where each seed's statistics come from the engine."""
        if self.device == "cpu" or self.options.svd == "randomized":
            return None
        device = weights_device if self.device == "auto" else torch.device(self.device)
        return device if device.type == "cuda" else None

    def compute_stacked(self, params: Mapping[str, torch.Tensor], device: torch.device) -> list[dict[str, Any]]:
        """Every seed's statistics from the group's stacked parameters (leading seed axis), in
        batched operations on ``device`` (:func:`trainmap.metrics.engine.stacked_weights_metrics`)."""
        from trainmap.metrics.engine import stacked_weights_metrics

        return stacked_weights_metrics({name: p.detach() for name, p in params.items()}, device=device,
                                       include=self.options.include, exclude=self.options.exclude)


# ------------------------------------------------------------------ batched forward passes


def _mlp_forward(params: Mapping[str, torch.Tensor], x: torch.Tensor,
                 scratch: dict[tuple[int, ...], torch.Tensor] | None = None) -> torch.Tensor:
    """The MLP of :class:`trainmap.train.models.MLP` for stacked parameters held as
    :class:`_Batch` holds them (weights (seeds, in, out)): ``x`` is (seeds, batch, ...), the
    result (seeds, batch, outputs).

    ``scratch`` (evaluation, without autograd): the hidden layer is computed into a buffer
    kept there per shape, the same numbers without a new one per call. An evaluation's
    hidden layer is tens of MB (40 seeds x 1,000 examples x 128 units: 20 MB); the
    allocator hands buffers that large back to the system when freed, and faulting their
    pages in again cost three times the arithmetic (27 ms against 8 per parities evaluation).
    """
    x = x.flatten(2)
    bias, weight = params["fc1.bias"].unsqueeze(1), params["fc1.weight"]
    if scratch is None:
        hidden = torch.baddbmm(bias, x, weight).relu_()  # (in place: baddbmm's backward needs not its output)
    else:
        shape = (x.shape[0], x.shape[1], weight.shape[2])
        if shape not in scratch:
            scratch[shape] = torch.empty(shape, dtype=weight.dtype, device=weight.device)
        hidden = torch.relu_(torch.baddbmm(bias, x, weight, out=scratch[shape]))
    return torch.baddbmm(params["fc2.bias"].unsqueeze(1), hidden, params["fc2.weight"])


def _vmap_forward(model: torch.nn.Module) -> Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """``model``'s forward over stacked parameters with ``torch.func`` (any model without
    buffers that change)."""
    from torch.func import functional_call, vmap

    def one(params, x):
        return functional_call(model, params, (x,))

    return vmap(one)


def _at_least_two_seeds(forward: Callable) -> Callable:
    """``forward`` that computes a lone seed as the first of two copies of it: a batched
    matmul of batch 1 takes another kernel (matrix-vector products for parities' one output)
    than batches of 2 or more, whose per-seed slices agree with one another, so a seed
    trained in a sub-batch of one (a restart that found it behind the others, a sweep of one
    seed) would differ in the last bits from the same seed among others. The unused copy
    contributes exactly zero to the gradient."""

    def padded(params: Mapping[str, torch.Tensor], x: torch.Tensor, **options: Any) -> torch.Tensor:
        if x.shape[0] != 1:
            return forward(params, x, **options)
        doubled = {name: torch.cat([value, value]) for name, value in params.items()}
        return forward(doubled, torch.cat([x, x]), **options)[:1]

    return padded


def _losses(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-example losses (seeds, batch) of stacked outputs, as
    :func:`components.batch_loss` computes them for one seed."""
    seeds, batch = targets.shape[:2]
    if loss == "hinge":
        return torch.clamp(1.0 - outputs.squeeze(-1) * targets, min=0.0)
    flat = F.cross_entropy(outputs.reshape(seeds * batch, -1), targets.reshape(-1), reduction="none")
    return flat.view(seeds, batch)


# ------------------------------------------------------------------ one batch of seeds


class _Batch:
    """Seeds at the same step, trained together: their parameters and optimiser state
    stacked (copied in from, and back out to, each seed's own model and optimiser).

    The MLP's weights are held transposed, (seeds, in, out) rather than ``nn.Linear``'s
    (out, in): the batched matmul reads them as stored, and autograd returns their
    gradients in that layout, where a transposed view would make it copy each gradient into
    the parameter's layout. With SGD without momentum (parities' default; digits and mnist
    train with AdamW) the update is made in place (:meth:`train_step`). Together a parities
    step of 40 seeds takes about 0.9 ms instead of 1.4 (benchmarks/train_sweep.py).
    """

    def __init__(self, runs: Sequence[_Run], forward_kind: str):
        self.runs = list(runs)
        first = runs[0]
        self.names = [name for name, _ in first.model.named_parameters()]
        # Stacked tensors held as the transpose of the seed's own (weights of the MLP).
        self.transposed = frozenset(n for n in self.names if forward_kind == "mlp" and n.endswith(".weight"))
        with torch.no_grad():
            self.params = {
                name: torch.stack([self._held(name, dict(r.model.named_parameters())[name].detach())
                                   for r in runs]).requires_grad_()
                for name in self.names
            }
        self.optimizer = components.build_optimizer(_Params(self.params, self.names), first.settings)
        self.sgd_in_place = _sgd_in_place(first.settings)
        self._stack_optimizer_state()
        self.forward = _at_least_two_seeds(_mlp_forward if forward_kind == "mlp" else _vmap_forward(first.model))
        self._eval_options = {"scratch": {}} if forward_kind == "mlp" else {}
        self._orders, self._orders_epoch = None, -1

    # -------------------------------------------------------------- state in and out

    def _held(self, name: str, own: torch.Tensor) -> torch.Tensor:
        """A seed's own tensor of parameter ``name`` (or its optimiser state) as the batch
        holds it; also the way back (a transpose is its own inverse)."""
        return own.t() if name in self.transposed else own

    def model_params(self) -> dict[str, torch.Tensor]:
        """The stacked parameters in the seeds' own layout (views: seeds first, then as
        ``model.named_parameters()``)."""
        return {name: value.transpose(1, 2) if name in self.transposed else value
                for name, value in self.params.items()}

    def _stack_optimizer_state(self) -> None:
        states = [r.optimizer.state_dict()["state"] for r in self.runs]
        if not states[0]:
            if any(states):
                raise layout.ResumeError("seeds of one batch disagree on whether their optimiser has state")
            return
        stacked: dict[int, dict[str, Any]] = {}
        for index in states[0]:
            entry: dict[str, Any] = {}
            for key, value in states[0][index].items():
                values = [s[index][key] for s in states]
                if key == "step":  # the same for seeds at the same step
                    if any(not torch.equal(torch.as_tensor(v), torch.as_tensor(value)) for v in values):
                        raise layout.ResumeError("seeds of one batch have different optimiser step counts")
                    entry[key] = value.clone() if isinstance(value, torch.Tensor) else value
                elif isinstance(value, torch.Tensor):
                    entry[key] = torch.stack([self._held(self.names[index], v) for v in values])
                else:
                    entry[key] = value
            stacked[index] = entry
        self.optimizer.load_state_dict({"state": stacked, "param_groups": self.optimizer.state_dict()["param_groups"]})

    @torch.no_grad()
    def unstack(self) -> None:
        """Copy the stacked parameters and optimiser state into each seed's own model and
        optimiser (before it is evaluated, checkpointed or saved for resume)."""
        state = self.optimizer.state_dict()["state"]
        for i, run in enumerate(self.runs):
            for name, parameter in run.model.named_parameters():
                parameter.copy_(self._held(name, self.params[name][i]))
            if state:
                own = {
                    index: {
                        key: (value.clone() if key == "step"
                              else self._held(self.names[index], value[i]).clone(memory_format=torch.contiguous_format))
                        if isinstance(value, torch.Tensor) else value
                        for key, value in entry.items()
                    }
                    for index, entry in state.items()
                }
                run.optimizer.load_state_dict({"state": own, "param_groups": run.optimizer.state_dict()["param_groups"]})

    # -------------------------------------------------------------- training

    def step_losses(self) -> torch.Tensor:
        """Forward pass of the seeds' next batches: each seed's mean loss (seeds,)."""
        first = self.runs[0]
        schedule, batch_size = first.schedule, first.settings["batch_size"]
        epoch, position = divmod(first.step, schedule.steps_per_epoch)
        if self._orders_epoch != epoch:  # every seed's order of this epoch, (seeds, examples)
            self._orders = torch.stack([
                torch.from_numpy(components.epoch_order(run.seed, epoch, len(run.train))) for run in self.runs
            ]).to(first.device)
            self._orders_epoch = epoch
        index = self._orders[:, position * batch_size : (position + 1) * batch_size]  # (seeds, batch)
        seeds, batch = index.shape
        stored = first.train.inputs.index_select(0, index.reshape(-1))
        inputs = first.parts.prepare(stored, None)  # batched tasks have no augmentation
        inputs = inputs.view(seeds, batch, *inputs.shape[1:])
        targets = first.train.targets.index_select(0, index.reshape(-1)).view(seeds, batch)
        return _losses(self.forward(self.params, inputs), targets, first.parts.loss).mean(dim=1)

    @torch.no_grad()
    def evaluate(self) -> None:
        """Every seed's evaluation row values, computed for all seeds at once (as
        :func:`trainmap.train.loop._evaluate` does for one: float64 sums of per-example
        losses, in chunks of ``eval_batch_size`` examples, fewer when many seeds would make a
        chunk large), handed to each seed's :meth:`_SeedRun.evaluate`."""
        first = self.runs[0]
        s, seeds = first.settings, len(self.runs)
        chunk = max(1, min(s["eval_batch_size"], _EVAL_ELEMENTS // seeds))
        if "scratch" in self._eval_options and first.device.type == "cpu":
            chunk = min(chunk, _MLP_CPU_EVAL_CHUNK)
        values = []
        for split, limit in ((first.train, s["train_eval_size"]), (first.eval, 0)):
            n = len(split) if limit <= 0 else min(limit, len(split))
            total = torch.zeros(seeds, dtype=torch.float64)
            correct = torch.zeros(seeds, dtype=torch.int64)
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                inputs = first.parts.prepare(split.inputs[start:stop], None)
                inputs = inputs.unsqueeze(0).expand(seeds, *inputs.shape)
                targets = split.targets[start:stop].unsqueeze(0).expand(seeds, stop - start)
                outputs = self.forward(self.params, inputs, **self._eval_options)
                total += _losses(outputs, targets, first.parts.loss).sum(dim=1, dtype=torch.float64).cpu()
                if first.parts.loss == "hinge":
                    hits = outputs.squeeze(-1) * targets > 0
                else:
                    hits = outputs.argmax(dim=-1) == targets
                correct += hits.sum(dim=1).cpu()
            values.append((total / n, correct.double() / n))
        (train_loss, train_acc), (eval_loss, eval_acc) = values
        for i, run in enumerate(self.runs):
            run.evaluated = (train_loss[i].item(), train_acc[i].item(), eval_loss[i].item(), eval_acc[i].item())

    def train_step(self, losses: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # the sum over seeds: each seed's gradient is its own mean loss's
        if self.sgd_in_place is None:
            self.optimizer.step()
        else:
            _sgd_step(self.optimizer.param_groups[0]["params"], *self.sgd_in_place)
        for run in self.runs:
            run.step += 1


def _sgd_in_place(settings: Mapping[str, Any]) -> tuple[float, float] | None:
    """(learning rate, weight decay) where the settings' optimiser is SGD without momentum,
    whose step :func:`_sgd_step` makes in place; else None (the optimiser's own step)."""
    if settings["optimizer"] != "sgd" or settings["momentum"] != 0:
        return None
    return float(settings["lr"]), float(settings["weight_decay"])


@torch.no_grad()
def _sgd_step(params: Sequence[torch.Tensor], lr: float, weight_decay: float) -> None:
    """``torch.optim.SGD``'s step without momentum, the same operations in the same order
    (gradient + weight_decay x parameter, then parameter - lr x that), bit for bit, but into
    the gradient's memory rather than a new tensor: an allocation of a weight's size per
    tensor per step that cost a fifth of a parities step. The gradients are discarded after
    the step (``zero_grad(set_to_none=True)``)."""
    for param in params:
        grad = param.grad
        if grad is None:  # (as torch's step: a parameter the loss does not reach)
            continue
        if weight_decay != 0:
            grad.add_(param, alpha=weight_decay)
        param.add_(grad, alpha=-lr)


class _Params(list):
    """The stacked parameters as the list an optimiser is built over (fixed order)."""

    def __init__(self, params: Mapping[str, torch.Tensor], names: Sequence[str]):
        super().__init__(params[name] for name in names)

    def parameters(self):
        return iter(self)


class _SeedRun(_Run):
    """One seed of a batch: a single-seed run whose checkpoint writes happen when the batch
    decides (all seeds at the same steps, so a restarted batch finds them together).

    With ``statistics`` (:class:`InLoopStatistics`), each checkpoint step computes the 14
    statistics of the seed's weights (:func:`trainmap.metrics.engine.weights_metrics`, the
    Recorder's path) instead of queuing a checkpoint file, and each flush rewrites the run's
    metrics.csv (before log.csv and the resume state, so a resume state never runs ahead of
    the rows it vouches for)."""

    flush_now = False
    evaluated: tuple[float, float, float, float] | None = None  # set by the batch for the next checkpoint
    statistics: "InLoopStatistics | None" = None

    def __init__(self, *args, statistics: "InLoopStatistics | None" = None, threads: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.statistics, self.metrics_threads = statistics, threads
        self.statistics_record = None if statistics is None else statistics.record()
        self.metrics_header: str | None = None
        self.metrics_lines: list[tuple[int, str]] = []  # (step, CSV line) already rendered
        self.metrics_results: list[tuple[int, dict[str, Any]]] = []  # (step, result) not rendered yet
        self.precomputed: dict[str, Any] | None = None  # this step's statistics, when the group computed them

    def due(self) -> bool:
        return self.flush_now

    def start(self) -> None:
        resumed = layout.resume_path(self.out).is_file()
        super().start()
        if self.statistics is not None and resumed:
            self._read_metrics()

    def _read_metrics(self) -> None:
        """The rows of metrics.csv up to the resume point (later ones come from a session
        killed after writing them: they are computed again); they must be those of the
        logged checkpoint steps."""
        path = self.out / METRICS_CSV
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.is_file() else []
        rows = []
        for line in lines[1:]:
            step = int(line.split(",", 1)[0])
            if step <= self.step:
                rows.append((step, line))
        logged = [row["step"] for row in self.rows]
        if [step for step, _ in rows] != logged:
            raise layout.ResumeError(
                f"{path}: holds the statistics of steps {[step for step, _ in rows][:8]}..., not of every logged "
                f"checkpoint step up to the resume point ({len(logged)} steps); delete {self.out} to start over"
            )
        self.metrics_header = lines[0].rstrip("\n") if lines else None
        self.metrics_lines = rows

    def record_weights(self) -> None:
        if self.statistics is None:
            super().record_weights()
            return
        if self.precomputed is not None:  # computed for the whole group at once (_statistics_of)
            result, self.precomputed = self.precomputed, None
        else:
            with self.clock.measure("eval_s"):
                result = self.statistics.compute(self.model, self.metrics_threads)
        self.metrics_results.append((self.step, result))

    def extra_files(self) -> list[tuple[Path, bytes]]:
        if self.statistics is None:
            return []
        if self.metrics_results:
            from trainmap.metrics import engine

            steps, results = zip(*self.metrics_results)
            header, *lines = engine.metrics_frame(steps, results).to_csv(
                index=False, lineterminator="\n").splitlines(keepends=True)
            header = header.rstrip("\n")
            if self.metrics_header is not None and header != self.metrics_header:
                raise layout.ResumeError(f"{self.out / METRICS_CSV}: its columns ({self.metrics_header}) differ "
                                         f"from this engine's ({header}); delete {self.out} to start over")
            self.metrics_header = header
            self.metrics_lines.extend(zip(steps, lines))
            self.metrics_results.clear()
        text = self.metrics_header + "\n" + "".join(line for _, line in self.metrics_lines)
        return [(self.out / METRICS_CSV, text.encode())]

    def evaluate(self) -> tuple[float, float, float, float]:
        if self.evaluated is None:  # step 0, before the batch exists: the single-seed evaluation
            return super().evaluate()
        values, self.evaluated = self.evaluated, None
        return values


def _statistics_of(runs: Sequence[_Run], group: _Batch) -> None:
    """With statistics in the loop, every seed's statistics of this step: on a GPU all seeds
    at once from the group's stacked parameters (:meth:`InLoopStatistics.compute_stacked`);
    otherwise in one engine call over the seeds' models (:meth:`InLoopStatistics.compute_all`,
    the seeds in parallel on the job's threads; the engine's numbers do not depend on its
    thread count, so they are those of one call per seed)."""
    statistics = runs[0].statistics
    if statistics is None:
        return
    device = statistics.stacked_device(next(iter(group.params.values())).device)
    if device is not None:
        for run, result in zip(runs, statistics.compute_stacked(group.model_params(), device)):
            run.precomputed = result
        return
    results = statistics.compute_all([run.model for run in runs], runs[0].metrics_threads)
    for run, result in zip(runs, results):  # (its time counts as the evaluation's, in _train_group)
        run.precomputed = result


def _write_queued(runs: Sequence[_Run], with_resume_state: bool) -> None:
    """Write every seed's queued files together (:func:`trainmap.train.loop._flush_runs`);
    the time counts as each seed's checkpoint I/O, in equal shares."""
    started = time.perf_counter()
    _flush_runs(runs, with_resume_state)
    share = (time.perf_counter() - started) / max(len(runs), 1)
    for run in runs:
        run.clock.checkpoint_io_s += share


def _finish_all(runs: Sequence[_Run], stopped_early: bool, device: torch.device,
                batch_record: Mapping[str, Any]) -> None:
    """Finish ``runs`` as complete: their last files written together, then each run.json."""
    _write_queued(runs, with_resume_state=False)
    for run in runs:
        _end(run, "complete", None, stopped_early, device, batch_record)


def _train_group(runs: list[_Run], forward_kind: str, until: int, resume_interval_s: float,
                 batch_record: Mapping[str, Any], device: torch.device, bar: Any = None) -> list[_Run]:
    """Train ``runs`` (all at the same step) together up to step ``until``; finish (write
    run.json of) every seed that ends on the way. Returns the seeds still training."""
    group = _Batch(runs, forward_kind)
    counted = runs[0].step  # steps shown on the progress bar so far

    def show() -> None:
        nonlocal counted
        if bar is not None:
            bar.update((runs[0].step - counted) * len(runs))
            counted = runs[0].step

    last_flush = time.perf_counter()
    goal = runs[0].settings["stop_at_eval_accuracy"]
    while runs[0].step < until:
        started = time.perf_counter()
        losses = group.step_losses()
        values = losses.detach()
        if not bool(torch.isfinite(values).all()):
            group.unstack()
            finite = torch.isfinite(values).tolist()
            for run, ok in zip(runs, finite):
                if not ok:
                    _finish(run, "diverged", run.step, False, device, batch_record)
            show()
            return [run for run, ok in zip(runs, finite) if ok]
        group.train_step(losses)
        share = (time.perf_counter() - started) / len(runs)
        for run in runs:
            run.clock.train_s += share
        if runs[0].schedule.is_checkpoint(runs[0].step):
            show()
            group.unstack()
            started = time.perf_counter()
            group.evaluate()
            _statistics_of(runs, group)
            share = (time.perf_counter() - started) / len(runs)
            for run in runs:
                run.clock.eval_s += share
            flush = time.perf_counter() - last_flush >= resume_interval_s or sum(
                run.pending_bytes for run in runs) > _MAX_PENDING_BYTES
            reached = []
            for run in runs:
                row = run.checkpoint()  # (flush_now is False: the seeds' files are written together below)
                reached.append(bool(goal) and row["eval_accuracy"] >= goal)
            if flush:
                _write_queued(runs, with_resume_state=True)
                last_flush = time.perf_counter()
            if any(reached):
                _finish_all([run for run, stop in zip(runs, reached) if stop], True, device, batch_record)
                show()
                return [run for run, stop in zip(runs, reached) if not stop]
    group.unstack()
    show()
    return runs


def train_sweep(
    task: str,
    seeds: Sequence[int],
    out_dir: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    *,
    run_dirs: Sequence[str | os.PathLike] | None = None,
    threads: int | None = None,
    device: str = "auto",
    resume_interval_s: float = 10.0,
    lock_wait_s: float = 0.0,
    replace_other_settings: bool = False,
    statistics: InLoopStatistics | None = None,
    progress: bool = True,
) -> dict[int, dict[str, Any]]:
    """Train ``seeds`` of ``task`` as one batched model; each seed's run directory is
    ``out_dir/SEED`` (or the matching entry of ``run_dirs``). Returns each seed's run.json.

    Same settings, checks, locks and files as :func:`trainmap.train.loop.train_run` for
    each seed; a finished seed is returned as it is; a killed sweep started again continues
    every seed. Raises :class:`SettingsError` for a task not in :data:`BATCHED_TASKS`.

    ``replace_other_settings`` (the workflow's, whose settings changed): a seed's finished
    run of the same task and seed but other settings is trained again, its files replaced as
    when Snakemake deletes a stale run.json; without it such a directory is refused.

    ``statistics``: compute the 14 statistics of every seed at every checkpoint step in the
    loop and write each run's ``metrics.csv`` (the Recorder's columns: ``step``, the 14
    statistics, ``svd``, ``content_hash``), writing no checkpoint files. run.json records it
    under ``"statistics"`` (:meth:`InLoopStatistics.record`); a finished run recorded
    otherwise (checkpoint files, other options, another engine) counts as a run of other
    settings (refused, or trained again with ``replace_other_settings``).
    """
    if task not in BATCHED_TASKS:
        raise SettingsError(
            f"task {task!r} cannot train seeds as one batch (batched tasks: {', '.join(BATCHED_TASKS)}); "
            "train its seeds one per process with trainmap train"
        )
    settings = resolve_settings(task, overrides)
    seeds = list(seeds)
    if not seeds:
        raise SettingsError("a seed sweep needs at least one seed")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
            raise SettingsError(f"seed must be an integer from 0 to {_MAX_SEED}, got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise SettingsError(f"seeds repeat: {seeds}")
    if run_dirs is None:
        dirs = [Path(out_dir) / str(seed) for seed in seeds]
    else:
        dirs = [Path(d) for d in run_dirs]
        if len(dirs) != len(seeds):
            raise SettingsError(f"{len(dirs)} run directories for {len(seeds)} seeds")
    if threads is not None:
        try:
            threads = cap_workers(threads, "threads")
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    if not resume_interval_s >= 0:
        raise SettingsError(f"resume_interval_s must be a non-negative number of seconds, got {resume_interval_s!r}")
    torch_device = resolve_device(device)
    recording = None if statistics is None else statistics.record()
    records: dict[int, dict[str, Any]] = {}
    todo: list[tuple[int, Path]] = []
    for seed, out in zip(seeds, dirs):
        finished = layout.read_run_json(out)
        if finished is not None and replace_other_settings and finished.get("task") == task \
                and finished.get("seed") == seed and (finished.get("settings") != settings
                                                      or finished.get("statistics") != recording):
            owner = layout.read_owner(out) or {}
            if owner.get("kind") == "train" and RUN_JSON in (layout.listed_files(owner) or set()):
                layout.remove_files([RunPaths(out).run_json])  # trainmap's own file: the run is trained again
                finished = None
        if finished is not None:
            _check_same_run(finished, task, seed, settings, RunPaths(out).run_json)
            _check_same_recording(finished, recording, RunPaths(out).run_json)
            records[seed] = finished
        else:
            _check_claim(out, task, seed, settings)
            todo.append((seed, out))
    batch_record: dict[str, Any] = {"batch": {"seeds": seeds, "size": len(seeds), "batched": BATCHED_TASKS[task]}}
    if recording is not None:
        batch_record["statistics"] = recording
    with contextlib.ExitStack() as stack:
        claimed: list[tuple[int, Path, set[str]]] = []
        for seed, out in todo:
            layout.ensure_writable(out)
            stack.enter_context(RunLock(out, purpose=f"trainmap train-sweep {task} --seed {seed}", wait_s=lock_wait_s))
            finished = layout.read_run_json(out)
            if finished is not None:
                _check_same_run(finished, task, seed, settings, RunPaths(out).run_json)
                _check_same_recording(finished, recording, RunPaths(out).run_json)
                records[seed] = finished
                continue
            written = _check_claim(out, task, seed, settings)
            layout.write_owner(out, _identity(task, seed, settings), written)
            layout.remove_temporaries(out, written)  # what a killed session left half-written
            claimed.append((seed, out, written))
        if claimed:
            _train_claimed(task, settings, claimed, threads, torch_device, resume_interval_s, batch_record, statistics,
                           progress)
    for seed, out in zip(seeds, dirs):
        if seed not in records:
            records[seed] = layout.read_run_json(out)
    return {seed: records[seed] for seed in seeds}


def _check_same_recording(finished: Mapping[str, Any], recording: Mapping[str, Any] | None, where: Path) -> None:
    """Refuse a finished run that recorded its weights otherwise than asked (checkpoint
    files, or statistics under other options or another engine)."""
    if finished.get("statistics") != recording:
        from trainmap.train.loop import _recording

        raise SettingsError(
            f"{where}: a run finished {_recording(finished.get('statistics'))}, asked for {_recording(recording)}; "
            "use another output directory, delete that one, or train it again with --replace-other-settings"
        )


def _train_claimed(task: str, settings: dict[str, Any], claimed: list[tuple[int, Path, set[str]]],
                   threads: int | None, device: torch.device, resume_interval_s: float,
                   batch_record: Mapping[str, Any], statistics: InLoopStatistics | None = None,
                   progress: bool = True) -> None:
    with _torch_configured(threads, device):
        shared = components.build(task, settings, claimed[0][0])
        runs: list[_Run] = []
        for i, (seed, out, written) in enumerate(claimed):
            parts = shared if i == 0 else components.Components(
                components.build_model(task, settings, seed), shared.train, shared.eval, shared.loss,
                shared.prepare, shared.data_info,
            )
            run = _SeedRun(task, seed, settings, out, device, resume_interval_s, written, parts=parts,
                           statistics=statistics, threads=threads)
            run.flush_now = True  # step 0 (or the resume point) is written at once
            run.start()
            run.flush_now = False
            runs.append(run)
        goal = settings["stop_at_eval_accuracy"]
        active = []
        for run in runs:
            if goal and run.rows and run.rows[-1]["eval_accuracy"] >= goal:
                _finish(run, "complete", None, True, device, batch_record)
            elif run.step >= run.schedule.total_steps:
                _finish(run, "complete", None, False, device, batch_record)
            else:
                active.append(run)
        total = runs[0].schedule.total_steps
        kind = BATCHED_TASKS[task]
        with _progress_bar(task, active, total, progress) as bar:
            _train_active(active, total, kind, resume_interval_s, batch_record, device, bar)


def _progress_bar(task: str, active: Sequence[_Run], total: int, progress: bool):
    """One bar for the sweep, in seed-steps (a step of N seeds counts N), or a null context."""
    if not progress or not active:
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total * len(active), initial=sum(run.step for run in active),
                desc=f"{task} {len(active)} seeds", unit="seed-step", unit_scale=True, file=sys.stderr,
                mininterval=0.5 if interactive else 30.0, dynamic_ncols=interactive)


def _train_active(active: list[_Run], total: int, kind: str, resume_interval_s: float,
                  batch_record: Mapping[str, Any], device: torch.device, bar: Any = None) -> None:
    """Train the unfinished seeds to their end, in sub-batches of seeds at the same step
    (``bar``: a progress bar counting seed-steps, or None)."""
    while active:
        lowest = min(run.step for run in active)
        group = [run for run in active if run.step == lowest]
        ahead = [run.step for run in active if run.step > lowest]
        until = min(ahead) if ahead else total
        still = _train_group(group, kind, until, resume_interval_s, batch_record, device, bar)
        ended = [run for run in group if run not in still]
        if bar is not None:  # the steps that seeds which ended early will not take
            bar.update(sum(total - run.step for run in ended))
        at_end = [run for run in still if run.step >= total]
        _finish_all(at_end, False, device, batch_record)
        ended += at_end
        active = [run for run in active if run not in ended]

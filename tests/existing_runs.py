"""Test helpers: run directories as researchers have them, written without trainmap's own
writers — a trainmap.Recorder run (docs/design.md "File contracts", written here from
``trainmap.metrics`` as the Recorder does) and a plain loop's ``step*.safetensors`` files —
whose weights follow a small MLP through a change of regime at a run-specific step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors.numpy import save_file

SHAPES = {"fc1.weight": (12, 8), "fc1.bias": (12,), "fc2.weight": (4, 12), "fc2.bias": (4,), "embed.weight": (5, 8)}


def weights(seed: int, step: int, total: int, switch: float) -> dict[str, np.ndarray]:
    """float32 weights of run ``seed`` at ``step``: drift from a start to an end point, with
    a fast change around the fraction ``switch`` of the run, plus per-step noise."""
    start = np.random.default_rng(seed)
    end = np.random.default_rng(1000 + seed)
    noise = np.random.default_rng(seed * 100_003 + step)
    mix = 1.0 / (1.0 + np.exp(-12.0 * (step / total - switch)))
    return {name: ((1 - mix) * start.normal(size=shape) + mix * 3.0 * end.normal(size=shape)
                   + 0.02 * noise.normal(size=shape)).astype(np.float32) for name, shape in SHAPES.items()}


def log_rows(steps: Sequence[int], total: int, switch: float) -> str:
    """log.csv text: eval accuracy crosses 0.5 at the switch."""
    lines = ["step,eval_loss,eval_accuracy"]
    for step in steps:
        accuracy = 1.0 / (1.0 + np.exp(-12.0 * (step / total - switch)))
        lines.append(f"{step},{2.0 * (1 - accuracy):.6f},{accuracy:.6f}")
    return "\n".join(lines) + "\n"


def write_checkpoint_run(folder: Path, seed: int, steps: Sequence[int], *, switch: float = 0.5,
                         log: bool = True) -> Path:
    """A training loop's own output: ``step{N}.safetensors`` files and a log.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    total = max(steps)
    for step in steps:
        save_file(weights(seed, step, total, switch), str(folder / f"step{step}.safetensors"))
    if log:
        (folder / "log.csv").write_text(log_rows(steps, total, switch))
    return folder


def recorder_options(**changes) -> dict:
    """The resolved metric options a Recorder writes into run.json (the engine's defaults)."""
    from trainmap import _rust_metrics as engine

    return {"include": None, "exclude": engine.DEFAULT_EXCLUDE, "svd": "auto",
            "exact_max_dim": engine.DEFAULT_EXACT_MAX_DIM, "rank": engine.DEFAULT_RANK, **changes}


def write_recorder_run(folder: Path, seed: int, steps: Sequence[int], *, switch: float = 0.5,
                       keep_checkpoints: bool = False, options: dict | None = None, engine: str | None = None) -> Path:
    """A trainmap.Recorder run directory (contracts: metrics.csv, log.csv, run.json, and
    with keep_checkpoints ``checkpoints/step{N:08d}.safetensors``)."""
    from trainmap import metrics

    folder.mkdir(parents=True, exist_ok=True)
    total = max(steps)
    options = options or recorder_options()
    results = []
    for step in steps:
        state = weights(seed, step, total, switch)
        results.append(metrics.weights_metrics(state, **options))
        if keep_checkpoints:
            (folder / "checkpoints").mkdir(exist_ok=True)
            save_file(state, str(folder / "checkpoints" / f"step{step:08d}.safetensors"))
    metrics.metrics_frame(list(steps), results).to_csv(folder / "metrics.csv", index=False)
    (folder / "log.csv").write_text(log_rows(steps, total, switch))
    (folder / "run.json").write_text(json.dumps({
        "kind": "recorder", "status": "complete", "seed": seed, "steps_recorded": len(steps),
        "first_step": min(steps), "last_step": max(steps), "options": options,
        "engine": engine or metrics.ENGINE_FINGERPRINT, "versions": {}, "keep_checkpoints": keep_checkpoints,
    }))
    return folder

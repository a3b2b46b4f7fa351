"""A researcher's own training script, as test_recorder_restart.py runs it: it records with
trainmap.Recorder and saves its OWN checkpoint (model weights and step, safetensors) every
``CHECKPOINT_EVERY`` steps, from which it continues when started again.

Usage: python recorder_script.py RUN_DIR OWN_CHECKPOINT [HANG_AFTER_STEP]
With HANG_AFTER_STEP, the script stops making progress after recording that step, so the
test can SIGKILL it at a known point.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from trainmap import Recorder

TOTAL_STEPS = 80
RECORD_EVERY = 10
CHECKPOINT_EVERY = 25


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batch of ``step``: a function of the step alone, so a restart sees the same data."""
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(16, 10, generator=generator)
    return x, (x[:, 0] * x[:, 1] > 0).long()


def save_own_checkpoint(path: Path, model: torch.nn.Module, step: int) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({**model.state_dict(), "step": torch.tensor(step)}, tmp)
    os.replace(tmp, path)


def main(run_dir: str, own_checkpoint: str, hang_after: int | None = None) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    own_checkpoint = Path(own_checkpoint)
    start = 0
    if own_checkpoint.exists():
        state = load_file(own_checkpoint)
        start = int(state.pop("step"))
        model.load_state_dict(state)
    eval_x, eval_y = batch(-1)
    with Recorder(run_dir, seed=0) as rec:
        for step in range(start, TOTAL_STEPS + 1):
            if step % CHECKPOINT_EVERY == 0 and step > start:
                save_own_checkpoint(own_checkpoint, model, step)
            if step % RECORD_EVERY == 0:
                with torch.no_grad():
                    logits = model(eval_x)
                    loss = torch.nn.functional.cross_entropy(logits, eval_y)
                    accuracy = (logits.argmax(1) == eval_y).float().mean()
                rec.record(step, model, eval_loss=loss, eval_accuracy=accuracy)
                print(f"recorded {step}", flush=True)
                if step == hang_after:
                    time.sleep(600)
            if step == TOTAL_STEPS:
                break
            x, y = batch(step)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            model.zero_grad()
            loss.backward()
            with torch.no_grad():  # plain SGD by hand: torch.optim would import torch._dynamo (~10 s)
                for parameter in model.parameters():
                    parameter -= 0.1 * parameter.grad


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None)

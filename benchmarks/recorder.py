"""Benchmark of trainmap.Recorder (issue 10).

1. Overhead on the parities task (the package's own model and data, as `trainmap train
   parities` builds them, default settings): training with a ``record`` every epoch (with
   the eval loss and accuracy the loop computes anyway) against the same training without
   it. Prints the time in ``record`` as a fraction of the training time (goal: <= 5 %).
   With ``--live``, a third pass records with ``Recorder(model=...)`` (the live state of
   issue 22: the run so far z-scored and forward-filtered after every record) against a
   4-state model fitted on the second pass's statistics; prints its record time against
   the plain record's.
2. One ``record`` call on a ResNet18-sized model (the package's CIFAR ResNet18, 11 M
   parameters) and a BERT-base-sized one (transformers ``BertModel`` from its default
   config, random init, 110 M parameters) against ``trainmap metrics`` on the same
   parameters from a safetensors file (page cache warm). Goal: no slower (ratio <= 1).

Usage: python benchmarks/recorder.py [--epochs 20] [--repeats 3] [--threads N] [--skip-large] [--live]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from trainmap import Recorder
from trainmap.metrics.engine import trajectory_metrics
from trainmap.train import components, default_settings


def fit_live_model(run_dir: Path, path: Path, n_states: int = 4) -> None:
    """A ``model.npz`` for the live pass: an ``n_states`` diagonal HMM fitted on the run's
    own statistics (its z-scored metrics.csv). Its quality does not matter here; its size
    and the filter's work per record do."""
    import numpy as np
    import pandas as pd
    from hmmlearn.hmm import GaussianHMM

    from trainmap.analysis.hmm_model import save_model
    from trainmap.metrics import METRIC_NAMES

    table = pd.read_csv(run_dir / "metrics.csv")
    features = [c for c in METRIC_NAMES if c in table and np.isfinite(table[c]).all() and table[c].std() > 0]
    first_n = len(table)
    x = table[features].to_numpy(float)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    model = GaussianHMM(n_states, covariance_type="diag", n_iter=20, random_state=0).fit(z)
    save_model(path, model, features=features, zscore_first_n=first_n)


def parities_overhead(epochs: int, threads: int | None, workdir: Path, live: bool = False) -> None:
    """Train parities for ``epochs`` epochs twice, with and without a record per epoch (and,
    with ``live``, a third time recording with the live state)."""
    settings = {**default_settings("parities"), "epochs": epochs}
    train_s = {}
    record_s = {True: [], "live": []}
    model_path = workdir / "fitted" / "hmm" / "model.npz"
    # A first pass without records warms torch up; then without and with records.
    for recording in (False, False, True, *(("live",) if live else ())):
        if recording == "live":
            fit_live_model(workdir / "parities", model_path)
        parts = components.build("parities", settings, seed=0)
        model, optimizer = parts.model, components.build_optimizer(parts.model, settings)
        recorder = (Recorder(workdir / "parities_live", seed=0, threads=threads, model=model_path)
                    if recording == "live" else
                    Recorder(workdir / "parities", seed=0, threads=threads) if recording else None)
        n, batch_size = len(parts.train), settings["batch_size"]
        start = time.perf_counter()
        step = 0
        for epoch in range(epochs):
            order = torch.from_numpy(components.epoch_order(0, epoch, n))
            for first in range(0, n, batch_size):
                batch = order[first : first + batch_size]
                losses, _ = components.batch_loss(
                    model(parts.train.inputs[batch]), parts.train.targets[batch], parts.loss
                )
                optimizer.zero_grad(set_to_none=True)
                losses.mean().backward()
                optimizer.step()
                step += 1
            with torch.no_grad():
                losses, correct = components.batch_loss(model(parts.eval.inputs), parts.eval.targets, parts.loss)
            if recorder is not None:
                began = time.perf_counter()
                recorder.record(step, model, eval_loss=losses.mean(), eval_accuracy=correct.float().mean())
                record_s[recording].append(time.perf_counter() - began)
        train_s[recording] = time.perf_counter() - start
        if recorder is not None:
            recorder.close()
    base = train_s[False]
    print(f"parities, {epochs} epochs ({step} steps), a record every epoch:")
    print(f"  training without records {base:.2f} s, with {train_s[True]:.2f} s")
    plain = record_s[True]
    print(
        f"  record: median {1e3 * statistics.median(plain):.1f} ms, total {sum(plain):.2f} s "
        f"= {100 * sum(plain) / base:.1f} % of the training time (goal <= 5 %); "
        f"wall-clock difference {100 * (train_s[True] - base) / base:+.1f} %"
    )
    if live:
        with_live = record_s["live"]
        print(
            f"  record with the live state: median {1e3 * statistics.median(with_live):.1f} ms "
            f"(last {1e3 * with_live[-1]:.1f} ms), total {sum(with_live):.2f} s = "
            f"{100 * sum(with_live) / base:.1f} % of the training time; "
            f"{sum(with_live) / sum(plain):.2f} x the plain record's total"
        )


def resnet18():
    from trainmap.train.models import ResNet18

    return ResNet18(num_classes=100)


def bert_base():
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig())


def record_against_file(name: str, build, repeats: int, threads: int | None, workdir: Path) -> None:
    """Best-of-``repeats`` time of one record call and of trainmap metrics on the saved file."""
    torch.manual_seed(0)
    model = build()
    n_parameters = sum(p.numel() for p in model.parameters())
    path = workdir / f"{name}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.named_parameters()}, path)
    trajectory_metrics([path], threads=threads)  # warm the page cache
    from_file, recording = [], []
    with Recorder(workdir / name, threads=threads) as recorder:
        for step in range(repeats):
            began = time.perf_counter()
            trajectory_metrics([path], threads=threads)
            from_file.append(time.perf_counter() - began)
            began = time.perf_counter()
            recorder.record(step, model, eval_loss=0.0)
            recording.append(time.perf_counter() - began)
    print(
        f"{name} ({n_parameters / 1e6:.1f} M parameters): record {min(recording):.3f} s, "
        f"trainmap metrics from the file {min(from_file):.3f} s, "
        f"ratio {min(recording) / min(from_file):.2f} (goal <= 1)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: all available)")
    parser.add_argument("--skip-large", action="store_true", help="only the parities overhead")
    parser.add_argument("--live", action="store_true", help="also record with the live state (Recorder(model=...))")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        parities_overhead(args.epochs, args.threads, workdir, args.live)
        if not args.skip_large:
            record_against_file("resnet18", resnet18, args.repeats, args.threads, workdir)
            record_against_file("bert-base", bert_base, args.repeats, args.threads, workdir)


if __name__ == "__main__":
    main()

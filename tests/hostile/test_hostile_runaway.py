"""Hostile and careless input, class 2: inputs that would hang a command or make it run away
(FIFOs, alias bombs, archives and arrays declaring gigabytes, too many workers, Ctrl-C).

Hang-prone cases run in a child process with a timeout, so a regression fails instead of
hanging the suite; allocation cases also run under an address-space limit."""

from __future__ import annotations

import io
import os
import resource
import signal
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest

from hostile_helpers import (
    TINY_PARITIES, env, fingerprint, like_a_terminal, one_error_line, run_cli, set_args, trainmap_command,
)
from trainmap.train import layout


def _limit_memory():
    """Child processes may not map more than 3 GB: an attempt to allocate gigabytes fails fast."""
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def _python(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env(),
                          preexec_fn=_limit_memory)


@pytest.mark.slow
def test_a_fifo_as_run_json_is_refused_not_waited_on(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / "run.json")
    before = fingerprint(tmp_path)
    result = run_cli("train", "parities", "--seed", "0", "--out", out, "--no-progress", *set_args(TINY_PARITIES),
                     timeout=60)
    line = one_error_line(result.stderr, "train")
    assert result.returncode == 2 and str(out / "run.json") in line and "FIFO" in line
    assert fingerprint(tmp_path) == before


@pytest.mark.slow
def test_a_fifo_as_model_npz_or_states_csv_is_refused(tmp_path):
    run = tmp_path / "runs" / "0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("step,l1,l2\n0,1.0,2.0\n1,1.5,2.5\n")
    os.mkfifo(tmp_path / "model.npz")
    before = fingerprint(tmp_path)
    result = run_cli("hmm-decode", run, "--model", tmp_path / "model.npz", "--states", tmp_path / "states.csv",
                     timeout=60)
    line = one_error_line(result.stderr, "hmm-decode")
    assert result.returncode == 2 and str(tmp_path / "model.npz") in line and "FIFO" in line
    os.mkfifo(tmp_path / "states.csv")
    before = fingerprint(tmp_path)
    result = run_cli("regress", run, "--states", tmp_path / "states.csv", "--model", tmp_path / "m.npz",
                     "--out", tmp_path / "r.json", "--coefficients", tmp_path / "c.csv", "--threshold", "0.9",
                     "--convergence-csv", tmp_path / "conv.csv", timeout=60)
    line = one_error_line(result.stderr, "regress")
    assert result.returncode == 2 and str(tmp_path / "states.csv") in line and "FIFO" in line
    assert fingerprint(tmp_path) == before


def test_fifo_and_huge_idx_data_files_are_refused(tmp_path, mnist_maker):
    data = tmp_path / "data"
    mnist_maker(data, 8, 4)
    (data / "t10k-labels-idx1-ubyte.gz").unlink()
    os.mkfifo(data / "t10k-labels-idx1-ubyte.gz")
    before = fingerprint(tmp_path)
    result = _python(f"from trainmap.train.datafiles import load_mnist; load_mnist({str(data)!r})")
    assert result.returncode == 1 and "t10k-labels-idx1-ubyte.gz" in result.stderr and "FIFO" in result.stderr
    # An IDX header whose dimensions multiply past 2**64 (numpy's int64 product would wrap).
    header = bytes([0, 0, 0x08, 3]) + b"".join((2**32 - 1).to_bytes(4, "big") for _ in range(3))
    (data / "bad.idx").write_bytes(header + bytes(16))
    result = _python(f"from trainmap.train.datafiles import read_idx; read_idx({str(data / 'bad.idx')!r})")
    assert result.returncode == 1 and "bad.idx" in result.stderr and "declares shape" in result.stderr
    assert fingerprint(tmp_path) == {**before, "data/bad.idx": fingerprint(tmp_path)["data/bad.idx"]}


def test_cifar_archive_member_declaring_gigabytes_is_refused_before_reading(tmp_path):
    """A ~200-byte archive whose member header claims 20 GB."""
    data = tmp_path / "data"
    data.mkdir()
    info = tarfile.TarInfo("cifar-100-python/train")
    info.size = 20 << 30
    raw = io.BytesIO()
    raw.write(info.tobuf(format=tarfile.GNU_FORMAT))
    archive = data / "cifar-100-python.tar.gz"
    import gzip

    archive.write_bytes(gzip.compress(raw.getvalue() + bytes(512)))
    assert archive.stat().st_size < 1000
    before = fingerprint(tmp_path)
    result = _python(f"from trainmap.train.datafiles import load_cifar100; load_cifar100({str(data)!r})")
    assert result.returncode == 1, result.stderr
    assert "cifar-100-python.tar.gz" in result.stderr and "cifar-100-python/train" in result.stderr
    assert "declares 21474836480 bytes" in result.stderr and "MemoryError" not in result.stderr
    assert fingerprint(tmp_path) == before


@pytest.mark.slow
def test_model_npz_with_a_huge_extra_array_is_refused_before_loading(tmp_path):
    """A small model.npz whose extra member declares 16 GB (the data is not even there)."""
    model = tmp_path / "model.npz"
    with zipfile.ZipFile(model, "w") as archive:
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(3))
        archive.writestr("startprob.npy", buffer.getvalue())
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2 << 30,)})
        archive.writestr("extra.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + bytes(64))
    assert model.stat().st_size < 2000
    run = tmp_path / "runs" / "0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("step,l1\n0,1.0\n1,2.0\n")
    before = fingerprint(tmp_path)
    result = subprocess.run(trainmap_command("hmm-decode", run, "--model", model, "--states", tmp_path / "s.csv"),
                            capture_output=True, text=True, timeout=60, env=env(), preexec_fn=_limit_memory)
    line = one_error_line(result.stderr, "hmm-decode")
    assert result.returncode == 2 and str(model) in line and "array extra" in line
    assert fingerprint(tmp_path) == before


@pytest.mark.slow
def test_worker_counts_are_capped_at_the_cpus(tmp_path, monkeypatch):
    from trainmap.io import limits
    from trainmap.io.limits import available_cpus

    result = run_cli("train", "parities", "--seed", "0", "--out", tmp_path / "run", "--threads", "100000",
                     "--no-progress", *set_args(TINY_PARITIES))
    assert result.returncode == 0, result.stderr
    assert f"threads 100000 is more than the {available_cpus()} CPU(s) available" in result.stderr
    assert layout.read_run_json(tmp_path / "run")["threads"] == available_cpus()
    from trainmap.analysis.hmm_select import select_hmm
    from trainmap.options import HMMSelectOptions

    rng = np.random.default_rng(0)
    monkeypatch.setattr(limits, "available_cpus", lambda: 1)  # capped to 1: no process pool to start
    with pytest.warns(RuntimeWarning, match=r"--workers 5000 is more than the 1 CPU\(s\) available; using 1"):
        select_hmm([rng.normal(size=(20, 2)) for _ in range(5)],
                   HMMSelectOptions(max_components=1, restarts=1, n_iter=5, workers=5000))


@pytest.mark.slow
def test_ctrl_c_stops_training_promptly_and_the_run_resumes(tmp_path):
    out = tmp_path / "run"
    settings = {**TINY_PARITIES, "epochs": 100000}
    command = trainmap_command("train", "parities", "--seed", "0", "--out", out, "--no-progress", "--threads", "1",
                               "--resume-interval", "0", *set_args(settings))
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env(), preexec_fn=like_a_terminal)
    deadline = time.monotonic() + 120
    while len(layout.checkpoint_steps(out)) < 5:
        assert process.poll() is None and time.monotonic() < deadline, "training made no progress"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)  # a hang fails the test
    assert process.returncode == 130 and "trainmap train: interrupted" in stderr
    steps = layout.checkpoint_steps(out)
    result = run_cli("train", "parities", "--seed", "0", "--out", out, "--no-progress", "--threads", "1",
                     *set_args({**settings, "epochs": 3}), timeout=60)
    assert result.returncode == 2 and "different run" in result.stderr  # the lock was released; settings checked
    assert layout.checkpoint_steps(out) == steps


def test_config_alias_bomb_is_refused_quickly_naming_the_key(tmp_path):
    """525 bytes of YAML aliases standing for 9**9 values: validation must not walk them all."""
    lines = ["a0: &a0 [x,x,x,x,x,x,x,x,x]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = "experiments:\n  e:\n    task: parities\n    seeds: 2\n    hmm:\n" + "\n".join(
        "      " + line for line in lines).replace("a8:", "restarts:") + "\n"
    config = tmp_path / "bomb.yaml"
    config.write_text(text)
    assert len(text) < 600
    before = fingerprint(tmp_path)
    code = (
        "import yaml, trainmap.workflow as tw\n"
        f"config = yaml.safe_load(open({str(config)!r}))\n"
        f"tw.validate_config(config, tw.load_schema({str(_schema())!r}))\n"
    )
    result = _python(code, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "ConfigError: config key experiments.e.hmm.restarts" in result.stderr
    assert "more than 100000 values" in result.stderr
    assert fingerprint(tmp_path) == before


def _schema():
    from hostile_helpers import ROOT

    return ROOT / "workflow" / "schemas" / "config.schema.yaml"


# --- trainer_state.json: every checkpoint-N/ may carry a copy of a long history --------------


def _trainer_state_text(global_step: int, entries: list[dict]) -> str:
    """A trainer_state.json as the Trainer writes it (keys sorted, indented)."""
    import json

    return json.dumps({"best_metric": None, "epoch": 1.0, "global_step": global_step, "log_history": entries,
                       "max_steps": global_step, "train_batch_size": 8}, indent=2, sort_keys=True) + "\n"


def _step_dirs(src, steps):
    from checkpoint_factory import tensor, write_checkpoint

    for step in steps:
        (src / f"checkpoint-{step}").mkdir(parents=True)
        write_checkpoint(src / f"checkpoint-{step}" / "model.safetensors",
                         [tensor("fc.weight", np.full((2, 3), float(step)), "F32", "matrix")])


@pytest.mark.slow
def test_older_trainer_states_are_read_only_up_to_their_global_step(tmp_path):
    """The newest checkpoint's history holds every earlier entry: older copies are not read
    through (here they are cut off right after global_step, and would not even parse)."""
    import pandas as pd

    src = tmp_path / "src"
    _step_dirs(src, [100, 200, 300])
    history = [{"step": s, "eval_accuracy": s / 400, "epoch": s / 100} for s in range(10, 301, 10)]
    for step in (100, 200):
        full = _trainer_state_text(step, [e for e in history if e["step"] <= step])
        (src / f"checkpoint-{step}" / "trainer_state.json").write_text(full[:full.index('"log_history"')])
    (src / "checkpoint-300" / "trainer_state.json").write_text(_trainer_state_text(300, history))
    before = fingerprint(tmp_path)
    result = run_cli("series-metrics", src, "--out-dir", tmp_path / "out", "--no-progress", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr  # global steps agree with the names
    log = pd.read_csv(tmp_path / "out" / "log.csv")
    assert log["step"].tolist() == list(range(10, 301, 10)) and log["eval_accuracy"].tolist() == [
        s / 400 for s in range(10, 301, 10)]
    assert {k: v for k, v in fingerprint(tmp_path).items() if k.startswith("src/")} == before


def test_a_large_trainer_state_json_is_streamed_not_read_whole(tmp_path):
    """A 50 MB log_history (entries with long text, which the log leaves out) is read a
    megabyte at a time: Python's peak allocation stays far below the file's size."""
    import tracemalloc

    from trainmap.metrics import series

    src = tmp_path / "src"
    _step_dirs(src, [1000])
    note = "x" * 5000
    history = [{"step": s, "loss": 1.0 / s, "note": note} for s in range(1, 10001)]
    (src / "checkpoint-1000" / "trainer_state.json").write_text(_trainer_state_text(1000, history))
    size = (src / "checkpoint-1000" / "trainer_state.json").stat().st_size
    assert size > 50e6
    found = series.discover(src)
    tracemalloc.start()
    try:
        log = series.read_log(found)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(log) == 10000 and log[7] == {"train_loss": 1.0 / 7}
    assert peak < size / 4, f"peak {peak} bytes reading a {size}-byte file"


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_the_streamed_trainer_state_reads_what_json_loads_reads(tmp_path, monkeypatch, chunk):
    """Chunk boundaries anywhere, nested entries, strings holding braces and commas, numbers
    cut at a boundary, no white space or much of it: the same rows as json.loads gives."""
    import json
    import random

    from trainmap.metrics import series

    rng = random.Random(chunk)
    history = []
    for step in range(1, 400):
        entry = {"step": step, "loss": rng.random() * 10 ** rng.randint(-5, 5), "epoch": step // 7}
        if step % 3 == 0:
            entry["note"] = 'x}, {"step": 99, "loss": 1} ]'
        if step % 5 == 0:
            entry["nested"] = {"a": [1, {"b": "}"}], "c": None}
        history.append(entry)
    assert series.trainer_global_step(tmp_path) is None  # (no trainer_state.json there yet)
    for indent in (None, 2):
        path = tmp_path / f"trainer_state_{indent}.json"
        path.write_text(json.dumps({"a": [1, 2], "global_step": 399, "log_history": history, "z": {"y": 1}},
                                   indent=indent))
        monkeypatch.setattr(series, "_CHUNK", chunk)
        rows = series._trainer_log(path)
        expected = {e["step"]: {k: v for k, v in e.items() if k != "step" and type(v) in (int, float)}
                    for e in history}
        assert rows == expected
        (tmp_path / "trainer_state.json").write_text(path.read_text())
        assert series.trainer_global_step(tmp_path) == 399

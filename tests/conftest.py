"""Shared fixtures of the training tests: tiny data files in the real distribution formats."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray, *, gzipped: bool) -> Path:
    """Write a uint8 array in the IDX format MNIST is distributed in."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw, mtime=0) if gzipped else raw)
    return path


def make_mnist(folder: Path, n_train: int = 48, n_test: int = 16, *, gzipped: bool = True, seed: int = 0) -> dict:
    """Tiny MNIST in ``folder`` (four IDX files, as distributed); returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gzipped else ""
    for key, stem in (
        ("train_images", "train-images-idx3-ubyte"),
        ("train_labels", "train-labels-idx1-ubyte"),
        ("test_images", "t10k-images-idx3-ubyte"),
        ("test_labels", "t10k-labels-idx1-ubyte"),
    ):
        write_idx(folder / f"{stem}{suffix}", arrays[key], gzipped=gzipped)
    return arrays


def cifar_batch_bytes(images: np.ndarray, labels: np.ndarray, *, bytes_keys: bool = False) -> bytes:
    """One CIFAR-100 python batch file's bytes: a protocol-2 pickle of the dict the real
    archive holds (``data`` N×3072 uint8, ``fine_labels``, ``coarse_labels``, …)."""
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    batch = {
        key("batch_label"): "training batch 1 of 1",
        key("filenames"): [f"image_{i}.png" for i in range(len(labels))],
        key("fine_labels"): [int(x) for x in labels],
        key("coarse_labels"): [int(x) // 5 for x in labels],
        key("data"): images.reshape(len(images), -1),
    }
    return pickle.dumps(batch, protocol=2)


def make_cifar100(folder: Path, n_train: int = 12, n_test: int = 6, *, archive: bool = True, seed: int = 0) -> dict:
    """Tiny CIFAR-100 in ``folder``: ``cifar-100-python.tar.gz`` (or its extracted folder)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
        "train_labels": rng.integers(0, 100, n_train),
        "test_images": rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
        "test_labels": rng.integers(0, 100, n_test),
    }
    members = {
        "cifar-100-python/train": cifar_batch_bytes(arrays["train_images"], arrays["train_labels"]),
        "cifar-100-python/test": cifar_batch_bytes(arrays["test_images"], arrays["test_labels"], bytes_keys=True),
        "cifar-100-python/meta": pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}, protocol=2),
    }
    folder.mkdir(parents=True, exist_ok=True)
    if archive:
        with tarfile.open(folder / "cifar-100-python.tar.gz", "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        for name, data in members.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    return arrays


@pytest.fixture
def mnist_maker():
    """``make_mnist(folder, n_train, n_test, gzipped=…)``: write tiny MNIST files anywhere."""
    return make_mnist


@pytest.fixture
def cifar_maker():
    """``make_cifar100(folder, n_train, n_test, archive=…)``: write tiny CIFAR-100 files anywhere."""
    return make_cifar100


@pytest.fixture
def cifar_batch():
    """``cifar_batch_bytes(images, labels)``: the bytes of one CIFAR-100 python batch file."""
    return cifar_batch_bytes

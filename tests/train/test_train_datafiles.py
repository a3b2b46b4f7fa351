"""Readers of the MNIST IDX files and the CIFAR-100 python archive, on tiny generated files;
the missing-data message; downloads with checksum verification (from file:// URLs)."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle

import numpy as np
import pytest

from trainmap.train import DataFileError, MissingDataError, datafiles, train_run

MNIST_NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@pytest.mark.parametrize("gzipped", [True, False])
def test_mnist_idx_files_are_read_exactly(tmp_path, mnist_maker, gzipped):
    written = mnist_maker(tmp_path, n_train=7, n_test=3, gzipped=gzipped)
    loaded = datafiles.load_mnist(tmp_path)
    assert loaded.keys() == written.keys()
    for key in written:
        assert np.array_equal(loaded[key], written[key])
    assert loaded["train_images"].dtype == np.uint8 and loaded["train_labels"].dtype == np.int64


def test_mnist_in_torchvision_layout_is_found(tmp_path, mnist_maker):
    written = mnist_maker(tmp_path / "MNIST" / "raw", n_train=5, n_test=2, gzipped=False)
    assert np.array_equal(datafiles.load_mnist(tmp_path)["test_images"], written["test_images"])


def test_read_idx_follows_the_format(tmp_path):
    """An independent check of the header layout: magic 0x00000803, big-endian dimensions."""
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x00\x00\x08\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6)))
    assert read_idx_equals(path, np.arange(6, dtype=np.uint8).reshape(2, 3))
    path.write_bytes(b"\x00\x00\x0b\x01" + (2).to_bytes(4, "big") + b"\x01\x00\xff\xff")  # big-endian int16
    assert read_idx_equals(path, np.array([256, -1], dtype=np.int16))


def read_idx_equals(path, expected) -> bool:
    got = datafiles.read_idx(path)
    return got.dtype == expected.dtype and np.array_equal(got, expected)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: b"\x08\x03" + raw[2:], "not an IDX file"),
        (lambda raw: raw[:-5], "truncated or corrupt"),
        (lambda raw: raw[:6], "truncated IDX header"),
        (lambda raw: b"", "not an IDX file"),
    ],
)
def test_corrupt_mnist_files_are_named(tmp_path, mnist_maker, damage, message):
    mnist_maker(tmp_path, n_train=4, n_test=2, gzipped=False)
    victim = tmp_path / "train-images-idx3-ubyte"
    victim.write_bytes(damage(victim.read_bytes()))
    with pytest.raises(DataFileError, match=f"{victim}: .*{message}"):
        datafiles.load_mnist(tmp_path)


def test_broken_gzip_and_inconsistent_mnist_files_are_named(tmp_path, mnist_maker):
    mnist_maker(tmp_path, n_train=4, n_test=2)
    victim = tmp_path / "t10k-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:30])
    with pytest.raises(DataFileError, match=f"{victim}: corrupt gzip data"):
        datafiles.load_mnist(tmp_path)
    mnist_maker(tmp_path, n_train=4, n_test=2)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([1, 2, 3])))
    with pytest.raises(DataFileError, match=f"{labels}: 3 labels for the 4 images"):
        datafiles.load_mnist(tmp_path)
    labels.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (4).to_bytes(4, "big") + bytes([1, 2, 3, 12])))
    with pytest.raises(DataFileError, match=f"{labels}: label 12 outside"):
        datafiles.load_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(
        gzip.compress(b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (4, 8, 8)) + bytes(256))
    )
    with pytest.raises(DataFileError, match=f"{images}: expected 28×28 uint8 images"):
        datafiles.load_mnist(tmp_path)


def test_missing_mnist_names_the_files_and_where_to_put_them(tmp_path, mnist_maker):
    mnist_maker(tmp_path, n_train=4, n_test=2)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MissingDataError) as info:
        datafiles.load_mnist(tmp_path)
    message = str(info.value)
    assert f"{tmp_path}/" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "train-images" not in message and "download=true" in message


def test_missing_data_stops_a_training_run_with_the_message(tmp_path):
    with pytest.raises(MissingDataError, match="CIFAR-100 missing in .*cifar-100-python.tar.gz.*download=true"):
        train_run("cifar100", 0, tmp_path / "run", {"data_dir": str(tmp_path / "nothing")}, progress=False)
    with pytest.raises(MissingDataError, match="MNIST files missing.*train-images-idx3-ubyte.gz"):
        train_run("mnist", 0, tmp_path / "run", {"data_dir": str(tmp_path / "nothing")}, progress=False)
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.parametrize("archive", [True, False])
def test_cifar100_is_read_from_the_archive_or_its_folder(tmp_path, cifar_maker, archive):
    written = cifar_maker(tmp_path, n_train=5, n_test=3, archive=archive)
    loaded = datafiles.load_cifar100(tmp_path)
    for key in written:
        assert np.array_equal(loaded[key], written[key]), key
    assert loaded["train_images"].shape == (5, 3, 32, 32)
    # row-major channel planes: the first 1024 bytes of a row are the red plane
    assert np.array_equal(loaded["train_images"][0, 0].ravel(), written["train_images"][0].reshape(-1)[:1024])


class _Exploit:
    """Unpickling this would run a shell command."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_unpickler_refuses_anything_but_arrays(tmp_path, cifar_maker, protocol, monkeypatch):
    cifar_maker(tmp_path, n_train=2, n_test=2, archive=False)
    victim = tmp_path / "cifar-100-python" / "train"
    victim.write_bytes(pickle.dumps({"data": _Exploit(), "fine_labels": [1]}, protocol=protocol))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataFileError, match=f"{victim}: refusing to unpickle (posix|os).system"):
        datafiles.load_cifar100(tmp_path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"garbage", "not a readable CIFAR pickle"),
        (pickle.dumps([1, 2, 3], protocol=2), "expected a dict"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}, protocol=2), "no 'data' and 'fine_labels'"),
        (
            pickle.dumps({"data": np.zeros((2, 100), np.uint8), "fine_labels": [1, 2]}, protocol=2),
            "shape \\(N, 3072\\)",
        ),
        (
            pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [1]}, protocol=2),
            "1 fine labels for 2 images",
        ),
        (pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "fine_labels": [100]}, protocol=2), "outside 0–99"),
    ],
)
def test_wrong_cifar_files_are_named(tmp_path, cifar_maker, payload, message):
    cifar_maker(tmp_path, n_train=2, n_test=2, archive=False)
    victim = tmp_path / "cifar-100-python" / "test"
    victim.write_bytes(payload)
    with pytest.raises(DataFileError, match=f"{victim}: .*{message}"):
        datafiles.load_cifar100(tmp_path)


def test_corrupt_cifar_archive_is_named(tmp_path, cifar_maker):
    cifar_maker(tmp_path, n_train=2, n_test=2)
    archive = tmp_path / "cifar-100-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(DataFileError, match=f"{archive}: corrupt archive"):
        datafiles.load_cifar100(tmp_path)


def test_download_verifies_the_checksum(tmp_path):
    source = tmp_path / "served.bin"
    source.write_bytes(b"payload" * 1000)
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    dest = tmp_path / "data" / "file.bin"
    missing = f"file://{tmp_path}/absent.bin"
    assert datafiles.download_file([missing, source.as_uri()], dest, md5) == dest  # first URL fails, second works
    assert dest.read_bytes() == source.read_bytes()
    other = tmp_path / "data" / "other.bin"
    with pytest.raises(OSError, match="checksum mismatch"):
        datafiles.download_file([source.as_uri()], other, "0" * 32)
    assert not other.exists() and not list(other.parent.glob("*.tmp"))
    with pytest.raises(OSError, match="could not download absent.bin.*absent.bin"):
        datafiles.download_file([missing], tmp_path / "absent.bin", md5)


def test_download_true_fetches_mnist_from_the_mirror(tmp_path, mnist_maker, monkeypatch):
    """download=true fetches the four files (here from a file:// mirror) and trains on them."""
    mirror = tmp_path / "mirror"
    mnist_maker(mirror, n_train=20, n_test=8)
    checksums = {name: hashlib.md5((mirror / name).read_bytes()).hexdigest() for name in MNIST_NAMES}
    monkeypatch.setattr(datafiles, "MNIST_MIRRORS", (mirror.as_uri() + "/",))
    monkeypatch.setattr(datafiles, "MNIST_FILES", checksums)
    data_dir = tmp_path / "data"
    record = train_run(
        "mnist",
        0,
        tmp_path / "run",
        {"data_dir": str(data_dir), "download": True, "hidden": 4, "epochs": 1, "batch_size": 10},
        threads=1,
        progress=False,
    )
    assert record["status"] == "complete" and record["data"]["n_train"] == 20
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(MNIST_NAMES)


def test_cifar_pickles_naming_numpy_core_as_python2_did_are_read(tmp_path, cifar_batch):
    """The real archive was pickled by Python 2's numpy, whose arrays name
    ``numpy.core.multiarray._reconstruct``; numpy 2 writes ``numpy._core``."""
    images = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3, 32, 32)
    raw = cifar_batch(images, np.array([3, 97]))
    assert b"numpy._core.multiarray" in raw
    legacy = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    got_images, got_labels = datafiles.read_cifar_batch(legacy, "legacy")
    assert np.array_equal(got_images, images) and got_labels.tolist() == [3, 97]

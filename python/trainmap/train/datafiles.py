"""Readers of the standard distribution files of MNIST (IDX) and CIFAR-100 (python archive),
and their optional download.

Files are looked up in a data directory; nothing is downloaded unless asked
(``download=true``), and then only from the official locations, with the published MD5
checksums verified before the file is renamed into place. The CIFAR-100 archive is a
pickle written by Python 2: it is read with a restricted unpickler that can rebuild numpy
arrays and plain containers and refuses anything else, never with ``pickle.load``.

Every size is checked against what the file is for before memory is allocated: an IDX
header's dimensions (Python integers, so they cannot overflow), the decompressed size of a
gzipped file, an archive member's declared size. A small corrupt or hostile file is refused
with a message naming it instead of taking gigabytes. Inputs must be regular files
(:func:`trainmap.io.fileguard.input_file`).
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import math
import os
import pickle
import tarfile
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from trainmap.io import atomic
from trainmap.io.fileguard import InputFileError, input_file
from trainmap.io.errors import DataFileError

__all__ = [
    "DataFileError",
    "MissingDataError",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "CIFAR100_ARCHIVE",
    "CIFAR100_URL",
    "read_idx",
    "load_mnist",
    "load_cifar100",
    "read_cifar_batch",
    "download_file",
    "missing_data",
]


class MissingDataError(FileNotFoundError):
    """Data files that are not in the data directory (and may not be downloaded)."""


#: MNIST's four files and the MD5 checksums of their gzipped distribution.
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
#: Where MNIST is distributed (the original site, then the mirror torchvision uses), tried in order.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
#: The CIFAR-100 python archive and its published MD5.
CIFAR100_ARCHIVE: tuple[str, str] = ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")
CIFAR100_URL: str = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"

#: Largest IDX file (decompressed) read: MNIST's biggest is 47 MB (60000 images of 28x28).
MAX_IDX_BYTES = 256 << 20
#: Largest CIFAR-100 batch file read (the real ``train`` is 155 MB) and archive accepted (161 MB).
MAX_CIFAR_MEMBER_BYTES = 512 << 20
MAX_CIFAR_ARCHIVE_BYTES = 1 << 30
# Members of the CIFAR archive skipped over before the wanted one (it has 4).
_MAX_ARCHIVE_MEMBERS = 1000

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# --------------------------------------------------------------------------- downloads


def download_file(urls: Sequence[str], dest: str | os.PathLike, md5: str) -> Path:
    """Fetch the first of ``urls`` that answers with the expected bytes into ``dest``.

    The download goes to a temporary file beside ``dest`` and is renamed only once its
    MD5 matches; a URL that fails or serves other bytes is skipped for the next one. Raises
    :class:`OSError` naming every URL tried and why when none works.
    """
    dest = Path(dest)
    failures = []
    for url in urls:
        try:
            with atomic.atomic_path(dest) as tmp, urllib.request.urlopen(url, timeout=60) as response:
                digest = hashlib.md5()
                with open(tmp, "wb") as out:
                    while block := response.read(1 << 20):
                        digest.update(block)
                        out.write(block)
                if digest.hexdigest() != md5:
                    raise DataFileError(f"checksum mismatch: MD5 {digest.hexdigest()}, expected {md5}")
            return dest
        except (OSError, DataFileError) as exc:  # URLError is an OSError
            failures.append(f"{url} ({exc})")
    raise OSError(f"could not download {dest.name} into {dest.parent}: " + "; ".join(failures))


# --------------------------------------------------------------------------- MNIST


def _open_maybe_gzip(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name);
    more than ``max_bytes`` (before or after decompression) raises :class:`DataFileError`."""
    try:
        raw = input_file(path, max_bytes=max_bytes, what="data file").read_bytes()
    except InputFileError as exc:
        raise DataFileError(str(exc)) from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            data = stream.read(max_bytes + 1)  # never more than the limit in memory
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFileError(f"{path}: corrupt gzip data ({exc})") from None
    if len(data) > max_bytes:
        raise DataFileError(f"{path}: decompresses to more than {max_bytes} bytes; refusing it as a data file")
    return data


def read_idx(path: str | os.PathLike, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (the MNIST format; gzipped or not) into a numpy array.

    Raises :class:`DataFileError` naming the file when the magic number, the dimensions
    or the amount of data do not match the format, or it holds more than ``max_bytes``.
    """
    path = Path(path)
    data = _open_maybe_gzip(path, max_bytes)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataFileError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataFileError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = math.prod(shape) * dtype.itemsize  # Python integers: no overflow to a small number
    if expected > max_bytes:
        raise DataFileError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes), more than the {max_bytes} "
            "an IDX data file may hold (corrupt header?)"
        )
    if len(data) - header != expected:
        raise DataFileError(
            f"{path}: IDX header promises shape {shape} ({expected} bytes) but the file holds "
            f"{len(data) - header} bytes of data (truncated or corrupt)"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_mnist_file(data_dir: Path, gz_name: str) -> Path | None:
    """``data_dir``'s copy of one MNIST file: gzipped or not, flat or in torchvision's
    ``MNIST/raw`` layout."""
    plain = gz_name.removesuffix(".gz")
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        for name in (gz_name, plain):
            if (folder / name).exists():  # (read_idx refuses what is not a regular file)
                return folder / name
    return None


def _mnist_missing_message(data_dir: Path, missing: Sequence[str]) -> str:
    return (
        f"MNIST files missing in {data_dir}/: {', '.join(missing)}. Put the four MNIST IDX "
        f"files (gzipped or not) from {MNIST_MIRRORS[0]} there, or set download=true to fetch them"
    )


def load_mnist(data_dir: str | os.PathLike, download: bool = False) -> dict[str, np.ndarray]:
    """MNIST from its four IDX files in ``data_dir``: ``train_images`` (60000×28×28 uint8),
    ``train_labels``, ``test_images``, ``test_labels`` (int64).

    Missing files are downloaded when ``download`` is true; otherwise
    :class:`MissingDataError` names the files and where to put them.
    """
    data_dir = Path(data_dir)
    found = {name: _find_mnist_file(data_dir, name) for name in MNIST_FILES}
    missing = [name for name, path in found.items() if path is None]
    if missing and not download:
        raise MissingDataError(_mnist_missing_message(data_dir, missing))
    for name in missing:
        found[name] = download_file([mirror + name for mirror in MNIST_MIRRORS], data_dir / name, MNIST_FILES[name])
    arrays = {
        key: read_idx(found[name])
        for key, name in zip(("train_images", "train_labels", "test_images", "test_labels"), MNIST_FILES, strict=True)
    }
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        images_file = found[f"{'t10k' if split == 'test' else 'train'}-images-idx3-ubyte.gz"]
        labels_file = found[f"{'t10k' if split == 'test' else 'train'}-labels-idx1-ubyte.gz"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DataFileError(
                f"{images_file}: expected 28×28 uint8 images, got {images.dtype} of shape {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise DataFileError(
                f"{labels_file}: expected a vector of uint8 labels, got {labels.dtype} of shape {labels.shape}"
            )
        if len(labels) != len(images):
            raise DataFileError(f"{labels_file}: {len(labels)} labels for the {len(images)} images of {images_file}")
        if len(labels) and labels.max() > 9:
            raise DataFileError(f"{labels_file}: label {labels.max()} outside 0–9")
        arrays[f"{split}_labels"] = labels.astype(np.int64)
    return arrays


# --------------------------------------------------------------------------- CIFAR-100


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """What a pickled numpy array (and Python 2's bytes) needs, resolved here rather than
    imported by name, so nothing else can be reached."""
    multiarray = _numpy_multiarray()
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles spell a bytes object
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, numbers, strings and containers; refuses every other global."""

    def __init__(self, stream, source: str):
        super().__init__(stream, encoding="latin1")
        self._source = source
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataFileError(
                f"{self._source}: refusing to unpickle {module}.{name}: a CIFAR archive holds only "
                "numpy arrays and lists (is this file what it claims to be?)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataFileError(f"{self._source}: refusing persistent pickle references")


def read_cifar_batch(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N×3×32×32 uint8) and fine labels (int64) of one CIFAR-100 python batch file's
    bytes; ``source`` names the file in errors."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), source).load()
    except DataFileError:
        raise
    except Exception as exc:  # truncated or garbled pickle streams raise many kinds of errors
        raise DataFileError(f"{source}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DataFileError(f"{source}: expected a dict, found {type(batch).__name__}")
    batch = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in batch.items()}
    if "data" not in batch or "fine_labels" not in batch:
        raise DataFileError(f"{source}: no 'data' and 'fine_labels' entries (keys: {', '.join(map(str, batch))})")
    images, labels = batch["data"], batch["fine_labels"]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        shape = getattr(images, "shape", None)
        raise DataFileError(f"{source}: 'data' must be a uint8 array of shape (N, 3072), got shape {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataFileError(f"{source}: 'fine_labels' is not a list of integers") from None
    if labels.shape != (len(images),):
        raise DataFileError(f"{source}: {labels.size} fine labels for {len(images)} images")
    if len(labels) and (labels.min() < 0 or labels.max() > 99):
        raise DataFileError(f"{source}: fine label outside 0–99")
    return images.reshape(-1, 3, 32, 32), labels


def _cifar_sources(data_dir: Path) -> dict[str, Callable[[], tuple[bytes, str]]] | None:
    """Readers of the ``train`` and ``test`` files, from the extracted folder when present,
    else from the archive; None when neither is there."""
    folder = data_dir / "cifar-100-python"
    if (folder / "train").exists() and (folder / "test").exists():
        return {split: (lambda p=folder / split: (_read_batch_file(p), str(p))) for split in ("train", "test")}
    archive = data_dir / CIFAR100_ARCHIVE[0]
    if archive.exists():
        return {
            split: (lambda s=split: (_read_member(archive, f"cifar-100-python/{s}"), f"{archive}:cifar-100-python/{s}"))
            for split in ("train", "test")
        }
    return None


def _read_batch_file(path: Path) -> bytes:
    """An extracted CIFAR batch file's bytes (a regular file of a plausible size)."""
    try:
        return input_file(path, max_bytes=MAX_CIFAR_MEMBER_BYTES, what="CIFAR-100 batch file").read_bytes()
    except InputFileError as exc:
        raise DataFileError(str(exc)) from None


def _read_member(archive: Path, member: str) -> bytes:
    """One member of the CIFAR archive, read as a stream; every member's declared size is
    checked before its data is read, so a tiny archive cannot make this allocate gigabytes."""
    try:
        input_file(archive, max_bytes=MAX_CIFAR_ARCHIVE_BYTES, what="CIFAR-100 archive")
        with tarfile.open(archive, "r|*") as tar:
            for count, info in enumerate(tar):
                if count >= _MAX_ARCHIVE_MEMBERS:
                    break
                if info.name != member:
                    continue
                if not info.isfile():
                    raise DataFileError(f"{archive}: member {member} is not a regular file")
                if info.size > MAX_CIFAR_MEMBER_BYTES:
                    raise DataFileError(
                        f"{archive}: member {member} declares {info.size} bytes, more than the "
                        f"{MAX_CIFAR_MEMBER_BYTES} a CIFAR-100 batch file can be; refusing to read it"
                    )
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise DataFileError(f"{archive}: member {member} is truncated")
                return data
    except InputFileError as exc:
        raise DataFileError(str(exc)) from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataFileError(f"{archive}: corrupt archive ({exc})") from None
    raise DataFileError(f"{archive}: no member {member} (not the CIFAR-100 python archive?)")


def _cifar_missing_message(data_dir: Path) -> str:
    return (
        f"CIFAR-100 missing in {data_dir}/: put {CIFAR100_ARCHIVE[0]} (from {CIFAR100_URL}) "
        f"or its extracted folder cifar-100-python/ (with files train and test) there, "
        "or set download=true to fetch it"
    )


def load_cifar100(data_dir: str | os.PathLike, download: bool = False) -> dict[str, np.ndarray]:
    """CIFAR-100 from ``data_dir``: ``cifar-100-python/{train,test}`` (the extracted archive)
    or ``cifar-100-python.tar.gz`` itself. Returns ``train_images`` (50000×3×32×32 uint8),
    ``train_labels``, ``test_images``, ``test_labels`` (fine labels, int64).

    When neither is present, the archive is downloaded if ``download`` is true, otherwise
    :class:`MissingDataError` names what to put where.
    """
    data_dir = Path(data_dir)
    sources = _cifar_sources(data_dir)
    if sources is None:
        if not download:
            raise MissingDataError(_cifar_missing_message(data_dir))
        download_file([CIFAR100_URL], data_dir / CIFAR100_ARCHIVE[0], CIFAR100_ARCHIVE[1])
        sources = _cifar_sources(data_dir)
        assert sources is not None
    arrays: dict[str, np.ndarray] = {}
    for split, read in sources.items():
        raw, name = read()
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = read_cifar_batch(raw, name)
    return arrays


# --------------------------------------------------------------------------- up-front check


def missing_data(task: str, settings: Mapping[str, Any]) -> str | None:
    """What a task's data directory lacks, as the message its loader would raise; None when
    the files are there, the task generates its data, or ``download`` is set.

    Only looks for the files (it reads nothing), so the workflow can check every experiment
    before the first job starts.
    """
    if settings.get("download"):
        return None
    if task == "mnist":
        data_dir = Path(settings["data_dir"])
        missing = [name for name in MNIST_FILES if _find_mnist_file(data_dir, name) is None]
        return _mnist_missing_message(data_dir, missing) if missing else None
    if task in ("cifar100", "cifar100_unstable"):
        data_dir = Path(settings["data_dir"])
        return None if _cifar_sources(data_dir) is not None else _cifar_missing_message(data_dir)
    return None

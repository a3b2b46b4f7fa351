"""In-memory datasets: the generated algorithmic tasks and scikit-learn's bundled digits.

Every function returns a train and an eval :class:`Split`. The algorithmic splits come
from ``data_seed`` alone (not from the run's seed), so runs of one task differ only by
initialisation and data order, as in the paper. Image data from distribution files is
read by :mod:`trainmap.train.datafiles`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Split", "modular_addition", "sparse_parity", "sklearn_digits"]


@dataclass(frozen=True)
class Split:
    """Inputs and targets of one split, on the CPU, first dimension = example."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.targets)


def modular_addition(modulus: int, train_fraction: float, data_seed: int) -> tuple[Split, Split]:
    """All pairs ``(a, b)`` as token sequences ``[a, b, =]`` with target ``(a + b) mod p``.

    The ``=`` token is ``modulus`` (vocabulary ``modulus + 1``). A fixed permutation drawn
    from ``data_seed`` puts the first ``int(train_fraction * p²)`` pairs in training
    (3830 of 12769 for p = 113 and 30 %), the rest in eval.
    """
    a, b = np.meshgrid(np.arange(modulus), np.arange(modulus), indexing="ij")
    a, b = a.ravel(), b.ravel()
    tokens = np.stack([a, b, np.full_like(a, modulus)], axis=1)
    targets = (a + b) % modulus
    order = np.random.default_rng(data_seed).permutation(len(targets))
    n_train = int(train_fraction * len(targets))
    if not 0 < n_train < len(targets):
        raise ValueError(f"train_fraction {train_fraction} leaves an empty split for modulus {modulus}")
    train, held_out = order[:n_train], order[n_train:]
    as_split = lambda idx: Split(torch.from_numpy(tokens[idx]), torch.from_numpy(targets[idx]))  # noqa: E731
    return as_split(train), as_split(held_out)


def sparse_parity(
    n_bits: int, k_bits: int, n_train: int, n_test: int, data_seed: int, *, signed_targets: bool
) -> tuple[Split, Split]:
    """Uniform random ``±1`` vectors of ``n_bits``; the target is the parity of the first ``k_bits``.

    Which ``k`` bits carry the parity does not matter to an MLP whose first layer treats
    inputs symmetrically, so they are the first ones (as in the authors' code). Targets
    are ``±1`` floats (``signed_targets``, for the hinge loss) or class indices 0/1
    (0 for parity +1), for cross-entropy.
    """
    rng = np.random.default_rng(data_seed)
    bits = rng.integers(0, 2, size=(n_train + n_test, n_bits), dtype=np.int64) * 2 - 1
    parity = np.prod(bits[:, :k_bits], axis=1)
    inputs = torch.from_numpy(bits.astype(np.float32))
    targets = (
        torch.from_numpy(parity.astype(np.float32))
        if signed_targets
        else torch.from_numpy((parity < 0).astype(np.int64))
    )
    return Split(inputs[:n_train], targets[:n_train]), Split(inputs[n_train:], targets[n_train:])


def sklearn_digits(test_fraction: float, data_seed: int) -> tuple[Split, Split]:
    """scikit-learn's bundled 8×8 digits (1797 images, pixel values 0–16 scaled to [0, 1]),
    split by a permutation drawn from ``data_seed``: the first ``round(test_fraction * n)``
    images are the eval split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    inputs = (digits.data / 16.0).astype(np.float32)
    targets = digits.target.astype(np.int64)
    order = np.random.default_rng(data_seed).permutation(len(targets))
    n_test = int(round(test_fraction * len(targets)))
    if not 0 < n_test < len(targets):
        raise ValueError(f"test_fraction {test_fraction} leaves an empty split of the digits")
    test, train = order[:n_test], order[n_test:]
    as_split = lambda idx: Split(torch.from_numpy(inputs[idx]), torch.from_numpy(targets[idx]))  # noqa: E731
    return as_split(train), as_split(test)

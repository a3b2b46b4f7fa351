"""What one task is made of: its data splits, its network, its loss, and how a batch of
stored examples becomes network input (normalisation, augmentation).

:func:`build` is the only place that knows which task uses what; the training loop
(:mod:`trainmap.train.loop`) is the same for all tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainmap.train import data, datafiles
from trainmap.train.models import MLP, ModularTransformer, ResNet18

__all__ = ["Components", "build", "build_model", "build_optimizer", "load_splits", "batch_loss"]

# Per-channel mean and standard deviation of CIFAR-100's training images (the authors' values).
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

#: ``prepare(stored_inputs, generator)``: network input; the generator is given for
#: training batches only, and drives random augmentation.
Prepare = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


@dataclass
class Components:
    """Everything task-specific that the training loop needs."""

    model: nn.Module
    train: data.Split
    eval: data.Split
    loss: str  # "hinge" (one output, ±1 targets) or "cross_entropy" (class logits)
    prepare: Prepare
    data_info: dict[str, Any] = field(default_factory=dict)


def _identity(inputs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return inputs


def _mnist_pixels(inputs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # The authors' MNIST pipeline: ToTensor (bytes scaled to [0, 1]) and flatten, no normalisation.
    return inputs.flatten(1).float() / 255.0


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random 32×32 crops of the reflect-padded images and random horizontal flips (per
    image, drawn from ``generator``); the standard CIFAR augmentation."""
    n, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4, mode="reflect")
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (top[:, None] + torch.arange(height)).to(images.device)
    cols = left[:, None] + torch.arange(width)
    cols = torch.where(flip[:, None], cols.flip(1), cols).to(images.device)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def _cifar_pipeline(augment: bool) -> Prepare:
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)

    def prepare(inputs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        images = inputs.float() / 255.0
        if augment and generator is not None:
            images = random_crop_flip(images, generator)
        return (images - mean.to(images.device)) / std.to(images.device)

    return prepare


def load_splits(task: str, settings: Mapping[str, Any]) -> tuple[data.Split, data.Split, dict[str, Any]]:
    """The task's train and eval splits (CPU tensors) and a description for run.json."""
    if task in ("modular", "modular_stable"):
        train, held_out = data.modular_addition(settings["modulus"], settings["train_fraction"], settings["data_seed"])
        return train, held_out, {"source": "generated", "data_seed": settings["data_seed"]}
    if task == "parities":
        train, held_out = data.sparse_parity(
            settings["n_bits"],
            settings["k_bits"],
            settings["n_train"],
            settings["n_test"],
            settings["data_seed"],
            signed_targets=settings["loss"] == "hinge",
        )
        return train, held_out, {"source": "generated", "data_seed": settings["data_seed"]}
    if task == "digits":
        train, held_out = data.sklearn_digits(settings["test_fraction"], settings["data_seed"])
        return train, held_out, {"source": "sklearn.datasets.load_digits", "data_seed": settings["data_seed"]}
    if task == "mnist":
        arrays = datafiles.load_mnist(settings["data_dir"], settings["download"])
    elif task in ("cifar100", "cifar100_unstable"):
        arrays = datafiles.load_cifar100(settings["data_dir"], settings["download"])
    else:
        raise ValueError(f"unknown task {task!r}")
    as_split = lambda s: data.Split(torch.from_numpy(arrays[f"{s}_images"]), torch.from_numpy(arrays[f"{s}_labels"]))  # noqa: E731
    return as_split("train"), as_split("test"), {"source": "files", "data_dir": str(settings["data_dir"])}


def build_model(task: str, settings: Mapping[str, Any], seed: int) -> nn.Module:
    """The task's network, initialised from ``seed`` alone, on the CPU.

    Layers draw their initial values from torch's global CPU generator; it is forked and
    seeded here, so the global state is left as it was and the initialisation depends on
    nothing but ``seed`` (and the torch version).
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        if task in ("modular", "modular_stable"):
            return ModularTransformer(
                settings["modulus"],
                settings["d_model"],
                settings["n_heads"],
                settings["d_head"],
                settings["d_mlp"],
                settings["layer_norm"],
            )
        if task == "parities":
            return MLP(settings["n_bits"], settings["hidden"], 1 if settings["loss"] == "hinge" else 2)
        if task == "mnist":
            return MLP(28 * 28, settings["hidden"], 10)
        if task == "digits":
            return MLP(64, settings["hidden"], 10)
        if task in ("cifar100", "cifar100_unstable"):
            return ResNet18(100, settings["width"], settings["batch_norm"], settings["residual"])
    raise ValueError(f"unknown task {task!r}")


def build_optimizer(model: nn.Module, settings: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW or SGD over all parameters, with the settings' learning rate and weight decay."""
    if settings["optimizer"] == "adamw":
        return torch.optim.AdamW(
            model.parameters(),
            lr=settings["lr"],
            weight_decay=settings["weight_decay"],
            betas=(settings["adam_beta1"], settings["adam_beta2"]),
        )
    return torch.optim.SGD(
        model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"], momentum=settings["momentum"]
    )


def build(task: str, settings: Mapping[str, Any], seed: int) -> Components:
    """Data, model (on the CPU), loss and input pipeline of ``task``."""
    train, held_out, info = load_splits(task, settings)
    info.update(n_train=len(train), n_eval=len(held_out))
    if task == "mnist":
        prepare: Prepare = _mnist_pixels
    elif task in ("cifar100", "cifar100_unstable"):
        prepare = _cifar_pipeline(settings["augment"])
    else:
        prepare = _identity
    loss = settings.get("loss", "cross_entropy")
    return Components(build_model(task, settings, seed), train, held_out, loss, prepare, info)


def batch_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example losses and per-example correctness (bool) of one batch.

    ``hinge``: ``max(0, 1 - y·f(x))`` with ``y = ±1`` and a prediction of ``sign f(x)``
    (Barak et al. 2022); ``cross_entropy``: softmax cross-entropy and arg-max prediction.
    """
    if loss == "hinge":
        margin = outputs.squeeze(-1) * targets
        return torch.clamp(1.0 - margin, min=0.0), margin > 0
    return F.cross_entropy(outputs, targets, reduction="none"), outputs.argmax(dim=-1) == targets


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which epoch ``epoch`` of run ``seed`` visits ``n`` training examples.

    A function of (seed, epoch) alone, so a resumed run needs only the epoch and the
    position inside it to continue with the same batches.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, _ORDER_STREAM, epoch])).permutation(n)


def augment_seed(seed: int) -> int:
    """Seed of the run's augmentation generator (independent of init and data order)."""
    return int(np.random.SeedSequence([seed, _AUGMENT_STREAM]).generate_state(1, np.uint64)[0] >> 1)


# Stream labels that keep the data-order and augmentation random numbers independent.
_ORDER_STREAM = 0x6F72646572  # "order"
_AUGMENT_STREAM = 0x61756721  # "aug!"

"""Data generators, augmentation and losses checked against direct computations."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trainmap.train import components, data


def test_modular_addition_holds_every_pair_once_split_by_the_data_seed():
    train, held_out = data.modular_addition(113, 0.3, data_seed=0)
    assert (len(train), len(held_out)) == (3830, 12769 - 3830)
    tokens = torch.cat([train.inputs, held_out.inputs])
    assert tokens.shape[1] == 3 and bool((tokens[:, 2] == 113).all())
    pairs = {(int(a), int(b)) for a, b, _ in tokens}
    assert len(pairs) == 113 * 113
    targets = torch.cat([train.targets, held_out.targets])
    assert torch.equal(targets, (tokens[:, 0] + tokens[:, 1]) % 113)
    again, _ = data.modular_addition(113, 0.3, data_seed=0)
    other, _ = data.modular_addition(113, 0.3, data_seed=1)
    assert torch.equal(again.inputs, train.inputs) and not torch.equal(other.inputs, train.inputs)


def test_sparse_parity_targets_are_the_parity_of_the_first_k_bits():
    train, test = data.sparse_parity(40, 3, 1000, 100, data_seed=0, signed_targets=True)
    assert train.inputs.shape == (1000, 40) and test.inputs.shape == (100, 40)
    assert set(torch.unique(train.inputs).tolist()) == {-1.0, 1.0}
    for split in (train, test):
        negatives = (split.inputs[:, :3] < 0).sum(dim=1)
        assert torch.equal(split.targets, torch.where(negatives % 2 == 1, -1.0, 1.0))
    _, classes = data.sparse_parity(40, 3, 1000, 100, data_seed=0, signed_targets=False)
    assert torch.equal(classes.targets, (test.targets < 0).long())
    assert 0.35 < float((train.targets > 0).float().mean()) < 0.65  # balanced


def test_digits_split_is_fixed_and_disjoint():
    train, test = data.sklearn_digits(0.2, data_seed=0)
    assert (len(train), len(test)) == (1438, 359)  # round(0.2 * 1797) held out
    assert float(train.inputs.max()) == 1.0 and float(train.inputs.min()) == 0.0
    rows = {tuple(x.tolist()) for x in train.inputs}
    assert not any(tuple(x.tolist()) in rows for x in test.inputs)


def test_random_crop_flip_matches_a_direct_crop():
    images = torch.randn(6, 3, 32, 32)
    out = components.random_crop_flip(images, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)  # the same draws, in the same order
    top, left = torch.randint(0, 9, (6,), generator=g), torch.randint(0, 9, (6,), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    padded = F.pad(images, (4, 4, 4, 4), mode="reflect")
    for i in range(6):
        crop = padded[i, :, top[i] : top[i] + 32, left[i] : left[i] + 32]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
    assert flip.any() and not flip.all()


def test_losses_and_accuracy():
    outputs, targets = torch.tensor([[2.0], [-0.5], [0.3]]), torch.tensor([1.0, 1.0, -1.0])
    losses, hits = components.batch_loss(outputs, targets, "hinge")
    assert torch.allclose(losses, torch.tensor([0.0, 1.5, 1.3])) and hits.tolist() == [True, False, False]
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    losses, hits = components.batch_loss(logits, labels, "cross_entropy")
    assert torch.allclose(losses, -torch.log_softmax(logits, 1)[[0, 1], [0, 0]]) and hits.tolist() == [True, False]


def test_epoch_order_depends_on_seed_and_epoch_only():
    a = components.epoch_order(3, 7, 100)
    assert sorted(a.tolist()) == list(range(100))
    assert np.array_equal(a, components.epoch_order(3, 7, 100))
    assert not np.array_equal(a, components.epoch_order(3, 8, 100))
    assert not np.array_equal(a, components.epoch_order(4, 7, 100))


def test_initialisation_depends_on_the_seed_only():
    from trainmap.train.tasks import resolve_settings

    settings = resolve_settings("modular", {"d_model": 8, "d_mlp": 8, "d_head": 2})
    torch.manual_seed(123)  # the global generator must not matter...
    a = components.build_model("modular", settings, seed=1).state_dict()
    state = torch.random.get_rng_state()
    torch.manual_seed(999)
    b = components.build_model("modular", settings, seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(123)
    components.build_model("modular", settings, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # ...nor be changed
    c = components.build_model("modular", settings, seed=2).state_dict()
    assert not torch.equal(a["embed.W_E"], c["embed.W_E"])


def test_checkpoint_bytes_are_the_safetensors_librarys():
    """layout.checkpoint_bytes builds the file itself (a sweep writes 20,000 of them); its
    bytes are the library's for the same float32 tensors, and the library reads them back."""
    import torch
    from safetensors.torch import load, save

    from trainmap.train import layout
    from trainmap.train.components import build_model
    from trainmap.train.tasks import resolve_settings

    generator = torch.Generator().manual_seed(0)
    cases = [dict(build_model(task, resolve_settings(task), 0).named_parameters()) for task in ("parities", "modular")]
    for _ in range(40):
        names = {f"layers.{int(torch.randint(0, 30, (1,), generator=generator))}.w{i}" for i in range(4)}
        shapes = [tuple(torch.randint(1, 7, (int(torch.randint(0, 4, (1,), generator=generator)),),
                                      generator=generator).tolist()) for _ in names]
        cases.append({name: torch.randn(shape, generator=generator, dtype=torch.float64)
                      for name, shape in zip(names, shapes)})
    cases.append({"zero.scalar": torch.tensor(1.5), "empty.weight": torch.ones(0, 3), "ünïcode.bias": torch.ones(2)})
    for tensors in cases:
        as_f32 = {name: tensors[name].detach().float().contiguous() for name in sorted(tensors)}
        data = layout.checkpoint_bytes(tensors)
        assert data == save(as_f32)
        back = load(data)
        assert sorted(back) == sorted(tensors) and all(torch.equal(back[n], as_f32[n]) for n in back)

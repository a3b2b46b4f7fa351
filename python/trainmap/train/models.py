"""The networks of the paper's setups, with parameter names the metrics selection understands.

Names matter: the checkpoint statistics ignore embeddings (``embed``, ``pos_emb``,
``unembed`` in the name) and normalisation layers (a name component ``ln…``, ``bn…``,
``norm…``), and count 1-D tensors as biases only when their name ends in ``bias``
(``trainmap.metrics.engine.DEFAULT_EXCLUDE``). So the transformer's embeddings live in modules
``embed``/``pos_embed``/``unembed``, its LayerNorms are ``ln1``/``ln2``, ResNet batch
norms are ``bn1``/``bn2``/``shortcut_bn``, and every bias is called ``bias``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ModularTransformer", "MLP", "ResNet18"]


class Embed(nn.Module):
    """Token embedding ``W_E`` (vocabulary × d_model)."""

    def __init__(self, d_vocab: int, d_model: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(d_vocab, d_model) / math.sqrt(d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.W_E[tokens]


class PosEmbed(nn.Module):
    """Learned positional embedding ``W_pos`` (context × d_model), added to the input."""

    def __init__(self, n_ctx: int, d_model: int):
        super().__init__()
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model) / math.sqrt(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.W_pos[: x.shape[-2]]


class Unembed(nn.Module):
    """Read-out ``W_U`` (d_model × classes)."""

    def __init__(self, d_model: int, d_vocab_out: int):
        super().__init__()
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab_out) / math.sqrt(d_vocab_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W_U


class Attention(nn.Module):
    """Causal multi-head attention without biases (Nanda et al. 2023).

    ``W_Q``, ``W_K``, ``W_V`` stack the heads' projections as rows (n_heads·d_head ×
    d_model), so each is one matrix for the statistics; ``W_O`` is d_model × n_heads·d_head.
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, n_ctx: int):
        super().__init__()
        scale = 1 / math.sqrt(d_model)
        self.W_Q = nn.Parameter(torch.randn(n_heads * d_head, d_model) * scale)
        self.W_K = nn.Parameter(torch.randn(n_heads * d_head, d_model) * scale)
        self.W_V = nn.Parameter(torch.randn(n_heads * d_head, d_model) * scale)
        self.W_O = nn.Parameter(torch.randn(d_model, n_heads * d_head) * scale)
        self.register_buffer("causal", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)), persistent=False)
        self.n_heads, self.d_head = n_heads, d_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, ctx, _ = x.shape

        def heads(weight: torch.Tensor) -> torch.Tensor:
            return (x @ weight.T).view(batch, ctx, self.n_heads, self.d_head).transpose(1, 2)

        q, k, v = heads(self.W_Q), heads(self.W_K), heads(self.W_V)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head)
        scores = scores.masked_fill(~self.causal[:ctx, :ctx], float("-inf"))
        z = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, ctx, self.n_heads * self.d_head)
        return z @ self.W_O.T


class FeedForward(nn.Module):
    """ReLU MLP ``fc_in`` (d_mlp × d_model) → ``fc_out`` (d_model × d_mlp), Nanda's init."""

    def __init__(self, d_model: int, d_mlp: int):
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_mlp)
        self.fc_out = nn.Linear(d_mlp, d_model)
        with torch.no_grad():
            for layer in (self.fc_in, self.fc_out):
                layer.weight.copy_(torch.randn_like(layer.weight) / math.sqrt(d_model))
                layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.relu(self.fc_in(x)))


class TransformerBlock(nn.Module):
    """Residual attention and MLP; with ``layer_norm``, a LayerNorm after each residual sum
    (post-LN, as in the authors' stabilised model)."""

    def __init__(self, d_model: int, n_heads: int, d_head: int, d_mlp: int, n_ctx: int, layer_norm: bool):
        super().__init__()
        self.attn = Attention(d_model, n_heads, d_head, n_ctx)
        self.mlp = FeedForward(d_model, d_mlp)
        self.ln1 = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.ln2 = nn.LayerNorm(d_model) if layer_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.mlp(x))


class ModularTransformer(nn.Module):
    """One-layer transformer of Nanda et al. (2023) for ``[a, b, =]`` → ``(a + b) mod p``.

    Returns the logits of the last position only (the answer), one per residue.
    """

    def __init__(
        self, modulus: int, d_model: int, n_heads: int, d_head: int, d_mlp: int, layer_norm: bool, n_ctx: int = 3
    ):
        super().__init__()
        self.embed = Embed(modulus + 1, d_model)
        self.pos_embed = PosEmbed(n_ctx, d_model)
        self.blocks = nn.ModuleList([TransformerBlock(d_model, n_heads, d_head, d_mlp, n_ctx, layer_norm)])
        self.unembed = Unembed(d_model, modulus)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.pos_embed(self.embed(tokens))
        for block in self.blocks:
            x = block(x)
        return self.unembed(x[:, -1])


class MLP(nn.Module):
    """One hidden ReLU layer, ``fc1`` → ``fc2``; Xavier-uniform weights and zero biases,
    as in the authors' MLPs."""

    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, out_features)
        for layer in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3×3 convolutions; the shortcut (1×1 conv + BN when the shape changes) exists only
    with ``residual``."""

    def __init__(self, in_channels: int, channels: int, stride: int, batch_norm: bool, residual: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(channels, batch_norm)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(channels, batch_norm)
        self.residual = residual
        self.projects = residual and (stride != 1 or in_channels != channels)
        if self.projects:
            self.shortcut_conv = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)
            self.shortcut_bn = _norm(channels, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.residual:
            out = out + (self.shortcut_bn(self.shortcut_conv(x)) if self.projects else x)
        return F.relu(out)


class ResNet18(nn.Module):
    """CIFAR-style ResNet18: 3×3 stem without max-pool, stages of 2 blocks at widths
    w, 2w, 4w, 8w (w = 64 is the standard model), global average pool, linear read-out.

    ``batch_norm=False, residual=False`` is the paper's destabilised variant (Section 3.3).
    """

    def __init__(self, num_classes: int = 100, width: int = 64, batch_norm: bool = True, residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = _norm(width, batch_norm)
        stages, channels = [], width
        for multiplier, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            out = width * multiplier
            stages.append(
                nn.Sequential(
                    BasicBlock(channels, out, stride, batch_norm, residual),
                    BasicBlock(out, out, 1, batch_norm, residual),
                )
            )
            channels = out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # A plain mean, not AdaptiveAvgPool2d, whose CUDA backward is non-deterministic.
        return self.fc(x.mean(dim=(2, 3)))

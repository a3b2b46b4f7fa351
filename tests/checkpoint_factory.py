"""Test helpers: write safetensors files byte by byte, and an independent numpy reference
for the 14 statistics (docs/design.md, "Checkpoint statistics").

The writer is deliberately separate from the `safetensors` package so tests control every
byte (BF16 encoding, corrupt headers); `test_metrics.py` also checks files written by the
official package.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I64": 8}


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest even) and return the 16-bit patterns."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def encode(values: np.ndarray, dtype: str) -> tuple[bytes, np.ndarray]:
    """Encode ``values`` as ``dtype``; return the bytes and the stored values in float64."""
    if dtype == "F64":
        stored = np.asarray(values, dtype="<f8")
        return stored.tobytes(), stored.astype(np.float64)
    if dtype == "F32":
        stored = np.asarray(values, dtype="<f4")
        return stored.tobytes(), stored.astype(np.float64)
    if dtype == "F16":
        stored = np.asarray(values, dtype="<f2")
        return stored.tobytes(), stored.astype(np.float64)
    if dtype == "BF16":
        bits = bf16_bits(np.asarray(values, dtype=np.float32))
        decoded = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return bits.astype("<u2").tobytes(), decoded
    if dtype == "I32":
        stored = np.asarray(values, dtype="<i4")
        return stored.tobytes(), stored.astype(np.float64)
    raise ValueError(dtype)


@dataclass
class Tensor:
    name: str
    dtype: str
    values: np.ndarray  # float64 values as stored (after encoding)
    data: bytes
    role: str  # "matrix", "bias" or "ignored", decided by the test, not by a regex


def tensor(name: str, values, dtype: str, role: str) -> Tensor:
    data, stored = encode(np.asarray(values), dtype)
    return Tensor(name, dtype, stored.reshape(np.shape(values)), data, role)


def write_checkpoint(path: Path, tensors: list[Tensor]) -> Path:
    """Write a valid safetensors file holding ``tensors`` in the given order."""
    header, offset = {}, 0
    for t in tensors:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.values.shape), "data_offsets": [offset, offset + len(t.data)]}
        offset += len(t.data)
    return write_raw(path, json.dumps(header).encode(), b"".join(t.data for t in tensors))


def write_raw(path: Path, header: bytes, data: bytes, header_len: int | None = None) -> Path:
    """Write a file in safetensors framing: u64 header length, header bytes, data."""
    n = len(header) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", n) + header + data)
    return path


def reference_metrics(tensors: list[Tensor]) -> dict[str, float]:
    """The 14 statistics by direct numpy computation over the tensors' declared roles."""
    matrices = [t.values.reshape(t.values.shape[0], -1) for t in tensors if t.role == "matrix"]
    biases = [t.values.ravel() for t in tensors if t.role == "bias"]
    nan = float("nan")
    out = dict.fromkeys(
        ["l1", "l2", "code_sparsity", "trace", "spectral", "computational_sparsity", "mean_lambda",
         "variance_lambda", "mean_w", "median_w", "var_w", "mean_b", "median_b", "var_b"], nan)
    if matrices:
        sigmas = [np.linalg.svd(w, compute_uv=False) for w in matrices]
        l1 = [np.abs(w).sum() for w in matrices]
        l2 = [np.sqrt((w * w).sum()) for w in matrices]
        traces = [sum(w[i, i] for i in range(min(w.shape))) for w in matrices]
        out["l1"] = np.mean(l1)
        out["l2"] = np.mean(l2)
        ratios = [a / b for a, b in zip(l1, l2) if b > 0]
        out["code_sparsity"] = np.mean(ratios) if ratios else nan
        out["trace"] = np.mean(traces)
        out["spectral"] = np.mean([s[0] for s in sigmas])
        comp = [tr / s[0] for tr, s in zip(traces, sigmas) if s[0] > 0]
        out["computational_sparsity"] = np.mean(comp) if comp else nan
        out["mean_lambda"] = np.mean([s.mean() for s in sigmas])
        out["variance_lambda"] = np.mean([s.var() for s in sigmas])
        everything = np.concatenate([w.ravel() for w in matrices])
        out["mean_w"], out["median_w"], out["var_w"] = everything.mean(), np.median(everything), everything.var()
    if biases:
        everything = np.concatenate(biases)
        out["mean_b"], out["median_b"], out["var_b"] = everything.mean(), np.median(everything), everything.var()
    return {k: float(v) for k, v in out.items()}


# Names the default selection must leave out (embeddings, normalisation layers).
EXCLUDED_NAMES = [
    "embed.weight", "transformer.wte.weight", "transformer.wpe.weight", "pos_emb.W_pos",
    "unembed.W_U", "lm_head.weight", "blocks.0.ln_1.weight", "encoder.LayerNorm.weight",
    "layer1.0.bn1.weight", "model.norm.weight", "final_layer_norm.weight",
]
EXCLUDED_BIASES = ["blocks.0.ln_1.bias", "layer1.0.bn1.bias", "encoder.LayerNorm.bias"]


def random_model(rng: np.random.Generator, *, max_side: int = 40, dtypes=("F64", "F32", "F16", "BF16")) -> list[Tensor]:
    """A random model: matrices of varied shapes (1×n, n×1, square, wide, tall, 3-D, 4-D conv
    kernels, sometimes all zero), optional biases, excluded and ignored tensors."""
    tensors: list[Tensor] = []
    shapes = [
        lambda: (1, int(rng.integers(1, max_side))),
        lambda: (int(rng.integers(1, max_side)), 1),
        lambda: (n := int(rng.integers(2, max_side)), n),
        lambda: (int(rng.integers(2, max_side // 2)), int(rng.integers(max_side // 2, max_side))),
        lambda: (int(rng.integers(max_side // 2, max_side)), int(rng.integers(2, max_side // 2))),
        lambda: (int(rng.integers(2, 6)), int(rng.integers(2, 8)), int(rng.integers(2, 8))),
        lambda: (int(rng.integers(2, 9)), int(rng.integers(1, 4)), 3, 3),
    ]
    for i in range(int(rng.integers(1, 6))):
        shape = shapes[int(rng.integers(len(shapes)))]()
        scale = 10.0 ** rng.uniform(-3, 1)
        values = rng.standard_normal(shape) * scale + rng.uniform(-1, 1) * scale * 0.1
        if rng.random() < 0.1:
            values = np.zeros(shape)
        dtype = str(rng.choice(dtypes))
        tensors.append(tensor(f"layers.{i}.proj.weight", values, dtype, "matrix"))
        if rng.random() < 0.6:
            tensors.append(tensor(f"layers.{i}.proj.bias", rng.standard_normal(shape[0]) * scale, dtype, "bias"))
    for name in rng.choice(EXCLUDED_NAMES, size=int(rng.integers(0, 4)), replace=False):
        tensors.append(tensor(str(name), rng.standard_normal((3, 4)), "F32", "ignored"))
    for name in rng.choice(EXCLUDED_BIASES, size=int(rng.integers(0, 2)), replace=False):
        tensors.append(tensor(str(name), rng.standard_normal(4), "F32", "ignored"))
    if rng.random() < 0.3:
        tensors.append(tensor("layers.scale", rng.standard_normal(5), "F32", "ignored"))
    order = rng.permutation(len(tensors))
    return [tensors[i] for i in order]

"""Write tests/data/reference_statistics.json: small weight tensors and their 14 statistics,
computed here by direct numpy formulas (docs/design.md, "Checkpoint statistics"), with no
code of the engine or of the torch path.

Both implementations are tested against that one file: the Rust engine by
``rust_metrics/tests/reference_statistics.rs`` (``cargo test``) and the torch path by
``tests/metrics/test_reference_statistics.py``. Regenerate (deterministic: a fixed seed,
so an unchanged script rewrites the same bytes) with

    PYTHONPATH=python .venv/bin/python scripts/make_reference_statistics.py

Each tensor's values are stored as the exact decimal of its dtype's value (a float64, or
a float32/float16/bfloat16 value widened to float64), so every reader decodes the same
numbers; each tensor also states the role the default selection gives it (``matrix``,
``bias`` or ``ignored``), which the tests check as well.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from trainmap.io.atomic import write_json

OUTPUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "reference_statistics.json"
SEED = 20
#: Statistic names, in column order (the engine's METRIC_NAMES; a test pins them equal).
NAMES = ("l1", "l2", "code_sparsity", "trace", "spectral", "computational_sparsity", "mean_lambda",
         "variance_lambda", "mean_w", "median_w", "var_w", "mean_b", "median_b", "var_b")
#: |got - expected| <= ATOL + RTOL * |expected| for every statistic; NaN (null) must be NaN.
#: Singular values by the engine's exact path agree with LAPACK's SVD to about 1e-9
#: relative (docs/design.md); everything else agrees to rounding.
RTOL, ATOL = 1e-9, 1e-12


def _in_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` rounded to ``dtype`` and widened back to float64 (exact in every reader)."""
    if dtype == "F64":
        return x.astype(np.float64)
    if dtype == "F32":
        return x.astype(np.float32).astype(np.float64)
    if dtype == "F16":
        return x.astype(np.float16).astype(np.float64)
    if dtype == "BF16":
        # bfloat16: the top 16 bits of a float32, rounded to nearest even.
        bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        return rounded.astype(np.uint32).view(np.float32).astype(np.float64)
    raise ValueError(f"unknown dtype {dtype}")


def tensor(name: str, dtype: str, shape: tuple[int, ...], values: np.ndarray, role: str) -> dict:
    values = _in_dtype(np.asarray(values, dtype=np.float64).reshape(shape), dtype)
    return {"name": name, "dtype": dtype, "shape": list(shape), "role": role,
            "values": [float(v) for v in values.ravel()]}


def statistics(tensors: list[dict]) -> dict[str, float]:
    """The 14 statistics by direct formulas over the tensors' declared roles."""
    matrices = [np.array(t["values"]).reshape(t["shape"][0], -1) for t in tensors if t["role"] == "matrix"]
    biases = [np.array(t["values"]) for t in tensors if t["role"] == "bias"]
    out = dict.fromkeys(NAMES, float("nan"))
    if matrices:
        sigmas = [np.linalg.svd(w, compute_uv=False) for w in matrices]
        l1 = [np.abs(w).sum() for w in matrices]
        l2 = [np.linalg.norm(w) for w in matrices]
        traces = [np.trace(w) for w in matrices]
        everything = np.concatenate([w.ravel() for w in matrices])
        out.update(
            l1=np.mean(l1),
            l2=np.mean(l2),
            code_sparsity=np.mean([a / b for a, b in zip(l1, l2) if b > 0]),
            trace=np.mean(traces),
            spectral=np.mean([s[0] for s in sigmas]),
            computational_sparsity=np.mean([t / s[0] for t, s in zip(traces, sigmas) if s[0] > 0]),
            mean_lambda=np.mean([s.mean() for s in sigmas]),
            variance_lambda=np.mean([s.var() for s in sigmas]),
            mean_w=everything.mean(),
            median_w=np.median(everything),
            var_w=everything.var(),
        )
    if biases:
        everything = np.concatenate(biases)
        out.update(mean_b=everything.mean(), median_b=np.median(everything), var_b=everything.var())
    return {name: float(value) for name, value in out.items()}


def cases(rng: np.random.Generator) -> list[dict]:
    normal = rng.standard_normal
    rank_one = np.outer(normal(4), normal(5))
    return [
        {
            "name": "mixed_roles_f64",
            "about": "wide, tall and conv (4-D, read as shape[0] x rest) matrices, two biases; "
                     "an embedding, a layer norm and a 1-D non-bias that do not count",
            "tensors": [
                tensor("fc.weight", "F64", (3, 4), normal(12), "matrix"),
                tensor("fc.bias", "F64", (3,), normal(3), "bias"),
                tensor("conv.weight", "F64", (2, 2, 2, 2), normal(16), "matrix"),
                tensor("attn.out.weight", "F64", (5, 3), normal(15) * 0.3, "matrix"),
                tensor("out.bias", "F64", (2,), normal(2) + 1.0, "bias"),
                tensor("embed.weight", "F64", (4, 2), normal(8) * 100.0, "ignored"),
                tensor("ln.weight", "F64", (2,), normal(2) + 9.0, "ignored"),
                tensor("ln.bias", "F64", (2,), normal(2) + 9.0, "ignored"),
                tensor("scale", "F64", (3,), normal(3), "ignored"),
            ],
        },
        {
            "name": "f32_even_bias_count",
            "about": "float32 tensors; four bias entries, so the median averages the middle two",
            "tensors": [
                tensor("layer.0.weight", "F32", (6, 3), normal(18) * 0.1, "matrix"),
                tensor("layer.1.weight", "F32", (3, 3), normal(9) * 0.1, "matrix"),
                tensor("layer.0.bias", "F32", (4,), normal(4) * 0.01, "bias"),
            ],
        },
        {
            "name": "rank_one_and_zero_no_biases",
            "about": "a rank-one matrix (zero singular values), an all-zero matrix (skipped by "
                     "code_sparsity and computational_sparsity); no biases, so bias statistics are NaN",
            "tensors": [
                tensor("proj.weight", "F64", (4, 5), rank_one, "matrix"),
                tensor("zero.weight", "F64", (3, 3), np.zeros(9), "matrix"),
            ],
        },
        {
            "name": "half_precisions",
            "about": "float16 and bfloat16 tensors, decoded exactly to float64",
            "tensors": [
                tensor("a.weight", "F16", (3, 5), normal(15), "matrix"),
                tensor("b.weight", "BF16", (4, 2), normal(8), "matrix"),
                tensor("a.bias", "BF16", (5,), normal(5), "bias"),
            ],
        },
    ]


def main() -> int:
    rng = np.random.default_rng(SEED)
    table = cases(rng)
    for case in table:
        case["expected"] = statistics(case["tensors"])
    write_json(OUTPUT, {
        "about": "Reference values of the 14 statistics (docs/design.md), computed by "
                 "scripts/make_reference_statistics.py with numpy; expected NaN is null.",
        "statistic_names": list(NAMES),
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "cases": table,
    })
    print(f"wrote {OUTPUT} ({len(table)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

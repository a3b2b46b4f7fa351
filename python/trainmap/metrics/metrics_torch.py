"""The 14 checkpoint statistics computed with torch on a device (a CUDA GPU), for weights
that already live there or for checkpoints too large for the CPU engine to be quick.

Same definitions as the Rust engine (``docs/metrics.md``), same tensor selection (the
engine's ``select_tensors``: one definition of which tensors count), all arithmetic in
float64 on the device: each counted tensor is cast to float64 there, one at a time.

Singular values are always exact here: the eigenvalues of the smaller Gram matrix
(``torch.linalg.eigvalsh`` in float64), with the engine's a-posteriori bound on the error
of Σσ and the same fallback to ``torch.linalg.svdvals`` when the bound exceeds 1e-9·Σσ.
On a GPU the exact spectrum of the largest matrices of a 1B-parameter model takes seconds,
so ``svd="auto"`` means exact; ``svd="randomized"`` is the CPU engine's alone.

Medians are exact (numpy convention) without gathering all weights: a radix selection
over order-preserving 64-bit keys, 16 bits per pass over the tensors, finishing with a sort
once few candidates remain.

``device="cpu"`` at the public API (``trainmap.metrics``) means the Rust engine; the
functions here take a torch device and are tested on torch's CPU backend.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from trainmap import _rust_metrics as _engine

__all__ = ["DEVICES", "resolve_device", "tensors_metrics", "stacked_tensors_metrics", "checkpoint_metrics",
           "trajectory_results"]

#: Accepted values of the ``device`` option (``cuda:N`` names one GPU).
DEVICES = ("auto", "cpu", "cuda")
#: Relative bound on the error of Σσ above which the Gram path falls back to svdvals
#: (the engine's GRAM_TOLERANCE, rust_metrics/src/spectrum.rs).
GRAM_TOLERANCE = 1e-9
#: ``content_hash`` of results computed here. The engine's hash (xxh3-128 over the counted
#: tensors' bytes) has no Python binding that hashes without computing the statistics, and
#: recomputing them on the CPU would cost more than the GPU work; so it is left empty
#: ("not computed") rather than filled with a hash that differs from the engine's.
CONTENT_HASH = ""
#: Once a median's candidates number at most this, they are gathered and sorted.
_GATHER_LIMIT = 1 << 22
#: Float64 values (seeds × counted values per seed) one stacked computation takes at once
#: (256 MB; with its sorted copy and temporaries it holds about four times that); more
#: seeds are taken in chunks of seeds.
_STACKED_ELEMENTS = 1 << 25
_FLOAT_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
_NAN = float("nan")
_WEIGHT_KEYS = ("l1", "l2", "code_sparsity", "trace", "spectral", "computational_sparsity", "mean_lambda",
                "variance_lambda", "mean_w", "median_w", "var_w")
_BIAS_KEYS = ("mean_b", "median_b", "var_b")


def resolve_device(device: str, svd: str = "auto") -> torch.device | None:
    """The torch device the statistics are computed on, or None for the Rust engine.

    ``"auto"``: the first CUDA device when torch sees one (and ``svd`` is not
    ``"randomized"``, which only the engine implements), else the engine. ``"cpu"``: the
    engine. ``"cuda"`` / ``"cuda:N"``: that GPU, an error if torch sees none.
    """
    if not isinstance(device, str) or not (device in DEVICES or device.startswith("cuda:")):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), not {device!r}")
    if device == "cpu":
        return None
    if device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() and svd != "randomized" else None
    if not torch.cuda.is_available():
        raise ValueError(f"device={device!r}, but torch sees no CUDA device (use device='auto' or 'cpu')")
    if svd == "randomized":
        raise ValueError("svd='randomized' is computed by the CPU engine only (device='cpu'); "
                         "on a GPU the statistics use the exact spectrum (svd='exact' or 'auto')")
    return torch.device(device)


@dataclass
class _Moments:
    """Count, mean and centred sum of squares (merged with Chan et al.'s formula)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, x: torch.Tensor) -> "_Moments":
        n = x.numel()
        mean = float(x.sum()) / n
        return cls(n, mean, float(((x - mean) ** 2).sum()))

    def merge(self, other: "_Moments") -> "_Moments":
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return _Moments(n, self.mean + delta * other.n / n, self.m2 + other.m2 + delta * delta * self.n * other.n / n)

    def mean_value(self) -> float:
        return self.mean if self.n else _NAN

    def variance(self) -> float:
        return self.m2 / self.n if self.n else _NAN


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return math.fsum(values) / len(values) if values else _NAN


def _gram_error_bound(lam: torch.Tensor, delta: float) -> float:
    """A-posteriori bound on |Σ√λ̂ − Σσ| for Gram eigenvalues with absolute error ≤ δ."""
    small = lam <= delta
    bound = torch.where(small, torch.full_like(lam, math.sqrt(delta)), delta / (2 * lam.clamp_min(delta).sqrt()))
    return float(bound.sum())


def singular_values(a: torch.Tensor) -> torch.Tensor:
    """All singular values of the float64 matrix ``a`` (order unspecified), as the engine's
    exact mode computes them: Gram eigenvalues, or svdvals when their error bound is too big."""
    short = a if a.shape[0] <= a.shape[1] else a.T
    r, c = short.shape
    try:
        lam = torch.linalg.eigvalsh(short @ short.T).clamp_min(0.0)
    except RuntimeError:  # the eigensolver did not converge: use the SVD
        return torch.linalg.svdvals(a)
    lam_max = float(lam.max())
    # Rounding in forming G (∝ √c ε ‖A‖²) and the eigensolver's backward error (∝ r ε ‖G‖).
    delta = 4.0 * torch.finfo(torch.float64).eps * (r + math.sqrt(c)) * lam_max
    sigma = lam.sqrt()
    total = float(sigma.sum())
    if total == 0.0 or _gram_error_bound(lam, delta) <= GRAM_TOLERANCE * total:
        return sigma
    return torch.linalg.svdvals(a)


@dataclass
class _MatrixSummary:
    l1: float
    frobenius: float
    trace: float
    sigma_max: float
    sigma_mean: float
    sigma_variance: float


def _matrix_summary(a: torch.Tensor) -> _MatrixSummary:
    sigma = singular_values(a)
    mean = float(sigma.mean())
    return _MatrixSummary(
        l1=float(a.abs().sum()),
        frobenius=math.sqrt(float((a * a).sum())),
        trace=float(torch.diagonal(a).sum()),
        sigma_max=float(sigma.max()),
        sigma_mean=mean,
        sigma_variance=float(((sigma - mean) ** 2).mean()),
    )


def _order_keys(x: torch.Tensor) -> torch.Tensor:
    """Signed 64-bit keys ordered as the float64 values ``x`` (finite; −0 just below +0)."""
    bits = x.contiguous().view(torch.int64)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFFFFFFFFFF, bits)


def _select_rank(sources: Callable[[], Iterable[torch.Tensor]], rank: int, device: torch.device) -> float:
    """The ``rank``-th smallest (0-based) value of all tensors ``sources()`` yields, exactly.

    Radix selection: each pass histograms the next 16 bits of the keys that share the
    prefix fixed so far, over all tensors; when at most ``_GATHER_LIMIT`` candidates are
    left they are gathered and sorted.
    """
    prefix, shift = None, 64  # candidates: keys k with k >> shift == prefix
    while True:
        shift -= 16
        counts = torch.zeros(1 << 16, dtype=torch.int64, device=device)
        for x in sources():
            keys = _order_keys(x)
            if prefix is not None:
                keys = keys[keys >> (shift + 16) == prefix]
            counts += torch.bincount((keys >> shift) & 0xFFFF, minlength=1 << 16)
        # Digits are 16 key bits read as unsigned; the top digit carries the sign, so its
        # bins are visited in signed order (0x8000..0xFFFF are the negative keys).
        order = torch.arange(1 << 16, device=device)
        if prefix is None:
            order = torch.cat([order[1 << 15:], order[: 1 << 15]])
        cumulative = torch.cumsum(counts[order], 0)
        position = int(torch.searchsorted(cumulative, torch.tensor([rank], device=device), right=True)[0])
        rank -= int(cumulative[position - 1]) if position > 0 else 0
        digit = int(order[position])
        if prefix is None:
            prefix = digit - (1 << 16) if digit >= 1 << 15 else digit
        else:
            prefix = (prefix << 16) | digit
        if shift == 0:
            return _key_value(prefix)
        if int(counts[digit]) <= _GATHER_LIMIT:
            gathered = torch.cat([k[k >> shift == prefix] for k in map(_order_keys, sources())])
            return _key_value(int(torch.sort(gathered).values[rank]))


def _key_value(key: int) -> float:
    """The float64 value of an order key (inverse of :func:`_order_keys`)."""
    bits = key ^ 0x7FFFFFFFFFFFFFFF if key < 0 else key
    return float(torch.tensor([bits], dtype=torch.int64).view(torch.float64)[0])


def _median(sources: Callable[[], Iterable[torch.Tensor]], count: int, device: torch.device) -> float:
    """Median of all values (numpy convention: mean of the two middle values for an even count)."""
    low = _select_rank(sources, (count - 1) // 2, device)
    high = low if count % 2 else _select_rank(sources, count // 2, device)
    return (low + high) / 2


def _selection(entries: Sequence[tuple[str, Sequence[int]]], include: str | None, exclude: str | None) -> dict[str, str]:
    """{name: "matrix" | "bias"} of the counted tensors, by the engine's one definition."""
    from trainmap.metrics.tensors import select_tensors

    return dict(select_tensors(entries, include, exclude))


def tensors_metrics(
    tensors: Sequence[tuple[str, torch.Tensor]] | Callable[[], Iterable[tuple[str, torch.Tensor]]],
    *,
    device: torch.device | str,
    include: str | None = None,
    exclude: str | None = None,
    shapes: Sequence[tuple[str, Sequence[int]]] | None = None,
    source: str = "weights",
) -> tuple[dict[str, Any], list[str]]:
    """The 14 statistics of named tensors, computed on ``device`` in float64.

    ``tensors``: ``(name, tensor)`` pairs, on any device (each counted one is copied to
    ``device`` and cast to float64 on its own), or a callable yielding them afresh (the
    medians take a few passes; a callable lets tensors be loaded one at a time). ``shapes``
    gives ``(name, shape)`` of every tensor without loading them (default: read from
    ``tensors``). Returns ``(result, warnings)``: ``result`` has the engine's keys (the 14
    statistics, ``svd``: ``exact`` or ``none`` when there are no matrices, and
    ``content_hash``, empty here: see :data:`CONTENT_HASH`). ``source`` names the input in
    warnings and errors.
    """
    device = torch.device(device)
    fetch = tensors if callable(tensors) else (lambda: iter(tensors))
    if shapes is None:
        shapes = [(name, tuple(t.shape)) for name, t in fetch()]
    roles = _selection(shapes, include, exclude)

    def counted(role: str):
        for name, t in fetch():
            if roles.get(name) == role:
                yield name, _as_float64(name, t, device, source)

    matrices: list[_MatrixSummary] = []
    weights, biases = _Moments(), _Moments()
    non_finite: dict[str, str] = {}
    for name, x in counted("matrix"):
        if not bool(torch.isfinite(x).all()):
            non_finite[name] = "weight statistics"
            continue
        a = x.reshape(x.shape[0], -1)
        matrices.append(_matrix_summary(a))
        weights = weights.merge(_Moments.of(x))
    for name, x in counted("bias"):
        if not bool(torch.isfinite(x).all()):
            non_finite[name] = "bias statistics"
            continue
        biases = biases.merge(_Moments.of(x))

    weight_values = bias_values = None
    if matrices and "weight statistics" not in non_finite.values():
        median = _median(lambda: (x.reshape(-1) for _, x in counted("matrix")), weights.n, device)
        weight_values = (weights.mean_value(), median, weights.variance())
    if biases.n and "bias statistics" not in non_finite.values():
        median = _median(lambda: (x for _, x in counted("bias")), biases.n, device)
        bias_values = (biases.mean_value(), median, biases.variance())
    notes = [f"{source}: tensor '{name}' has non-finite values; its {affected} are NaN"
             for name, affected in non_finite.items()]
    return _result(matrices, weight_values, bias_values), notes


def stacked_tensors_metrics(
    tensors: Sequence[tuple[str, torch.Tensor]],
    *,
    device: torch.device | str,
    include: str | None = None,
    exclude: str | None = None,
    source: str = "weights",
) -> list[tuple[dict[str, Any], list[str]]]:
    """The statistics of several models of one architecture at once: every tensor has a
    leading seed axis (a seed sweep's stacked parameters), and entry ``i`` of the result is
    :func:`tensors_metrics` of the tensors ``t[i]``.

    For small models one seed at a time leaves a GPU idle (a few dozen tiny kernels and host
    round trips per seed); here each statistic is one batched operation over the seeds:
    batched Gram eigenvalues (each seed's matrix falls back to ``svdvals`` on its own when
    its error bound says so, as in :func:`singular_values`), and exact medians by sorting each
    seed's values (seeds are taken in chunks of at most :data:`_STACKED_ELEMENTS` values).
    The numbers equal :func:`tensors_metrics`' up to the order of float64 sums (medians
    exactly). A seed with a non-finite counted value is computed by :func:`tensors_metrics`
    alone, with its NaN and notes.
    """
    device = torch.device(device)
    if not tensors:
        raise ValueError("stacked statistics need at least one tensor")
    seeds = tensors[0][1].shape[0] if tensors[0][1].dim() else 0
    for name, t in tensors:
        if t.dim() == 0 or t.shape[0] != seeds:
            raise ValueError(f"{source}: tensor '{name}' of shape {tuple(t.shape)} has no leading seed axis of "
                             f"{seeds} (every tensor is stacked over the same seeds)")
    roles = _selection([(name, tuple(t.shape[1:])) for name, t in tensors], include, exclude)
    if not roles:  # nothing counts: every statistic is NaN, as for one seed
        return [(_result([], None, None), []) for _ in range(seeds)]
    per_seed = sum(math.prod(t.shape[1:]) for name, t in tensors if name in roles)
    chunk = max(1, _STACKED_ELEMENTS // max(per_seed, 1))
    results: list[tuple[dict[str, Any], list[str]]] = []
    for start in range(0, seeds, chunk):
        part = [(name, t[start : start + chunk]) for name, t in tensors]
        counted = [(roles[name], _as_float64(name, t, device, source)) for name, t in part if name in roles]
        finite = torch.ones(len(part[0][1]), dtype=torch.bool, device=device)
        for _, x in counted:
            finite &= torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
        finite_seeds = [i for i, ok in enumerate(finite.tolist()) if ok]
        if len(finite_seeds) < len(finite):  # (indexing copies: only when some seed is left out)
            counted = [(role, x[finite_seeds]) for role, x in counted]
        batched = iter(_stacked_results(counted) if finite_seeds else [])
        for i, ok in enumerate(finite.tolist()):
            if ok:
                results.append((next(batched), []))
            else:  # its NaN and notes as one seed's call gives them
                results.append(tensors_metrics([(name, t[i]) for name, t in part], device=device, include=include,
                                               exclude=exclude, source=source))
    return results


def _stacked_singular_values(a: torch.Tensor) -> torch.Tensor:
    """(seeds, min(m, n)) singular values of each seed's float64 matrix in ``a`` (seeds, m, n),
    by the rule of :func:`singular_values` applied to each seed."""
    short = a if a.shape[1] <= a.shape[2] else a.transpose(1, 2)
    r, c = short.shape[1:]
    try:
        lam = torch.linalg.eigvalsh(short @ short.transpose(1, 2)).clamp_min(0.0)
    except RuntimeError:  # some seed's eigensolver did not converge: each seed on its own
        return torch.stack([singular_values(m) for m in a])
    delta = (4.0 * torch.finfo(torch.float64).eps * (r + math.sqrt(c))) * lam.max(dim=1).values
    sigma = lam.sqrt()
    total = sigma.sum(dim=1)
    bound = torch.where(lam <= delta[:, None], delta.sqrt()[:, None],
                        delta[:, None] / (2 * torch.maximum(lam, delta[:, None]).sqrt())).sum(dim=1)
    accepted = (total == 0) | (bound <= GRAM_TOLERANCE * total)
    for i in (~accepted).nonzero().flatten().tolist():
        sigma[i] = torch.linalg.svdvals(a[i])
    return sigma


def _stacked_results(counted: Sequence[tuple[str, torch.Tensor]]) -> list[dict[str, Any]]:
    """Each seed's result from its finite counted tensors (role, float64 (seeds, ...)), all
    seeds in batched operations and one copy to the host."""
    seeds = len(counted[0][1])
    matrices = [x.reshape(seeds, x.shape[1], math.prod(x.shape[2:])) for role, x in counted if role == "matrix"]
    columns = []  # per matrix (seeds, 6): the fields of _MatrixSummary
    for a in matrices:
        sigma = _stacked_singular_values(a)
        mean = sigma.mean(dim=1)
        columns.append(torch.stack([
            a.abs().sum(dim=(1, 2)), (a * a).sum(dim=(1, 2)).sqrt(), torch.diagonal(a, dim1=1, dim2=2).sum(dim=1),
            sigma.max(dim=1).values, mean, ((sigma - mean[:, None]) ** 2).mean(dim=1),
        ], dim=1))
    summaries = torch.stack(columns, dim=1).cpu().tolist() if columns else [[] for _ in range(seeds)]
    weights = _stacked_moments([a.reshape(seeds, -1) for a in matrices], seeds)
    biases = _stacked_moments([x.reshape(seeds, -1) for role, x in counted if role == "bias"], seeds)
    return [_result([_MatrixSummary(*m) for m in summaries[i]], weights[i], biases[i]) for i in range(seeds)]


def _stacked_moments(values: Sequence[torch.Tensor], seeds: int) -> list[tuple[float, float, float] | None]:
    """Each seed's (mean, median, variance) of all its values in ``values`` ((seeds, k)
    tensors), or None for each seed when there are none. The median is exact (numpy
    convention: the mean of the two middle values for an even count)."""
    if not values or not sum(v.shape[1] for v in values):
        return [None] * seeds
    x = torch.cat(list(values), dim=1)
    n = x.shape[1]
    mean = x.sum(dim=1) / n
    variance = ((x - mean[:, None]) ** 2).sum(dim=1) / n
    ordered = torch.sort(x, dim=1).values
    median = (ordered[:, (n - 1) // 2] + ordered[:, n // 2]) / 2
    return [tuple(row) for row in torch.stack([mean, median, variance], dim=1).cpu().tolist()]


def _result(matrices: Sequence[_MatrixSummary], weights: tuple[float, float, float] | None,
            biases: tuple[float, float, float] | None) -> dict[str, Any]:
    """The result (the 14 statistics in the engine's order, ``svd``, ``content_hash``) from
    each counted matrix's summary and the (mean, median, variance) of all weight and all bias
    values (None: those statistics are NaN)."""
    values = dict.fromkeys(_WEIGHT_KEYS + _BIAS_KEYS, _NAN)
    if weights is not None:
        values.update(
            l1=_mean(m.l1 for m in matrices),
            l2=_mean(m.frobenius for m in matrices),
            code_sparsity=_mean(m.l1 / m.frobenius for m in matrices if m.frobenius > 0),
            trace=_mean(m.trace for m in matrices),
            spectral=_mean(m.sigma_max for m in matrices),
            computational_sparsity=_mean(m.trace / m.sigma_max for m in matrices if m.sigma_max > 0),
            mean_lambda=_mean(m.sigma_mean for m in matrices),
            variance_lambda=_mean(m.sigma_variance for m in matrices),
            mean_w=weights[0],
            median_w=weights[1],
            var_w=weights[2],
        )
    if biases is not None:
        values.update(mean_b=biases[0], median_b=biases[1], var_b=biases[2])
    result: dict[str, Any] = {name: values[name] for name in _engine.METRIC_NAMES}
    result["svd"] = "exact" if matrices else "none"
    result["content_hash"] = CONTENT_HASH
    return result


def _as_float64(name: str, t: Any, device: torch.device, source: str) -> torch.Tensor:
    """Tensor (or numpy array) ``t`` as float64 on ``device``; unsupported dtypes are named."""
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if t.dtype not in _FLOAT_DTYPES:
        from trainmap.metrics.tensors import CheckpointError

        raise CheckpointError(f"{source}: tensor '{name}' has unsupported dtype {t.dtype} "
                              f"(supported: {', '.join(_FLOAT_DTYPES.values())})")
    return t.detach().to(device=device, dtype=torch.float64)


def checkpoint_metrics(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    device: torch.device | str,
    include: str | None = None,
    exclude: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """:func:`tensors_metrics` of a ``.safetensors`` file, or of the shard files of one
    checkpoint together (a sequence), its tensors loaded one at a time straight onto
    ``device``. Missing files raise ``FileNotFoundError``; invalid ones, and a tensor name in
    two shards, ``CheckpointError`` naming the file."""
    from safetensors import safe_open

    from trainmap.metrics.tensors import CheckpointError

    paths = [os.fspath(path)] if isinstance(path, (str, os.PathLike)) else [os.fspath(p) for p in path]
    if not paths:
        raise ValueError("a sharded checkpoint needs at least one file")
    for file in paths:
        if not os.path.exists(file):
            raise FileNotFoundError(f"{file}: no such file")
    device = torch.device(device)
    with contextlib.ExitStack() as stack:
        owner: dict[str, tuple[str, Any]] = {}
        for file in paths:
            try:
                handle = stack.enter_context(safe_open(file, framework="pt", device=str(device)))
            except Exception as exc:  # safetensors raises its own error types for bad files
                raise CheckpointError(f"{file}: not a valid safetensors checkpoint ({exc})") from None
            for name in handle.keys():
                if name in owner:
                    raise CheckpointError(f"{file}: tensor '{name}' is also in {owner[name][0]}")
                owner[name] = (file, handle)
        shapes = [(name, handle.get_slice(name).get_shape()) for name, (_, handle) in owner.items()]
        roles = _selection(shapes, include, exclude)

        def load():
            for name, (_, handle) in owner.items():
                # Tensors that do not count are never loaded (they may be of any dtype).
                yield name, (handle.get_tensor(name) if name in roles else torch.empty(0))

        source = paths[0] if len(paths) == 1 else os.path.dirname(paths[0]) or paths[0]
        return tensors_metrics(load, device=device, include=include, exclude=exclude, shapes=shapes, source=source)


def trajectory_results(
    paths: Sequence[str | os.PathLike],
    *,
    device: torch.device | str,
    include: str | None = None,
    exclude: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[dict[str, Any]]:
    """The result of each checkpoint in order, warnings emitted as ``RuntimeWarning``;
    ``progress`` is called with the number finished."""
    results = []
    for done, path in enumerate(paths, start=1):
        result, notes = checkpoint_metrics(path, device=device, include=include, exclude=exclude)
        for note in notes:
            warnings.warn(note, RuntimeWarning, stacklevel=2)
        results.append(result)
        if progress is not None:
            progress(done)
    return results

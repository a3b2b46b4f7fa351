"""Every option of the metrics and analysis stages, declared once: default, help text and
bounds in one dataclass per stage.

The command line is generated from these classes (:meth:`StageOptions.add_arguments`,
:meth:`StageOptions.from_args`), the workflow builds its command lines with
:meth:`StageOptions.cli_args`, and ``tests/workflow/test_options.py`` proves that the config schema's
defaults and bounds are the same. A value out of bounds raises ``ValueError`` naming the
option, whichever way it came in (CLI flag, config key, Python keyword).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from trainmap.io.contracts import EVAL_ACCURACY

__all__ = [
    "StageOptions",
    "Criterion",
    "MetricsOptions",
    "FitOptions",
    "HMMSelectOptions",
    "BaselineOptions",
    "MapOptions",
    "RegressOptions",
    "FiguresOptions",
    "MAX_COMPONENTS_CAP",
]


# --- the convergence criterion (an option's type: --convergence, --threshold) ----------------

_TEXT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*([<>])\s*(\S+)\s*$")


@dataclass(frozen=True)
class Criterion:
    """A run has converged at the first step where ``column`` is strictly ``above`` (or
    ``below``) ``threshold``."""

    column: str
    direction: str  # "above" | "below"
    threshold: float

    def __post_init__(self) -> None:
        if self.direction not in ("above", "below"):
            raise ValueError(f"convergence direction must be 'above' or 'below', not {self.direction!r}")
        if not isinstance(self.column, str) or not self.column:
            raise ValueError(f"convergence column must be a non-empty name, not {self.column!r}")
        _finite(self.threshold, "convergence threshold")

    @classmethod
    def parse(cls, text: str, option: str = "--convergence") -> "Criterion":
        """``'eval_loss<2.5'`` → below, ``'eval_accuracy>0.9'`` → above. Errors name ``option``."""
        match = _TEXT.match(str(text))
        if match is None:
            raise ValueError(f"{option}: expected COLUMN<X or COLUMN>X (e.g. 'eval_loss<2.5'), not {text!r}")
        column, op, number = match.groups()
        try:
            value = float(number)
        except ValueError:
            raise ValueError(f"{option}: {number!r} is not a number") from None
        return cls(column, "above" if op == ">" else "below", _finite(value, option))

    @classmethod
    def from_threshold(cls, threshold: float, option: str = "--threshold") -> "Criterion":
        """The shorthand: ``eval_accuracy`` above ``threshold``."""
        return cls(EVAL_ACCURACY, "above", _finite(threshold, option))

    @classmethod
    def from_config(cls, spec: Mapping[str, Any] | None, threshold: float | None, key: str) -> "Criterion | None":
        """From config ``convergence: {column, above|below}`` or ``threshold: x`` (None when
        neither is set). Both, or neither/both of above and below, raise naming ``key``."""
        if spec is not None and threshold is not None:
            raise ValueError(f"config key {key}: give convergence or threshold, not both")
        if threshold is not None:
            return cls.from_threshold(threshold, f"config key {key}.threshold")
        if spec is None:
            return None
        bounds = [d for d in ("above", "below") if d in spec]
        if len(bounds) != 1:
            raise ValueError(f"config key {key}.convergence: give exactly one of above or below")
        where = f"config key {key}.convergence.{bounds[0]}"
        return cls(str(spec.get("column", EVAL_ACCURACY)), bounds[0], _finite(spec[bounds[0]], where))

    def __str__(self) -> str:
        return f"{self.column}{'>' if self.direction == 'above' else '<'}{self.threshold:g}"

    def describe(self) -> str:
        """Readable: ``first step with eval_loss < 2.5``."""
        return f"first step with {self.column} {'>' if self.direction == 'above' else '<'} {self.threshold:g}"

    def to_dict(self) -> dict:
        """For regression.json: column, direction, threshold and the text form."""
        return {"column": self.column, "direction": self.direction, "threshold": self.threshold, "text": str(self)}

    def met(self, values: np.ndarray) -> np.ndarray:
        """Where ``values`` meet the criterion (NaN never does)."""
        import numpy as np

        values = np.asarray(values, dtype=float)
        with np.errstate(invalid="ignore"):
            return values > self.threshold if self.direction == "above" else values < self.threshold


def _finite(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"{where}: must be a finite number, not {value!r}")
    return number

#: Largest number of HMM states tried: a full-covariance HMM over 14 features has 119
#: parameters per state, so beyond this the held-out BIC is meaningless for any
#: realistic number of checkpoints (and the fits take hours).
MAX_COMPONENTS_CAP = 64


def option(default: Any, help: str, *, type: Callable | None = None, minimum: float | None = None,
           maximum: float | None = None, exclusive_minimum: float | None = None,
           exclusive_maximum: float | None = None, choices: tuple | None = None, cli: str | None = None):
    """A dataclass field carrying its help text, type and bounds (see :class:`StageOptions`)."""
    meta = dict(help=help, type=type or builtins_type(default), minimum=minimum, maximum=maximum,
                exclusive_minimum=exclusive_minimum, exclusive_maximum=exclusive_maximum, choices=choices, cli=cli)
    return field(default=default, metadata=meta)


def builtins_type(default: Any) -> Callable:
    """The value type implied by a default (``float`` for 1e-4, ``int`` for 8, ``str``...)."""
    return type(default) if default is not None else str


def flag(f: dataclasses.Field) -> str:
    """The command-line flag of an option: ``n_iter`` → ``--n-iter``."""
    return f.metadata.get("cli") or "--" + f.name.replace("_", "-")


@dataclass(frozen=True)
class StageOptions:
    """Base class: validates every field against its bounds when constructed."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            self._check(f, getattr(self, f.name))

    @classmethod
    def _check(cls, f: dataclasses.Field, value: Any) -> None:
        m = f.metadata
        name = f"option {flag(f)} ({f.name})"
        if value is None:
            if f.default is not None:
                raise ValueError(f"{name} needs a value")
            return
        kind = m["type"]
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, not {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, not {value!r}")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, not {value!r}")
        elif kind is str and not isinstance(value, str):
            raise ValueError(f"{name} must be a string, not {value!r}")
        if m["choices"] is not None and value not in m["choices"]:
            raise ValueError(f"{name} must be one of {', '.join(map(str, m['choices']))}, not {value!r}")
        if m["minimum"] is not None and value < m["minimum"]:
            raise ValueError(f"{name} must be at least {m['minimum']}, not {value!r}")
        if m["maximum"] is not None and value > m["maximum"]:
            raise ValueError(f"{name} must be at most {m['maximum']}, not {value!r}")
        if m["exclusive_minimum"] is not None and not value > m["exclusive_minimum"]:
            raise ValueError(f"{name} must be greater than {m['exclusive_minimum']}, not {value!r}")
        if m["exclusive_maximum"] is not None and not value < m["exclusive_maximum"]:
            raise ValueError(f"{name} must be less than {m['exclusive_maximum']}, not {value!r}")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One ``--flag`` per field, with the field's help text and default."""
        for f in dataclasses.fields(cls):
            m = f.metadata
            default = f"default {f.default}" if f.default is not None else "no default"
            parser.add_argument(flag(f), dest=f.name, type=_parser_type(f), default=f.default,
                                choices=m["choices"], help=f"{m['help']} ({default})")

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        """The options parsed by a parser that :meth:`add_arguments` filled."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    def cli_args(self, omit: tuple[str, ...] = ()) -> str:
        """The shell-quoted command-line flags reproducing these options (every field, also
        the defaults, so a command line says everything it ran with), except ``omit``."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in omit:
                continue
            if value is not None:
                parts.append(f"{flag(f)} {shlex.quote(_cli_text(value))}")
        return " ".join(parts)

    def replace(self, **changes):
        """A copy with some options changed (validated)."""
        return dataclasses.replace(self, **changes)


def _parser_type(f: dataclasses.Field) -> Callable:
    kind = f.metadata["type"]
    if kind is float:
        return _finite_float(flag(f))
    return kind


def _finite_float(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} must be finite, not {text!r}")
        return value

    return parse


def _cli_text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


# --- metrics -------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricsOptions(StageOptions):
    """``trainmap metrics`` and the workflow's metrics rule (config ``metrics:``)."""

    svd: str = option("auto", "singular values: exact, randomized, or auto (exact up to --exact-max-dim, above it "
                      "the cheaper path by the engine's cost model)",
                      choices=("auto", "exact", "randomized"))
    exact_max_dim: int = option(2048, "with --svd auto, matrices whose smaller side is at most this are exact; "
                                "above it, the cheaper path by the engine's cost model",
                                minimum=1)
    rank: int = option(64, "singular values computed in randomized mode", minimum=1)
    include: str | None = option(None, "regex: only tensors whose name matches count", type=str)
    exclude: str | None = option(None, "regex replacing the default exclusion of embeddings and norm layers "
                                       "('' excludes nothing)", type=str)


#: Config ``metrics:`` keys that say where and how the workflow splits the metrics jobs
#: (``device``: metrics jobs on a GPU; ``chunk``: checkpoints per job of runs read in
#: place), not what the engine computes: they are not :class:`MetricsOptions`.
WORKFLOW_METRICS_KEYS: tuple[str, ...] = ("device", "chunk")


# --- HMM fitting (hmm-select, baselines) ---------------------------------------------------

@dataclass(frozen=True)
class FitOptions(StageOptions):
    """Run filtering, z-scoring, the train/test split and EM settings shared by
    ``hmm-select`` and ``baselines`` (same values give the same split)."""

    max_components: int = option(8, "try 1..N hidden states", minimum=1, maximum=MAX_COMPONENTS_CAP)
    restarts: int = option(5, "random restarts per number of states", minimum=1, maximum=1000)
    zscore_first_n: int = option(1000, "z-score each run with the mean/sd of its first N checkpoints", minimum=2)
    min_checkpoints: int = option(2, "leave out runs with fewer checkpoints", minimum=2)
    min_runs: int = option(5, "fewer usable runs is an error", minimum=2)
    folds: int = option(0, "cross-validation folds over runs: every run is held out once across K folds and the "
                        "held-out BIC is summed over them; 1 is one split holding out --test-fraction of the runs; "
                        "0 chooses: 5 folds (or one per run, when fewer) with fewer than 30 runs, else one split",
                        minimum=0, maximum=1000)
    test_fraction: float = option(0.2, "share of runs held out for the BIC when there is one split (--folds 1, or "
                                  "--folds 0 with 30 runs or more)", exclusive_minimum=0.0, exclusive_maximum=1.0)
    seed: int = option(0, "seed of the train/test split and of every restart", minimum=0)
    n_iter: int = option(1000, "most EM iterations per fit", minimum=1)
    tol: float = option(1e-4, "EM stops when the training log-likelihood gains less than this per checkpoint",
                        exclusive_minimum=0.0)
    min_covar: float = option(1e-3, "covariance floor: this times each feature's variance over the fitted "
                              "checkpoints is added to every covariance diagonal at each EM step",
                              exclusive_minimum=0.0)
    workers: int = option(1, "worker processes fitting restarts in parallel (the result does not depend on it)",
                          minimum=1)

    def fit_fields(self) -> dict[str, Any]:
        """The :class:`FitOptions` part of these options (to derive the baselines' options)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(FitOptions)}


@dataclass(frozen=True)
class HMMSelectOptions(FitOptions):
    """``trainmap hmm-select`` (config ``hmm:``)."""

    covariance: str = option("auto", "covariance of the states: full, diag (diagonal), tied (one full covariance "
                             "shared by all states), or auto (the held-out BIC chooses among them together with "
                             "the number of states)", choices=("auto", "full", "diag", "tied"))
    selection: str = option("best", "rule for the number of states: the lowest held-out BIC of the best restart "
                            "(best) or the lowest mean held-out BIC over restarts (mean, the authors' rule)",
                            choices=("best", "mean"))


@dataclass(frozen=True)
class BaselineOptions(FitOptions):
    """``trainmap baselines`` (config ``baselines:``; split and EM settings from ``hmm:``)."""


# --- map, regress, figures ------------------------------------------------------------------

@dataclass(frozen=True)
class _ConvergenceOptions(StageOptions):
    """The convergence criterion (``--convergence 'eval_loss<2.5'``, ``--threshold X``)."""

    convergence: Criterion | None = option(None, "convergence criterion COLUMN<X or COLUMN>X on log.csv "
                                           "(e.g. 'eval_loss<2.5'); --threshold X is 'eval_accuracy>X'",
                                           type=Criterion)
    experiment: str | None = option(None, "name shown in titles and outputs (default: from results/{exp}/runs/{run})",
                                    type=str)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, *, require_convergence: bool = True) -> None:
        fields = [f for f in dataclasses.fields(cls) if f.name != "convergence"]
        for f in fields:
            m = f.metadata
            parser.add_argument(flag(f), dest=f.name, type=_parser_type(f), default=f.default,
                                choices=m["choices"], help=m["help"] + (f" (default {f.default})" if f.default is not None else ""))
        crit = dataclasses.fields(cls)[0]
        group = parser.add_mutually_exclusive_group(required=require_convergence)
        group.add_argument("--convergence", dest="convergence", type=_criterion, metavar="CRITERION",
                           help=crit.metadata["help"])
        group.add_argument("--threshold", dest="convergence", type=_threshold, metavar="X",
                           help="shorthand for --convergence 'eval_accuracy>X'")

    @classmethod
    def _check(cls, f, value) -> None:
        if f.name == "convergence":
            if value is not None and not isinstance(value, Criterion):
                raise ValueError(f"option --convergence must be a Criterion, not {value!r}")
            return
        super()._check(f, value)

    def cli_args(self, omit: tuple[str, ...] = ()) -> str:
        parts = []
        if self.convergence is not None and "convergence" not in omit:
            parts.append(f"--convergence {shlex.quote(str(self.convergence))}")
        parts += [f"{flag(f)} {shlex.quote(_cli_text(getattr(self, f.name)))}" for f in dataclasses.fields(self)
                  if f.name != "convergence" and f.name not in omit and getattr(self, f.name) is not None]
        return " ".join(parts)


def _criterion(text: str) -> Criterion:
    try:
        return Criterion.parse(text, "--convergence")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _threshold(text: str) -> Criterion:
    try:
        return Criterion.from_threshold(float(text), "--threshold")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class RegressOptions(_ConvergenceOptions):
    """``trainmap regress``: the convergence criterion is required; it is computed here only."""


@dataclass(frozen=True)
class MapOptions(_ConvergenceOptions):
    """``trainmap map``. The criterion is read from regression.json; ``--convergence``, when
    given, must be the one it was computed with."""

    top_features: int = option(3, "features reported per edge", minimum=0, maximum=14)


@dataclass(frozen=True)
class FiguresOptions(_ConvergenceOptions):
    """``trainmap figures``. The criterion is read from convergence.csv; ``--convergence``,
    when given, must be the one it was computed with."""

    fast: int = option(3, "fastest runs drawn in the trajectories figure", minimum=0)
    slow: int = option(3, "slowest runs drawn in the trajectories figure", minimum=0)

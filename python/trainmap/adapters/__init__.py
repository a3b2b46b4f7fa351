"""Callbacks that record a training run with :class:`trainmap.Recorder` from inside a
training framework, each an optional extra of the package:

* :mod:`trainmap.adapters.hf` — Hugging Face ``transformers.Trainer`` (``pip install 'trainmap[hf]'``);
* :mod:`trainmap.adapters.lightning` — Lightning ``Trainer`` (``pip install 'trainmap[lightning]'``).

See docs/your-runs.md.
"""


def missing_extra(library: str, extra: str) -> ImportError:
    """The one-line error raised when an adapter's library is not installed."""
    return ImportError(f"this adapter needs {library}; install it with: pip install 'trainmap[{extra}]'")


def numeric_scalars(metrics) -> dict:
    """The entries of a metrics mapping that are numbers or one-element tensors/arrays
    (frameworks also report strings and lists; those are left out, and so is a metric
    named ``step``: the step is the row's own)."""
    scalars = {}
    for name, value in dict(metrics or {}).items():
        if isinstance(value, bool) or name == "step":
            continue
        one_element_tensor = callable(getattr(value, "numel", None)) and value.numel() == 1
        one_element_array = getattr(value, "size", None) == 1  # numpy arrays and scalars
        if isinstance(value, (int, float)) or one_element_tensor or one_element_array:
            scalars[name] = value
    return scalars

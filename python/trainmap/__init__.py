"""trainmap: latent state models of training dynamics.

Implements *Latent State Models of Training Dynamics* (Hu, Chen, Saphra, Cho; TMLR 2023):
train many seeds, compute weight statistics per checkpoint (``trainmap.metrics``, a Rust
engine), fit a Gaussian HMM over the standardised trajectories, and read the resulting
training map and detour states.
"""

__version__ = "0.1.0"

__all__ = ["Recorder", "__version__"]


def __getattr__(name: str):
    # Loaded on first use, so `import trainmap` stays cheap (no torch, no pandas).
    if name == "Recorder":
        from trainmap.metrics.recorder import Recorder

        return Recorder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Training: the SAM loss, the embedding cache, checkpoints and the Accelerate loop.

Public entry point: :func:`fit` (also ``samtune fit``). See ``docs/training.md``.
"""

from __future__ import annotations

from .._lazy import lazy_getattr

# public name -> submodule that defines it; imported on first use (PEP 562), so that
# samtune.train.config (FitConfig, the command line's help texts) loads no torch
_EXPORTS: dict[str, str] = {
    "Callback": ".callbacks",
    "FitConfig": ".config",
    "build_config": ".config",
    "FitResult": ".loop",
    "Run": ".loop",
    "fit": ".loop",
    "train": ".loop",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(
    globals(),
    _EXPORTS,
    submodules=("cache", "callbacks", "checkpoint", "config", "loop", "losses", "step"),
)

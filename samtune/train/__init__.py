"""Training: the SAM loss, the embedding cache, checkpoints and the Accelerate loop.

Public entry point: :func:`fit` (also ``samtune fit``). See ``docs/training.md``.
"""

from __future__ import annotations

from .callbacks import Callback
from .config import FitConfig, build_config
from .loop import FitResult, Run, fit, train

__all__ = ["Callback", "FitConfig", "FitResult", "Run", "build_config", "fit", "train"]

"""samtune: fine-tune Meta's Segment Anything Model (SAM) on your own data."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    AdapterMismatchError,
    CheckpointError,
    ConfigError,
    DataError,
    InputError,
    MissingDependencyError,
    MissingFileError,
    OfflineError,
    RunError,
    SamtuneError,
    UnknownNameError,
)
from .models import (  # noqa: E402
    PreprocessConfig,
    base_fingerprint,
    fingerprint,
    list_presets,
    load_model,
    preprocess_config,
)

__all__ = [
    "AdapterMismatchError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "InputError",
    "MissingDependencyError",
    "MissingFileError",
    "OfflineError",
    "PreprocessConfig",
    "RunError",
    "SamtuneError",
    "UnknownNameError",
    "__version__",
    "base_fingerprint",
    "fingerprint",
    "list_presets",
    "load_model",
    "preprocess_config",
]

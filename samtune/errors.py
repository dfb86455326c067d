"""samtune's exceptions.

Every error samtune raises on purpose derives from :class:`SamtuneError`. Where a builtin
exception fits, the subclass inherits it too, so ``except ValueError`` keeps working::

    SamtuneError
    ├── InputError (ValueError)            bad input from the user: a value, a file's content
    │   ├── ConfigError                    an invalid strategy / training / eval config value
    │   ├── CheckpointError                a file that is not a SAM checkpoint, or the wrong one
    │   ├── AdapterMismatchError           an adapter written for another base model
    │   └── DataError                      malformed annotations, corrupt images, bad archives
    ├── MissingFileError (FileNotFoundError)  a path that does not exist
    ├── UnknownNameError (KeyError)        an unknown strategy / dataset / preset name
    ├── OfflineError (ConnectionError)     something needs the network and cannot reach it
    ├── MissingDependencyError (ImportError) an optional extra is not installed
    └── RunError (RuntimeError)            a run that started and failed (NaN loss, OOM)

Warnings: :class:`SamtuneWarning` (``UserWarning``), and :class:`AssumptionWarning` for a load
that had to assume what its format cannot record.

A message says what was expected, what was found, and what to do. The CLI prints it as one
line and exits 2 for bad input (every class but :class:`RunError`), 1 for a failed run.
"""

from __future__ import annotations


class SamtuneError(Exception):
    """Root of every error samtune raises on purpose."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError quotes its message; we never want that
        return str(self.args[0]) if self.args else self.__class__.__name__


class InputError(SamtuneError, ValueError):
    """Bad input: a value or a file's content is not what samtune expects."""


class ConfigError(InputError):
    """An invalid configuration value."""


class CheckpointError(InputError):
    """A file that is not a SAM checkpoint, or not one samtune can read."""


class AdapterMismatchError(InputError):
    """An adapter file written for a different base model."""


class DataError(InputError):
    """Malformed annotations, corrupt images, unsafe archives, failed checksums."""


class MissingFileError(SamtuneError, FileNotFoundError):
    """A file or folder that does not exist."""


class UnknownNameError(SamtuneError, KeyError):
    """A name (strategy, dataset, preset, format) that samtune does not know."""


class OfflineError(SamtuneError, ConnectionError):
    """The network is needed and cannot be reached (or HF_HUB_OFFLINE is set)."""


class MissingDependencyError(SamtuneError, ImportError):
    """An optional dependency is not installed."""


class RunError(SamtuneError, RuntimeError):
    """A run that started and then failed (NaN loss, out of memory, ...)."""

    exit_code = 1


class SamtuneWarning(UserWarning):
    """A note samtune gives without stopping (the CLI prints it as one ``note:`` line)."""


class AssumptionWarning(SamtuneWarning):
    """A load had to assume something its input format cannot record (it says what)."""


__all__ = [
    "AssumptionWarning",
    "AdapterMismatchError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "InputError",
    "MissingDependencyError",
    "MissingFileError",
    "OfflineError",
    "RunError",
    "SamtuneError",
    "SamtuneWarning",
    "UnknownNameError",
]

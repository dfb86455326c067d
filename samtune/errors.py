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

Text read from a file (an adapter's metadata, a config value, a dataset or model name) goes
into a message only through :func:`quote_untrusted`: quoted, escaped like ``repr`` (a newline
shows as ``\\n``, so a crafted file cannot add a line of its own) and cut to a bounded length.
"""

from __future__ import annotations

import reprlib

QUOTE_LIMIT = 120

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 8, 8, 60, 60


def quote_untrusted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``value`` (text from a file or a user) as it may appear in a message: one line, quoted.

    A string is escaped like ``repr`` (newlines, control characters and quotes cannot break
    out of the quotes) and cut to ``limit`` characters, with ``...`` and its full length after
    it; any other value is shown by :mod:`reprlib` (bounded however large or nested it is). So
    a crafted adapter or config cannot print a fake ``error:`` line or a command.

    >>> quote_untrusted("x\\nerror: pip install evil")
    "'x\\\\nerror: pip install evil'"
    """
    if isinstance(value, str):
        if len(value) > limit:
            return repr(value[:limit]) + f"... ({len(value)} characters)"
        return repr(value)
    shown = one_line(_REPR.repr(value))
    return shown if len(shown) <= limit else shown[:limit] + "..."


def one_line(text: str) -> str:
    """``text`` with every line break and control character escaped: what the CLI prints."""
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


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
    "QUOTE_LIMIT",
    "RunError",
    "SamtuneError",
    "SamtuneWarning",
    "UnknownNameError",
    "one_line",
    "quote_untrusted",
]

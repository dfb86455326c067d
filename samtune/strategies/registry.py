"""Find strategies through the ``samtune.strategies`` entry-point group.

samtune's own strategies are declared in its ``pyproject.toml`` through the same group that
third-party packages use::

    [project.entry-points."samtune.strategies"]
    bitfit = "samtune_bitfit:BitFitStrategy"

Entry points load lazily (only when a strategy is listed or asked for). One that fails to
import (an exception, or ``sys.exit()`` at import time), or that is not a :class:`~samtune.strategies.base.Strategy` subclass, is reported by
name (:func:`broken_strategies`, a warning) and leaves the others working.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ..errors import MissingDependencyError, UnknownNameError, one_line, quote_untrusted
from .base import Strategy

GROUP = "samtune.strategies"


@dataclass
class _Entry:
    name: str
    entry_point: EntryPoint | None
    distribution: str
    cls: type[Strategy] | None = None
    error: str | None = None
    loaded: bool = field(default=False)


_entries: dict[str, _Entry] | None = None
_registered: dict[str, type[Strategy]] = {}


def refresh() -> None:
    """Forget what was discovered; the next call re-reads the installed entry points."""
    global _entries
    _entries = None


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Register a :class:`Strategy` subclass in this process (notebooks, tests); returns ``cls``.

    Packages should declare an entry point instead, so every process finds them.
    """
    _check_class(cls, f"register_strategy({getattr(cls, '__name__', cls)!r})")
    _registered[cls.name] = cls
    refresh()
    return cls


def _discover() -> dict[str, _Entry]:
    global _entries
    if _entries is not None:
        return _entries
    found: dict[str, _Entry] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        dist = getattr(getattr(ep, "dist", None), "name", "") or ""
        if ep.name in found:
            other = found[ep.name]
            if other.distribution == dist:  # the same package seen twice on sys.path
                continue
            warnings.warn(
                f"strategy {ep.name!r} is declared by both {other.distribution!r} and {dist!r}; "
                f"using the one from {other.distribution!r}",
                stacklevel=3,
            )
            continue
        found[ep.name] = _Entry(ep.name, ep, dist)
    for name, cls in _registered.items():
        found[name] = _Entry(name, None, cls.distribution or "", cls=cls, loaded=True)
    _entries = found
    return found


def _check_class(obj: Any, where: str, name: str | None = None) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Strategy)):
        raise TypeError(
            f"{where} is {obj!r} ({type(obj).__name__}), not a subclass of "
            f"samtune.strategies.Strategy"
        )
    if name is not None and obj.name != name:
        raise TypeError(f"{where} defines strategy {obj.name!r}, not {name!r}")
    if not obj.name:
        raise TypeError(f"{where} has no `name`")


def _load(entry: _Entry) -> None:
    if entry.loaded:
        return
    entry.loaded = True
    ep = entry.entry_point
    try:
        obj = ep.load()
        _check_class(obj, f"entry point {ep.name!r} ({ep.value})", ep.name)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # any failure of third-party code, sys.exit() at import too:
        # report it, keep the others
        reason = one_line(str(exc))  # third-party text: one line, bounded
        reason = reason if len(reason) <= 300 else reason[:300] + "..."
        entry.error = f"{type(exc).__name__}: {reason}"
        who = f" from package {entry.distribution!r}" if entry.distribution else ""
        warnings.warn(
            f"samtune strategy {entry.name!r}{who} could not be loaded ({entry.error}); "
            "the other strategies still work",
            stacklevel=4,
        )
        return
    if not obj.distribution or obj.distribution != entry.distribution:
        obj.distribution = entry.distribution
    entry.cls = obj


def list_strategies() -> dict[str, str]:
    """Installed strategies that load: ``{name: one-line description}``, sorted by name."""
    out = {}
    for name, entry in _discover().items():
        _load(entry)
        if entry.cls is not None:
            out[name] = entry.cls.description
    return out


def broken_strategies() -> dict[str, str]:
    """Installed strategy entry points that failed to load: ``{name: reason}``."""
    out = {}
    for name, entry in _discover().items():
        _load(entry)
        if entry.error:
            who = f" (package {entry.distribution})" if entry.distribution else ""
            out[name] = entry.error + who
    return out


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under ``name``.

    Raises:
        UnknownNameError: ``name`` is not installed (the message lists the installed ones).
        MissingDependencyError: ``name`` is installed but its code failed to load.
    """
    entries = _discover()
    entry = entries.get(name)
    if entry is None:
        installed = ", ".join(list_strategies()) or "(none)"
        raise UnknownNameError(
            f"strategy {quote_untrusted(name)} is not installed; installed strategies: {installed}. "
            "Third-party strategies come from packages that declare a "
            f"'{GROUP}' entry point (pip install the package that provides it)"
        )
    _load(entry)
    if entry.cls is None:
        raise MissingDependencyError(
            f"strategy {name!r} is installed (package {entry.distribution or 'unknown'!r}) but "
            f"failed to load: {entry.error}. Reinstall or fix that package"
        )
    return entry.cls


def get_strategy(name: str, **config: Any) -> Strategy:
    """A configured strategy: ``get_strategy("lora", rank=16)``.

    Raises:
        UnknownNameError: no strategy of that name is installed.
        ConfigError: an unknown option or an invalid value.
    """
    return strategy_class(name)(**config)


def default_config(name: str) -> dict[str, Any]:
    """The default config of strategy ``name`` as a JSON-able dict."""
    return strategy_class(name).config_class().to_dict()

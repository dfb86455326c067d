"""Lazy package exports (PEP 562): a name is imported from its submodule on first use.

``samtune``, ``samtune.models``, ``samtune.evaluation``, ``samtune.segment``, ``samtune.suite``
and ``samtune.train`` export names this way, so importing
them (and the command line's help, which reads the option dataclasses) loads no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_getattr(
    namespace: dict[str, Any], exports: Mapping[str, str], submodules: Iterable[str] = ()
) -> Callable[[str], Any]:
    """A module ``__getattr__``: ``exports`` maps a public name to its module (absolute, or
    relative to the package with a leading dot); ``submodules`` are reachable as attributes
    without an import statement, as eager imports once made them."""
    package = namespace["__name__"]
    submodules = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    return __getattr__

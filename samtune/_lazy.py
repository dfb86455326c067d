"""Lazy package exports (PEP 562): a name is imported from its submodule on first use.

``samtune``, ``samtune.evaluate`` and ``samtune.train`` export names this way, so importing
them (and the command line's help, which reads the option dataclasses) loads no torch.
"""

from __future__ import annotations

import importlib
import sys
import types
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


class _CallableModule(types.ModuleType):
    """A module that, called, calls its function of the same name (see :func:`make_callable`)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


def make_callable(module_name: str) -> None:
    """Make the module ``module_name`` callable as its function of the same name.

    ``samtune.evaluate`` and ``samtune.predict`` are both a function (the public API) and a
    module of the package; importing the module binds it to that name of ``samtune``, after
    which ``samtune.evaluate(...)`` would call a module. Called, such a module calls its
    function (``samtune.evaluate.evaluate``, ``samtune.predict.predict``).
    """
    sys.modules[module_name].__class__ = _CallableModule

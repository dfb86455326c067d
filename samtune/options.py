"""The one option machinery: every options dataclass of samtune derives from :class:`Options`.

:class:`~samtune.train.config.FitConfig`, :class:`~samtune.evaluation.config.EvalConfig`,
:class:`~samtune.segment.automatic_config.AutoMaskConfig` and every strategy's config
(:class:`~samtune.strategies.StrategyConfig`) are :class:`Options`: on construction each field
is normalised and type-checked from its annotation (:func:`check_type`), then the class's
:meth:`Options.validate` checks values with :func:`check_range`, :func:`check_seed`,
:func:`check_device` -- one set of checks, one wording of "expected / found". A field's help
text is its ``metadata["help"]`` (the command line shows it).

Precedence, the same everywhere (:func:`merge_options`): options given explicitly (CLI options
the user typed, ``fit(**options)``) override the YAML file given with ``config=``, which
overrides the defaults. "Not given" is :data:`NOT_GIVEN`, not ``None``: ``None`` is a value
where a field allows it (``val_split=None`` turns validation off).

This module imports no torch, so the command line's help stays fast.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError, quote_untrusted


class _NotGiven(enum.Enum):
    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "NOT_GIVEN"


# An option the caller did not give (the file's value, else the default, applies): distinct
# from None, which is a value.
NOT_GIVEN = _NotGiven.NOT_GIVEN


class Options:
    """What samtune's option dataclasses share (``FitConfig``, ``EvalConfig``, ``AutoMaskConfig``,
    every ``StrategyConfig``).

    On construction every field is normalised (paths become text, YAML's ``off`` the word
    again, a single value for a list field a list of one) and :meth:`validate` checks every
    field's type against its annotation; subclasses add the checks of values. A field's help
    text is its ``metadata["help"]``.
    """

    # what the options are called in messages: "unknown training option(s) ..."
    noun = "option"
    # fields that name files or folders: a path is accepted and stored as text
    path_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _normalize(type(self), f.name, getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Check every field's type (ConfigError naming the field, what it expects, the value)."""
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            check_type(f.name, getattr(self, f.name), hints[f.name], f.metadata.get("expected"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[OptionsT], data: Mapping[str, Any]) -> OptionsT:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known), key=str)
        if unknown:
            raise ConfigError(
                f"unknown {cls.noun}(s) {', '.join(map(str, unknown))}; known options: "
                f"{', '.join(sorted(known))}"
            )
        return cls(**data)

    @classmethod
    def read_file(cls, path: str | os.PathLike) -> dict[str, Any]:
        """The options in a YAML file (a mapping of field names), as :meth:`from_dict` takes."""
        from .io import read_yaml_mapping

        return read_yaml_mapping(path, f"{cls.noun}s")

    @classmethod
    def field_help(cls, name: str) -> str:
        """The help text of option ``name`` (its field's ``metadata["help"]``)."""
        return cls.__dataclass_fields__[name].metadata.get("help", "")

    @classmethod
    def field_default(cls, name: str) -> Any:
        """The default of option ``name``."""
        f = cls.__dataclass_fields__[name]
        return f.default_factory() if f.default is dataclasses.MISSING else f.default


OptionsT = TypeVar("OptionsT", bound="Options")


# YAML 1.1 reads the bare words on/off/no as booleans: give these fields the word back.
_YAML_WORDS: dict[str, dict[bool, str]] = {
    "cache": {True: "on", False: "off"},
    "mixed_precision": {False: "no"},
    "compile": {False: "no"},
    "log_with": {False: "no"},
}


# A number YAML 1.1 reads as text (``1e-4`` needs a dot to be a float there).
_NUMBER_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _normalize(cls: type[Options], name: str, value: Any) -> Any:
    """Undo what YAML and pathlib do to values whose meaning is plain."""
    if isinstance(value, bool) and value in _YAML_WORDS.get(name, {}):
        return _YAML_WORDS[name][value]
    kinds = _union_args(_hints(cls)[name])[0]
    if any(typing.get_origin(k) is list for k in kinds):
        plain = [k for k in kinds if typing.get_origin(k) not in (list, tuple)]
        if isinstance(value, (str, os.PathLike)) and not any(_matches(value, k) for k in plain):
            value = [value]  # one value for a list of them
        if name in cls.path_fields and isinstance(value, (list, tuple)):
            return [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
    if name in cls.path_fields and isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()) and float in kinds:
        return float(value)
    return value


def _union_args(hint: Any) -> tuple[list[Any], bool]:
    """(the non-None types of ``hint``, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
    else:
        args = (hint,)
    return [a for a in args if a is not type(None)], type(None) in args


def _matches(value: Any, kind: Any) -> bool:
    origin = typing.get_origin(kind) or kind
    if kind is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, k) for k in typing.get_args(kind))
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is str:
        return isinstance(value, str)
    if isinstance(origin, type) and issubclass(origin, os.PathLike) or kind is Path:
        return isinstance(value, (str, os.PathLike))
    if origin is dict:
        return isinstance(value, dict)
    if origin in (list, tuple):
        inner = typing.get_args(kind)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_matches(v, inner[0]) for v in value)
    return isinstance(value, origin) if isinstance(origin, type) else True


def _describe(kind: Any) -> str:
    origin = typing.get_origin(kind) or kind
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             dict: "a mapping (key: value)"}  # fmt: skip
    if origin in names:
        return names[origin]
    if origin in (list, tuple):
        inner = (typing.get_args(kind) or (Any,))[0]
        return "a list" if inner is Any else f"{_describe(inner)} or a list of them"
    if kind is Path or isinstance(origin, type) and issubclass(origin, os.PathLike):
        return "a path"
    return getattr(kind, "__name__", str(kind))


def check_type(name: str, value: Any, hint: Any, expected: str | None = None) -> None:
    """ConfigError naming ``name``, the type ``hint`` expects and ``value``, if they differ.

    ``hint`` is a type annotation (``int``, ``float | None``, ``list[str]``, ``Path``...);
    ``True`` is not an integer and text is not a number. A ``list[X]`` also takes one ``X``.
    """
    kinds, nullable = _union_args(hint)
    if value is None and nullable:
        return
    for kind in kinds:
        if _matches(value, kind):
            return
        if typing.get_origin(kind) in (list, tuple) and _matches(
            value, (typing.get_args(kind) or (Any,))[0]
        ):
            return
    if expected is None:  # a field's metadata["expected"] words it for the user
        expected = " or ".join(_describe(k) for k in kinds) + (" or null" if nullable else "")
    raise ConfigError(
        f"{name} must be {expected}; found {type(value).__name__} {quote_untrusted(value)}"
    )


def check_range(
    name: str, value: Any, *, minimum: float, strict: bool = False, integer: bool | None = None
) -> None:
    """ConfigError unless ``value`` (None passes) is finite and >= ``minimum`` (> if ``strict``)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"{name} must be a number; found {type(value).__name__} {quote_untrusted(value)}"
        )
    if integer and not isinstance(value, int):
        raise ConfigError(
            f"{name} must be an integer; found {type(value).__name__} {quote_untrusted(value)}"
        )
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number {bound}; found {quote_untrusted(value)}")
    if value < minimum or (strict and value == minimum):
        if isinstance(value, int) and minimum == 1 and not strict:
            bound = "a positive integer (>= 1)"
        raise ConfigError(f"{name} must be {bound}; found {quote_untrusted(value)}")


def check_seed(name: str, value: Any) -> None:
    """A random seed: an integer in 0 .. 2**32 - 1 (what NumPy accepts)."""
    check_range(name, value, minimum=0, integer=True)
    if value is not None and value >= 2**32:
        raise ConfigError(f"{name} must be < 2**32 (4294967296); found {quote_untrusted(value)}")


DEVICE_TYPES = ("cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """The devices samtune can run a model on here: ``cpu``, each CUDA GPU, ``mps``."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_device(name: str, value: Any) -> Any:
    """``value`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) as a ``torch.device`` that can run
    a model on this machine. ``meta`` (no data), unknown names and devices this machine
    lacks are refused, with the devices that are available.

    Raises:
        ConfigError: naming ``name``, the value and the available devices.
    """
    import torch

    available = available_devices()
    use = f"use one of: {', '.join(available)} (the devices of this machine)"
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{name} {quote_untrusted(value)} is not a device; {use}") from None
    if device.type not in DEVICE_TYPES:
        raise ConfigError(f"{name} {str(value)!r} cannot run a model; {use}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{name} {str(value)!r}: no CUDA GPU is available; {use}")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"{name} {str(value)!r}: there are only {torch.cuda.device_count()} CUDA GPU(s); {use}"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{name} {str(value)!r}: MPS is not available; {use}")
    return device


def merge_options(
    cls: type[OptionsT],
    config: str | os.PathLike | Mapping[str, Any] | OptionsT | None = None,
    given: Mapping[str, Any] | None = None,
) -> OptionsT:
    """The one way samtune merges options: defaults < ``config`` < ``given``.

    Args:
        cls: the options dataclass (:class:`FitConfig`, ``EvalConfig``).
        config: a YAML file (read with ``cls.read_file``), a mapping, an instance of ``cls``,
            or None (defaults only).
        given: the options set explicitly (what the user typed on the command line, a
            function's keyword arguments). :data:`NOT_GIVEN` values are skipped; ``None`` is
            a value where the field allows it (``val_split=None``: no validation), elsewhere
            it is the same as not given. A mapping (``strategy_options``) updates the
            config's mapping key by key.

    Raises:
        ConfigError: an unknown option, or a wrong type or value (naming the option).
        MissingFileError: ``config`` names no file.
    """
    if isinstance(config, cls):
        base = config.to_dict()
    elif isinstance(config, Mapping):
        base = dict(config)
    elif isinstance(config, (str, os.PathLike)):
        base = cls.read_file(config)
    elif config is None:
        base = {}
    else:
        raise ConfigError(
            f"config must be a YAML file, a mapping or a {cls.__name__}; found "
            f"{type(config).__name__}"
        )
    hints = _hints(cls)
    for key, value in (given or {}).items():
        if value is NOT_GIVEN or value is None and key in hints and not _union_args(hints[key])[1]:
            continue
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            value = {**base[key], **value}
        base[key] = value
    return cls.from_dict(base)


def parse_key_values(items: list[str] | None) -> dict[str, Any]:
    """``["r=8", "alpha=16.0", "targets=[qkv]"]`` -> ``{"r": 8, "alpha": 16.0, ...}`` (YAML values)."""
    import yaml

    from .io import parse_yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value (e.g. r=8); found {quote_untrusted(item)}")
        try:
            out[key.strip()] = parse_yaml(value, f"the value of {key.strip()!r}")
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def check_prompt_map(value: Any) -> dict[str, str]:
    """``value`` as ``{category name: phrase}``; ConfigError for a non-text key or an empty phrase."""
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"prompt_map must be a mapping of category name to phrase; found "
            f"{type(value).__name__} {quote_untrusted(value)}"
        )
    for name, phrase in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"prompt_map keys must be category names (text); found {quote_untrusted(name)}"
            )
        if not isinstance(phrase, str):
            raise ConfigError(
                f"prompt_map gives category {quote_untrusted(name)} the phrase "
                f"{quote_untrusted(phrase)}; a phrase must be text: quote it in YAML"
            )
        if not phrase.strip():
            raise ConfigError(
                f"prompt_map gives category {quote_untrusted(name)} an empty phrase "
                f"({quote_untrusted(phrase)}): give it words, or drop the entry to use its name"
            )
    return dict(value)

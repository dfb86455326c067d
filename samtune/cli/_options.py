"""Command-line options made from samtune's option dataclasses (FitConfig, EvalConfig).

A command names its dataclass once, ``FIT = Fields("samtune.train.config:FitConfig")``,
declares each option as ``Annotated[int | None, FIT.option("epochs")] = None`` and is
registered with ``context_settings=FIT.settings()``: help texts and shown defaults come from
the dataclass fields, and :func:`given` hands the library only what the user typed, which it
merges over the YAML file and the defaults (:func:`samtune.train.config.merge_options`).

The dataclass is imported when typer builds the command (the annotations are text until
then: ``from __future__ import annotations``), so ``import samtune.cli`` loads no torch.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

import typer


class Fields:
    """The options dataclass ``"module:Class"`` of one command, imported on first use."""

    def __init__(self, target: str) -> None:
        self._target = target

    @functools.cached_property
    def cls(self) -> Any:
        module, _, name = self._target.partition(":")
        return getattr(importlib.import_module(module), name)

    def option(self, name: str, *flags: str, **kwargs: Any) -> Any:
        """A ``typer.Option`` for field ``name``; its help text is the field's ``metadata["help"]``.

        ``flags`` are the option's names (default ``--name-with-dashes``).
        """
        return typer.Option(*flags, help=self.cls.field_help(name), **kwargs)

    def settings(self) -> dict[str, Any]:
        """The command's ``context_settings``: the fields' defaults as its ``default_map``.

        Help shows them (``[default: demo]``), and an option the user did not type has the
        source ``DEFAULT_MAP``, which :func:`given` leaves out.
        """
        return {"default_map": _Defaults(self)}


class _Defaults(Mapping[str, Any]):
    """``{field: default}`` of a :class:`Fields`' dataclass, computed on first use."""

    def __init__(self, fields: Fields) -> None:
        self._fields = fields

    @functools.cached_property
    def _values(self) -> dict[str, Any]:
        cls = self._fields.cls
        return {name: cls.field_default(name) for name in cls.__dataclass_fields__}

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def given(ctx: typer.Context) -> dict[str, Any]:
    """The command's parameters the user set (on the command line or through the environment).

    Parameters left at their default are left out: the YAML file's value, else the library's
    default, applies to them.
    """
    out = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)  # typer vendors click: compare names, not enums
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            out[name] = value
    return out


# The base model and adapter options of the commands that run a model on new images (predict,
# segment, serve): one declaration, one help text.
ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Base model: preset, local folder or .pth, hub id.")
]
AdapterOption = Annotated[
    str | None, typer.Option("--adapter", "-a", help="Adapter folder or hub id.")
]


def parse_phrases(items: list[str]) -> dict[str, str]:
    """``["trash_plastic=plastic trash"]`` -> ``{"trash_plastic": "plastic trash"}`` (text as typed)."""
    from ..errors import ConfigError, quote_untrusted

    out = {}
    for item in items:
        name, sep, phrase = item.partition("=")
        if not sep or not name:
            raise ConfigError(
                f"--prompt-map expects NAME=PHRASE (e.g. trash_plastic='plastic trash'); found "
                f"{quote_untrusted(item)}"
            )
        out[name] = phrase
    return out

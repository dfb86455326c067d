"""``samtune strategies``: the installed adaptation strategies, their descriptions and defaults."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def strategies(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List installed strategies: name, one-line description, default config.

    Strategies come from the `samtune.strategies` entry-point group: samtune's built-ins and
    any installed plugin package. A plugin that fails to load is listed under "broken".

    Examples:

        samtune strategies

        samtune strategies --json
    """
    import warnings

    from ..strategies import registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # broken plugins are listed below instead
        names = registry.list_strategies()
        broken = registry.broken_strategies()
    info = {}
    for name, description in names.items():
        cls = registry.strategy_class(name)
        strategy = cls()
        info[name] = {
            "description": description,
            "package": cls.distribution,
            "freezes_image_encoder": strategy.freezes_image_encoder,
            "config": strategy.config.to_dict(),
        }
    if as_json:
        typer.echo(json.dumps({**info, **({"_broken": broken} if broken else {})}, indent=2))
        return
    for name, entry in info.items():
        typer.echo(f"{name:<10} {entry['description']}")
        package = "" if entry["package"] in ("samtune", "") else f"  (from {entry['package']})"
        typer.echo(f"{'':<10} defaults: {json.dumps(entry['config'])}{package}")
    for name, reason in broken.items():
        typer.echo(f"{name:<10} BROKEN: {reason}")


def register(app: typer.Typer) -> None:
    app.command()(strategies)

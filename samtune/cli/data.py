"""``samtune data download|info|list``: get a dataset recipe's files and summarise them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

data_app = typer.Typer(
    help="Datasets: download a recipe's files, list recipes, count images and instances.",
    no_args_is_help=True,
)


@data_app.command("list")
def list_cmd() -> None:
    """List the dataset recipes.

    Examples:

        samtune data list
    """
    from ..data.recipes import RECIPES

    for name, recipe in RECIPES.items():
        typer.echo(f"{name:<18} {recipe.title}")


def _checksums(values: list[str] | None) -> dict[str, str]:
    """``FILE=md5:<hex>`` / ``FILE=sha256:<hex>`` options -> ``{FILE: "md5:<hex>"}``."""
    from ..data.download import parse_checksum
    from ..errors import ConfigError

    out = {}
    for value in values or []:
        filename, sep, digest = value.partition("=")
        if not sep or not filename:
            raise ConfigError(
                f"--checksum takes FILE=md5:<hex> or FILE=sha256:<hex>; found {value!r}"
            )
        parse_checksum(filename, digest)
        out[filename] = digest
    return out


@data_app.command()
def download(
    name: Annotated[
        str, typer.Argument(help="Recipe: trashcan, trashcan-material, zerowaste, taco, demo.")
    ],
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Dataset folder (default $SAMTUNE_DATA/<name>)."),
    ] = None,
    route: Annotated[
        str,
        typer.Option(
            "--route",
            help="TACO's images: 'archive' (TACO.zip from Zenodo, checksum-verified) or "
            "'per-image' (each image from its Flickr/OpenLitterMap URL; many are dead).",
        ),
    ] = "archive",
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="SAMTUNE_DATA_PASSWORD",
            help="Password of an encrypted (ZipCrypto) archive, as its publisher gives it.",
        ),
    ] = None,
    checksum: Annotated[
        list[str] | None,
        typer.Option(
            "--checksum",
            help="FILE=md5:<hex> or FILE=sha256:<hex>: verify FILE against this instead of "
            "the published checksum and size (another version of the file).",
        ),
    ] = None,
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing",
            help="TACO: finish with a note counting the images that could not be had, "
            "instead of an error.",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Download, verify and extract a dataset (resumable; re-running is safe).

    Archives put in the folder by hand (for publishers that require a form) are verified and
    extracted without downloading. Published checksums and sizes are verified. Set
    SAMTUNE_TRASHCAN_URL / SAMTUNE_ZEROWASTE_URL / SAMTUNE_TACO_URL /
    SAMTUNE_TACO_ARCHIVE_URL to use a mirror.

    Examples:

        samtune data download zerowaste

        samtune data download trashcan --root ~/data/trashcan

        samtune data download taco --route per-image --allow-missing

        samtune data download demo
    """
    from ..data.download import describe_recipe, download_dataset
    from ..data.recipes import get_recipe

    recipe = get_recipe(name)
    checksums = _checksums(checksum)
    if not quiet:
        typer.echo(describe_recipe(recipe))
    folder = download_dataset(
        name,
        root,
        quiet=quiet,
        route=route,
        password=password,
        checksums=checksums,
        allow_missing=allow_missing,
    )
    typer.echo(f"{name} ready in {folder}")


@data_app.command()
def info(
    name: Annotated[str, typer.Argument(help="Recipe name, or 'coco' with --root.")],
    root: Annotated[Path | None, typer.Option("--root", help="Dataset folder.")] = None,
    split: Annotated[
        list[str] | None, typer.Option("--split", help="Split(s) to count (default: all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Count images and instances per split and class (reads only the annotation files).

    Examples:

        samtune data info demo

        samtune data info trashcan --root ~/data/trashcan --split val

        samtune data info coco --root ./my_coco --json
    """
    from ..data.recipes import get_recipe, load_dataset

    recipe = get_recipe(name)
    splits = split or list(recipe.splits or ("train", "val", "test"))
    report = {}
    for s in splits:
        try:
            ds = load_dataset(name, s, root, check_files=False)
        except FileNotFoundError:
            if name == "coco" and not split:
                continue  # a COCO folder need not have every split
            raise
        report[s] = ds.stats()
    if not report:
        from ..errors import MissingFileError

        raise MissingFileError(f"no split of {name!r} found in {str(root)!r}")
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(recipe.title)
    for s, st in report.items():
        typer.echo(
            f"{s:<6} {st['images']} images ({st['empty_images']} without instances), "
            f"{st['instances']} instances ({st['crowd']} crowd)"
        )
    classes = list(next(iter(report.values()))["per_class"])
    width = max(len(c) for c in classes) if classes else 5
    typer.echo(f"{'class':<{width}}  " + "  ".join(f"{s:>7}" for s in report))
    for c in classes:
        typer.echo(f"{c:<{width}}  " + "  ".join(f"{report[s]['per_class'][c]:>7}" for s in report))


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")

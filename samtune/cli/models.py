"""``samtune info`` and ``samtune convert``: load a SAM from any source, write it in either format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UnknownNameError

FORMATS = ("hf", "segment-anything")


def info(
    source: Annotated[
        str,
        typer.Argument(
            help="Preset (tiny, demo, vit-b-random...), local folder or .pth, or hub id."
        ),
    ] = "tiny",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Load a SAM model and print its size, preprocessing and weight fingerprint.

    Examples:

        samtune info tiny

        samtune info ./sam_vit_b_01ec64.pth

        samtune info facebook/sam-vit-base --json
    """
    from ..models import describe, load_model

    summary = describe(load_model(source))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    p = summary["parameters"]
    e = summary["encoder"]
    typer.echo(f"source        {summary['source']}")
    typer.echo(f"image size    {summary['image_size']} px")
    typer.echo(f"encoder       ViT width {e['width']}, depth {e['depth']}, heads {e['heads']}")
    typer.echo(
        f"parameters    {p['total']:,} (image encoder {p['image_encoder']:,}, prompt encoder "
        f"{p['prompt_encoder']:,}, mask decoder {p['mask_decoder']:,})"
    )
    typer.echo(f"fingerprint   {summary['fingerprint']}")


def convert(
    source: Annotated[
        str, typer.Argument(help="Model to convert: .pth, HF folder, hub id or preset.")
    ],
    output: Annotated[
        Path, typer.Argument(help="Output folder (hf) or .pth file (segment-anything).")
    ],
    to: Annotated[str, typer.Option("--to", help="Output format: hf or segment-anything.")] = "hf",
) -> None:
    """Convert between Meta segment-anything checkpoints and Hugging Face SamModel folders.

    Examples:

        samtune convert sam_vit_b_01ec64.pth ./sam-vit-b-hf --to hf

        samtune convert ./sam-vit-b-hf ./sam_vit_b.pth --to segment-anything
    """
    from ..convert import save_meta_checkpoint
    from ..io import atomic_dir
    from ..models import load_model

    if to not in FORMATS:
        raise UnknownNameError(f"unknown format {to!r}; choose one of {', '.join(FORMATS)}")
    model = load_model(source)
    if to == "hf":
        with atomic_dir(output) as tmp:
            model.save_pretrained(tmp)
    else:
        save_meta_checkpoint(model, output)
    typer.echo(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.command()(info)
    app.command()(convert)

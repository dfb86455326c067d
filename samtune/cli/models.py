"""``samtune info`` and ``samtune convert``: load a SAM from any source, write it in either format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UnknownNameError

FORMATS = ("hf", "original", "segment-anything")  # the last: original, kept for SAM users

_HEADS = typer.Option(
    "--decoder-heads",
    min=1,
    help="Meta .pth without a samtune sidecar: the mask decoder's attention heads (Meta: 8).",
)
_EPS = typer.Option(
    "--decoder-eps",
    min=1e-12,
    help="Meta .pth without a samtune sidecar: the mask decoder's LayerNorm epsilon (Meta: 1e-5).",
)


def info(
    source: Annotated[
        str,
        typer.Argument(
            help="Preset (tiny, demo, vit-b-random...), local folder or .pth, or hub id."
        ),
    ] = "tiny",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    decoder_heads: Annotated[int | None, _HEADS] = None,
    decoder_eps: Annotated[float | None, _EPS] = None,
) -> None:
    """Load a SAM model and print its size, preprocessing and weight fingerprint.

    Examples:

        samtune info tiny

        samtune info ./sam_vit_b_01ec64.pth

        samtune info facebook/sam-vit-base --json
    """
    from ..models.loading import describe, load_model

    model = load_model(source, decoder_num_heads=decoder_heads, decoder_layer_norm_eps=decoder_eps)
    summary = describe(model)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    p = summary["parameters"]
    e = summary["encoder"]
    typer.echo(f"source        {summary['source']}")
    typer.echo(f"family        {summary['family']} ({summary['class']})")
    typer.echo(f"image size    {summary['image_size']} px")
    d = summary["decoder"]
    typer.echo(
        f"encoder       {e['kind']} width {e['width']}, depth {e['depth']}, heads {e['heads']}"
    )
    if "text_encoder" in summary:  # SAM 3: prompted by name
        _echo_text_model(summary)
        return
    typer.echo(
        f"decoder       width {d['width']}, depth {d['depth']}, heads {d['heads']}, "
        f"LayerNorm eps {d['layer_norm_eps']:g}"
    )
    typer.echo(
        f"parameters    {p['total']:,} (image encoder {p['image_encoder']:,}, prompt encoder "
        f"{p['prompt_encoder']:,}, mask decoder {p['mask_decoder']:,})"
    )
    typer.echo(f"fingerprint   {summary['fingerprint']}")


def _echo_text_model(summary: dict) -> None:
    """The rest of ``samtune info`` for a model prompted by name (SAM 3)."""
    t, d, p = summary["text_encoder"], summary["decoder"], summary["parameters"]
    tokenizer = "" if t["tokenizer"] else " (no tokenizer found: it cannot read phrases)"
    typer.echo(
        f"text encoder  {t['kind']} width {t['width']}, depth {t['depth']}, heads "
        f"{t['heads']}, at most {t['max_tokens']} tokens{tokenizer}"
    )
    typer.echo(
        f"decoder       DETR width {d['width']}, depth {d['depth']}, heads {d['heads']}, "
        f"{d['queries']} queries"
    )
    parts = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in p.items() if k != "total")
    typer.echo(f"parameters    {p['total']:,} ({parts})")
    typer.echo(f"fingerprint   {summary['fingerprint']}")


def convert(
    source: Annotated[
        str, typer.Argument(help="Model to convert: .pth, HF folder, hub id or preset.")
    ],
    output: Annotated[Path, typer.Argument(help="Output folder (hf) or .pth/.pt file (original).")],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="Output format: hf, or original (the model family's own .pth/.pt: "
            "segment-anything, SAM-HQ or SAM 2; 'segment-anything' is an alias).",
        ),
    ] = "hf",
    decoder_heads: Annotated[int | None, _HEADS] = None,
    decoder_eps: Annotated[float | None, _EPS] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an OUTPUT that samtune wrote earlier.")
    ] = False,
) -> None:
    """Convert between original checkpoints (SAM, SAM-HQ, SAM 2) and Hugging Face folders.

    Examples:

        samtune convert sam_vit_b_01ec64.pth ./sam-vit-b-hf --to hf

        samtune convert ./sam-vit-b-hf ./sam_vit_b.pth --to original

        samtune convert sam2.1_hiera_small.pt ./sam2.1-small-hf --to hf

    A Meta .pth does not record the mask decoder's attention heads or LayerNorm epsilon;
    samtune writes them to a sidecar (OUTPUT.samtune.json) and reads it back. For a .pth
    without one, Meta's values are assumed (with a note); --decoder-heads / --decoder-eps
    state them instead.
    """
    from ..io import atomic_dir
    from ..models.convert import save_original_checkpoint
    from ..models.loading import load_model

    if to not in FORMATS:
        raise UnknownNameError(f"unknown format {to!r}; choose one of {', '.join(FORMATS)}")
    model = load_model(source, decoder_num_heads=decoder_heads, decoder_layer_norm_eps=decoder_eps)
    if to == "hf":
        from ..export.formats import save_hf_folder

        with atomic_dir(output, overwrite=overwrite, protect=[source]) as tmp:
            save_hf_folder(model, tmp)
    else:
        save_original_checkpoint(model, output, overwrite=overwrite)
    typer.echo(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.command()(info)
    app.command()(convert)

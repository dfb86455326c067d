"""``samtune predict``: masks for boxes/points on images, as PNG and COCO RLE JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._options import AdapterOption, ModelOption


def predict_command(
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    model: ModelOption = "demo",
    adapter: AdapterOption = None,
    boxes: Annotated[
        str | None,
        typer.Option("--boxes", "-b", help="'x0,y0,x1,y1;...' in image pixels, one mask each."),
    ] = None,
    points: Annotated[
        str | None,
        typer.Option("--points", help="'x,y;...' positive points, one mask each."),
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option("--prompts", help="JSON prompts file (boxes/points/labels, or per image)."),
    ] = None,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Folder; each image's results go to <output>/<stem>/."),
    ] = Path("predictions"),
    overlay: Annotated[
        bool, typer.Option("--overlay", help="Also write <stem>_overlay.png.")
    ] = False,
    multimask: Annotated[
        bool,
        typer.Option("--multimask", help="3 candidates per prompt, keep the IoU head's best."),
    ] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 ...")] = "cpu",
) -> None:
    """Segment objects in images from box or point prompts.

    For each image writes the folder <output>/<stem>/ with <stem>_mask<i>.png (0/255, one per
    prompt) and <stem>.json (COCO RLE per mask, with score, area, bbox and the prompt), plus
    <stem>_overlay.png with --overlay. A rerun replaces that folder as a whole; a folder holding
    files samtune did not write is never replaced. Two images with the same stem (a.png,
    a.jpg) are refused: give them different --output folders. All images and prompts are
    checked before anything is written.

    Examples:

        samtune predict photo.jpg --boxes "10,20,200,180;220,40,300,160" -m demo

        samtune predict a.jpg b.jpg --points "64,80" --multimask --overlay -o out/

        samtune predict *.jpg --prompts prompts.json -m facebook/sam-vit-base --adapter runs/lora/adapter
    """

    from ..segment.prompted import predict_files, prompt_table

    def report(path: Path, folder: Path, n: int) -> None:
        typer.echo(f"{path}: {n} mask(s) in {folder}")

    table = prompt_table(boxes, points, prompts)
    predict_files(model, images, table, output, adapter=adapter, overlay=overlay,
                  multimask=multimask, device=device, on_image=report,
                  protect=[prompts] if prompts is not None else [])  # fmt: skip
    typer.echo(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)

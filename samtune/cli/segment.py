"""``samtune segment``: every object in images, no prompts (automatic mask generation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._options import Fields, given

AUTO = Fields("samtune.segment.automatic_config:AutoMaskConfig")


def segment_command(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Base model: preset, local folder or .pth, hub id.")
    ] = "demo",
    adapter: Annotated[
        str | None, typer.Option("--adapter", "-a", help="Adapter folder or hub id.")
    ] = None,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Folder; each image's results go to <output>/<stem>/."),
    ] = Path("segments"),
    points_per_side: Annotated[int | None, AUTO.option("points_per_side")] = None,
    points_per_batch: Annotated[int | None, AUTO.option("points_per_batch")] = None,
    pred_iou_thresh: Annotated[float | None, AUTO.option("pred_iou_thresh")] = None,
    stability_score_thresh: Annotated[float | None, AUTO.option("stability_score_thresh")] = None,
    crop_n_layers: Annotated[int | None, AUTO.option("crop_n_layers")] = None,
    box_nms_thresh: Annotated[float | None, AUTO.option("box_nms_thresh")] = None,
    min_mask_region_area: Annotated[int | None, AUTO.option("min_mask_region_area")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 ...")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Segment everything in images, without prompts (SAM's automatic mask generator).

    A grid of points is decoded on one encoding per image; masks are filtered by predicted IoU
    and stability, de-duplicated with NMS and written per image to <output>/<stem>/:
    <stem>.json (COCO-style results: RLE, bbox, area, score = predicted IoU, stability),
    <stem>_labels.png (0 background, i for mask i; 16-bit past 255 masks) and
    <stem>_overlay.png. A folder stands for the images in it. Everything is checked before
    the model loads.

    Examples:

        samtune segment photo.jpg -m demo -o out/

        samtune segment images/ -m facebook/sam-vit-base --adapter runs/lora --points-per-side 16
    """
    from ..options import merge_options
    from ..segment.automatic import segment_files
    from ..segment.automatic_config import AutoMaskConfig
    from ..segment.prompted import expand_images

    options = {k: v for k, v in given(ctx).items() if k in AutoMaskConfig.__dataclass_fields__}
    cfg = merge_options(AutoMaskConfig, None, options)
    bar = _progress(len(expand_images(images)), enabled=not quiet)  # folders expanded

    def report(path: Path, folder: Path, n: int) -> None:
        bar(1, f"{path}: {n} mask(s) in {folder}")

    segment_files(model, images, output, cfg, adapter=adapter, device=device, on_image=report)
    bar(None, None)
    typer.echo(f"wrote {output}")


def _progress(total: int, *, enabled: bool):
    """A progress bar on a terminal (else one line per image); ``bar(None, None)`` closes it."""
    import sys

    if not enabled or not sys.stderr.isatty():
        return lambda n, line: typer.echo(line) if line else None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="segmenting", unit="img")
    return lambda n, line: bar.close() if n is None else bar.update(n)


def register(app: typer.Typer) -> None:
    app.command("segment", context_settings=AUTO.settings())(segment_command)

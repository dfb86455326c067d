"""``samtune segment``: every object in images, no prompts (automatic mask generation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from ._options import AdapterOption, Fields, ModelOption, given

AUTO = Fields("samtune.segment.automatic_config:AutoMaskConfig")


def segment_command(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    model: ModelOption = "demo",
    adapter: AdapterOption = None,
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
    text: Annotated[
        list[str] | None,
        typer.Option(
            "--text",
            "-t",
            help="Segment by name (SAM 3): every instance of this phrase; repeat for several.",
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes", help="Segment by name (SAM 3): the category names of this dataset recipe."
        ),
    ] = None,
    root: Annotated[
        Path | None, typer.Option("--root", help="--classes: the dataset's folder.")
    ] = None,
    score_threshold: Annotated[
        float | None,
        typer.Option("--score-threshold", help="By name: keep instances scored above this [0.5]."),
    ] = None,
    # not mask_threshold: that is AutoMaskConfig's (a logit), whose defaults the context fills
    probability_threshold: Annotated[
        float | None,
        typer.Option("--mask-threshold", help="By name: mask probability threshold [0.5]."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 ...")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Segment everything in images (SAM's automatic mask generator), or every instance of
    named things (--text / --classes, SAM 3).

    A grid of points is decoded on one encoding per image; masks are filtered by predicted IoU
    and stability, de-duplicated with NMS and written per image to <output>/<stem>/:
    <stem>.json (COCO-style results: RLE, bbox, area, score = predicted IoU, stability),
    <stem>_labels.png (0 background, i for mask i; 16-bit past 255 masks) and
    <stem>_overlay.png. A folder stands for the images in it. Everything is checked before
    the model loads.

    By name (a SAM 3 model): each phrase of --text (or each category name of the dataset
    recipe --classes) finds every instance of it; the image is encoded once. Each folder holds
    <stem>.json (COCO results: category_id, score, RLE; the categories), <stem>_labels.png
    (0 background, else the category id) and <stem>_overlay.png (named instances).

    Examples:

        samtune segment photo.jpg -m demo -o out/

        samtune segment photos/ -m facebook/sam3 --text "plastic bottle" --text can -o out/

        samtune segment photos/ -m facebook/sam3 --classes taco -o out/

        samtune segment images/ -m facebook/sam-vit-base --adapter runs/lora --points-per-side 16
    """
    from ..options import merge_options
    from ..segment.automatic import segment_files
    from ..segment.automatic_config import AutoMaskConfig
    from ..segment.prompted import expand_images

    options = {k: v for k, v in given(ctx).items() if k in AutoMaskConfig.__dataclass_fields__}
    if text or classes:
        _segment_by_name(images, model, adapter, output, text, classes, root, options,
                         score_threshold, probability_threshold, device, quiet)  # fmt: skip
        return
    for flag, value in (("--score-threshold", score_threshold),
                        ("--mask-threshold", probability_threshold), ("--root", root)):  # fmt: skip
        if value is not None:
            raise InputError(f"{flag} applies to segmenting by name (--text or --classes)")
    cfg = merge_options(AutoMaskConfig, None, options)
    bar = _progress(len(expand_images(images)), enabled=not quiet)  # folders expanded

    def report(path: Path, folder: Path, n: int) -> None:
        bar(1, f"{path}: {n} mask(s) in {folder}")

    segment_files(model, images, output, cfg, adapter=adapter, device=device, on_image=report)
    bar(None, None)
    typer.echo(f"wrote {output}")


def _segment_by_name(
    images, model, adapter, output, text, classes, root, auto_options, score_threshold,
    mask_threshold, device, quiet,
) -> None:  # fmt: skip
    """``samtune segment --text/--classes``: :func:`segment_files_by_name`, with progress."""
    from ..segment.named_files import phrase_table, segment_files_by_name
    from ..segment.prompted import expand_images

    if auto_options:
        flag = "--" + next(iter(auto_options)).replace("_", "-")
        raise InputError(
            f"{flag} applies to automatic segmentation, not to segmenting by name (--text, "
            "--classes); leave it out"
        )
    phrases = phrase_table(text, classes, root)
    bar = _progress(len(expand_images(images)), enabled=not quiet)

    def report(path: Path, folder: Path, n: int) -> None:
        bar(1, f"{path}: {n} instance(s) in {folder}")

    segment_files_by_name(
        model, images, output, phrases, adapter=adapter, device=device, on_image=report,
        score_threshold=0.5 if score_threshold is None else score_threshold,
        mask_threshold=0.5 if mask_threshold is None else mask_threshold,
    )  # fmt: skip
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

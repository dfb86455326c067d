"""``samtune segment``: every object in images, no prompts (automatic mask generation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from ._options import Fields, given
from .predict import _check_device, _check_outputs, _output_folders

AUTO = Fields("samtune.automatic_config:AutoMaskConfig")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""What a folder given to ``samtune segment`` is searched for (case-insensitive)."""


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
    from ..automatic_config import AutoMaskConfig
    from ..models import load_model
    from ..predict import load_image_file
    from ..train.config import merge_options

    options = {k: v for k, v in given(ctx).items() if k in AutoMaskConfig.__dataclass_fields__}
    cfg = merge_options(AutoMaskConfig, None, options)
    paths = expand_images(images)
    targets = _output_folders(paths, output)
    _check_outputs(paths, targets, output, paths)
    for path in paths:
        load_image_file(path)  # decodes it all: a file that is not an image fails here
    _check_device(device)
    if adapter is not None:  # a missing or broken adapter fails before the model loads
        from ..adapters import read_adapter

        read_adapter(adapter)
    sam = load_model(model)
    if adapter is not None:
        from ..adapters import load_adapter

        sam = load_adapter(sam, adapter)
    sam = sam.to(device)
    bar = _progress(len(paths), enabled=not quiet)
    for path, target in zip(paths, targets, strict=True):
        n = write_segmentation(sam, path, target, cfg, protect=paths)
        bar(1, f"{path}: {n} mask(s) in {target}")
    bar(None, None)
    typer.echo(f"wrote {output}")


def expand_images(items: list[Path]) -> list[Path]:
    """The image files named, a folder standing for its images (sorted, not recursive).

    Raises:
        MissingFileError: a path that does not exist. InputError: a folder without images.
    """
    from ..errors import MissingFileError

    out: list[Path] = []
    for item in items:
        if not item.exists():
            raise MissingFileError(f"image {str(item)!r} does not exist")
        if not item.is_dir():
            out.append(item)
            continue
        found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise InputError(
                f"folder {str(item)!r} holds no images (looked for "
                f"{', '.join(IMAGE_SUFFIXES)}); give image files or a folder of them"
            )
        out += found
    return out


def write_segmentation(model, path: Path, target: Path, cfg, *, protect=()) -> int:
    """Generate the masks of the image ``path`` and write the folder ``target`` as a whole
    (``<stem>.json``, ``<stem>_labels.png``, ``<stem>_overlay.png``); the number of masks."""
    import numpy as np
    from PIL import Image

    from ..automatic import generate_masks
    from ..evaluate.plots import overlay as blend
    from ..io import atomic_dir
    from ..predict import load_image_file

    image = load_image_file(path)
    found = generate_masks(model, image, cfg)
    doc = {
        "image": str(path),
        "height": image.shape[0],
        "width": image.shape[1],
        "options": cfg.to_dict(),
        "annotations": found.to_coco(),
    }
    labels = found.label_map()
    with atomic_dir(target, overwrite=True, protect=protect) as tmp:
        (tmp / f"{path.stem}.json").write_text(json.dumps(doc))
        dtype = np.uint8 if len(found) < 256 else np.uint16
        Image.fromarray(labels.astype(dtype)).save(tmp / f"{path.stem}_labels.png")
        out = image
        rng = np.random.default_rng(0)  # the same colours every run
        for i in range(len(found)):
            colour = tuple(int(v) for v in rng.integers(40, 256, 3))
            out = blend(out, {colour: labels == i + 1})
        Image.fromarray(out).save(tmp / f"{path.stem}_overlay.png")
    return len(found)


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

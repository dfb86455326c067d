"""``samtune predict``: masks for boxes/points on images, as PNG and COCO RLE JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError


def predict_command(
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Base model: preset, local folder or .pth, hub id.")
    ] = "demo",
    adapter: Annotated[
        str | None, typer.Option("--adapter", "-a", help="Adapter folder or hub id.")
    ] = None,
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
    from ..models import load_model
    from ..predict import load_image_file, parse_boxes, parse_points, read_prompts_file

    given = [x is not None for x in (boxes, points, prompts)]
    if not any(given):
        raise InputError("no prompts: give --boxes, --points or --prompts FILE")
    if prompts is not None and any(given[:2]):
        raise InputError("--prompts FILE cannot be combined with --boxes/--points")
    if prompts is not None:
        table = read_prompts_file(prompts)
    else:
        pts, lbl = parse_points(points) if points is not None else (None, None)
        table = {
            "*": {
                "boxes": parse_boxes(boxes) if boxes is not None else None,
                "points": pts,
                "labels": lbl,
            }
        }
    # Everything is checked before the model loads and before anything is written: a bad
    # prompt of the last image must not leave the first images' results behind.
    protect = [*images, *([prompts] if prompts is not None else [])]
    targets = _output_folders(images, output)
    _check_outputs(images, targets, output, protect)
    jobs = []
    for path, target in zip(images, targets, strict=True):
        size = load_image_file(path).shape[:2]  # decodes it all: corrupt files fail here
        jobs.append((path, target, _checked_prompts(table, path, size)))
    _check_device(device)

    if adapter is not None:  # a missing or broken adapter fails before the model loads
        from ..adapters import read_adapter

        read_adapter(adapter)
    sam = load_model(model)
    if adapter is not None:
        from ..adapters import load_adapter

        sam = load_adapter(sam, adapter)
    sam = sam.to(device)
    for path, target, p in jobs:
        image = load_image_file(path)  # read again, so that a long list never sits in memory
        written = write_prediction(
            sam, path, image, p, target, overlay=overlay, multimask=multimask, protect=protect
        )
        typer.echo(f"{path}: {written} mask(s) in {target}")
    typer.echo(f"wrote {output}")


def _prompts_for(table: dict, path: Path) -> dict:
    for key in (str(path), path.name, "*"):
        if key in table:
            return table[key]
    raise InputError(
        f"the prompts file has no entry for {str(path)!r} (keys: {', '.join(sorted(table))}); "
        "key prompts by file name or path"
    )


def _checked_prompts(table: dict, path: Path, size: tuple[int, int]):
    from ..predict import prepare_prompts

    p = _prompts_for(table, path)
    return prepare_prompts(
        p["boxes"], p["points"], p["labels"], size=size, image=f"image {str(path)!r}"
    )


def _output_folders(images: list[Path], output: Path) -> list[Path]:
    """``<output>/<stem>`` per image; two images that would share one are refused."""
    seen: dict[str, Path] = {}
    for path in images:
        key = path.stem.casefold()  # a.png and A.jpg share a folder on case-blind disks too
        if key in seen:
            first = seen[key]
            if first == path or first.resolve() == path.resolve():
                raise InputError(f"image {str(path)!r} is given twice; give each image once")
            raise InputError(
                f"images {str(first)!r} and {str(path)!r} would both write their results to "
                f"{str(output / path.stem)!r} (outputs are named after the file name without "
                "its extension); rename one, or predict them into different --output folders"
            )
        seen[key] = path
    return [output / path.stem for path in images]


def _check_outputs(images: list[Path], targets: list[Path], output: Path, protect) -> None:
    """Refuse, before anything is written, to replace anything samtune did not write."""
    from ..io import check_replaceable

    if output.exists() and not output.is_dir():
        raise InputError(f"--output {str(output)!r} is a file; give a folder")
    for path, target in zip(images, targets, strict=True):
        if not (target.exists() or target.is_symlink()):
            continue
        if target.is_symlink() or not target.is_dir():
            raise InputError(
                f"refusing to write the results for {str(path)!r}: {str(target)!r} exists and "
                "samtune did not write it; move it away or choose another --output"
            )
        check_replaceable(target, protect, context=f"the results for {str(path)!r}",
                          advice="move those files away or choose another --output")  # fmt: skip


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(
            f"--device {device!r} is not a device; use cpu, cuda, cuda:1 ..."
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"--device {device!r}: no CUDA GPU is available; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise InputError(
                f"--device {device!r}: there are only {count} CUDA GPU(s) (cuda:0 .. "
                f"cuda:{count - 1})"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {device!r}: MPS is not available; use --device cpu")


def write_prediction(
    model, path: Path, image, prompts, target: Path, *, overlay, multimask, protect=()
):
    """Predict, then write the folder ``target`` with ``<stem>_mask<i>.png``, ``<stem>.json``
    (and the overlay) as a whole: it replaces an earlier samtune result folder there (so no
    stale mask survives a rerun with fewer prompts) and never a folder samtune did not write.

    ``prompts`` are :class:`samtune.predict.Prompts` (from ``prepare_prompts``).
    """
    import numpy as np
    from PIL import Image

    from ..io import atomic_dir
    from ..predict import predict

    pred = predict(
        model,
        image,
        boxes=prompts.boxes,
        points=prompts.points,
        point_labels=prompts.labels,
        multimask=multimask,
    )
    stem = path.stem
    records = pred.to_coco()
    for i, rec in enumerate(records):
        rec["prompt"] = {
            k: getattr(prompts, k)[i].tolist()
            for k in ("boxes", "points", "labels")
            if getattr(prompts, k) is not None
        }
    doc = {"image": str(path), "height": image.shape[0], "width": image.shape[1], "masks": records}
    with atomic_dir(target, overwrite=True, protect=protect) as tmp:
        for i, mask in enumerate(pred.masks):
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / f"{stem}_mask{i}.png")
        (tmp / f"{stem}.json").write_text(json.dumps(doc))
        if overlay:
            from ..evaluate.plots import overlay as blend

            palette = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180)]
            out = image
            for i, m in enumerate(pred.masks):
                out = blend(out, {palette[i % len(palette)]: m})
            Image.fromarray(out).save(tmp / f"{stem}_overlay.png")
    return len(records)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)

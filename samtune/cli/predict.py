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
        Path, typer.Option("--output", "-o", help="Folder for masks, JSON and overlays.")
    ] = Path("predictions"),
    overlay: Annotated[
        bool, typer.Option("--overlay", help="Also write <image>_overlay.png.")
    ] = False,
    multimask: Annotated[
        bool,
        typer.Option("--multimask", help="3 candidates per prompt, keep the IoU head's best."),
    ] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 ...")] = "cpu",
) -> None:
    """Segment objects in images from box or point prompts.

    For each image writes <stem>_mask<i>.png (0/255, one per prompt) and <stem>.json (COCO RLE
    per mask, with score, area, bbox and the prompt), plus <stem>_overlay.png with --overlay.

    Examples:

        samtune predict photo.jpg --boxes "10,20,200,180;220,40,300,160" -m demo

        samtune predict a.jpg b.jpg --points "64,80" --multimask --overlay -o out/

        samtune predict *.jpg --prompts prompts.json -m facebook/sam-vit-base --adapter runs/lora/adapter
    """
    from ..models import load_model
    from ..predict import parse_boxes, parse_points, read_prompts_file

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
    from ..predict import load_image_file

    loaded = [(path, load_image_file(path)) for path in images]  # fail before loading a model
    per_image = [(path, img, _prompts_for(table, path)) for path, img in loaded]

    if adapter is not None:  # a missing or broken adapter fails before the model loads
        from ..adapters import read_adapter

        read_adapter(adapter)
    sam = load_model(model)
    if adapter is not None:
        from ..adapters import load_adapter

        sam = load_adapter(sam, adapter)
    sam = sam.to(device)
    for path, img, p in per_image:
        written = write_prediction(sam, path, img, p, output, overlay=overlay, multimask=multimask)
        typer.echo(f"{path}: {written} mask(s)")
    typer.echo(f"wrote {output}")


def _prompts_for(table: dict, path: Path) -> dict:
    for key in (str(path), path.name, "*"):
        if key in table:
            return table[key]
    raise InputError(
        f"the prompts file has no entry for {str(path)!r} (keys: {', '.join(sorted(table))}); "
        "key prompts by file name or path"
    )


def write_prediction(model, path: Path, image, prompts: dict, output: Path, *, overlay, multimask):
    """Predict and write ``<stem>_mask<i>.png``, ``<stem>.json`` (and the overlay)."""
    import numpy as np
    from PIL import Image

    from ..io import atomic_write
    from ..predict import predict

    pred = predict(
        model,
        image,
        boxes=prompts["boxes"],
        points=prompts["points"],
        point_labels=prompts["labels"],
        multimask=multimask,
    )
    stem = path.stem
    records = pred.to_coco()
    for i, (mask, rec) in enumerate(zip(pred.masks, records, strict=True)):
        with atomic_write(output / f"{stem}_mask{i}.png") as tmp:
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
        rec["prompt"] = {
            k: prompts[k][i].tolist()
            for k in ("boxes", "points", "labels")
            if prompts[k] is not None
        }
    doc = {"image": str(path), "height": image.shape[0], "width": image.shape[1], "masks": records}
    with atomic_write(output / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(doc))
    if overlay:
        from ..evaluate.plots import overlay as blend

        palette = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180)]
        out = image
        for i, m in enumerate(pred.masks):
            out = blend(out, {palette[i % len(palette)]: m})
        with atomic_write(output / f"{stem}_overlay.png") as tmp:
            Image.fromarray(out).save(tmp, format="PNG")
    return len(records)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)

"""Segment an image with a SAM exported by `samtune export ADAPTER OUT --format onnx`.

Needs only numpy, Pillow and onnxruntime (no torch, no samtune): this is what an annotation
tool does with the export folder. Everything it needs to know is in samtune_onnx.json.

    python examples/onnx_predict.py sam-onnx photo.jpg --box 10,20,200,240 --out mask.png
    python examples/onnx_predict.py sam-onnx photo.jpg --point 64,80 --point 20,20:0

A box gives the single-mask output; points alone give SAM's three candidates, of which the one
with the highest predicted IoU is kept (``x,y`` is a positive point, ``x,y:0`` a negative one).
Pillow's resize stands in for samtune's (torchvision's) antialiased bilinear resize, so for
images that need resizing the masks can differ from samtune's by a few pixels along edges.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image


def preprocess(image: Image.Image, pre: dict) -> tuple[np.ndarray, float]:
    """RGB image -> (pixel_values (1, 3, S, S) float32, scale from original to model pixels)."""
    s = pre["image_size"]
    w, h = image.size
    scale = s / max(h, w)
    size = (int(w * scale + 0.5), int(h * scale + 0.5))
    if size != (w, h):
        image = image.resize(size, Image.BILINEAR)
    x = (np.asarray(image, np.float32) - pre["mean"]) / pre["std"]
    padded = np.zeros((s, s, 3), np.float32)  # pad bottom-right
    padded[: x.shape[0], : x.shape[1]] = x
    return padded.transpose(2, 0, 1)[None], scale


def predict(folder, image, box=None, points=()):
    """(mask HxW bool, predicted IoU) for one prompt: a box (x1, y1, x2, y2), points
    [(x, y, label)], or both, in original pixels."""
    folder = Path(folder)
    config = json.loads((folder / "samtune_onnx.json").read_text())
    encoder = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    image = image.convert("RGB")
    pixel_values, scale = preprocess(image, config["preprocess"])
    (embeddings,) = encoder.run(None, {"pixel_values": pixel_values})

    coords = [(x, y) for x, y, _ in points]
    labels = [label for _, _, label in points]
    if box is not None:
        coords += [box[:2], box[2:]]
        labels += [2, 3]  # box corners
    else:
        coords, labels = coords + [(0, 0)], labels + [-1]  # padding point, as SAM expects
    r = config["decoder"]["inputs"]["mask_input"]["shape"][-1]
    masks, iou, _ = decoder.run(
        None,
        {
            "image_embeddings": embeddings,
            "point_coords": np.array([coords], np.float32) * scale,  # model pixels
            "point_labels": np.array([labels], np.float32),
            "mask_input": np.zeros((1, 1, r, r), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array([image.height, image.width], np.float32),
        },
    )
    # token 0 is the single-mask output; 1..3 are the candidates for one ambiguous point
    best = 0 if box is not None or len(points) > 1 else 1 + int(np.argmax(iou[0, 1:]))
    return masks[0, best] > 0, float(iou[0, best])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="export folder (encoder.onnx, decoder.onnx, json)")
    parser.add_argument("image")
    parser.add_argument("--box", help="x1,y1,x2,y2 in image pixels")
    parser.add_argument("--point", action="append", default=[], help="x,y or x,y:label")
    parser.add_argument("--out", default="mask.png", help="where to write the mask (PNG)")
    args = parser.parse_args(argv)
    box = [float(v) for v in args.box.split(",")] if args.box else None
    points = []
    for text in args.point:
        xy, _, label = text.partition(":")
        x, y = (float(v) for v in xy.split(","))
        points.append((x, y, int(label or 1)))
    if box is None and not points:
        parser.error("give --box and/or --point")
    mask, iou = predict(args.folder, Image.open(args.image), box, points)
    Image.fromarray(mask.astype(np.uint8) * 255).save(args.out)
    print(f"wrote {args.out}: {int(mask.sum())} pixels, predicted IoU {iou:.3f}")


if __name__ == "__main__":
    main()

"""Segment everything with a (tuned) SAM, then give the masks classes with your own classifier.

Automatic masks carry no class. Here a deliberately simple crop classifier (the brighter or
darker half of the demo objects) stands in for the image classifier you would train on crops
of your classes (timm, transformers ...); plug yours in the same way.

    python examples/python/segment_everything.py --model demo
    python examples/python/segment_everything.py --model demo --adapter runs/lora-demo/adapter
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import samtune
from samtune.segment.automatic import generate_masks
from samtune.segment.mask_classifiers import CropClassifier, classify_masks, semantic_map


def brightness_classifier(crops: list[np.ndarray]) -> tuple[list[int], list[float]]:
    """Category 1 (bright) or 2 (dark) by the mean of the object's pixels (grey = background)."""
    ids, scores = [], []
    for crop in crops:
        pixels = crop.reshape(-1, 3)
        pixels = pixels[(pixels != 128).any(1)].astype(float)
        level = pixels.mean() / 255 if len(pixels) else 0.5
        ids.append(1 if level >= 0.5 else 2)
        scores.append(abs(level - 0.5) * 2)
    return ids, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--points-per-side", type=int, default=16)
    args = ap.parse_args()

    model = samtune.load_model(args.model)
    if args.adapter:
        model = samtune.load_adapter(model, args.adapter)
    image = samtune.load_dataset("demo", "test")[0].image
    found = generate_masks(model, image, points_per_side=args.points_per_side,
                           pred_iou_thresh=0.5, stability_score_thresh=0.8)  # fmt: skip
    print(f"{len(found)} masks; predicted IoU {[round(float(v), 2) for v in found.predicted_iou]}")

    classifier = CropClassifier(brightness_classifier, {1: "bright", 2: "dark"})
    records = classify_masks(found, image, classifier)
    labels = semantic_map(found, [r["category_id"] for r in records])
    counts = {classifier.categories[c]: int((labels == c).sum()) for c in classifier.categories}
    print("pixels per class:", json.dumps(counts))


if __name__ == "__main__":
    main()

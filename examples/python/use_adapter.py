"""Use a samtune adapter in another project: load, predict masks for a box, merge to plain SAM.

Nothing here needs samtune's training code: a project that only wants masks needs
``load_adapter`` and ``predict`` (or the merged plain ``SamModel``).

    python examples/python/use_adapter.py runs/example-fit/adapter --model demo
"""

from __future__ import annotations

import argparse

import numpy as np

import samtune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("adapter")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--merged-out", default=None, help="also write a plain SamModel folder here")
    args = ap.parse_args()

    model = samtune.load_adapter(samtune.load_model(args.model), args.adapter)
    sample = samtune.load_dataset("demo", "test")[0]
    prediction = samtune.predict(model, sample.image, boxes=sample.boxes[:1])
    mask = prediction.masks[0]
    target = sample.masks[0]
    iou = np.logical_and(mask, target).sum() / max(np.logical_or(mask, target).sum(), 1)
    print(f"mask of {int(mask.sum())} pixels, IoU {iou:.3f} against the ground truth")

    if args.merged_out:
        from transformers import SamModel

        merged = samtune.merge_adapter(model)
        merged.save_pretrained(args.merged_out)
        plain = SamModel.from_pretrained(args.merged_out)  # no samtune needed from here on
        print(f"merged model written to {args.merged_out} ({type(plain).__name__})")


if __name__ == "__main__":
    main()

"""Automatic mask generation ("segment everything"): time per image and peak memory.

Runs :func:`samtune.segment.automatic.generate_masks` on a fabricated ``--size`` px image for each
``--points-per-batch`` value, and checks that the masks are identical whatever the value
(the option bounds memory, never the result). Peak memory: the GPU's allocator on CUDA, the
process's peak resident set on the CPU (it only grows, so later rows show at least the earlier
ones' peak). Prints JSON, then a markdown table.

    python bench/automatic.py                                   # ViT-B random weights, 1024 px
    python bench/automatic.py --model demo --size 512 --points-per-side 16
    python bench/automatic.py --model tiny --size 128 --points-per-side 4 --points-per-batch 4 16
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from _common import device_info, emit, peak_gib, pick_device, reset_peak


def fabricated_image(size: int, seed: int = 0) -> np.ndarray:
    """A ``size`` px RGB image with a few flat shapes on noise (something to segment)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    for _ in range(8):
        y, x = rng.integers(0, size * 3 // 4, 2)
        h, w = rng.integers(size // 16, size // 4, 2)
        image[y : y + h, x : x + w] = rng.integers(80, 255, 3)
    return image


def _peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit-b-random")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, nargs="+", default=[64, 16])
    parser.add_argument("--crop-n-layers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from samtune.models.loading import load_model
    from samtune.segment.automatic import generate_masks

    device = pick_device(args.device)
    model = load_model(args.model, seed=0).to(device)
    image = fabricated_image(args.size)
    rows, first = [], None
    for batch in args.points_per_batch:
        reset_peak(device)
        start = time.perf_counter()
        found = generate_masks(model, image, points_per_side=args.points_per_side,
                               points_per_batch=batch, crop_n_layers=args.crop_n_layers)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        first = found if first is None else first
        rows.append({
            "points_per_batch": batch,
            "seconds_per_image": round(seconds, 3),
            "masks": len(found),
            "peak_gpu_gib": peak_gib(device),
            "peak_rss_gib": _peak_rss_gib(),
            "same_masks_as_first": bool(np.array_equal(found.masks, first.masks)),
        })  # fmt: skip
    payload = {
        "benchmark": "automatic mask generation",
        "model": args.model,
        "image_px": args.size,
        "points_per_side": args.points_per_side,
        "crop_n_layers": args.crop_n_layers,
        **device_info(device),
        "results": rows,
    }
    emit(payload, list(rows[0]), rows)
    if not all(r["same_masks_as_first"] for r in rows):
        raise SystemExit("masks differ between points_per_batch settings")


if __name__ == "__main__":
    main()

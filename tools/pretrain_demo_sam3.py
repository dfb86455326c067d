"""Pretrain the bundled ``demo-sam3`` model: a small SAM 3 that finds objects named by a phrase.

``samtune fit --model demo-sam3 --strategy lora --prompt text --dataset demo`` must show,
offline and in minutes on a CPU, what training by name does for SAM 3 on waste imagery: a
model that already knows "bottle" or "plastic bag" in generic pictures does something zero-shot
on conveyor-belt scenes, and clearly better once tuned on them. This script makes that model.

The pretraining world is generic and deliberately unlike the ``demo`` waste scenes of
:mod:`samtune.data.synthetic`: smooth gradient backgrounds with no belt and no clutter, and
objects painted in random flat or gradient colours with no material cue (no transparency,
metal sheen, corrugation or wrinkles). What the two worlds share is the vocabulary and the
outline of each named object: the four demo classes keep the demo's shapes ("bottle",
"can", "piece of cardboard", "plastic bag", the phrases of the demo's prompt map), and four
more named objects ("cup", "tire", "lid", "pipe") teach the model to tell names apart.

The model (:func:`samtune.models.demo.demo_sam3_config`) starts from transformers'
initialisation and is trained with samtune itself: ``samtune.fit`` with the ``full`` strategy
and ``prompt: text`` on the COCO folder written here. The result is saved in fp16.

Usage (meant for a GPU: on a shared 2-core CPU, 400 steps took 32 minutes and the model had
not yet learned to detect, AP 0.0 on its own test scenes, as a DETR-style model trained from
scratch needs thousands of steps)::

    python tools/pretrain_demo_sam3.py --steps 2500 --out samtune/assets/demo_sam3_model

Writes ``model.safetensors`` (fp16) and ``training.json`` (the command, the steps, the seconds
and the pretraining test split's class-aware metrics).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from samtune.data import synthetic  # noqa: E402
from samtune.data.masks import encode_mask  # noqa: E402
from samtune.io import dump_json  # noqa: E402

SIZE = 128
DEMO_CLASSES = ("bottle", "can", "cardboard", "bag")
OTHER_CLASSES = ("cup", "tire", "lid", "pipe")
CLASSES = DEMO_CLASSES + OTHER_CLASSES
PHRASES = {"cardboard": "piece of cardboard", "bag": "plastic bag"}
"""Category name -> phrase where they differ: the demo dataset's prompt map."""


def _background(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.clip((np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2, 0, 1)[..., None]
    return c0 * (1 - t) + c1 * t + rng.normal(0, rng.uniform(0, 8), (SIZE, SIZE, 3))


def _other_mask(cls: str, rng: np.random.Generator) -> np.ndarray:
    """The outline of a class the demo does not have, rotated at random."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    cx, cy = rng.uniform(0.2 * SIZE, 0.8 * SIZE, 2)
    a = rng.uniform(0, math.pi)
    x, y = xx - cx, yy - cy
    u, v = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
    if cls == "cup":  # a trapezoid, wider at the rim
        h, top = rng.uniform(10, 15), rng.uniform(8, 12)
        half_width = top * (0.65 + 0.35 * (v + h) / (2 * h))
        return (np.abs(v) <= h) & (np.abs(u) <= half_width)
    if cls == "tire":  # a ring
        r = rng.uniform(10, 17)
        rho = np.hypot(u, v)
        return (rho <= r) & (rho >= r * rng.uniform(0.45, 0.65))
    if cls == "lid":  # a small disc
        r = rng.uniform(5, 9)
        return np.hypot(u, v / rng.uniform(0.8, 1.0)) <= r
    length, width = rng.uniform(25, 40), rng.uniform(2.5, 4.5)  # pipe: a long thin bar
    return (np.abs(u) <= length) & (np.abs(v) <= width)


def _paint(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """A random flat or gradient colour, sometimes with a dark outline: no material cue."""
    color = rng.uniform(0, 255, 3)
    if rng.random() < 0.5:
        yy = np.mgrid[0:SIZE, 0:SIZE][int(rng.integers(2))] / SIZE
        fill = color * (1 - yy[..., None]) + rng.uniform(0, 255, 3) * yy[..., None]
    else:
        fill = np.broadcast_to(color, image.shape)
    image[mask] = fill[mask] + rng.normal(0, 4, (int(mask.sum()), 3))
    if rng.random() < 0.3:
        from scipy.ndimage import binary_erosion

        edge = mask & ~binary_erosion(mask, iterations=1)
        image[edge] *= 0.4


def make_scene(rng: np.random.Generator, max_objects: int = 6):
    """One scene: (128x128x3 uint8, [(class index, visible mask)]), later objects on top."""
    image = _background(rng)
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        c = int(rng.integers(len(CLASSES)))
        if CLASSES[c] in DEMO_CLASSES:
            points, _ = synthetic._shape(CLASSES[c], rng, SIZE)
            mask = synthetic._polygon_mask(points, SIZE)
        else:
            mask = _other_mask(CLASSES[c], rng)
        if mask.sum() < 30:
            continue
        _paint(image, mask, rng)
        objects = [(k, m & ~mask) for k, m in objects]
        objects.append((c, mask))
    objects = [(k, m) for k, m in objects if m.sum() >= 20]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects


def write_dataset(root: Path, counts: dict[str, int], seed: int) -> None:
    """The scenes as COCO: ``root/<split>/annotations.json`` and ``root/<split>/images/``."""
    from PIL import Image

    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    ann_id = 1
    for s, (split, n) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, s])
        (root / split / "images").mkdir(parents=True)
        images, anns = [], []
        for i in range(n):
            image, objects = make_scene(rng)
            name = f"{i + 1:05d}.png"
            Image.fromarray(image).save(root / split / "images" / name)
            images.append({"id": i + 1, "file_name": name, "height": SIZE, "width": SIZE})
            for c, m in objects:
                ys, xs = np.nonzero(m)
                x0, y0 = int(xs.min()), int(ys.min())
                box = [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]
                anns.append(
                    {"id": ann_id, "image_id": i + 1, "category_id": c + 1, "iscrowd": 0,
                     "segmentation": encode_mask(m), "area": int(m.sum()), "bbox": box}
                )  # fmt: skip
                ann_id += 1
        coco = {"images": images, "annotations": anns, "categories": categories}
        (root / split / "annotations.json").write_text(dump_json(coco))


def pretrain(args: argparse.Namespace) -> dict:
    """Train the demo SAM 3 from transformers' initialisation; returns training.json's content."""
    import torch
    from safetensors.torch import save_file

    import samtune
    from samtune.models.demo import demo_sam3_config
    from samtune.models.identity import samtune_info
    from samtune.models.presets import sam_from_config
    from samtune.models.text import tiny_clip_tokenizer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_dataset(data, {"train": args.images, "val": 8, "test": 50}, args.seed)
        model = sam_from_config(demo_sam3_config(), args.seed)
        samtune_info(model).tokenizer = tiny_clip_tokenizer()
        start = time.time()
        result = samtune.fit(
            model, "full", "coco", Path(tmp) / "run", dataset_root=str(data),
            prompt="text", prompt_map=PHRASES, max_steps=args.steps, batch_size=args.batch_size,
            lr=args.lr, warmup_steps=args.warmup, text_negatives=args.negatives, seed=args.seed,
            eval_every=None, checkpoint_every=None, quiet=True, cache="off", compare=False,
        )  # fmt: skip
        seconds = time.time() - start
        base = sam_from_config(demo_sam3_config(), args.seed)  # load_adapter takes a fresh base
        samtune_info(base).tokenizer = tiny_clip_tokenizer()
        tuned = samtune.merge_adapter(samtune.load_adapter(base, result.adapter_dir))
        weights = {k: v.detach().half().contiguous() for k, v in tuned.state_dict().items()}
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        save_file(weights, str(out / "model.safetensors"))
        tuned.eval()
        scores = {}
        for name, dataset in (
            ("pretraining test", samtune.load_dataset("coco", "test", root=data)),
            ("demo test (zero-shot)", samtune.load_dataset("demo", "test")),
        ):
            report = samtune.evaluate(tuned, dataset, "text")
            scores[name] = {k: round(float(v), 4) for k, v in report.metrics.items()
                            if isinstance(v, (int, float))}  # fmt: skip
        return {
            "script": "tools/pretrain_demo_sam3.py",
            "args": {k: str(v) for k, v in vars(args).items()},
            "steps_done": result.steps,
            "seconds": round(seconds, 1),
            "threads": args.threads,
            "scores": scores,
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--images", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--negatives", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "samtune/assets/demo_sam3_model"))
    args = p.parse_args()
    info = pretrain(args)
    (Path(args.out) / "training.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    print(json.dumps(info, indent=2, default=str))


if __name__ == "__main__":
    main()

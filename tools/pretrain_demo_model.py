"""Pretrain the bundled demo SAM on synthetic generic-object scenes.

The demo model exists so that ``samtune fit --strategy lora --dataset demo`` can show, offline and
in a couple of minutes on a laptop CPU, what the research showed for SAM on waste imagery: a
promptable segmenter pretrained on generic objects does reasonably on a new domain zero-shot
and clearly better after adaptation. It is a demo model: small (128 px input, 0.7 M parameters),
trained only on procedurally drawn shapes. It is not a substitute for Meta's SAM.

The scenes drawn here (flat or gradient-filled geometric shapes on smooth backgrounds) look
deliberately unlike the ``demo`` waste scenes of :mod:`samtune.data.synthetic`.

Usage (a GPU makes it take minutes; CPU works, slowly)::

    python tools/pretrain_demo_model.py --steps 3000 --out samtune/assets/demo_model

Writes ``config.json`` and ``model.safetensors`` (fp16 weights) plus ``training.json`` with the
command, the step count and the final training IoU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from samtune.models.demo import demo_config  # noqa: E402
from samtune.models.identity import SAM_PIXEL_MEAN, SAM_PIXEL_STD  # noqa: E402
from samtune.models.presets import sam_from_config  # noqa: E402

SIZE = 128


# --------------------------------------------------------------------------- scenes


def _background(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.clip((np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2, 0, 1)[..., None]
    bg = c0 * (1 - t) + c1 * t
    bg += rng.normal(0, rng.uniform(0, 12), bg.shape)
    return bg


def _shape_mask(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    cx, cy = rng.uniform(10, SIZE - 10, 2)
    r = rng.uniform(7, 34)
    a = rng.uniform(0, np.pi)
    x, y = xx - cx, yy - cy
    u, v = x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)
    kind = rng.integers(0, 5)
    if kind == 0:  # ellipse
        e = rng.uniform(0.4, 1.0)
        m = (u / r) ** 2 + (v / (r * e)) ** 2 <= 1
    elif kind == 1:  # rectangle
        e = rng.uniform(0.3, 1.0)
        m = (np.abs(u) <= r) & (np.abs(v) <= r * e)
    elif kind == 2:  # regular polygon (triangle .. hexagon)
        n = rng.integers(3, 7)
        theta = np.arctan2(v, u)
        rho = np.hypot(u, v)
        edge = np.cos(np.pi / n) / np.cos((theta % (2 * np.pi / n)) - np.pi / n)
        m = rho <= r * edge
    elif kind == 3:  # star
        n = rng.integers(4, 7)
        theta = np.arctan2(v, u)
        rho = np.hypot(u, v)
        m = rho <= r * (0.6 + 0.4 * np.cos(n * theta))
    else:  # ring
        rho = np.hypot(u, v)
        m = (rho <= r) & (rho >= r * rng.uniform(0.35, 0.7))
    return m


def make_scene(rng: np.random.Generator, max_objects: int = 6):
    """One 128x128 RGB scene and its visible instance masks (occlusion applied)."""
    image = _background(rng)
    masks: list[np.ndarray] = []
    for _ in range(rng.integers(1, max_objects + 1)):
        m = _shape_mask(rng)
        if m.sum() < 30:
            continue
        color = rng.uniform(0, 255, 3)
        if rng.random() < 0.5:  # gradient fill
            yy = np.mgrid[0:SIZE, 0:SIZE][0] / SIZE
            color2 = rng.uniform(0, 255, 3)
            fill = color * (1 - yy[..., None]) + color2 * yy[..., None]
        else:
            fill = np.broadcast_to(color, image.shape)
        image[m] = fill[m] + rng.normal(0, 4, (m.sum(), 3))
        masks = [prev & ~m for prev in masks]
        masks.append(m)
    masks = [m for m in masks if m.sum() >= 20]
    return np.clip(image, 0, 255).astype(np.uint8), masks


# --------------------------------------------------------------------------- training


def _box(mask: np.ndarray, rng: np.random.Generator) -> list[float]:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    w, h = x1 - x0, y1 - y0
    noise = rng.normal(0, 0.1, 4) * np.array([w, h, w, h])
    noise = np.clip(noise, -20, 20)
    b = np.array([x0, y0, x1, y1], dtype=np.float64) + noise
    return np.clip(b, 0, SIZE).tolist()


def _point(mask: np.ndarray, rng: np.random.Generator) -> list[float]:
    ys, xs = np.nonzero(mask)
    i = rng.integers(len(xs))
    return [xs[i] + 0.5, ys[i] + 0.5]


class _Batches(torch.utils.data.IterableDataset):
    """Endless batches drawn in DataLoader workers (scene drawing is the CPU-bound part)."""

    def __init__(self, seed: int, n_images: int, per_image: int):
        self.seed, self.n_images, self.per_image = seed, n_images, per_image

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            yield make_batch(rng, self.n_images, self.per_image, "cpu")


def make_batch(rng, n_images: int, per_image: int, device):
    """Images, box prompts, point prompts and target masks for one step."""
    images, boxes, points, targets = [], [], [], []
    while len(images) < n_images:
        img, masks = make_scene(rng)
        if not masks:
            continue
        pick = rng.choice(len(masks), size=per_image, replace=len(masks) < per_image)
        images.append(img)
        boxes.append([_box(masks[i], rng) for i in pick])
        points.append([[_point(masks[i], rng)] for i in pick])
        targets.append(np.stack([masks[i] for i in pick]))
    mean = torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1)
    pix = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() - mean) / std
    return (
        pix.to(device),
        torch.tensor(boxes, dtype=torch.float32, device=device),
        torch.tensor(points, dtype=torch.float32, device=device),
        torch.from_numpy(np.stack(targets)).float().to(device),
    )


def mask_losses(logits: torch.Tensor, target: torch.Tensor):
    """Per-mask focal (alpha .25, gamma 2), dice, and IoU of thresholded logits. Shapes (...,H,W)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    focal = (0.25 * target + 0.75 * (1 - target)) * ce * (1 - p_t) ** 2
    focal = focal.flatten(-2).mean(-1)
    inter = (p * target).flatten(-2).sum(-1)
    dice = 1 - (2 * inter + 1) / (p.flatten(-2).sum(-1) + target.flatten(-2).sum(-1) + 1)
    hard = (logits > 0).float()
    i = (hard * target).flatten(-2).sum(-1)
    u = ((hard + target) > 0).float().flatten(-2).sum(-1)
    iou = i / u.clamp(min=1)
    return focal, dice, iou


def step_loss(model, pix, boxes, points, targets):
    emb = model.vision_encoder(pix)[0]  # with gradients, unlike get_image_embeddings
    n = targets.shape[1]
    up_t = targets  # (B, N, 128, 128)
    total, ious = 0.0, []
    for mode in ("box", "point"):
        if mode == "box":
            out = model(image_embeddings=emb, input_boxes=boxes, multimask_output=False)
        else:
            labels = torch.ones(points.shape[:3], dtype=torch.long, device=points.device)
            out = model(
                image_embeddings=emb,
                input_points=points,
                input_labels=labels,
                multimask_output=True,
            )
        logits = F.interpolate(
            out.pred_masks.flatten(0, 1), size=(SIZE, SIZE), mode="bilinear", align_corners=False
        ).view(pix.shape[0], n, -1, SIZE, SIZE)
        focal, dice, iou = mask_losses(logits, up_t[:, :, None].expand_as(logits))
        mask_loss = 20 * focal + dice
        best = mask_loss.argmin(-1, keepdim=True)
        iou_mse = F.mse_loss(out.iou_scores, iou.detach(), reduction="none")
        total = total + (mask_loss.gather(-1, best) + iou_mse.gather(-1, best)).mean()
        ious.append(iou.gather(-1, best).mean().item())
    return total, ious


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--images", type=int, default=32, help="images per step")
    ap.add_argument("--per-image", type=int, default=4, help="instances per image per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "samtune" / "assets" / "demo_model")
    ap.add_argument("--minutes", type=float, default=None, help="stop after this much time")
    args = ap.parse_args()

    from safetensors.torch import save_file

    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = sam_from_config(demo_config(), seed=args.seed).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = min(200, args.steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    workers = min(8, (os.cpu_count() or 1) - 1)
    loader = iter(
        torch.utils.data.DataLoader(
            _Batches(args.seed, args.images, args.per_image),
            batch_size=None,
            num_workers=workers,
            pin_memory=device == "cuda",
        )
    )
    start, hist = time.time(), []
    for step in range(args.steps):
        batch = [t.to(device, non_blocking=True) for t in next(loader)]
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss, ious = step_loss(model, *batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        hist.append(ious)
        if step % 100 == 0 or step == args.steps - 1:
            recent = np.mean(hist[-100:], axis=0)
            print(
                f"step {step} loss {loss.item():.4f} iou box {recent[0]:.3f} point {recent[1]:.3f} "
                f"({time.time() - start:.0f}s)",
                flush=True,
            )
        if args.minutes and time.time() - start > args.minutes * 60:
            print(f"time budget reached at step {step}")
            break

    args.out.mkdir(parents=True, exist_ok=True)
    sd = {
        k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()
    }
    sd.pop("prompt_encoder.shared_embedding.positional_embedding", None)  # tied; stored once
    save_file(sd, args.out / "model.safetensors", metadata={"format": "pt", "producer": "samtune"})
    recent = np.mean(hist[-100:], axis=0)
    (args.out / "training.json").write_text(
        json.dumps(
            {
                "script": "tools/pretrain_demo_model.py",
                "args": {k: str(v) for k, v in vars(args).items()},
                "steps_done": len(hist),
                "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                "seconds": round(time.time() - start, 1),
                "final_train_iou": {
                    "box": round(float(recent[0]), 4),
                    "point": round(float(recent[1]), 4),
                },
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

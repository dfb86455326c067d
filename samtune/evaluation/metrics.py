"""Mask metrics: per-instance IoU and Dice, their aggregates, semantic-segmentation IoU, click metrics.

Everything here works on integer pixel counts (intersection, union, areas), so results are exact
and independent of how instances were batched or sharded over processes. The definitions are
stated in ``docs/evaluation.md``; each function's docstring repeats the one it implements.

Conventions:

- masks are boolean arrays ``(..., H, W)`` at the original image resolution;
- IoU of an empty prediction and an empty target is **1.0** (they agree: there is nothing to
  find). ``pycocotools.mask.iou`` returns 0 there; everywhere else the two are equal;
- Dice of two empty masks is 1.0 for the same reason; Dice equals the F1 score of the pixels.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from ..data.masks import _as_bool_tensor

EMPTY_IOU = 1.0  # IoU (and Dice) of an empty prediction against an empty target


def mask_counts(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> dict:
    """Pixel counts of matching masks.

    Args:
        pred: ``(N, H, W)`` (or ``(H, W)``) predicted masks, bool or 0/1.
        target: same shape, ground-truth masks.

    Returns:
        dict of int64 numpy arrays of shape ``(N,)`` (scalars for 2-D input):
        ``intersection``, ``union``, ``pred_area``, ``target_area``.
    """
    p, t = _as_bool_tensor(pred), _as_bool_tensor(target)
    if p.shape != t.shape:
        raise ValueError(
            f"prediction and target masks must have the same shape, got {tuple(p.shape)} "
            f"and {tuple(t.shape)}"
        )
    dims = (-2, -1)
    inter = (p & t).sum(dim=dims, dtype=torch.int64)
    parea = p.sum(dim=dims, dtype=torch.int64)
    tarea = t.sum(dim=dims, dtype=torch.int64)
    # counted on the masks' device (GPU in evaluation); only N integers per key come back
    counts = torch.stack([inter, parea + tarea - inter, parea, tarea]).cpu().numpy()
    return dict(zip(("intersection", "union", "pred_area", "target_area"), counts, strict=True))


def iou_from_counts(intersection, union) -> np.ndarray:
    """``intersection / union`` elementwise; 1.0 where ``union == 0`` (both masks empty)."""
    inter = np.asarray(intersection, dtype=np.float64)
    uni = np.asarray(union, dtype=np.float64)
    out = np.full(np.broadcast(inter, uni).shape, EMPTY_IOU, dtype=np.float64)
    np.divide(inter, uni, out=out, where=uni > 0)
    return out


def dice_from_counts(intersection, pred_area, target_area) -> np.ndarray:
    """``2 |P∩G| / (|P| + |G|)`` elementwise (= pixel F1); 1.0 where both masks are empty."""
    inter = np.asarray(intersection, dtype=np.float64)
    denom = np.asarray(pred_area, dtype=np.float64) + np.asarray(target_area, dtype=np.float64)
    out = np.full(np.broadcast(inter, denom).shape, EMPTY_IOU, dtype=np.float64)
    np.divide(2.0 * inter, denom, out=out, where=denom > 0)
    return out


def mask_iou(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> np.ndarray:
    """IoU of each predicted mask with its target: ``|P∩G| / |P∪G|``.

    Args:
        pred, target: ``(N, H, W)`` or ``(H, W)`` masks (bool or 0/1), paired by index.

    Returns:
        float64 array ``(N,)`` (or a 0-d array). Equal to ``pycocotools.mask.iou`` with
        ``iscrowd=0`` on the same pair, except that two empty masks give 1.0 (pycocotools: 0).
    """
    c = mask_counts(pred, target)
    return iou_from_counts(c["intersection"], c["union"])


def mask_dice(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> np.ndarray:
    """Dice (pixel F1) of each predicted mask with its target; 1.0 for two empty masks."""
    c = mask_counts(pred, target)
    return dice_from_counts(c["intersection"], c["pred_area"], c["target_area"])


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return float(math.fsum(vals) / len(vals)) if vals else float("nan")


def summarize_instances(
    records: Sequence[Mapping], categories: Mapping[int, str] | None = None
) -> dict:
    """Aggregate per-instance records into the instance metrics.

    Each record needs ``image_index``, ``category_id``, ``intersection``, ``union``,
    ``pred_area``, ``target_area``. Definitions (N instances, C classes, I images):

    - ``miou``: mean over instances of the instance IoU (the headline);
    - ``image_miou``: mean over images of the mean IoU of that image's instances (what
      lightning-sam's validation prints: smp's ``micro-imagewise`` over one image's (N, H, W)
      instance stack pools each instance's rows, so each instance gets its own IoU);
    - ``image_pooled_iou``: mean over images of ``sum(intersection) / sum(union)`` over that
      image's instances (1.0 for an image whose unions are all 0), i.e. smp's
      ``micro-imagewise`` with an image's instances as the classes of one (1, N, H, W) item;
    - ``class_miou``: mean over classes (with at least one instance) of the class's mean IoU;
      ``per_class`` holds ``{name: {"miou", "count"}}``;
    - ``pooled_iou``: ``sum(intersection) / sum(union)`` over all instances;
    - ``dice``: mean over instances of the instance Dice (= pixel F1);
      ``pooled_dice``: ``2 sum(I) / sum(|P| + |G|)``.

    Sums use ``math.fsum`` over records in a fixed order, so the result does not depend on
    how the records were produced.
    """
    if not records:
        return {"num_instances": 0, "num_images": 0}
    inter = np.array([r["intersection"] for r in records], dtype=np.int64)
    union = np.array([r["union"] for r in records], dtype=np.int64)
    parea = np.array([r["pred_area"] for r in records], dtype=np.int64)
    tarea = np.array([r["target_area"] for r in records], dtype=np.int64)
    ious = iou_from_counts(inter, union)
    dices = dice_from_counts(inter, parea, tarea)

    by_image: dict[int, list[float]] = defaultdict(list)
    by_class: dict[int, list[float]] = defaultdict(list)
    pooled_by_image: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for r, v, i, u in zip(records, ious, inter.tolist(), union.tolist(), strict=True):
        by_image[int(r["image_index"])].append(float(v))
        by_class[int(r["category_id"])].append(float(v))
        pooled = pooled_by_image[int(r["image_index"])]
        pooled[0] += i
        pooled[1] += u
    categories = categories or {}
    per_class = {
        categories.get(cid, str(cid)): {"miou": _mean(v), "count": len(v)}
        for cid, v in sorted(by_class.items())
    }
    usum = int(union.sum())
    asum = int(parea.sum() + tarea.sum())
    return {
        "miou": _mean(ious.tolist()),
        "image_miou": _mean(_mean(v) for _, v in sorted(by_image.items())),
        "image_pooled_iou": _mean(
            float(iou_from_counts(i, u)) for _, (i, u) in sorted(pooled_by_image.items())
        ),
        "class_miou": _mean(c["miou"] for c in per_class.values()),
        "pooled_iou": float(inter.sum() / usum) if usum else EMPTY_IOU,
        "dice": _mean(dices.tolist()),
        "pooled_dice": float(2 * inter.sum() / asum) if asum else EMPTY_IOU,
        "num_instances": len(records),
        "num_images": len(by_image),
        "per_class": per_class,
    }


# --------------------------------------------------------------------------- semantic


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """``(K, K)`` int64 numpy pixel counts ``[target, pred]`` of two ``(H, W)`` label maps
    (numpy or torch, on any device); ``ignore_index`` pixels in target are skipped."""
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    valid = target != ignore_index
    idx = target[valid].long() * num_classes + pred.to(target.device)[valid].long()
    conf = torch.bincount(idx, minlength=num_classes * num_classes)
    return conf.reshape(num_classes, num_classes).cpu().numpy()


def semantic_iou(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU ``TP / (TP + FP + FN)`` from a confusion matrix; NaN where the class never
    occurs in target or prediction (it is then left out of the mean)."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    denom = conf.sum(0) + conf.sum(1) - tp
    out = np.full(tp.shape, np.nan)
    np.divide(tp, denom, out=out, where=denom > 0)
    return out


# --------------------------------------------------------------------------- clicks


def noc(ious_per_click: Sequence[float], threshold: float, max_clicks: int) -> int:
    """Number of clicks until IoU >= ``threshold`` (1-based); ``max_clicks`` if never reached."""
    for k, v in enumerate(ious_per_click[:max_clicks], start=1):
        if v >= threshold:
            return k
    return max_clicks


def summarize_clicks(curves: Sequence[Sequence[float]], thresholds=(0.85, 0.90)) -> dict:
    """Click metrics from per-instance IoU curves (IoU after click 1..N, all of length N).

    - ``miou@k``: mean IoU over instances after ``k`` clicks;
    - ``noc@85`` / ``noc@90``: mean over instances of the clicks needed to reach IoU 0.85 / 0.90,
      counted as N when not reached within N clicks (RITM's convention);
    - ``nof@85`` / ``nof@90``: number of instances that never reach it.
    """
    if not curves:
        return {}
    n = len(curves[0])
    out: dict = {f"miou@{k}": _mean(c[k - 1] for c in curves) for k in range(1, n + 1)}
    for t in thresholds:
        key = f"{round(t * 100)}"
        nocs = [noc(c, t, n) for c in curves]
        out[f"noc@{key}"] = _mean(nocs)
        out[f"nof@{key}"] = sum(1 for c in curves if max(c) < t)
    return out


__all__ = [
    "EMPTY_IOU",
    "confusion_matrix",
    "dice_from_counts",
    "iou_from_counts",
    "mask_counts",
    "mask_dice",
    "mask_iou",
    "noc",
    "semantic_iou",
    "summarize_clicks",
    "summarize_instances",
]

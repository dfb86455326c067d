"""The ``auto`` protocol: segment everything, score as class-agnostic COCO instance segmentation.

No ground-truth prompt: :func:`samtune.segment.automatic.generate_masks` runs on each image, and its
masks (``score`` = predicted IoU) are matched to the ground truth by
``pycocotools.cocoeval.COCOeval`` with ``iouType="segm"``: AP averaged over IoU 0.50:0.95, AP50,
AP75, AR with at most 1, 10 and 100 masks per image, and AP/AR by object area (small < 32²,
medium < 96², large). Class-agnostic: every ground-truth instance and every mask is category 1,
so a mask is right when it covers an object of any class. Crowd regions are ground truth with
``iscrowd: 1``, as COCOeval expects: a mask on a crowd region is neither a hit nor a false
positive, and a crowd region need not be found. Empty ground-truth masks are left out.

The report keeps the exact inputs of the COCOeval run (``report.coco``: ``results``, the
COCO result list, and ``ground_truth``, a COCO dataset), written as ``coco_results.json`` and
``coco_ground_truth.json``: ``COCO(gt).loadRes(results)`` and COCOeval reproduce the numbers.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..data.masks import encode_mask
from ..errors import DataError
from ..segment.automatic import AutoMaskConfig, generate_masks
from .report import EvalReport

COCO_STATS = (
    "ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)  # fmt: skip
"""The metric keys of ``COCOeval.stats``, in its order (fractions; NaN where COCOeval has no
data, e.g. AP on small objects when there are none)."""

CATEGORY = {"id": 1, "name": "object"}
"""The one category of the class-agnostic evaluation."""


def evaluate_automatic(
    sam: torch.nn.Module,
    dataset: Any,
    indices: list[int],
    config: AutoMaskConfig,
    *,
    progress: Callable[[int | None], None] = lambda n: None,
    gather: bool = False,
) -> tuple[list[dict], dict, float]:
    """Generate masks on the images ``indices`` (this process's share) and collect the COCO
    inputs: ``(results, ground_truth, seconds)``; with ``gather``, every process's, on all.
    ``progress(1)`` is called per image, ``progress(None)`` at the end."""
    per_image = []
    bar = progress
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            for index in indices:
                sample = dataset[index]
                found = generate_masks(sam, sample.image, config)
                per_image.append({"index": index, "image": _image_entry(sample),
                                  "results": found.to_coco(image_id=int(sample.image_id)),
                                  "annotations": ground_truth_annotations(sample)})  # fmt: skip
                bar(1)
    finally:
        bar(None)
    seconds = time.perf_counter() - t0
    if gather:
        from accelerate.utils import gather_object

        per_image = gather_object(per_image)
        seconds = max(gather_object([seconds]))
    results, ground_truth = _coco_inputs(per_image)
    return results, ground_truth, seconds


def _coco_inputs(per_image: list[dict]) -> tuple[list[dict], dict]:
    """The COCO result list and ground truth, each image once (padding shards repeat images),
    in image order."""
    unique = {item["index"]: item for item in reversed(per_image)}
    items = [unique[i] for i in sorted(unique)]
    if len({item["image"]["id"] for item in items}) != len(items):
        raise DataError("image ids are not unique in this dataset; COCOeval needs unique ids")
    annotations = [a for item in items for a in item["annotations"]]
    # COCOeval reads an annotation id of 0 as "unmatched", so a dataset whose ids start at 0
    # would lose its first instance: ids are renumbered 1..N, the dataset's kept as source_id
    annotations = [{**a, "id": n, "source_id": a["id"]} for n, a in enumerate(annotations, 1)]
    ground_truth = {
        "images": [item["image"] for item in items],
        "annotations": annotations,
        "categories": [CATEGORY],
    }
    return [r for item in items for r in item["results"]], ground_truth


def _image_entry(sample: Any) -> dict:
    height, width = np.asarray(sample.image).shape[:2]
    return {"id": int(sample.image_id), "height": int(height), "width": int(width),
            "file_name": str(getattr(sample, "file_name", ""))}  # fmt: skip


def ground_truth_annotations(sample: Any) -> list[dict]:
    """The sample's non-empty instances as class-agnostic COCO annotations (RLE, ``iscrowd``,
    ``area`` in pixels, ``bbox`` XYWH, ``id`` the instance id)."""
    from pycocotools import mask as mask_utils

    masks = np.asarray(sample.masks, dtype=bool)
    crowd = np.asarray(getattr(sample, "iscrowd", np.zeros(len(masks), bool)), dtype=bool)
    out = []
    for mask, is_crowd, ann_id in zip(masks, crowd, sample.instance_ids, strict=True):
        if not mask.any():
            continue
        rle = encode_mask(mask)
        out.append({"id": int(ann_id), "image_id": int(sample.image_id), "category_id": 1,
                    "segmentation": rle, "area": float(mask.sum()),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": int(is_crowd)})  # fmt: skip
    return out


def coco_metrics(results: list[dict], ground_truth: dict) -> dict:
    """``COCOeval(iouType="segm")`` on COCO results and a COCO ground-truth dataset: the
    :data:`COCO_STATS` keys, plus ``num_images``, ``num_instances`` (non-crowd ground truth),
    ``num_masks`` (results) and ``skipped_crowd``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(results) if results else _no_results(ground_truth)
        ev = COCOeval(gt, dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(v) if v >= 0 else float("nan") for v in ev.stats]
    crowd = sum(a["iscrowd"] for a in ground_truth["annotations"])
    return {
        **dict(zip(COCO_STATS, stats, strict=True)),
        "num_images": len(ground_truth["images"]),
        "num_instances": len(ground_truth["annotations"]) - crowd,
        "num_masks": len(results),
        "skipped_crowd": crowd,
    }


def _no_results(ground_truth: dict):
    """An empty result set (``COCO.loadRes`` refuses an empty list)."""
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {"images": ground_truth["images"], "categories": [CATEGORY], "annotations": []}
    dt.createIndex()
    return dt


def automatic_report(results: list, ground_truth: dict, seconds: float, **fields) -> EvalReport:
    """The :class:`EvalReport` of an ``auto`` run (``fields``: model, dataset, options, ...)."""
    metrics = coco_metrics(results, ground_truth)
    n = metrics["num_images"]
    timing = {"seconds": seconds, "images_per_s": n / seconds if seconds else float("nan")}
    return EvalReport(
        protocol="auto",
        metrics=metrics,
        timing={**timing, "processes": fields.pop("processes", 1)},
        coco={"results": results, "ground_truth": ground_truth},
        **fields,
    )


__all__ = ["COCO_STATS", "automatic_report", "coco_metrics", "evaluate_automatic"]

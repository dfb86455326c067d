"""The ``text`` protocol: SAM 3 prompted by every category name, scored class-aware.

No ground-truth prompt: on each image, every category name of the dataset is one phrase
(:func:`samtune.segment.by_name.segment_by_name`, the image encoded once), and every instance
found for a phrase is a prediction of that category with SAM 3's joint score. The predictions
are scored by :class:`~samtune.evaluation.class_metrics.ClassMetrics`: COCO mask AP, AP50, AP75
and AR@100 per class and their mean (``COCOeval``, ``useCats=1``), the semantic mIoU
(background included) and SAM 3's cgF1, both on the predictions scored at least
:data:`~samtune.evaluation.class_metrics.SCORE_THRESHOLD` (0.5).

AP ranks every prediction, so queries are kept down to :data:`AP_SCORE_FLOOR`, not only those
above 0.5. Adding lower-scored predictions can only raise AP or leave it (they come last in
the ranking), so the floor only bounds the work: each kept query's mask is resized to the
image and stored as RLE.

The report (protocol ``text``) holds the COCOeval inputs (``report.coco``: ``results`` and
``ground_truth``, written as ``coco_results.json`` and ``coco_ground_truth.json``), so
``COCO(gt).loadRes(results)`` and ``COCOeval(..., "segm")`` give its AP numbers again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..models.family import family_of
from ..segment.by_name import segment_by_name
from .class_metrics import SCORE_THRESHOLD, ClassMetrics, ClassPrediction
from .report import EvalReport

AP_SCORE_FLOOR = 0.05
"""Queries scored at or below this are not predictions (see the module docstring)."""

TEXT_BATCH = 4
"""Category names run through SAM 3's DETR stages together (memory, not results)."""


def check_text_model(model: torch.nn.Module) -> None:
    """ConfigError unless ``model`` takes text prompts (SAM 3)."""
    family = family_of(model)
    if not family.has_text:
        raise ConfigError(
            f"--prompt text needs a model with a text encoder (SAM 3, family sam3); this "
            f"model is {family.name} ({type(model).__name__}). Use box, point, clicks:N or "
            "auto with it, or evaluate a SAM 3 model (facebook/sam3, tiny-sam3)"
        )


def dataset_categories(dataset: Any) -> dict[int, str]:
    """``{id: name}`` of the dataset, in id order; ConfigError when it names none."""
    categories = dict(getattr(dataset, "categories", {}) or {})
    if not categories:
        raise ConfigError(
            "--prompt text prompts with the dataset's category names, and this dataset names "
            "none; give a COCO dataset with a 'categories' list"
        )
    return {int(k): str(v) for k, v in sorted(categories.items())}


def check_phrases(phrases: Any, categories: dict[int, str]) -> dict[int, str]:
    """``phrases`` as ``{category id: phrase}`` in the order of ``categories``; ConfigError
    unless it gives every category (and only those) one non-empty phrase."""
    if not isinstance(phrases, dict):
        raise ConfigError(
            f"phrases must map each category id to a phrase; found {type(phrases).__name__}"
        )
    given = {int(k): v for k, v in phrases.items()}
    if set(given) != set(categories):
        missing = sorted(set(categories) - set(given)) or sorted(set(given) - set(categories))
        raise ConfigError(
            f"phrases must give each of the dataset's category ids {sorted(categories)} one "
            f"phrase; category id {missing[0]} is {'missing' if missing[0] in categories else 'not in the dataset'}"
        )
    for cid in categories:
        if not isinstance(given[cid], str) or not given[cid].strip():
            raise ConfigError(f"phrases gives category id {cid} no words: {given[cid]!r}")
    return {cid: given[cid] for cid in categories}


def predict_image(
    sam: torch.nn.Module, sample: Any, phrases: dict[int, str]
) -> list[ClassPrediction]:
    """Every phrase of ``phrases`` (``{category id: phrase}``) on ``sample.image``: the
    predictions scored above :data:`AP_SCORE_FLOOR`, phrase by phrase, with the category id
    of their phrase."""
    ids = list(phrases)
    found = segment_by_name(sam, sample.image, list(phrases.values()),
                            score_threshold=AP_SCORE_FLOOR, text_batch=TEXT_BATCH)  # fmt: skip
    return [ClassPrediction(f.mask, ids[f.category_id], f.score) for f in found]


def _encoded(predictions: list[ClassPrediction]) -> list[dict]:
    from ..data.masks import encode_mask

    return [{"rle": encode_mask(np.asarray(p.mask, bool)), "category_id": p.category_id,
             "score": p.score} for p in predictions]  # fmt: skip


def _decoded(items: list[dict]) -> list[ClassPrediction]:
    from pycocotools import mask as mask_utils

    return [ClassPrediction(mask_utils.decode(i["rle"]).astype(bool), i["category_id"],
                            i["score"]) for i in items]  # fmt: skip


def evaluate_text(
    sam: torch.nn.Module,
    dataset: Any,
    indices: list[int],
    *,
    phrases: dict[int, str] | None = None,
    progress: Callable[[int | None], None] = lambda n: None,
    gather: bool = False,
) -> tuple[ClassMetrics, float]:
    """Prompt the images ``indices`` (this process's share) by the phrase of every category
    (``phrases``: ``{category id: phrase}``; default: the category names) and score them:
    ``(metrics, seconds)``; with ``gather``, every process's images, on all."""
    categories = dataset_categories(dataset)
    phrases = dict(categories) if phrases is None else check_phrases(phrases, categories)
    metrics = ClassMetrics(categories, score_threshold=SCORE_THRESHOLD)
    per_image = []
    t0 = time.perf_counter()
    try:
        for index in indices:
            sample = dataset[index]
            predictions = predict_image(sam, sample, phrases)
            if gather:  # sent to every process as RLE, scored there in image order
                per_image.append({"index": index, "predictions": _encoded(predictions)})
            else:
                metrics.add(sample, predictions)
            progress(1)
    finally:
        progress(None)
    seconds = time.perf_counter() - t0
    if gather:
        from accelerate.utils import gather_object

        unique = {item["index"]: item for item in gather_object(per_image)}
        for index in sorted(unique):  # padding shards repeat images: each counts once
            metrics.add(dataset[index], _decoded(unique[index]["predictions"]))
        seconds = max(gather_object([seconds]))
    return metrics, seconds


def text_report(metrics: ClassMetrics, seconds: float, **fields: Any) -> EvalReport:
    """The :class:`EvalReport` of a ``text`` run (``fields``: model, dataset, options,
    processes). ``metrics``: :meth:`ClassMetrics.compute`'s keys (``ap``, ``ap50``, ``ap75``,
    ``ar100``, ``semantic_miou``, ``cgf1`` ... and ``per_class``)."""
    values = metrics.compute()
    n = values["num_images"]
    timing = {"seconds": seconds, "images_per_s": n / seconds if seconds else float("nan")}
    return EvalReport(
        protocol="text",
        metrics=values,
        categories=dict(metrics.categories),
        timing={**timing, "processes": fields.pop("processes", 1)},
        coco={"results": metrics.results, "ground_truth": metrics.ground_truth},
        **fields,
    )


__all__ = [
    "AP_SCORE_FLOOR",
    "TEXT_BATCH",
    "check_phrases",
    "check_text_model",
    "dataset_categories",
    "evaluate_text",
    "predict_image",
    "text_report",
]

"""Class-aware metrics with no ground-truth prompt: what the waste datasets' own benchmarks report.

Input: the ground truth as :class:`~samtune.data.sample.Sample` objects (an
:class:`~samtune.data.coco.InstanceDataset`'s items) with the dataset's ``categories``
(``{id: name}``), and per image a list of :class:`ClassPrediction` (a mask, a category id, a
score). No model is involved: whatever produced the instances (SAM 3 prompted by class names,
say), these functions score them. :class:`ClassMetrics` takes one image at a time, so a
dataset never has to be held in memory.

Three families of numbers, each as its source computes it:

* **COCO mask AP** (TrashCan 1.0, TACO): ``pycocotools.cocoeval.COCOeval(iouType="segm")`` with
  category ids (``useCats=1``): AP over IoU 0.50:0.95, AP50, AP75 and AR@100, per class and
  their mean. A class with no ground-truth instance has no AP (COCOeval writes -1; here NaN)
  and is left out of the mean, as COCOeval leaves it out. Crowd instances are ground truth
  with ``iscrowd: 1``. The exact COCOeval inputs are kept and can be written
  (:meth:`ClassMetrics.write_coco_inputs`) so anyone can rerun COCOeval on them.
* **Semantic mIoU** (ZeroWaste-f): one class map per image, background 0 and class ``i`` for
  the ``i``-th category in id order. The predicted map paints the instances scored at least
  ``score_threshold`` in ascending score order, so the highest score wins a pixel (ties: the
  later instance); the ground-truth map takes, per pixel, the largest class index among the
  instances covering it, as the ZeroWaste authors built their ``sem_seg`` maps
  (``create_zerowasteaug/get_sem_seg.py``: ``np.maximum`` of ``category_id`` masks). One
  confusion matrix is summed over every pixel of the dataset (not per-image averages); the IoU
  of a class is ``TP / (TP + FP + FN)`` over it, and the mIoU averages the classes that occur
  in the ground truth or the prediction, **background included** as a class. This is
  detectron2's ``SemSegEvaluator``, which the ZeroWaste DeepLabV3+ benchmark uses with the
  classes ``background, rigid_plastic, cardboard, metal, soft_plastic``
  (github.com/dbash/zerowaste, ``deeplab/train_net.py``, ``SemSegAPEvaluator``, commit
  369706c).
* **cgF1** (SAM 3, Carion et al. 2025, "SAM 3: Segment Anything with Concepts"), as Meta's
  ``sam3.eval.cgf1_eval.CGF1Eval`` (sam3 0.1.4) computes it. Every (image, category) pair is
  one query, whether or not the category occurs in the image. For a pair: the ground truth is
  its non-crowd instances of that category (crowd ones are ignored), the predictions are those
  of that category scored at least ``score_threshold`` (0.5, Meta's default). Predictions and
  ground truth are matched one to one by the Hungarian algorithm on mask IoU
  (``scipy.optimize.linear_sum_assignment``, maximising the total IoU); at each IoU threshold
  ``t`` in 0.50:0.05:0.95 a match with IoU >= t is a true positive, the other predictions false
  positives and the other ground truth false negatives. The pair counts as an image-level
  positive when it has ground truth, as predicted positive when it has a prediction; the
  image-level MCC is computed from those four counts. The positive micro-F1 sums TP, FN over
  all pairs and FP over the pairs with ground truth only; ``cgF1 = positive micro-F1 x MCC``
  at each threshold, and ``cgf1`` averages the ten thresholds. Meta's smoothing constants are
  kept (1e-4 in precision, recall and F1; 1e-6 in the MCC), so the numbers agree with theirs.

Fractions in [0, 1] everywhere (tables show them as percentages); NaN where a number does not
exist (a report writes it as JSON ``null``).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.masks import encode_mask, semantic_label_map
from ..errors import DataError
from ..io import atomic_write, dump_json
from ..tables import format_change, format_number, markdown_table
from .metrics import confusion_matrix, semantic_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
"""The IoU thresholds of COCOeval and cgF1 (0.50, 0.55, ..., 0.95), built as pycocotools'
``Params`` builds them so that comparisons with a match's IoU give the same answer."""

SCORE_THRESHOLD = 0.5
"""Predictions scored below this are left out of cgF1 and of the semantic class map (SAM 3's
detection threshold, Meta's ``CGF1Eval`` default). AP ranks every prediction by score."""

COCO_GROUND_TRUTH = "coco_ground_truth.json"
COCO_RESULTS = "coco_results.json"
"""File names of the COCOeval inputs, as the ``auto`` protocol writes them."""

COCO_KEYS = {"ap": 0, "ap50": 1, "ap75": 2, "ar100": 8}
"""Metric key -> index in ``COCOeval.stats``."""

BACKGROUND = "background"


@dataclass(frozen=True)
class ClassPrediction:
    """One predicted instance of a named class on one image.

    Attributes:
        mask: HxW bool, in the pixels of the image as the dataset yields it
            (``Sample.image``, EXIF orientation applied).
        category_id: a key of the dataset's ``categories``.
        score: the model's confidence, a finite number (SAM 3: the query's score in [0, 1]).
    """

    mask: np.ndarray
    category_id: int
    score: float


@dataclass(frozen=True)
class PairCounts:
    """cgF1's counts for one (image, category) query.

    Attributes:
        image_id, category_id: the query.
        num_truth: non-crowd ground-truth instances of the category in the image.
        num_predicted: predictions of the category scored at least the threshold.
        true_positives: int64 array, one count per :data:`IOU_THRESHOLDS` entry.
    """

    image_id: int
    category_id: int
    num_truth: int
    num_predicted: int
    true_positives: np.ndarray


class ClassMetrics:
    """Accumulates class-aware metrics one image at a time; :meth:`compute` gives them all.

    Args:
        categories: the dataset's ``{category_id: name}``.
        score_threshold: see :data:`SCORE_THRESHOLD`.

    Attributes:
        ground_truth: the COCO dataset COCOeval reads (``images``, ``annotations`` with compressed
            RLE ``segmentation``, ``categories``); annotation ids are renumbered 1..N in order
            (COCOeval takes an id of 0 for "unmatched"), the source id kept as ``source_id``.
        results: the COCO result list (``image_id``, ``category_id``, ``segmentation``,
            ``score``), every prediction in input order.
        confusion: (K+1)x(K+1) int64 pixel counts ``[truth, predicted]``, index 0 background.
        pairs: one :class:`PairCounts` per (image, category).
    """

    def __init__(
        self, categories: Mapping[int, str], *, score_threshold: float = SCORE_THRESHOLD
    ) -> None:
        if not categories:
            raise DataError("class-aware metrics need the dataset's category names; found none")
        self.categories = {int(k): str(v) for k, v in sorted(categories.items())}
        self.class_index = {cid: i + 1 for i, cid in enumerate(self.categories)}
        self.score_threshold = float(score_threshold)
        self.ground_truth: dict = {
            "images": [],
            "annotations": [],
            "categories": [{"id": k, "name": v} for k, v in self.categories.items()],
        }
        self.results: list[dict] = []
        size = len(self.categories) + 1
        self.confusion = np.zeros((size, size), dtype=np.int64)
        self.pairs: list[PairCounts] = []
        self._image_ids: set[int] = set()

    def add(self, sample: Any, predictions: Sequence[ClassPrediction]) -> None:
        """Score one image: ``sample`` a :class:`~samtune.data.sample.Sample` (masks NxHxW bool,
        ``category_ids``, ``iscrowd``, ``image_id``), ``predictions`` its instances."""
        image_id = int(sample.image_id)
        if image_id in self._image_ids:
            raise DataError(
                f"image id {image_id} was added twice; COCOeval needs unique ids: add each image once"
            )
        height, width = np.asarray(sample.image).shape[:2]
        self._check(sample, predictions, (height, width))
        self._image_ids.add(image_id)
        self.ground_truth["images"].append(
            {
                "id": image_id,
                "height": int(height),
                "width": int(width),
                "file_name": str(getattr(sample, "file_name", "")),
            }
        )
        self._add_truth(sample)
        self.results += [_coco_result(image_id, p) for p in predictions]
        kept = [p for p in predictions if p.score >= self.score_threshold]
        self.confusion += self._confusion(sample, kept, (height, width))
        self.pairs += image_pairs(sample, kept, self.categories)

    def _check(self, sample: Any, predictions: Sequence[ClassPrediction], size: tuple) -> None:
        """DataError for a category the dataset lacks, a mask of another size, a bad score."""
        where = f"image {sample.image_id} ({getattr(sample, 'file_name', '')!r})"
        for cid in np.asarray(sample.category_ids).tolist():
            if int(cid) not in self.categories:
                raise DataError(
                    f"{where}: ground truth of category id {cid}, which is not "
                    f"one of the dataset's categories {sorted(self.categories)}"
                )
        for i, p in enumerate(predictions):
            if int(p.category_id) not in self.categories:
                raise DataError(
                    f"{where}: prediction {i} has category id {p.category_id}; expected one of "
                    f"the dataset's {sorted(self.categories)}: map the model's classes to them"
                )
            if np.shape(p.mask) != size:
                raise DataError(
                    f"{where}: prediction {i} has a mask of shape "
                    f"{np.shape(p.mask)}; expected the image's {size} (H, W): resize it to the image"
                )
            if not math.isfinite(float(p.score)):
                raise DataError(
                    f"{where}: prediction {i} has score {p.score}; expected a finite number"
                )

    def _add_truth(self, sample: Any) -> None:
        """The sample's non-empty instances as COCO annotations (crowd ones ``iscrowd: 1``)."""
        from pycocotools import mask as mask_utils

        annotations = self.ground_truth["annotations"]
        crowd = _crowd(sample)
        for mask, cid, is_crowd, source in zip(
            np.asarray(sample.masks, bool),
            sample.category_ids,
            crowd,
            sample.instance_ids,
            strict=True,
        ):
            if not mask.any():
                continue
            rle = encode_mask(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "source_id": int(source),
                    "image_id": int(sample.image_id),
                    "category_id": int(cid),
                    "segmentation": rle,
                    "area": float(mask.sum()),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": int(is_crowd),
                }
            )

    def _confusion(self, sample: Any, kept: list[ClassPrediction], size: tuple) -> np.ndarray:
        """This image's ``[truth, predicted]`` pixel counts of the two class maps."""
        truth = np.zeros(size, dtype=np.int64)
        for mask, cid in zip(np.asarray(sample.masks, bool), sample.category_ids, strict=True):
            np.maximum(truth, np.where(mask, self.class_index[int(cid)], 0), out=truth)
        masks = (
            np.stack([np.asarray(p.mask, bool) for p in kept])
            if kept
            else np.zeros((0, *size), bool)
        )
        labels = [self.class_index[int(p.category_id)] for p in kept]
        predicted = semantic_label_map(masks, labels, [float(p.score) for p in kept])
        return confusion_matrix(predicted, truth, len(self.categories) + 1, ignore_index=-1)

    def compute(self) -> dict:
        """Every metric: see :func:`combine` for the format. DataError before any image."""
        if not self._image_ids:
            raise DataError("no image was scored: class-aware metrics need at least one image")
        coco = coco_class_metrics(self.ground_truth, self.results)
        semantic = semantic_metrics(self.confusion)
        cgf1 = {"all": cgf1_metrics(self.pairs)}
        for cid in self.categories:
            queries = [p for p in self.pairs if p.category_id == cid]
            positive = any(p.num_truth for p in queries)  # else its F1 and MCC do not exist
            cgf1[cid] = cgf1_metrics(queries) if positive else {"cgf1": float("nan")}
        return combine(self, coco, semantic, cgf1)

    def write_coco_inputs(self, folder: str | Path) -> dict[str, Path]:
        """Write :data:`COCO_GROUND_TRUTH` and :data:`COCO_RESULTS` into ``folder`` (each
        atomically); ``{"ground_truth": path, "results": path}``. ``COCO(ground_truth)``,
        ``.loadRes(results)`` and ``COCOeval(..., "segm")`` give :meth:`compute`'s AP numbers
        (with no prediction at all the results file is ``[]``, which ``loadRes`` refuses)."""
        folder = Path(folder)
        paths = {"ground_truth": folder / COCO_GROUND_TRUTH, "results": folder / COCO_RESULTS}
        for key, data in (("ground_truth", self.ground_truth), ("results", self.results)):
            with atomic_write(paths[key]) as tmp:
                tmp.write_text(dump_json(data), encoding="utf-8")
        return paths


def _crowd(sample: Any) -> np.ndarray:
    return np.asarray(getattr(sample, "iscrowd", np.zeros(len(sample.category_ids), bool)), bool)


def _coco_result(image_id: int, prediction: ClassPrediction) -> dict:
    """One COCO result: ``image_id``, ``category_id``, ``segmentation`` (compressed RLE), ``score``."""
    return {
        "image_id": image_id,
        "category_id": int(prediction.category_id),
        "segmentation": encode_mask(np.asarray(prediction.mask, bool)),
        "score": float(prediction.score),
    }


# --------------------------------------------------------------------------- COCO AP


def coco_class_metrics(ground_truth: dict, results: list[dict]) -> dict:
    """COCOeval ``segm`` with category ids on a COCO dataset and result list.

    Returns:
        ``{"ap", "ap50", "ap75", "ar100"}`` (COCOeval's ``stats``: the mean over the classes
        that have ground truth; NaN where none has) and ``per_class``:
        ``{category_id: {"ap", "ap50", "ap75", "ar100"}}``, NaN for a class without ground
        truth (COCOeval's -1).
    """
    ev = _run_cocoeval(ground_truth, results)
    stats = {key: _valid(ev.stats[i]) for key, i in COCO_KEYS.items()}
    precision, recall = ev.eval["precision"], ev.eval["recall"]  # [T,R,K,A,M], [T,K,A,M]
    per_class = {}
    for k, cid in enumerate(ev.params.catIds):  # area "all" is index 0, maxDets 100 the last
        per_class[int(cid)] = {
            "ap": _mean_valid(precision[:, :, k, 0, -1]),
            "ap50": _mean_valid(precision[0, :, k, 0, -1]),
            "ap75": _mean_valid(precision[5, :, k, 0, -1]),
            "ar100": _mean_valid(recall[:, k, 0, -1]),
        }
    return {**stats, "per_class": per_class}


def _run_cocoeval(ground_truth: dict, results: list[dict]):
    """An evaluated, accumulated and summarised ``COCOeval`` (pycocotools' prints swallowed)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        if results:  # loadRes adds keys to each result: give it copies
            dt = gt.loadRes([dict(r) for r in results])
        else:  # loadRes refuses an empty list
            dt = COCO()
            dt.dataset = {**ground_truth, "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _valid(value: float) -> float:
    """COCOeval's -1 ("no data") as NaN."""
    return float(value) if value > -1 else float("nan")


def _mean_valid(values: np.ndarray) -> float:
    """Mean of the entries above -1, as ``COCOeval.summarize`` takes it; NaN if none."""
    kept = values[values > -1]
    return float(np.mean(kept)) if kept.size else float("nan")


# --------------------------------------------------------------------------- semantic mIoU


def semantic_metrics(confusion: np.ndarray) -> dict:
    """mIoU of a ``[truth, predicted]`` confusion matrix summed over a dataset's pixels.

    Returns:
        ``{"semantic_miou", "iou"}``: ``iou`` per class index (0 = background) ``TP / (TP +
        FP + FN)``, NaN for a class in neither map; ``semantic_miou`` their mean over the
        classes that are not NaN, background included (detectron2's ``SemSegEvaluator``).
    """
    iou = semantic_iou(confusion)
    valid = ~np.isnan(iou)
    miou = float(iou[valid].mean()) if valid.any() else float("nan")
    return {"semantic_miou": miou, "iou": [float(v) for v in iou]}


# --------------------------------------------------------------------------- cgF1


def image_pairs(
    sample: Any, kept: Sequence[ClassPrediction], categories: Iterable[int]
) -> list[PairCounts]:
    """cgF1's counts of every (image, category) query of one image; ``kept``: the predictions
    at or above the score threshold, in input order."""
    crowd = _crowd(sample)
    masks = np.asarray(sample.masks, bool)
    cats = np.asarray(sample.category_ids)
    out = []
    for cid in categories:
        truth = masks[(cats == cid) & ~crowd]
        predicted = [np.asarray(p.mask, bool) for p in kept if int(p.category_id) == cid]
        out.append(
            PairCounts(
                int(sample.image_id),
                int(cid),
                len(truth),
                len(predicted),
                match_true_positives(predicted, truth),
            )
        )
    return out


def mask_iou_matrix(predicted: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> np.ndarray:
    """PxG float64 IoU of HxW bool masks, 0 where both are empty (as ``pycocotools.mask.iou``)."""
    if len(predicted) == 0 or len(truth) == 0:
        return np.zeros((len(predicted), len(truth)))
    p = np.stack([m.reshape(-1) for m in predicted]).astype(np.float64)
    g = np.stack([m.reshape(-1) for m in truth]).astype(np.float64)
    inter = p @ g.T
    union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_true_positives(
    predicted: Sequence[np.ndarray], truth: Sequence[np.ndarray]
) -> np.ndarray:
    """True positives at each :data:`IOU_THRESHOLDS` entry after one-to-one Hungarian matching
    that maximises the total IoU (int64, one per threshold)."""
    from scipy.optimize import linear_sum_assignment

    if len(predicted) == 0 or len(truth) == 0:
        return np.zeros(len(IOU_THRESHOLDS), dtype=np.int64)
    iou = mask_iou_matrix(predicted, truth)
    rows, cols = linear_sum_assignment(-iou)
    matched = iou[rows, cols]
    return (matched[None, :] >= IOU_THRESHOLDS[:, None]).sum(1).astype(np.int64)


def cgf1_metrics(pairs: Sequence[PairCounts]) -> dict:
    """cgF1 and its parts from per-query counts, with Meta's smoothing constants.

    Returns:
        ``cgf1`` (mean over the IoU thresholds), ``cgf1@50``, ``cgf1@75``, ``il_mcc``,
        ``positive_micro_f1`` (mean over thresholds), ``positive_micro_f1@50``, and the
        image-level counts ``il_tp``, ``il_fp``, ``il_tn``, ``il_fn`` (queries).
    """
    size = len(IOU_THRESHOLDS)
    tp, fp, fn, positive_fp = (np.zeros(size, np.int64) for _ in range(4))
    image_level: Counter = Counter()
    for pair in pairs:
        has_truth, has_prediction = pair.num_truth > 0, pair.num_predicted > 0
        image_level[has_truth, has_prediction] += 1
        tp += pair.true_positives
        fp += pair.num_predicted - pair.true_positives
        fn += pair.num_truth - pair.true_positives
        if has_truth:
            positive_fp += pair.num_predicted - pair.true_positives
    precision = tp / (tp + positive_fp + 1e-4)
    recall = tp / (tp + fn + 1e-4)
    f1 = 2 * precision * recall / (precision + recall + 1e-4)
    il = {
        "il_tp": image_level[True, True],
        "il_fp": image_level[False, True],
        "il_tn": image_level[False, False],
        "il_fn": image_level[True, False],
    }
    mcc = image_level_mcc(**il)
    cgf1 = f1 * mcc
    return {
        "cgf1": _mean_valid(cgf1),
        "cgf1@50": _mean_valid(cgf1[:1]),
        "cgf1@75": _mean_valid(cgf1[5:6]),
        "il_mcc": mcc,
        "positive_micro_f1": float(f1.mean()),
        "positive_micro_f1@50": float(f1[0]),
        **il,
    }


def image_level_mcc(il_tp: int, il_fp: int, il_tn: int, il_fn: int) -> float:
    """Matthews correlation of the image-level decisions (1e-6 added to the denominator, as
    Meta's ``CGF1Eval.accumulate``; 0 when a row or column of the 2x2 table is empty)."""
    denominator = float(il_tp + il_fp) * float(il_tp + il_fn) * float(il_tn + il_fp)
    denominator *= float(il_tn + il_fn)
    return float(il_tp * il_tn - il_fp * il_fn) / (denominator**0.5 + 1e-6)


# --------------------------------------------------------------------------- result and tables


def combine(metrics: ClassMetrics, coco: dict, semantic: dict, cgf1: dict) -> dict:
    """The result of :meth:`ClassMetrics.compute`.

    Returns:
        ``ap``, ``ap50``, ``ap75``, ``ar100`` (COCO means), ``semantic_miou``,
        ``background_iou``, every key of :func:`cgf1_metrics` over all queries, counts
        (``num_images``, ``num_instances`` non-crowd, ``num_predictions``),
        ``score_threshold``, and ``per_class``: ``{name: {"category_id", "ap", "ap50",
        "ap75", "ar100", "iou", "cgf1", "num_instances"}}`` in category-id order; a class's
        ``cgf1`` is cgF1 over its queries only, NaN when none has ground truth (Meta's formula
        would give 0 there for want of positives, not for a wrong prediction).
    """
    counts = Counter(
        a["category_id"] for a in metrics.ground_truth["annotations"] if not a["iscrowd"]
    )
    per_class = {}
    for name, cid in zip(_class_names(metrics.categories), metrics.categories, strict=True):
        per_class[name] = {
            "category_id": cid,
            **coco["per_class"].get(cid, dict.fromkeys(COCO_KEYS, float("nan"))),
            "iou": semantic["iou"][metrics.class_index[cid]],
            "cgf1": cgf1[cid]["cgf1"],
            "num_instances": counts.get(cid, 0),
        }
    return {
        **{k: coco[k] for k in COCO_KEYS},
        "semantic_miou": semantic["semantic_miou"],
        "background_iou": semantic["iou"][0],
        **cgf1["all"],
        "num_images": len(metrics.ground_truth["images"]),
        "num_instances": sum(counts.values()),
        "num_predictions": len(metrics.results),
        "score_threshold": metrics.score_threshold,
        "per_class": per_class,
    }


def _class_names(categories: Mapping[int, str]) -> list[str]:
    """Row names: the category name, with its id where two categories share a name."""
    seen = Counter(categories.values())
    return [name if seen[name] == 1 else f"{name} ({cid})" for cid, name in categories.items()]


def evaluate_class_aware(
    samples: Iterable[Any],
    predictions: Mapping[int, Sequence[ClassPrediction]],
    categories: Mapping[int, str],
    *,
    score_threshold: float = SCORE_THRESHOLD,
    coco_folder: str | Path | None = None,
) -> dict:
    """Score ``predictions`` (``{image_id: [ClassPrediction, ...]}``; an image missing from it
    has no prediction) against ``samples``; with ``coco_folder``, write the COCOeval inputs
    there. Returns :meth:`ClassMetrics.compute`'s dict."""
    metrics = ClassMetrics(categories, score_threshold=score_threshold)
    seen = set()
    for sample in samples:
        seen.add(int(sample.image_id))
        metrics.add(sample, predictions.get(int(sample.image_id), []))
    unknown = sorted(set(int(i) for i in predictions) - seen)
    if unknown:
        raise DataError(f"predictions for image ids {unknown[:5]} that are not in the dataset")
    if coco_folder is not None:
        metrics.write_coco_inputs(coco_folder)
    return metrics.compute()


TABLE_COLUMNS = {
    "ap": "AP",
    "ap50": "AP50",
    "ap75": "AP75",
    "ar100": "AR@100",
    "iou": "IoU",
    "cgf1": "cgF1",
}
"""Per-class key -> column title of :func:`class_table_rows`."""

MEAN_KEYS = {
    "ap": "ap",
    "ap50": "ap50",
    "ap75": "ap75",
    "ar100": "ar100",
    "iou": "semantic_miou",
    "cgf1": "cgf1",
}
"""Per-class key -> the result key of its mean row."""


def class_table_rows(
    results: Mapping[str, dict], columns: Sequence[str] = tuple(TABLE_COLUMNS)
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-class table of several results side by side.

    Args:
        results: ``{label: compute() result}``, e.g. ``{"zero-shot": ..., "fine-tuned": ...}``;
            the first is the baseline, every other cell reads ``value (+change)``.
        columns: keys of :data:`TABLE_COLUMNS`; each gives one column per label.

    Returns:
        ``(header, rows)`` for :func:`samtune.tables.markdown_table`: one row per class of the
        first result, a ``background`` row (IoU only), and a ``mean`` row (COCO's means, the
        semantic mIoU with background, cgF1 over every query). Percentages, two decimals.
    """
    labels = list(results)
    header = ["class", *(f"{TABLE_COLUMNS[c]} {label}" for c in columns for label in labels)]
    base = results[labels[0]]
    rows = []
    for name in base["per_class"]:
        values = {label: r["per_class"].get(name, {}) for label, r in results.items()}
        rows.append([name, *_cells(values, columns, labels)])
    background = {label: {"iou": r["background_iou"]} for label, r in results.items()}
    rows.append([BACKGROUND, *_cells(background, columns, labels, missing="-")])
    means = {label: {c: r[MEAN_KEYS[c]] for c in columns} for label, r in results.items()}
    rows.append(["mean", *_cells(means, columns, labels)])
    return header, rows


def _cells(values: Mapping[str, dict], columns: Sequence[str], labels: list[str], missing=None):
    """One formatted cell per (column, label); a key absent from a row gives ``missing``."""
    out = []
    for column in columns:
        base = values[labels[0]].get(column)
        for label in labels:
            if column not in values[label] and missing is not None:
                out.append(missing)
                continue
            value = values[label].get(column)
            change = "" if label == labels[0] else format_change(value, base, True, missing="")
            out.append(format_number(value, True) + (f" ({change})" if change else ""))
    return out


def class_metrics_markdown(results: Mapping[str, dict]) -> str:
    """The per-class table of :func:`class_table_rows` as Markdown (no trailing newline)."""
    return markdown_table(*class_table_rows(results))


__all__ = [
    "COCO_GROUND_TRUTH",
    "COCO_RESULTS",
    "IOU_THRESHOLDS",
    "SCORE_THRESHOLD",
    "ClassMetrics",
    "ClassPrediction",
    "PairCounts",
    "cgf1_metrics",
    "class_metrics_markdown",
    "class_table_rows",
    "coco_class_metrics",
    "evaluate_class_aware",
    "image_level_mcc",
    "image_pairs",
    "mask_iou_matrix",
    "match_true_positives",
    "semantic_metrics",
]

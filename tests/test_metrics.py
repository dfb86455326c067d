"""Metric definitions against independent oracles (pycocotools) and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from samtune.data.masks import semantic_label_map
from samtune.evaluation import metrics as M


def _coco_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    rp = mask_utils.encode(np.asfortranarray(pred.astype(np.uint8)))
    rg = mask_utils.encode(np.asfortranarray(gt.astype(np.uint8)))
    return float(mask_utils.iou([rp], [rg], [0])[0, 0])


def _random_masks(rng, n, h, w, p):
    return rng.random((n, h, w)) < p


def test_iou_equals_pycocotools_on_random_masks():
    rng = np.random.default_rng(0)
    pred = _random_masks(rng, 20, 37, 53, 0.3)
    gt = _random_masks(rng, 20, 37, 53, 0.5)
    pred[3] = False  # empty prediction vs non-empty target
    gt[7] = False  # non-empty prediction vs empty target
    gt[9] = pred[9]  # identical
    ours = M.mask_iou(pred, gt)
    oracle = np.array([_coco_iou(p, g) for p, g in zip(pred, gt, strict=True)])
    np.testing.assert_allclose(ours, oracle, atol=1e-6, rtol=0)
    assert ours[3] == 0.0 and ours[7] == 0.0 and ours[9] == 1.0


def test_iou_of_blocks_is_exact():
    pred = np.zeros((10, 10), bool)
    gt = np.zeros((10, 10), bool)
    pred[0:4, 0:4] = True  # 16 px
    gt[2:6, 2:6] = True  # 16 px, overlap 4
    assert float(M.mask_iou(pred, gt)) == pytest.approx(4 / 28, abs=1e-12)
    assert float(M.mask_dice(pred, gt)) == pytest.approx(8 / 32, abs=1e-12)


def test_empty_vs_empty_is_one_and_differs_from_pycocotools():
    """Documented choice: two empty masks agree (IoU 1, Dice 1); pycocotools says 0."""
    empty = np.zeros((1, 8, 8), bool)
    assert float(M.mask_iou(empty, empty)[0]) == 1.0
    assert float(M.mask_dice(empty, empty)[0]) == 1.0
    assert _coco_iou(empty[0], empty[0]) == 0.0


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="same shape"):
        M.mask_iou(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5), bool))


def _rec(image, cat, inter, union, parea, tarea):
    return dict(
        image_index=image,
        category_id=cat,
        intersection=inter,
        union=union,
        pred_area=parea,
        target_area=tarea,
    )


def test_summaries_follow_their_definitions():
    records = [
        _rec(0, 1, 5, 10, 5, 10),  # IoU .5, dice 10/15
        _rec(0, 2, 0, 10, 0, 10),  # IoU 0, dice 0
        _rec(1, 1, 9, 10, 10, 9),  # IoU .9, dice 18/19
    ]
    s = M.summarize_instances(records, {1: "bottle", 2: "can"})
    assert s["miou"] == pytest.approx((0.5 + 0 + 0.9) / 3)
    assert s["image_miou"] == pytest.approx(((0.5 + 0) / 2 + 0.9) / 2)
    assert s["class_miou"] == pytest.approx(((0.5 + 0.9) / 2 + 0) / 2)
    assert s["pooled_iou"] == pytest.approx(14 / 30)
    assert s["dice"] == pytest.approx((10 / 15 + 0 + 18 / 19) / 3)
    assert s["pooled_dice"] == pytest.approx(28 / 44)
    assert s["per_class"] == {
        "bottle": {"miou": pytest.approx(0.7), "count": 2},
        "can": {"miou": 0.0, "count": 1},
    }


def test_semantic_label_map_resolves_overlaps_by_score_and_ignores_crowd():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :, :3] = True
    masks[1, :, 1:] = True
    by_score = semantic_label_map(masks, [1, 2], [0.9, 0.1])
    assert (by_score[:, :3] == 1).all() and (by_score[:, 3] == 2).all()
    by_order = semantic_label_map(masks, [1, 2])  # later wins
    assert (by_order[:, 0] == 1).all() and (by_order[:, 1:] == 2).all()
    crowd = np.zeros((4, 4), bool)
    crowd[0] = True
    assert (semantic_label_map(masks, [1, 2], ignore=crowd)[0] == 255).all()


def test_semantic_iou_from_confusion():
    target = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 2]])
    conf = M.confusion_matrix(pred, target, 4)
    assert conf.sum() == 7  # ignore pixel left out
    ious = M.semantic_iou(conf)
    np.testing.assert_allclose(ious[:3], [2 / 4, 2 / 3, 1 / 2])
    assert math.isnan(ious[3])  # class absent from target and prediction


def test_click_metrics():
    curves = [[0.5, 0.86, 0.95], [0.91, 0.92, 0.93], [0.1, 0.2, 0.3]]
    s = M.summarize_clicks(curves)
    assert s["miou@1"] == pytest.approx((0.5 + 0.91 + 0.1) / 3)
    assert s["miou@3"] == pytest.approx((0.95 + 0.93 + 0.3) / 3)
    assert s["noc@85"] == pytest.approx((2 + 1 + 3) / 3)
    assert s["noc@90"] == pytest.approx((3 + 1 + 3) / 3)  # never reached counts as N
    assert s["nof@85"] == 1 and s["nof@90"] == 1
    assert M.noc([0.2, 0.95], 0.9, 5) == 2
    assert M.noc([0.2, 0.5], 0.9, 2) == 2

"""Automatic mask generation: invariance to the batch size, filters, crops, cleaning, COCO RLE."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from samtune.errors import ConfigError
from samtune.models.loading import load_model
from samtune.segment.automatic import AutoMaskConfig, generate_masks

KEEP_ALL = {"pred_iou_thresh": -1.0, "stability_score_thresh": -1.0}


@pytest.fixture(scope="module")
def model():
    return load_model("demo")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = (rng.random((96, 128, 3)) * 60).astype(np.uint8)
    img[20:60, 30:80] = (200, 40, 40)
    img[50:90, 90:120] = (30, 200, 90)
    return img


def test_masks_are_identical_whatever_points_per_batch(model, image):
    runs = [
        generate_masks(model, image, points_per_side=5, points_per_batch=b, **KEEP_ALL)
        for b in (1, 7, 64)
    ]
    assert len(runs[0]) > 1
    for other in runs[1:]:
        assert np.array_equal(runs[0].masks, other.masks)
        assert np.array_equal(runs[0].point_coords, other.point_coords)
        assert np.array_equal(runs[0].stability_score, other.stability_score)
        # the IoU head's output may differ in the last bit: BLAS blocks by batch size
        np.testing.assert_allclose(runs[0].predicted_iou, other.predicted_iou, rtol=0, atol=1e-5)


def test_thresholds_filter_and_results_are_ranked(model, image):
    everything = generate_masks(model, image, points_per_side=5, **KEEP_ALL)
    cut = float(np.median(everything.predicted_iou))
    fewer = generate_masks(model, image, points_per_side=5, pred_iou_thresh=cut,
                           stability_score_thresh=-1.0)  # fmt: skip
    assert 0 < len(fewer) < len(everything)
    assert (fewer.predicted_iou > cut).all()
    assert (np.diff(everything.predicted_iou) <= 0).all()


def test_crops_cover_the_image_and_coco_rle_round_trips(model, image):
    found = generate_masks(model, image, points_per_side=4, crop_n_layers=1, **KEEP_ALL)
    crops = {tuple(c) for c in found.crop_boxes.tolist()}
    assert (0.0, 0.0, 128.0, 96.0) in crops and len(crops) > 1
    records = found.to_coco(image_id=7)
    for mask, rec in zip(found.masks, records, strict=True):
        assert rec["image_id"] == 7 and rec["category_id"] == 1
        assert np.array_equal(mask_utils.decode(rec["segmentation"]).astype(bool), mask)
        assert rec["area"] == int(mask.sum())
        ys, xs = np.nonzero(mask)
        assert rec["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    labels = found.label_map()
    assert labels.shape == (96, 128) and labels.max() <= len(found)


def test_small_regions_and_holes_are_removed(model, image):
    area = 40
    found = generate_masks(model, image, points_per_side=5, min_mask_region_area=area, **KEEP_ALL)
    from scipy import ndimage

    for mask in found.masks:
        islands, n = ndimage.label(mask, structure=np.ones((3, 3)))
        sizes = np.bincount(islands.ravel())[1:]
        assert n <= 1 or sizes.min() >= area
        holes, _ = ndimage.label(~mask, structure=np.ones((3, 3)))
        assert np.bincount(holes.ravel())[1:].min(initial=area) >= area


@pytest.mark.parametrize(
    "options, words",
    [
        ({"points_per_side": 0}, "points_per_side"),
        ({"points_per_batch": 0}, "points_per_batch"),
        ({"box_nms_thresh": 1.5}, "box_nms_thresh"),
        ({"crop_n_layers": -1}, "crop_n_layers"),
    ],
)
def test_bad_options_name_the_option(options, words):
    with pytest.raises(ConfigError, match=words):
        AutoMaskConfig(**options)

"""Automatic masks against Meta's own ``SamAutomaticMaskGenerator`` on the same weights.

The two preprocess a crop in different code (PIL vs transformers), so logits differ in the
last bits and a mask near its threshold may move by a pixel: masks are matched one to one at
mask IoU > 0.95 (almost all are bit-identical). What must agree is *which* candidates survive
de-duplication: with small-region cleaning, and with crop layers whose cross-crop NMS is
stricter than the per-crop one, the later passes score many candidates equally and keep the
earlier one, so the order each pass hands on decides the result.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("segment_anything")
pytest.importorskip("cv2")  # Meta's small-region cleaning uses OpenCV

from segment_anything import SamAutomaticMaskGenerator  # noqa: E402

from samtune.models.convert.sam import build_meta_sam, hf_to_meta_state_dict  # noqa: E402
from samtune.models.loading import load_model  # noqa: E402
from samtune.segment.automatic import generate_masks  # noqa: E402


@pytest.fixture(scope="module")
def models():
    model = load_model("demo")
    sam = build_meta_sam(model.config).eval()
    sam.load_state_dict(hf_to_meta_state_dict(model.state_dict()), strict=True)
    return model, sam


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = (rng.random((96, 128, 3)) * 60).astype(np.uint8)
    img[20:60, 30:80] = (200, 40, 40)
    img[50:90, 90:120] = (30, 200, 90)
    img[5:15, 5:40] = (250, 250, 30)
    return img


def _unmatched(meta: list[np.ndarray], ours: list[np.ndarray]) -> int:
    used: set[int] = set()
    missing = 0
    for m in meta:
        hits = [
            j
            for j, o in enumerate(ours)
            if j not in used and (m & o).sum() / max((m | o).sum(), 1) > 0.95
        ]
        if hits:
            used.add(hits[0])
        else:
            missing += 1
    return missing


BASE = {"points_per_side": 8, "pred_iou_thresh": 0.01, "stability_score_thresh": 0.01}
OPTIONS = [
    pytest.param({"min_mask_region_area": 30}, id="small-regions"),
    pytest.param({"crop_n_layers": 1, "crop_nms_thresh": 0.5}, id="crops-stricter-crop-nms"),
    pytest.param(
        {
            "crop_n_layers": 1,
            "crop_nms_thresh": 0.3,
            "box_nms_thresh": 0.9,
            "min_mask_region_area": 50,
        },
        id="crops-and-small-regions",
        marks=pytest.mark.slow,
    ),
    pytest.param({"box_nms_thresh": 0.5}, id="plain", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("options", OPTIONS)
def test_the_same_masks_survive_as_in_metas_generator(models, image, options):
    model, sam = models
    opts = {**BASE, **options}
    meta = [m["segmentation"] for m in SamAutomaticMaskGenerator(sam, **opts).generate(image)]
    ours = list(generate_masks(model, image, **opts).masks)
    assert len(meta) > 10
    assert len(ours) == len(meta)
    assert _unmatched(meta, ours) == 0

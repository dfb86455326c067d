"""``samtune eval --prompt auto``: COCO instance metrics that an independent COCOeval run on the
saved files reproduces; crowd regions as COCOeval expects; the comparison table."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from typer.testing import CliRunner

from samtune.cli import app
from samtune.data import load_dataset
from samtune.data.masks import encode_mask
from samtune.data.sample import Sample
from samtune.evaluation.automatic import COCO_STATS, automatic_report, ground_truth_annotations
from samtune.evaluation.report import format_comparison


def _cocoeval_by_hand(gt_path, results_path) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(results_path))
        ev = COCOeval(gt, dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def test_eval_auto_numbers_equal_an_independent_cocoeval_of_the_saved_files(tmp_path):
    out = tmp_path / "auto"
    args = ["eval", "-m", "demo", "-d", "demo", "--prompt", "auto", "--max-images", "2",
            "--points-per-side", "6", "--pred-iou-thresh", "0.3", "--stability-score-thresh",
            "0.5", "-o", str(out), "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "AR@100" in result.output
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    stats = _cocoeval_by_hand(out / "coco_ground_truth.json", out / "coco_results.json")
    for key, value in zip(COCO_STATS, stats, strict=True):
        assert metrics[key] == (pytest.approx(value) if value >= 0 else None), key
    assert metrics["ar100"] > 0  # the demo model finds some of the demo objects
    # the ground truth COCOeval saw is the dataset's: every instance, its mask, its crowd flag
    gt = json.loads((out / "coco_ground_truth.json").read_text())
    data = load_dataset("demo", "val")
    expected = [a for i in range(2) for a in ground_truth_annotations(data[i])]
    assert len(gt["annotations"]) == len(expected) == sum(len(data[i].masks) for i in range(2))
    for ann, sample_mask in zip(gt["annotations"], [m for i in range(2) for m in data[i].masks],
                                strict=True):  # fmt: skip
        assert np.array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), sample_mask)


def _sample(masks, crowd) -> Sample:
    n = len(masks)
    return Sample(
        image=np.zeros((*masks.shape[1:], 3), np.uint8), masks=masks,
        boxes=np.zeros((n, 4), np.float32), category_ids=np.arange(n) + 5,
        iscrowd=np.asarray(crowd, bool), instance_ids=np.arange(n) + 1, image_id=3,
        file_name="x.png",
    )  # fmt: skip


def _results(masks, scores) -> list[dict]:
    return [{"image_id": 3, "category_id": 1, "segmentation": encode_mask(m), "score": s}
            for m, s in zip(masks, scores, strict=True)]  # fmt: skip


def test_crowd_regions_are_ignored_not_missed_and_classes_do_not_matter():
    masks = np.zeros((3, 64, 64), bool)
    masks[0, 4:30, 4:30] = masks[1, 36:60, 36:60] = masks[2, 0:20, 40:64] = True
    sample = _sample(masks, crowd=[False, False, True])
    gt_anns = ground_truth_annotations(sample)
    assert [a["iscrowd"] for a in gt_anns] == [0, 0, 1]
    assert {a["category_id"] for a in gt_anns} == {1}  # class-agnostic
    ground_truth = {"images": [{"id": 3, "height": 64, "width": 64}], "annotations": gt_anns,
                    "categories": [{"id": 1, "name": "object"}]}  # fmt: skip
    # both objects found, plus a mask on the crowd region: no false positive
    report = automatic_report(_results(masks, [0.9, 0.8, 0.95]), ground_truth, 1.0)
    assert report.metrics["ap"] == pytest.approx(1.0)
    assert report.metrics["num_instances"] == 2 and report.metrics["skipped_crowd"] == 1
    # one object missed: recall halves; the crowd region is not needed
    half = automatic_report(_results(masks[:1], [0.9]), ground_truth, 1.0)
    assert half.metrics["ar100"] == pytest.approx(0.5)
    none = automatic_report([], ground_truth, 1.0)
    assert none.metrics["ar100"] == 0.0 and none.metrics["num_masks"] == 0
    table = format_comparison({"zero-shot": half, "tuned": report})
    assert "AR@100" in table and "| tuned | 100.00 (+" in table


def test_generator_options_with_a_prompted_protocol_are_refused():
    from samtune.errors import ConfigError
    from samtune.evaluation import EvalConfig, run_evaluation

    with pytest.raises(ConfigError, match="points_per_side applies to the auto protocol only"):
        run_evaluation(EvalConfig(prompt="box", points_per_side=8))


def test_training_validation_and_suites_refuse_auto():
    from samtune.errors import ConfigError
    from samtune.suite.spec import _parse_protocols
    from samtune.train.config import FitConfig

    with pytest.raises(ConfigError, match="must be one of box, point, clicks:N"):
        FitConfig(eval_prompt="auto")
    with pytest.raises(ConfigError, match="samtune eval --prompt auto"):
        _parse_protocols(["box", "auto"])


def test_an_annotation_id_of_zero_is_still_matched():
    """COCOeval treats id 0 as "no match": the ground truth is renumbered 1..N (source_id kept),
    so a perfect mask scores AP 1 whatever the dataset's ids are."""
    from samtune.data.masks import encode_mask
    from samtune.data.sample import Sample
    from samtune.evaluation.automatic import _coco_inputs, coco_metrics, ground_truth_annotations

    mask = np.zeros((16, 16), bool)
    mask[4:10, 3:12] = True
    sample = Sample(image=np.zeros((16, 16, 3), np.uint8), masks=mask[None],
                    boxes=np.array([[3, 4, 12, 10]], np.float32), category_ids=np.array([1]),
                    iscrowd=np.array([False]), instance_ids=np.array([0]), image_id=7, file_name="a.png")  # fmt: skip
    rle = encode_mask(mask)
    item = {"index": 0, "image": {"id": 7, "height": 16, "width": 16, "file_name": ""},
            "annotations": ground_truth_annotations(sample),
            "results": [{"image_id": 7, "category_id": 1, "segmentation": rle, "score": 0.9}]}  # fmt: skip
    results, ground_truth = _coco_inputs([item])
    assert [(a["id"], a["source_id"]) for a in ground_truth["annotations"]] == [(1, 0)]
    assert coco_metrics(results, ground_truth)["ap"] == pytest.approx(1.0)

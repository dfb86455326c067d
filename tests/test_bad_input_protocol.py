"""Bad input to ``box_source`` (fit, eval, suite): one ``error:`` line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_bad_input import Case, _all, _write, run_case

from samtune.data.masks import encode_mask


def _coco_without_bbox(root: Path, _mp) -> None:
    """A COCO file whose one annotation has a mask but no ``bbox``."""
    from PIL import Image

    (root / "imgs").mkdir()
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(root / "imgs" / "a.png")
    mask = np.zeros((40, 60), bool)
    mask[5:20, 10:30] = True
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}],
        "annotations": [
            {
                "id": 7,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentation": encode_mask(mask),
                "area": int(mask.sum()),
            }
        ],  # fmt: skip
        "categories": [{"id": 1, "name": "can"}],
    }
    (root / "ann.json").write_text(json.dumps(coco))


SPEC = "models: [tiny]\nstrategies: [decoder]\ndatasets: [demo]\neval: {box_source: bbox}\n"

CASES = [
    Case(
        "eval-box-source-unknown",
        ["eval", "-m", "tiny", "--box-source", "bbox", "-o", "rep"],
        ["box_source", "mask, annotation", "'bbox'"],
        absent=["rep"],
    ),
    Case(
        "eval-box-source-with-point-protocol",
        ["eval", "-m", "tiny", "--prompt", "point", "--box-source", "annotation", "-o", "rep"],
        ["box_source", "box protocol only", "'point'"],
        absent=["rep"],
    ),
    Case(
        "eval-box-source-annotation-without-bbox",
        [
            "eval",
            "-m",
            "tiny",
            "-d",
            "coco",
            "--images",
            "imgs",
            "--annotations",
            "ann.json",
            "--box-source",
            "annotation",
            "-o",
            "rep",
        ],  # fmt: skip
        ["'bbox'", "[7]", "box_source 'mask'"],
        setup=_all(_coco_without_bbox),
        absent=["rep"],
    ),
    Case(
        "fit-box-source-unknown",
        ["fit", "--box-source", "bbox", "-o", "run"],
        ["box_source", "mask, annotation", "'bbox'"],
        absent=["run"],
    ),
    Case(
        "suite-eval-box-source-unknown",
        ["suite", "s.yaml", "-o", "out"],
        ["eval.box_source", "mask, annotation", "'bbox'"],
        setup=_write("s.yaml", SPEC),
        absent=["out"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_box_source_gets_one_line_and_exit_2(case: Case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)

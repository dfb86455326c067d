"""Malformed COCO files through the command line: one ``error:`` line naming the file, the
record and the field, exit 2, nothing written; never a Python traceback, never pycocotools'
segmentation fault (a polygon or RLE that would crash its C code is refused before it gets
there)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_bad_input import Case, run_case


def _coco(change):
    """Setup: ``images/a.png`` (32x24) and ``bad.json``, a valid file edited by ``change``."""

    def setup(root: Path, _mp) -> None:
        (root / "images").mkdir()
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "images" / "a.png")
        coco = {
            "images": [{"id": 1, "file_name": "a.png", "height": 24, "width": 32}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "area": 36.0, "bbox": [2, 2, 6, 6],
                             "segmentation": [[2, 2, 8, 2, 8, 8, 2, 8]]}],
            "categories": [{"id": 1, "name": "can"}],
        }  # fmt: skip
        change(coco)
        (root / "bad.json").write_text(json.dumps(coco))  # NaN is written as JSON's NaN

    return setup


def _ann(**fields):
    return lambda coco: coco["annotations"][0].update(fields)


def _image(**fields):
    return lambda coco: coco["images"][0].update(fields)


def _category(**fields):
    return lambda coco: coco["categories"][0].update(fields)


def _zigzag(points: int, width: float) -> list[float]:
    """A polygon inside the coordinate bound whose outline pycocotools cannot allocate."""
    return [v for k in range(points) for v in ((k % 2) * width, float(k))]


EVAL = ["eval", "-m", "tiny", "--dataset", "coco", "--images", "images",
        "--annotations", "bad.json", "-o", "rep"]  # fmt: skip
RLE = {"size": [24, 32]}

CASES = [
    Case("rle-counts-too-few", EVAL, ["bad.json", "annotation 7", "'counts' cover 30 pixels", "768"],
         setup=_coco(_ann(segmentation={**RLE, "counts": [10, 20]}))),
    Case("rle-counts-negative", EVAL, ["annotation 7", "'counts' must be run lengths"],
         setup=_coco(_ann(segmentation={**RLE, "counts": [800, -32]}))),
    Case("rle-counts-not-rle-text", EVAL, ["annotation 7", "not a COCO compressed RLE", "'!'"],
         setup=_coco(_ann(segmentation={**RLE, "counts": "!!!!"}))),
    Case("rle-size-strings", EVAL, ["annotation 7", "'size' must be [height, width]"],
         setup=_coco(_ann(segmentation={"size": ["24", "32"], "counts": [768]}))),
    Case("bbox-string", EVAL, ["bad.json", "annotation 7 of image 1", "'bbox'", "'2,2,6,6'"],
         setup=_coco(_ann(bbox="2,2,6,6"))),
    Case("bbox-string-items", EVAL, ["annotation 7", "'bbox'", "4 finite numbers"],
         setup=_coco(_ann(bbox=["2", "2", "6", "6"]))),
    Case("image-id-list", EVAL, ["bad.json", "image #0", "'id' must be an integer", "[1]"],
         setup=_coco(_image(id=[1]))),
    Case("annotation-image-id-list", EVAL, ["annotation 7", "'image_id' must be an integer"],
         setup=_coco(_ann(image_id=[1]))),
    Case("annotation-id-string", EVAL, ["annotation #0", "'id' must be an integer", "'7'"],
         setup=_coco(_ann(id="7"))),
    Case("category-id-string-in-annotation", EVAL, ["annotation 7", "'category_id'", "'1'"],
         setup=_coco(_ann(category_id="1"))),
    Case("category-id-string", EVAL, ["bad.json", "category 'can'", "'id' must be an integer"],
         setup=_coco(_category(id="1"))),
    Case("category-name-number", EVAL, ["category 1", "'name' must be a string"],
         setup=_coco(_category(name=5))),
    Case("file-name-integer", EVAL, ["bad.json", "image 1", "'file_name'", "int 7"],
         setup=_coco(_image(file_name=7))),
    Case("image-height-string", EVAL, ["image 1", "'height' must be a positive integer"],
         setup=_coco(_image(height="24"))),
    Case("polygon-strings", EVAL, ["annotation 7", "polygon 0", "coordinate 0 is not a number"],
         setup=_coco(_ann(segmentation=[["2", "2", "8", "2", "8", "8"]]))),
    Case("polygon-nan", EVAL, ["annotation 7", "polygon 0", "coordinate 2 is a non-finite number"],
         setup=_coco(_ann(segmentation=[[2, 2, float("nan"), 2, 8, 8]]))),
    Case("polygon-huge-coordinates", EVAL, ["annotation 7", "coordinate 2", "beyond 100000"],
         setup=_coco(_ann(segmentation=[[0, 0, 1e18, 0, 1e18, 1e18]]))),
    Case("polygon-outline-too-long", EVAL, ["annotation 7", "outline would take", "points"],
         setup=_coco(_ann(segmentation=[_zigzag(2000, 99_000)]))),
    Case("iscrowd-string", EVAL, ["annotation 7", "'iscrowd' must be 0 or 1"],
         setup=_coco(_ann(iscrowd="no"))),
    Case("area-string", EVAL, ["annotation 7", "'area' must be a number"],
         setup=_coco(_ann(area="36"))),
    Case("category-id-repeated", EVAL, ["bad.json", "category id 1 appears twice"],
         setup=_coco(lambda c: c["categories"].append({"id": 1, "name": "bag"}))),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_malformed_coco_gets_one_line_and_exit_2(case: Case, tmp_path, monkeypatch):
    case.absent = ["rep"]
    run_case(case, tmp_path, monkeypatch)

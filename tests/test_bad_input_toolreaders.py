"""Bad annotation-tool exports at the command line (cvat:, labelme:): one ``error:`` line,
exit 2, nothing written. The table and its runner are tests/test_bad_input.py's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_bad_input import Case, _all, _write, run_case

FIT = ["fit", "-m", "tiny", "-s", "decoder", "--max-steps", "1", "-o", "run", "-q"]


def _picture(name: str, size=(60, 40)):
    def setup(root: Path, _mp) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name)

    return setup


def _cvat(*shapes: str, images=("a.png", "b.png", "c.png")):
    """annotations.xml with one image per name, each holding ``shapes``, and images/."""
    body = "".join(shapes)
    xml = "".join(
        f'<image id="{i}" name="{n}" width="60" height="40">{body}</image>'
        for i, n in enumerate(images)
    )
    text = ('<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version>'
            "<meta><task><labels><label><name>can</name></label></labels></task></meta>"
            f"{xml}</annotations>")  # fmt: skip
    return _all(_write("export/annotations.xml", text),
                *(_picture(f"export/images/{n}") for n in ("a.png", "b.png", "c.png")))  # fmt: skip


GOOD = '<polygon label="can" points="10.00,5.00;30.00,5.00;30.00,20.00"></polygon>'
CVAT = ["-d", "cvat:export/annotations.xml"]

CASES = [
    Case("cvat-malformed-xml", FIT + CVAT, ["not well-formed XML", "annotations.xml"],
         setup=_all(_cvat(GOOD), _write("export/annotations.xml", "<annotations><image"))),
    Case("cvat-doctype", FIT + CVAT, ["DOCTYPE or ENTITY", "does not expand"],
         setup=_all(_cvat(GOOD), _write(
             "export/annotations.xml",
             '<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><annotations>&e;</annotations>',
         ))),
    Case("cvat-two-point-polygon", FIT + CVAT, ["has 2 point(s)", "at least 3", "a.png"],
         setup=_cvat('<polygon label="can" points="1.00,1.00;9.00,9.00"></polygon>')),
    Case("cvat-far-outside", FIT + CVAT, ["far outside", "60x40"],
         setup=_cvat('<polygon label="can" points="1,1;900,1;900,30"></polygon>')),
    Case("cvat-rle-does-not-sum", FIT + CVAT, ["covers 5 pixels", "3x3 = 9"],
         setup=_cvat('<mask label="can" rle="2, 3" left="1" top="1" width="3" height="3">'
                     "</mask>")),
    Case("cvat-missing-image", FIT + CVAT, ["d.png", "not in the image folder"],
         setup=_cvat(GOOD, images=("a.png", "b.png", "c.png", "d.png"))),
    Case("cvat-label-not-declared", FIT + CVAT, ["'glass'", "not in the labels"],
         setup=_cvat(GOOD.replace('"can"', '"glass"'))),
    Case("cvat-images-folder-missing", FIT + CVAT + ["--images", "nowhere"],
         ["image folder", "nowhere", "does not exist"], setup=_cvat(GOOD)),
    Case("cvat-export-missing", FIT + ["-d", "cvat:nothing.xml"],
         ["cvat export", "nothing.xml", "does not exist"]),
    Case("labelme-malformed-json", FIT + ["-d", "labelme:lm"], ["a.json", "not valid JSON"],
         setup=_all(_picture("lm/a.png"), _write("lm/a.json", '{"shapes": ['))),
    Case("labelme-eval-bad-mask", ["eval", "-m", "tiny", "-d", "labelme:lm", "--split", "all"],
         ["shape #0", "base64 PNG"],
         setup=_all(_picture("lm/a.png"), _write("lm/a.json", json.dumps({
             "shapes": [{"label": "can", "points": [[1, 1], [3, 3]], "shape_type": "mask",
                         "mask": "not base64!"}],
             "imagePath": "a.png", "imageData": None, "imageWidth": 60, "imageHeight": 40})))),
    Case("eval-annotations-with-a-tool-export",
         ["eval", "-m", "tiny", "-d", "labelme:lm", "--annotations", "x.json"],
         ["--annotations applies to --dataset coco"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_tool_export_gets_one_line_and_exit_2(case: Case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)

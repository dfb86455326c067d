"""Bad input of Label Studio exports (``--dataset label-studio:EXPORT.json``) and of
``samtune serve label-studio``: one ``error:`` line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_bad_input import Case, _all, _write, run_case

from samtune.data.label_studio import encode_mask


def _images(root: Path, _mp) -> None:
    (root / "imgs").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (20, 10)).save(root / "imgs" / name)


def _task(name: str, label: str = "can") -> dict:
    mask = np.zeros((10, 20), bool)
    mask[2:6, 3:9] = True
    region = {"type": "brushlabels", "original_width": 20, "original_height": 10,
              "value": {"format": "rle", "rle": encode_mask(mask), "brushlabels": [label]}}  # fmt: skip
    return {"id": name, "data": {"image": f"/data/upload/1/0badcafe-{name}"},
            "annotations": [{"result": [region]}]}  # fmt: skip


def _export(tasks: object):
    return _write("export.json", json.dumps(tasks))


GOOD = _export([_task("a.png"), _task("b.png"), _task("c.png", "lid")])
FIT = ["fit", "--model", "tiny", "--dataset", "label-studio:export.json", "-o", "run"]

CASES = [
    Case(
        "ls-export-missing",
        [*FIT, "--images", "imgs"],
        ["export.json", "does not exist"],
        setup=_images,
    ),  # fmt: skip
    Case("ls-no-images-folder", FIT, ["--images DIR"], setup=GOOD),
    Case(
        "ls-images-not-a-folder", [*FIT, "--images", "nope"], ["'nope' is not a folder"], setup=GOOD
    ),  # fmt: skip
    Case(
        "ls-export-not-a-task-list",
        [*FIT, "--images", "imgs"],
        ["list of tasks", "JSON"],
        setup=_all(_images, _export({"tasks": []})),
        absent=["run"],
    ),  # fmt: skip
    Case(
        "ls-export-not-json",
        [*FIT, "--images", "imgs"],
        ["not valid JSON"],
        setup=_all(_images, _write("export.json", "[{")),
        absent=["run"],
    ),  # fmt: skip
    Case(
        "ls-image-missing",
        [*FIT, "--images", "imgs"],
        ["not in", "matched by file name"],
        setup=_all(_images, _export([_task("x.png")] * 3)),
        absent=["run"],
    ),  # fmt: skip
    Case(
        "ls-label-not-a-class",
        ["fit", "-c", "c.yaml", "-o", "run"],
        ["label 'lid' is not one of the classes"],
        setup=_all(
            _images,
            GOOD,
            _write(
                "c.yaml",
                "model: tiny\ndataset: label-studio:"
                "export.json\ndataset_root: imgs\ndataset_options: {labels: [can]}\n",
            ),
        ),
        absent=["run"],
    ),  # fmt: skip
    Case(
        "ls-eval-unknown-split",
        [
            "eval",
            "-m",
            "tiny",
            "-d",
            "label-studio:export.json",
            "--images",
            "imgs",
            "--split",
            "dev",
        ],
        ["splits train, val, test, all", "'dev'"],
        setup=_all(_images, GOOD),
    ),  # fmt: skip
    Case(
        "ls-serve-images-not-a-folder",
        ["serve", "label-studio", "--images", "nope"],
        ["--images", "not a folder"],
    ),  # fmt: skip
    Case(
        "ls-serve-port-out-of-range",
        ["serve", "label-studio", "--port", "70000"],
        ["--port", "65535", "samtune serve label-studio --help"],
    ),  # fmt: skip
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)

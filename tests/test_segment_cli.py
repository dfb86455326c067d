"""``samtune segment``: files written per image, equal to the library's masks; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from samtune.cli import app
from samtune.models.loading import load_model
from samtune.segment.automatic import generate_masks

OPTIONS = ["--points-per-side", "4", "--pred-iou-thresh", "-1", "--stability-score-thresh", "-1"]


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        img = (rng.random((40, 56, 3)) * 80).astype(np.uint8)
        img[8:30, 10:40] = (220, 60, 60)
        Image.fromarray(img).save(folder / name)
    (folder / "notes.txt").write_text("not an image, not picked up from a folder")
    return folder


def test_a_folder_gives_json_labels_and_overlay_per_image(images, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["segment", str(images), "-m", "tiny", "-o", str(out), *OPTIONS]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["a", "b"]
    doc = json.loads((out / "a" / "a.json").read_text())
    image = np.asarray(Image.open(images / "a.png"))
    expected = generate_masks(load_model("tiny"), image, points_per_side=4, pred_iou_thresh=-1.0,
                              stability_score_thresh=-1.0)  # fmt: skip
    assert len(doc["annotations"]) == len(expected) > 0
    for rec, mask, iou in zip(
        doc["annotations"], expected.masks, expected.predicted_iou, strict=True
    ):
        assert np.array_equal(mask_utils.decode(rec["segmentation"]).astype(bool), mask)
        assert rec["score"] == pytest.approx(float(iou))
        assert {"bbox", "area", "predicted_iou", "stability_score"} <= set(rec)
    labels = np.asarray(Image.open(out / "a" / "a_labels.png"))
    assert np.array_equal(labels, expected.label_map())
    assert np.asarray(Image.open(out / "a" / "a_overlay.png")).shape == image.shape


@pytest.mark.parametrize(
    "make, args, words",
    [
        (lambda d: (d / "x.png").write_text("text"), ["x.png"], "not an image"),
        (lambda d: (d / "empty").mkdir(), ["empty"], "holds no images"),
        (lambda d: None, ["missing.png"], "does not exist"),
        (lambda d: None, ["missing.png", "--points-per-side", "0"], "points_per_side"),
        (lambda d: None, ["missing.png", "--box-nms-thresh", "2"], "box_nms_thresh"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(make, args, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    result = CliRunner().invoke(app, ["segment", *args, "-m", "tiny", "-o", "out"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0]
    assert "unexpected" not in result.output
    assert not (tmp_path / "out").exists()

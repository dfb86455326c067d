"""samtune.predict and ``samtune predict``: masks vs the SamProcessor pipeline, files, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from samtune.cli import app
from samtune.errors import InputError, MissingFileError
from samtune.predict import parse_boxes, parse_points, predict, read_prompts_file

runner = CliRunner()
BOXES = [[10.0, 8.0, 60.0, 50.0], [30.0, 20.0, 110.0, 85.0]]


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)


@pytest.fixture
def image_file(tmp_path, image):
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    return path


def _processor(size):
    from transformers import SamImageProcessor, SamProcessor

    return SamProcessor(
        image_processor=SamImageProcessor(
            size={"longest_edge": size}, pad_size={"height": size, "width": size}
        )
    )


def test_box_masks_match_sam_processor_pipeline(tiny_model, image):
    size = tiny_model.config.vision_config.image_size
    proc = _processor(size)
    inputs = proc(images=image, input_boxes=[BOXES], return_tensors="pt")
    with torch.no_grad():
        out = tiny_model(
            pixel_values=inputs["pixel_values"],
            input_boxes=inputs["input_boxes"],
            multimask_output=False,
        )
    expected = proc.post_process_masks(
        out.pred_masks,
        inputs["original_sizes"],
        inputs["reshaped_input_sizes"],
        pad_size={"height": size, "width": size},
    )[0][:, 0].numpy()
    pred = predict(tiny_model, image, boxes=BOXES, prompt_batch=1)
    assert pred.masks.shape == (2, 90, 120) and pred.masks.dtype == bool
    mismatch = (pred.masks != expected).mean()
    assert mismatch < 1e-3  # the same logits; at most a pixel on a 0-crossing may differ
    np.testing.assert_allclose(pred.scores, out.iou_scores[0, :, 0].numpy(), atol=1e-5)


def test_points_multimask_picks_the_best_scored_candidate(tiny_model, image):
    size = tiny_model.config.vision_config.image_size
    proc = _processor(size)
    pts = [[[40.0, 30.0]], [[90.0, 60.0]]]
    inputs = proc(images=image, input_points=[pts], return_tensors="pt")
    with torch.no_grad():
        out = tiny_model(pixel_values=inputs["pixel_values"], input_points=inputs["input_points"])
    pred = predict(tiny_model, image, points=np.array(pts), multimask=True)
    np.testing.assert_allclose(pred.scores, out.iou_scores[0].max(dim=1).values, atol=1e-5)


def test_coco_rle_round_trip(tiny_model, image):
    pred = predict(tiny_model, image, boxes=BOXES)
    for m, rec in zip(pred.masks, pred.to_coco(), strict=True):
        rle = dict(rec["segmentation"], counts=rec["segmentation"]["counts"].encode())
        assert np.array_equal(mask_utils.decode(rle).astype(bool), m)
        assert rec["area"] == int(m.sum())


@pytest.mark.parametrize(
    ("text", "match"),
    [("10,20,30", "malformed --boxes"), ("a,b,c,d", "malformed"), ("50,10,20,40", "x1 <= x0")],
)
def test_malformed_boxes(text, match):
    with pytest.raises(InputError, match=match):
        parse_boxes(text)


def test_parse_prompts():
    np.testing.assert_array_equal(parse_boxes("1,2,3,4; 5.5,6,7,8"), [[1, 2, 3, 4], [5.5, 6, 7, 8]])
    points, labels = parse_points("3,4;5,6,0")
    assert points.shape == (2, 1, 2) and labels.tolist() == [[1], [0]]
    with pytest.raises(InputError, match="malformed --points"):
        parse_points("3;4")


def test_prompts_file(tmp_path):
    good = tmp_path / "p.json"
    good.write_text(
        json.dumps({"images": {"a.png": {"points": [[[1, 2], [3, 4]]], "labels": [[1, 0]]}}})
    )
    table = read_prompts_file(good)
    assert table["a.png"]["points"].shape == (1, 2, 2)
    cases = {
        "not json {": "not valid JSON",
        "[1, 2]": "JSON object",
        '{"boxes": [[1, 2, 3]]}': "shape",
        '{"box": [[1, 2, 3, 4]]}': "'boxes' and/or 'points'",
        '{"points": [[[1, 2]]], "labels": [[1, 0]]}': "one label per point",
    }
    for text, match in cases.items():
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(InputError, match=match):
            read_prompts_file(bad)
    with pytest.raises(MissingFileError):
        read_prompts_file(tmp_path / "missing.json")


def test_cli_writes_png_rle_and_overlay(tiny_model, image, image_file, tmp_path):
    out = tmp_path / "out"
    boxes = ";".join(",".join(str(v) for v in b) for b in BOXES)
    res = runner.invoke(
        app,
        ["predict", str(image_file), "-m", "tiny", "--boxes", boxes, "--overlay", "-o", str(out)],
    )
    assert res.exit_code == 0, res.output
    expected = predict(tiny_model, image, boxes=BOXES).masks
    assert sorted(p.name for p in out.iterdir()) == [
        "scene.json", "scene_mask0.png", "scene_mask1.png", "scene_overlay.png",
    ]  # fmt: skip
    doc = json.loads((out / "scene.json").read_text())
    assert (doc["height"], doc["width"]) == (90, 120)
    for i, rec in enumerate(doc["masks"]):
        png = np.asarray(Image.open(out / f"scene_mask{i}.png")) > 0
        assert np.array_equal(png, expected[i])
        rle = dict(rec["segmentation"], counts=rec["segmentation"]["counts"].encode())
        assert np.array_equal(mask_utils.decode(rle).astype(bool), expected[i])
        assert rec["prompt"]["boxes"] == BOXES[i]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["missing.png", "--boxes", "1,2,3,4"], "does not exist"),
        (["{img}"], "no prompts"),
        (["{img}", "--boxes", "1,2,3"], "malformed --boxes"),
        (["{img}", "--points", "x,y"], "malformed --points"),
        (["{img}", "--prompts", "nope.json"], "prompts file"),
        (
            ["{img}", "--boxes", "1,2,3,4", "-m", "tiny", "-a", "./no-such-adapter"],
            "no-such-adapter",
        ),
        (["{img}", "--boxes", "1,2,3,4", "-m", "./no-such-model"], "does not exist"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(image_file, tmp_path, args, match):
    args = [a.replace("{img}", str(image_file)) for a in args]
    res = runner.invoke(app, ["predict", *args, "-o", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert match in res.output
    assert "Traceback" not in res.output

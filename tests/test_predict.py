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
from samtune.io import MANIFEST
from samtune.segment.prompted import (
    parse_boxes,
    parse_points,
    predict,
    prepare_prompts,
    read_prompts_file,
)

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


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def _error_line(res) -> str:
    """The CLI's one line for bad input (and nothing else printed)."""
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output and "unexpected" not in res.output
    return lines[0]


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
    assert _names(out) == ["scene"]
    assert _names(out / "scene") == [
        MANIFEST, "scene.json", "scene_mask0.png", "scene_mask1.png", "scene_overlay.png",
    ]  # fmt: skip
    doc = json.loads((out / "scene" / "scene.json").read_text())
    assert (doc["height"], doc["width"]) == (90, 120)
    for i, rec in enumerate(doc["masks"]):
        png = np.asarray(Image.open(out / "scene" / f"scene_mask{i}.png")) > 0
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


# --------------------------------------------------------------------------- prompt rules


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"boxes": [[100, 10, 130, 50]]}, ["prompt 0", "[100, 10, 130, 50]", "120x90", "outside"]),
        ({"boxes": [[-1, 10, 30, 50]]}, ["outside", "0 <= x <= 120"]),
        ({"boxes": [[1, 2, 3, 4], [50, 10, 20, 40]]}, ["prompt 1", "x1 <= x0"]),
        ({"boxes": [[5, 40, 20, 40]]}, ["y1 <= y0"]),
        ({"boxes": [[5, float("nan"), 20, 40]]}, ["finite"]),
        ({"points": [[[10, 95]]]}, ["point [10, 95]", "120x90", "outside"]),
        ({"points": [[[1, 2]]], "point_labels": [[7]]}, ["label 7", "1 (positive) or 0"]),
        ({"points": [[[1, 2]]], "point_labels": [[0.5]]}, ["label 0.5", "not valid"]),
        ({"points": [[[1, 2]]], "point_labels": [["yes"]]}, ["must be numbers"]),
        ({"points": [[[1, 2]]], "point_labels": [[1, 0]]}, ["one label per point"]),
        ({"boxes": [[1, 2, 3, 4]], "points": [[[1, 2]], [[3, 4]]]}, ["counts must match"]),
    ],
)
def test_prepare_prompts_rejects_bad_prompts(kwargs, words):
    with pytest.raises(InputError) as info:
        prepare_prompts(**kwargs, size=(90, 120), image="image 'scene.png'")
    for word in words:
        assert word in str(info.value)


def test_prepare_prompts_accepts_the_image_edges():
    p = prepare_prompts(
        boxes=[[0, 0, 120, 90]], points=[[120, 90]], point_labels=[0], size=(90, 120)
    )
    assert p.n == 1 and p.points.shape == (1, 1, 2) and p.labels.tolist() == [[0]]


def test_predict_rejects_a_prompt_outside_the_image(tiny_model, image):
    with pytest.raises(InputError, match="outside the image, which is 120x90"):
        predict(tiny_model, image, points=[[200.0, 10.0]])


# --------------------------------------------------------------------------- CLI: bad input


def _run(*args):
    return runner.invoke(app, ["predict", *[str(a) for a in args], "-m", "tiny"])


def _prompts_file(tmp_path, doc) -> str:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(doc))
    return str(path)


BAD_PROMPTS = [
    # box or point outside the 120x90 image
    (["--boxes", "100,10,130,50"], ["scene.png", "prompt 0", "[100, 10, 130, 50]", "120x90"]),
    (["--points", "500,10"], ["scene.png", "point [500, 10]", "outside", "120x90"]),
    (["--points", "-1,10"], ["scene.png", "point [-1, 10]", "outside"]),
    # prompts files: an inverted box, an invalid label, an image with no entry
    (
        ["--prompts", {"boxes": [[1, 2, 3, 4], [50, 10, 20, 40]]}],
        ["scene.png", "prompt 1", "[50, 10, 20, 40]", "x1 <= x0"],
    ),
    (
        ["--prompts", {"points": [[[5, 5]]], "labels": [[7]]}],
        ["scene.png", "label 7", "1 (positive) or 0 (negative)"],
    ),
    (["--prompts", {"points": [[[5, 5]]], "labels": [["a"]]}], ["labels", "must be numbers"]),
    (
        ["--prompts", {"images": {"other.png": {"boxes": [[1, 2, 3, 4]]}}}],
        ["no entry", "scene.png"],
    ),
    (["--boxes", "1,2,3,4", "--device", "nonsense"], ["--device", "nonsense"]),
]


@pytest.mark.parametrize(("args", "words"), BAD_PROMPTS)
def test_cli_bad_prompt_exits_2_naming_image_and_prompt(image_file, tmp_path, args, words):
    out = tmp_path / "o"
    args = [_prompts_file(tmp_path, a) if isinstance(a, dict) else a for a in args]
    res = _run(image_file, *args, "-o", out)
    assert res.exit_code == 2, res.output
    line = _error_line(res)
    for word in words:
        assert word in line, line
    assert not out.exists()


def test_cli_checks_every_image_before_writing_any(image, image_file, tmp_path):
    second = tmp_path / "second.png"
    Image.fromarray(image[:40, :50]).save(second)  # 50x40: the box fits scene.png only
    prompts = _prompts_file(tmp_path, {"boxes": [[10, 10, 100, 80]]})
    out = tmp_path / "o"
    res = _run(image_file, second, "--prompts", prompts, "-o", out)
    assert res.exit_code == 2, res.output
    line = _error_line(res)
    assert "second.png" in line and "50x40" in line
    assert not out.exists()  # scene.png's results were not written either


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\x89PNG\r\n\x1a\n not really a png", ["broken.png", "cannot be read"]),
        (b"", ["broken.png", "cannot be read"]),
        (None, ["broken.png", "is a folder"]),
    ],
)
def test_cli_unreadable_image_exits_2_before_writing(image_file, tmp_path, content, words):
    broken = tmp_path / "broken.png"
    if content is None:
        broken.mkdir()
    else:
        broken.write_bytes(content)
    out = tmp_path / "o"
    res = _run(image_file, broken, "--boxes", "1,2,30,40", "-o", out)
    assert res.exit_code == 2, res.output
    line = _error_line(res)
    for word in words:
        assert word in line
    assert not out.exists()


def test_cli_refuses_two_images_with_the_same_output_name(image, tmp_path):
    Image.fromarray(image).save(tmp_path / "dup.png")
    Image.fromarray(image).save(tmp_path / "dup.jpg")
    out = tmp_path / "o"
    res = _run(tmp_path / "dup.png", tmp_path / "dup.jpg", "--boxes", "1,2,30,40", "-o", out)
    assert res.exit_code == 2, res.output
    line = _error_line(res)
    assert "dup.png" in line and "dup.jpg" in line and "--output" in line
    assert not out.exists()
    res = _run(tmp_path / "dup.png", tmp_path / "dup.png", "--boxes", "1,2,30,40", "-o", out)
    assert res.exit_code == 2 and "given twice" in _error_line(res)


# --------------------------------------------------------------------------- CLI: reruns


def test_cli_rerun_replaces_an_images_results_as_a_whole(image_file, tmp_path):
    out = tmp_path / "o"
    res = _run(image_file, "--boxes", "1,2,30,40;5,5,60,50;0,0,90,80", "--overlay", "-o", out)
    assert res.exit_code == 0, res.output
    assert "scene_mask2.png" in _names(out / "scene")
    res = _run(image_file, "--boxes", "1,2,30,40", "-o", out)
    assert res.exit_code == 0, res.output
    assert _names(out / "scene") == [MANIFEST, "scene.json", "scene_mask0.png"]
    assert len(json.loads((out / "scene" / "scene.json").read_text())["masks"]) == 1
    assert _names(out) == ["scene"]  # no temporary or old folder left beside it


@pytest.mark.parametrize("user_file", ["scene.json", "scene_mask0.png", "notes.txt"])
def test_cli_never_overwrites_files_samtune_did_not_write(image_file, tmp_path, user_file):
    out = tmp_path / "o"
    (out / "scene").mkdir(parents=True)
    (out / "scene" / user_file).write_text("mine")
    res = _run(image_file, "--boxes", "1,2,30,40", "-o", out)
    assert res.exit_code == 2, res.output
    line = _error_line(res)
    assert user_file in line and "samtune did not write" in line
    assert _names(out / "scene") == [user_file]
    assert (out / "scene" / user_file).read_text() == "mine"
    assert _names(out) == ["scene"]


def test_cli_keeps_user_files_added_to_a_samtune_result_folder(image, image_file, tmp_path):
    out = tmp_path / "o"
    assert _run(image_file, "--boxes", "1,2,30,40", "-o", out).exit_code == 0
    (out / "scene" / "notes.txt").write_text("mine")
    other = tmp_path / "other.png"
    Image.fromarray(image).save(other)
    res = _run(other, image_file, "--boxes", "1,2,30,40", "-o", out)
    assert res.exit_code == 2, res.output
    assert "notes.txt" in _error_line(res)
    assert (out / "scene" / "notes.txt").read_text() == "mine"
    assert _names(out) == ["scene"]  # other.png, checked first, was not written either


def test_cli_refuses_a_file_where_a_result_folder_goes(image_file, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "scene").write_text("mine")
    res = _run(image_file, "--boxes", "1,2,30,40", "-o", out)
    assert res.exit_code == 2, res.output
    assert "samtune did not write" in _error_line(res)
    assert (out / "scene").read_text() == "mine"
    res = _run(image_file, "--boxes", "1,2,30,40", "-o", out / "scene")
    assert res.exit_code == 2 and "is a file" in _error_line(res)

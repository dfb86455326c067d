"""Label Studio's brush RLE and JSON exports (samtune.data.label_studio), against its converter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtune.data import load_dataset
from samtune.data.coco import decode_segmentation
from samtune.data.label_studio import brush, read_label_studio, resolve_image
from samtune.data.recipes import dataset_label
from samtune.errors import ConfigError, DataError, MissingFileError, SamtuneWarning

# Produced with label-studio-converter 0.0.59:
#   m = np.zeros((6, 9), np.uint8); m[1, 2] = 255; m[2:5, 1:8] = 255; m[3, 4] = 0
#   label_studio_converter.brush.mask2rle(m)
FIXED_RLE = [0, 0, 0, 216, 57, 27, 254, 43, 0, 143, 255, 13, 128, 97, 191, 249, 192, 45, 255,
             198, 1, 111, 254, 112, 12, 55, 255, 137, 192, 0]  # fmt: skip


def fixed_mask() -> np.ndarray:
    m = np.zeros((6, 9), bool)
    m[1, 2] = True
    m[2:5, 1:8] = True
    m[3, 4] = False
    return m


def test_fixed_rle_from_the_converter() -> None:
    assert brush.encode_mask(fixed_mask()) == FIXED_RLE
    assert np.array_equal(brush.decode_mask(FIXED_RLE, 6, 9), fixed_mask())


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (40, 33), (64, 80)])
def test_round_trip(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for mask in (rng.random(shape) < 0.5, rng.random(shape) < 0.02, np.ones(shape, bool)):
        rle = brush.encode_mask(mask)
        assert np.array_equal(brush.decode_mask(rle, *shape), mask)
        assert len(rle) * 8 > brush.HEADER_BITS


def test_long_runs_split_at_65536() -> None:
    # 300 x 300 x 4 values of one word: runs over 2**16 are written in chunks
    mask = np.zeros((300, 300), bool)
    mask[150:] = True
    assert np.array_equal(brush.decode_mask(brush.encode_mask(mask), 300, 300), mask)


def test_bad_rle_is_a_data_error() -> None:
    with pytest.raises(DataError, match="ends early"):
        brush.decode_rle(FIXED_RLE[:12])
    with pytest.raises(DataError, match="expected 200"):
        brush.decode_mask(FIXED_RLE, 10, 5)
    with pytest.raises(DataError, match="list of integers"):
        brush.decode_rle(["a", 3])


def test_equal_to_the_converter_on_random_masks() -> None:
    converter = pytest.importorskip("label_studio_converter.brush")
    rng = np.random.default_rng(0)
    for t in range(24):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        mask = rng.random((h, w)) < (0.5, 0.05, 0.0, 0.95)[t % 4]
        reference = converter.mask2rle(mask.astype(np.uint8) * 255)
        assert brush.encode_mask(mask) == reference
        assert np.array_equal(brush.decode_rle(reference), converter.decode_rle(reference))


# --------------------------------------------------------------------------- exports

W, H = 40, 30


def region(kind: str, value: dict, label: str) -> dict:
    return {"id": f"r{kind}", "type": kind, "from_name": "tag", "to_name": "image",
            "original_width": W, "original_height": H, "image_rotation": 0,
            "value": {**value, kind: [label]}}  # fmt: skip


def brush_mask() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[5:20, 3:15] = True
    return m


def write_export(tmp_path: Path, tasks: list | None = None) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for name in ("a.png", "b.png", "c.png", "d.png"):
        Image.new("RGB", (W, H), (90, 120, 30)).save(images / name)
    if tasks is None:
        tasks = example_tasks()
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    return export, images


def example_tasks() -> list:
    polygon = {"points": [[50, 10], [90, 10], [90, 60], [50, 60]], "closed": True}
    rect = {"x": 25, "y": 50, "width": 50, "height": 30, "rotation": 0}
    keypoint = {"x": 10, "y": 10, "width": 1}
    return [
        {
            "id": 11,
            "data": {"image": "/data/upload/3/3f2a9c1e-a.png"},
            "annotations": [
                {
                    "result": [
                        region(
                            "brushlabels",
                            {"format": "rle", "rle": brush.encode_mask(brush_mask())},
                            "can",
                        ),
                        region("polygonlabels", polygon, "bottle"),
                        region("keypointlabels", keypoint, "can"),
                        region("rectanglelabels", rect, "can"),
                    ]
                }
            ],
        },
        {
            "id": 12,
            "data": {"image": "/data/local-files/?d=photos/b.png"},
            "annotations": [{"result": [region("rectanglelabels", rect, "lid")]}],
        },
        {
            "id": 13,
            "data": {"image": "http://localhost:8080/data/upload/3/c.png"},
            "annotations": [{"result": []}],
        },
        {"id": 14, "data": {"image": "d.png"}, "annotations": []},  # unlabelled
    ]


def test_reads_brush_polygon_rectangle(tmp_path: Path) -> None:
    export, images = write_export(tmp_path)
    with pytest.warns(SamtuneWarning) as notes:
        data = read_label_studio(export, images)
    (note,) = [str(n.message) for n in notes]
    assert "1 keypointlabels region" in note and "1 unlabelled task" in note
    assert "1 rectangle beside masks (a prompt)" in note
    assert data.categories == {1: "bottle", 2: "can", 3: "lid"}
    assert [data.image_info(i)["file_name"] for i in range(3)] == ["a.png", "b.png", "c.png"]
    first = data[0]
    assert first.image_id == 11 and first.category_ids.tolist() == [2, 1]
    assert np.array_equal(first.masks[0], brush_mask())
    outline = [20.0, 3.0, 36.0, 3.0, 36.0, 18.0, 20.0, 18.0]
    assert np.array_equal(first.masks[1], decode_segmentation([outline], H, W))
    box = np.zeros((H, W), bool)
    box[15:24, 10:30] = True  # x 25% of 40 = 10 .. 30, y 50% of 30 = 15 .. 24
    assert np.array_equal(data[1].masks[0], box)
    assert len(data[2].masks) == 0


def test_rotated_rectangle_turns_about_its_top_left(tmp_path: Path) -> None:
    rect = {"x": 50, "y": 10, "width": 25, "height": 20, "rotation": 90}
    tasks = [{"id": 1, "data": {"image": "a.png"},
              "annotations": [{"result": [region("rectanglelabels", rect, "lid")]}]}]  # fmt: skip
    data = read_label_studio(*write_export(tmp_path, tasks))
    ys, xs = np.nonzero(data[0].masks[0])
    # 10 x 6 px at (20, 3), turned 90 degrees clockwise: x 14..20, y 3..13
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (14, 20, 3, 13)


def test_labels_give_ids_and_refuse_others(tmp_path: Path) -> None:
    export, images = write_export(tmp_path)
    with pytest.warns(SamtuneWarning):
        data = read_label_studio(export, images, labels=["lid", "can", "bottle"])
    assert data.categories == {1: "lid", 2: "can", 3: "bottle"}
    with pytest.raises(DataError, match="label 'lid' is not one of the classes given"):
        read_label_studio(export, images, labels=["can", "bottle"])


def test_image_names(tmp_path: Path) -> None:
    images = tmp_path / "imgs"
    (images / "photos").mkdir(parents=True)
    for name in ("x.png", "photos/y.png", "3f2a9c1e-z.png", "my file.png"):
        (images / name).write_bytes(b"")
    assert resolve_image("/data/upload/1/abcdef12-x.png", images) == images / "x.png"
    assert resolve_image("/data/upload/1/3f2a9c1e-z.png", images) == images / "3f2a9c1e-z.png"
    assert resolve_image("/data/local-files/?d=home/me/photos/y.png", images) == (
        images / "photos/y.png"
    )
    assert resolve_image("s3://bucket/my%20file.png", images) == images / "my file.png"
    assert resolve_image("/data/local-files/?d=../../etc/passwd", images) is None
    assert resolve_image(None, images) is None


def test_load_dataset_name_and_splits(tmp_path: Path) -> None:
    tasks = [{"id": i, "data": {"image": "a.png"}, "annotations": [{"result": []}]}
             for i in range(10)]  # fmt: skip
    export, images = write_export(tmp_path, tasks)
    name = f"label-studio:{export}"
    sizes = {s: len(load_dataset(name, s, images)) for s in ("train", "val", "test", "all")}
    assert sizes == {"train": 8, "val": 1, "test": 1, "all": 10}
    ids = [set(load_dataset(name, s, images=images).image_ids) for s in ("train", "val", "test")]
    assert set.union(*ids) == set(range(10)) and sum(map(len, ids)) == 10
    assert dataset_label(name) == "label-studio-export" and dataset_label("demo") == "demo"


def test_bad_exports(tmp_path: Path) -> None:
    export, images = write_export(tmp_path, {"tasks": []})
    with pytest.raises(DataError, match="expected a list of tasks"):
        read_label_studio(export, images)
    bad_rle = region("brushlabels", {"format": "rle", "rle": FIXED_RLE}, "can")
    export, images = write_export(tmp_path, [{"id": 1, "data": {"image": "a.png"},
                                              "annotations": [{"result": [bad_rle]}]}])  # fmt: skip
    with pytest.raises(DataError, match="task 1, region 0 .brushlabels.: brush RLE holds 216"):
        read_label_studio(export, images)
    with pytest.warns(SamtuneWarning, match="1 malformed region"):
        assert len(read_label_studio(export, images, on_error="skip")[0].masks) == 0
    missing = [{"id": 1, "data": {"image": "/data/upload/1/nothere.png"},
                "annotations": [{"result": []}]}]  # fmt: skip
    export, images = write_export(tmp_path, missing)
    with pytest.raises(MissingFileError, match="1 of 1 images .* matched by file name"):
        read_label_studio(export, images)
    with pytest.raises(ConfigError, match="splits train, val, test, all"):
        load_dataset(f"label-studio:{export}", "dev", images)
    with pytest.raises(MissingFileError, match="pass --images DIR"):
        load_dataset(f"label-studio:{export}", "all")


def test_equal_to_the_converter_mask_for_mask(tmp_path: Path) -> None:
    pytest.importorskip("label_studio_converter.brush")
    from pycocotools import mask as mask_utils

    try:
        from label_studio_converter import brush as converter_brush
        from label_studio_converter.converter import Converter
    except ImportError as exc:  # its COCO export needs ujson, ijson, nltk, lxml, pandas
        pytest.skip(f"label_studio_converter.converter: {exc}")
    export, images = write_export(tmp_path)
    with pytest.warns(SamtuneWarning):
        data = read_label_studio(export, images)
    task = json.loads(export.read_text())[0]
    results = task["annotations"][0]["result"]
    brush_results = [{**r, **r["value"]} for r in results if r["type"] == "brushlabels"]
    layers = converter_brush.decode_from_annotation("tag", brush_results)
    assert np.array_equal(data[0].masks[0], layers["tag-can-0"] > 0)
    config = ('<View><Image name="image" value="$image"/><PolygonLabels name="tag" '
              'toName="image"><Label value="bottle"/></PolygonLabels></View>')  # fmt: skip
    only = [
        {**task, "annotations": [{"result": [r for r in results if r["type"] == "polygonlabels"]}]}
    ]
    (tmp_path / "poly.json").write_text(json.dumps(only))
    Converter(config, project_dir=str(tmp_path), download_resources=False).convert_to_coco(
        str(tmp_path / "poly.json"), str(tmp_path / "coco"), is_dir=False
    )
    (ann,) = json.loads((tmp_path / "coco" / "result.json").read_text())["annotations"]
    reference = mask_utils.decode(
        mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], H, W))
    )
    assert np.array_equal(data[0].masks[1], reference.astype(bool))

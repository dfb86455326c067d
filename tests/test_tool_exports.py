"""Annotation tools' exports as datasets: CVAT (COCO 1.0, CVAT for images XML), LabelMe and
X-AnyLabeling (samtune.data.tool_exports). Exports are fabricated in tmp_path the way each tool
writes them; masks are checked pixel for pixel against fixed values, pycocotools and (when
installed) labelme's own shape_to_mask."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtune.data import encode_mask, load_dataset
from samtune.data.tool_exports import READERS, decode_cvat_rle, split_image_ids
from samtune.errors import ConfigError, DataError, MissingFileError

W, H = 60, 40
POLYGON = [10.0, 5.0, 30.0, 5.0, 30.0, 20.0, 10.0, 20.0]


# --------------------------------------------------------------------------- fabricators


def _images(folder: Path, names, size=(W, H)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)


def cvat_mask2rle(flat) -> list[int]:
    """cvat-core's ``mask2Rle`` (cvat-core/src/object-utils.ts), line for line: run lengths
    of a flattened 0/1 mask, the first run being background (0 when the first pixel is set)."""
    acc: list[int] = []
    for idx, val in enumerate(flat):
        if idx > 0:
            if flat[idx - 1] == val:
                acc[-1] += 1
            else:
                acc.append(1)
        elif val > 0:
            acc += [0, 1]
        else:
            acc.append(1)
    return acc


def cvat_mask_element(label: str, mask: np.ndarray, left: int, top: int) -> str:
    """A ``<mask>`` as CVAT's exporter writes it (cvat/apps/dataset_manager/formats/cvat.py:
    ``rle`` is ``f"{list(counts)}"[1:-1]``, width = right - left + 1)."""
    h, w = mask.shape
    rle = f"{cvat_mask2rle(mask.astype(int).ravel().tolist())}"[1:-1]
    return (f'<mask label="{label}" source="manual" occluded="0" rle="{rle}" left="{left}" '
            f'top="{top}" width="{w}" height="{h}" z_order="0"></mask>')  # fmt: skip


def _points(flat) -> str:
    return ";".join(f"{x:.2f},{y:.2f}" for x, y in zip(flat[0::2], flat[1::2], strict=True))


def cvat_xml(root: Path, shapes: dict[str, str], labels=("can", "bottle")) -> Path:
    """An unzipped "CVAT for images 1.1" export: annotations.xml and images/."""
    _images(root / "images", shapes)
    meta = "".join(f"<label><name>{n}</name><type>any</type></label>" for n in labels)
    images = "".join(
        f'<image id="{i}" name="{name}" width="{W}" height="{H}">{body}</image>'
        for i, (name, body) in enumerate(shapes.items())
    )
    (root / "annotations.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
        f"<meta><task><labels>{meta}</labels></task></meta>{images}</annotations>"
    )
    return root / "annotations.xml"


def labelme_json(folder: Path, stem: str, shapes: list[dict], image=True, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if image:
        _images(folder, [f"{stem}.png"])
    data = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": f"{stem}.png",
            "imageData": None, "imageHeight": H, "imageWidth": W, **extra}  # fmt: skip
    (folder / f"{stem}.json").write_text(json.dumps(data))
    return folder / f"{stem}.json"


def shape(label, points, kind="polygon", **extra) -> dict:
    return {"label": label, "points": points, "group_id": None, "description": "",
            "shape_type": kind, "flags": {}, **extra}  # fmt: skip


def pairs(flat) -> list[list[float]]:
    return [list(p) for p in zip(flat[0::2], flat[1::2], strict=True)]


def coco_polygon_mask(polygons) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, H, W))).astype(bool)


def _all(name, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(name, "all", **options)


# --------------------------------------------------------------------------- CVAT XML


def test_cvat_rle_decodes_cvats_own_examples():
    # the examples in cvat-core's mask2Rle comment: [0,0,0,1] -> [3,1], [1,1,0,0] -> [0,2,2]
    assert decode_cvat_rle([3, 1], 4, 1).astype(int).tolist() == [[0, 0, 0, 1]]
    assert decode_cvat_rle([0, 2, 2], 2, 2).astype(int).tolist() == [[1, 1], [0, 0]]
    assert cvat_mask2rle([0, 0, 0, 1]) == [3, 1] and cvat_mask2rle([1, 1, 0, 0]) == [0, 2, 2]


SDK_BITMAP = np.zeros((H, W), bool)
SDK_BITMAP[12:17, 20:27] = [[1, 1, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 0],
                            [0, 0, 1, 1, 1, 0, 0], [1, 0, 0, 1, 0, 0, 1]]  # fmt: skip
# cvat_sdk 2.80.0's masks.encode_mask(SDK_BITMAP): CVAT's own encoder, written down (the mask's
# "points": its run lengths, then left, top, right, bottom)
SDK_POINTS = [0, 2, 2, 10, 1, 5, 3, 3, 2, 1, 2, 1, 2, 1, 20, 12, 26, 16]


def cvat_dump_mask(label: str, points: list) -> str:
    """A mask shape's points as CVAT's XML exporter writes them (dump_as_cvat_annotation)."""
    rle = f"{list(int(v) for v in points[:-4])}"[1:-1]
    left, top, right, bottom = (int(v) for v in points[-4:])
    return (f'<mask label="{label}" source="manual" occluded="0" rle="{rle}" left="{left}" '
            f'top="{top}" width="{right - left + 1}" height="{bottom - top + 1}" z_order="0">'
            "</mask>")  # fmt: skip


def test_cvat_mask_written_by_cvats_encoder_reads_back(tmp_path):
    xml = cvat_xml(tmp_path / "export", {"a.png": cvat_dump_mask("can", SDK_POINTS)})
    assert np.array_equal(_all(f"cvat:{xml}")[0].masks[0], SDK_BITMAP)


def _cvat_sdk_masks():
    """cvat_sdk's ``masks`` module, loaded from its file (cvat_sdk's __init__ needs its whole
    API client); skipped when cvat-sdk is absent."""
    spec = importlib.util.find_spec("cvat_sdk")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("cvat-sdk is not installed")
    path = Path(spec.submodule_search_locations[0]) / "masks.py"
    module_spec = importlib.util.spec_from_file_location("cvat_sdk_masks_oracle", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_cvat_masks_against_cvat_sdks_own_encoder_and_decoder(tmp_path):
    masks = _cvat_sdk_masks()
    assert masks.encode_mask(SDK_BITMAP) == SDK_POINTS  # the values written down above
    rng = np.random.default_rng(0)
    bitmaps = [rng.random((H, W)) < p for p in (0.05, 0.5, 0.95)]
    bitmaps.append(np.zeros((H, W), bool))
    bitmaps[-1][0, 0] = True  # a mask whose first pixel is set: its RLE starts with 0
    encoded = [masks.encode_mask(b) for b in bitmaps]
    body = "".join(cvat_dump_mask("can", e) for e in encoded)
    xml = cvat_xml(tmp_path / "export", {"a.png": body})
    ours = _all(f"cvat:{xml}")[0].masks
    for e, b, got in zip(encoded, bitmaps, ours, strict=True):
        theirs = masks.decode_mask(e, image_width=W, image_height=H)
        assert np.array_equal(got, theirs) and np.array_equal(got, b)


def test_cvat_xml_polygons_and_masks_become_instances(tmp_path):
    blob = np.zeros((6, 9), bool)
    blob[1:5, 2:8] = True
    blob[0, 0] = True  # the first pixel set: the RLE starts with a 0 run
    body = (f'<polygon label="bottle" source="manual" occluded="1" points="{_points(POLYGON)}" '
            f'z_order="2"></polygon>' + cvat_mask_element("can", blob, left=40, top=30))  # fmt: skip
    xml = cvat_xml(tmp_path / "export", {"a.png": body})
    sample = _all(f"cvat:{xml}")[0]
    assert sample.category_ids.tolist() == [2, 1]  # <labels> order: can=1, bottle=2
    assert np.array_equal(sample.masks[0], coco_polygon_mask([POLYGON]))
    expected = np.zeros((H, W), bool)
    expected[30:36, 40:49] = blob
    assert np.array_equal(sample.masks[1], expected)
    assert sample.masks[0].sum() == 300  # 20 x 15, pycocotools' area of that rectangle
    assert not sample.iscrowd.any()


def test_cvat_export_folder_and_xml_prefix_read_the_same(tmp_path):
    body = f'<polygon label="can" points="{_points(POLYGON)}"></polygon>'
    xml = cvat_xml(tmp_path / "export", {"a.png": body})
    a, b = _all(f"cvat:{xml.parent}")[0], _all(f"cvat-xml:{xml}")[0]
    assert np.array_equal(a.masks, b.masks)


def test_cvat_project_export_finds_images_in_their_subset_folder(tmp_path):
    body = f'<polygon label="can" points="{_points(POLYGON)}"></polygon>'
    xml = cvat_xml(tmp_path / "export", {"a.png": body})
    xml.write_text(xml.read_text().replace('name="a.png"', 'name="a.png" subset="Train"'))
    (tmp_path / "export" / "images" / "Train").mkdir()
    (tmp_path / "export" / "images" / "a.png").rename(tmp_path / "export/images/Train/a.png")
    ds = _all(f"cvat:{xml}")
    assert ds.image_path(0) == tmp_path / "export" / "images" / "Train" / "a.png"


def test_cvat_boxes_are_skipped_with_one_warning_unless_boxes_mask(tmp_path):
    body = ('<box label="can" occluded="0" xtl="2.00" ytl="3.00" xbr="12.00" ybr="9.00" '
            f'z_order="0"></box><polygon label="can" points="{_points(POLYGON)}"></polygon>'
            '<polyline label="can" points="1.00,1.00;5.00,5.00"></polyline>')  # fmt: skip
    xml = cvat_xml(tmp_path / "export", {"a.png": body})
    with pytest.warns(UserWarning, match=r"left out 1 <polyline> \(not a region\), 1 box"):
        assert len(load_dataset(f"cvat:{xml}", "all")[0].masks) == 1
    masks = _all(f"cvat:{xml}", boxes="mask")[0].masks
    assert np.array_equal(masks[0], coco_polygon_mask([[2, 3, 12, 3, 12, 9, 2, 9]]))
    assert masks[0].sum() == 60  # 10 x 6 pixels


def test_cvat_grouped_shapes_are_one_instance(tmp_path):
    left, right = [5, 5, 15, 5, 15, 15, 5, 15], [40, 5, 50, 5, 50, 15, 40, 15]
    blob = np.ones((2, 3), bool)
    body = (
        f'<polygon label="can" group_id="3" points="{_points(left)}"></polygon>'
        f'<polygon label="can" group_id="3" points="{_points(right)}"></polygon>'
        + cvat_mask_element("can", blob, 0, 0).replace("<mask ", '<mask group_id="3" ')
    )
    xml = cvat_xml(tmp_path / "export", {"a.png": body})
    masks = _all(f"cvat:{xml}")[0].masks
    expected = coco_polygon_mask([left, right])
    expected[0:2, 0:3] = True
    assert masks.shape[0] == 1 and np.array_equal(masks[0], expected)


def test_classes_fix_the_order_and_refuse_other_labels(tmp_path):
    body = f'<polygon label="can" points="{_points(POLYGON)}"></polygon>'
    xml = cvat_xml(tmp_path / "export", {"a.png": body})
    ds = _all(f"cvat:{xml}", classes=["glass", "can"])
    assert ds.categories == {1: "glass", 2: "can"} and ds[0].category_ids.tolist() == [2]
    with pytest.raises(DataError, match="'can' are not in classes"):
        _all(f"cvat:{xml}", classes=["glass"])


def test_split_is_seeded_by_image_and_covers_every_image_once():
    records = [{"id": i, "file_name": f"{i:03d}.png"} for i in range(20)]
    parts = {s: split_image_ids(records, s, 0) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert sorted(sum(parts.values(), [])) == list(range(20))
    assert parts == {s: split_image_ids(records[::-1], s, 0) for s in parts}  # order-free
    assert parts["val"] != split_image_ids(records, "val", 1)
    assert split_image_ids(records, "all", 0) is None
    with pytest.raises(DataError, match="too few to hold out val"):
        split_image_ids(records[:2], "val", 0)


# --------------------------------------------------------------------------- CVAT COCO 1.0


def _cvat_coco(root: Path, annotations: list[dict], subset="default") -> Path:
    """CVAT's "COCO 1.0" zip layout: annotations/instances_<subset>.json, images/<subset>/."""
    _images(root / "images" / subset, ["a.png"])
    data = {"licenses": [{"name": "", "id": 0, "url": ""}], "info": {},
            "categories": [{"id": 1, "name": "can", "supercategory": ""},
                           {"id": 2, "name": "bottle", "supercategory": ""}],
            "images": [{"id": 1, "width": W, "height": H, "file_name": "a.png", "license": 0,
                        "flickr_url": "", "coco_url": "", "date_captured": 0}],
            "annotations": annotations}  # fmt: skip
    (root / "annotations").mkdir(parents=True)
    path = root / "annotations" / f"instances_{subset}.json"
    path.write_text(json.dumps(data))
    return path


def _datumaro_rle(mask: np.ndarray) -> dict:
    """An RLE as Datumaro's COCO exporter writes a CVAT mask (mask_tools.mask_to_rle, then
    convert_instance): uncompressed ``counts``, runs down the columns starting with
    background, written with ``iscrowd: 1``."""
    from pycocotools import mask as mask_utils

    runs, value, n = [], 0, 0
    for v in mask.astype(np.uint8).ravel(order="F"):
        if v == value:
            n += 1
        else:
            runs.append(n)
            value, n = v, 1
    runs.append(n)
    rle = {"counts": runs, "size": [mask.shape[0], mask.shape[1]]}
    assert np.array_equal(mask_utils.decode(mask_utils.frPyObjects(rle, *mask.shape)), mask)
    return rle


def test_cvat_coco_masks_marked_crowd_are_instances_unless_keep_crowd(tmp_path):
    blob = np.zeros((H, W), bool)
    blob[10:20, 30:45] = True
    anns = [
        {"id": 1, "image_id": 1, "category_id": 2, "segmentation": [POLYGON], "area": 300.0,
         "bbox": [10, 5, 20, 15], "iscrowd": 0, "attributes": {"occluded": False}},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": _datumaro_rle(blob),
         "area": 150.0, "bbox": [30, 10, 15, 10], "iscrowd": 1,
         "attributes": {"occluded": True}},
        {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [], "area": 20.0,
         "bbox": [1, 1, 5, 4], "iscrowd": 0, "attributes": {"occluded": False}},
    ]  # fmt: skip
    path = _cvat_coco(tmp_path / "export", anns)
    sample = _all(f"cvat:{tmp_path / 'export'}")[0]  # the folder: its one instances_*.json
    assert sample.iscrowd.tolist() == [False, False] and sample.category_ids.tolist() == [2, 1]
    assert np.array_equal(sample.masks[0], coco_polygon_mask([POLYGON]))
    assert np.array_equal(sample.masks[1], blob)
    assert _all(f"cvat:{path}", keep_crowd=True)[0].iscrowd.tolist() == [False, True]
    box = _all(f"cvat-coco:{path}", boxes="mask")[0].masks[2]
    assert np.array_equal(box, coco_polygon_mask([[1, 1, 6, 1, 6, 5, 1, 5]]))


def test_cvat_coco_reads_like_samtunes_coco_reader(tmp_path):
    anns = [{"id": 1, "image_id": 1, "category_id": 2, "segmentation": [POLYGON],
             "area": 300.0, "bbox": [10, 5, 20, 15], "iscrowd": 0}]  # fmt: skip
    path = _cvat_coco(tmp_path / "export", anns)
    ours = _all(f"cvat:{path}")[0]
    coco = load_dataset("coco", images=path.parent.parent / "images" / "default", annotations=path)
    assert np.array_equal(ours.masks, coco[0].masks) and np.array_equal(ours.image, coco[0].image)


# --------------------------------------------------------------------------- LabelMe


def _png_b64(mask: np.ndarray) -> str:
    """A mask as labelme >= 5.5 writes it: utils.img_arr_to_b64 of the bool crop (PNG)."""
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_labelme_shapes_read_like_labelme2coco(tmp_path):
    crop = np.zeros((4, 6), bool)
    crop[1:3, 2:5] = True
    shapes = [shape("can", pairs(POLYGON)),
              shape("can", [[40, 10], [40, 15]], "circle"),
              shape("bottle", [[45.0, 30.0], [50.0, 33.0]], "mask", mask=_png_b64(crop)),
              shape("can", [[2, 2], [4, 4]], "line")]  # fmt: skip
    labelme_json(tmp_path / "lm", "a", shapes)
    sample = _all(f"labelme:{tmp_path / 'lm'}")[0]
    assert sample.category_ids.tolist() == [2, 2, 1]  # sorted names: bottle=1, can=2
    assert np.array_equal(sample.masks[0], coco_polygon_mask([POLYGON]))
    # labelme2coco's circle: n = max(int(pi / arccos(1 - 1/r)), 12) vertices at radius r=5
    n = max(int(np.pi / np.arccos(1 - 1 / 5)), 12)
    i = np.arange(n)
    circle = np.stack([40 + 5 * np.sin(2 * np.pi / n * i), 10 + 5 * np.cos(2 * np.pi / n * i)], 1)
    assert n == 12 and np.array_equal(sample.masks[1], coco_polygon_mask([circle.ravel().tolist()]))
    expected = np.zeros((H, W), bool)
    expected[30:34, 45:51] = crop  # labelme: mask[y1:y2 + 1, x1:x2 + 1] = shape["mask"]
    assert np.array_equal(sample.masks[2], expected)


def test_x_anylabeling_four_point_rectangles_and_groups(tmp_path):
    rect = [[2, 3], [12, 3], [12, 9], [2, 9]]  # X-AnyLabeling writes the 4 corners
    shapes = [shape("can", rect, "rectangle"),
              shape("can", pairs(POLYGON), group_id=1),
              shape("can", [[40, 30], [50, 30], [50, 38]], group_id=1)]  # fmt: skip
    labelme_json(tmp_path / "xa", "a", shapes)
    skipped = _all(f"x-anylabeling:{tmp_path / 'xa'}")[0]
    assert len(skipped.masks) == 1  # the rectangle is a box: left out by default
    both = [POLYGON, [40, 30, 50, 30, 50, 38]]
    assert np.array_equal(skipped.masks[0], coco_polygon_mask(both))
    boxed = _all(f"x-anylabeling:{tmp_path / 'xa'}", boxes="mask")[0]
    assert np.array_equal(boxed.masks[0], coco_polygon_mask([[2, 3, 12, 3, 12, 9, 2, 9]]))


def test_labelme_image_path_relative_to_the_json_and_images_option(tmp_path):
    lm = tmp_path / "lm"
    labelme_json(lm / "json", "a", [shape("can", pairs(POLYGON))], image=False,
                 imagePath="../pictures/a.png")  # fmt: skip
    _images(lm / "pictures", ["a.png"])
    ds = _all(f"labelme:{lm}")
    assert ds.image_path(0) == lm / "pictures" / "a.png"
    with pytest.raises(DataError, match="points outside"):
        _all(f"labelme:{lm / 'json'}")
    assert _all(f"labelme:{lm / 'json'}", images=lm / "pictures").image_path(0).is_file()


def test_labelme_image_data_is_read_when_the_file_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMTUNE_DATA", str(tmp_path / "cache"))
    pixels = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    labelme_json(tmp_path / "lm", "a", [shape("can", pairs(POLYGON))], image=False,
                 imageData=base64.b64encode(buf.getvalue()).decode())  # fmt: skip
    ds = _all(f"labelme:{tmp_path / 'lm'}")
    assert np.array_equal(ds[0].image, pixels)
    assert ds.image_path(0).parent == tmp_path / "cache" / "embedded-images"
    assert ds.image_path(0).read_bytes() == buf.getvalue()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('<polygon label="can" points="1.00,1.00;5.00,5.00"></polygon>', "2 point(s)"),
        ('<polygon label="can" points="1,1;500,1;500,30"></polygon>', "far outside"),
        (
            '<mask label="can" rle="1, 2" left="0" top="0" width="2" height="2"></mask>',
            "covers 3 pixels but its box is 2x2",
        ),
        (
            '<mask label="can" rle="1, 3" left="59" top="0" width="2" height="2"></mask>',
            "not inside",
        ),
        ('<polygon label="can" points="a,b;c,d;e,f"></polygon>', "'points' must be"),
    ],
)
def test_cvat_xml_bad_shapes_are_one_data_error(tmp_path, body, words):
    xml = cvat_xml(tmp_path / "export", {"a.png": body})
    with pytest.raises(DataError, match="a.png") as info:
        _all(f"cvat:{xml}")
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_declared_size_no_image_can_have_is_refused_before_any_mask_is_made(tmp_path):
    body = '<mask label="can" rle="0, 1" left="0" top="0" width="1" height="1"></mask>'
    xml = cvat_xml(tmp_path / "export", {"a.png": body})
    xml.write_text(xml.read_text().replace(f'width="{W}"', 'width="900000000"'))
    with pytest.raises(DataError, match="declares 900000000x40"):
        _all(f"cvat:{xml}")


def test_xml_with_a_doctype_or_entities_is_refused_unexpanded(tmp_path):
    xml = tmp_path / "annotations.xml"
    xml.write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx">]>'
                   "<annotations>&x;</annotations>")  # fmt: skip
    with pytest.raises(DataError, match="DOCTYPE or ENTITY"):
        _all(f"cvat:{xml}")
    xml.write_text("<annotations><image name='a.png'")
    with pytest.raises(DataError, match="not well-formed XML"):
        _all(f"cvat:{xml}")


def test_bad_labelme_files_and_options(tmp_path):
    lm = tmp_path / "lm"
    labelme_json(lm, "a", [shape("can", [[1, 1], [2, 2]])])
    with pytest.raises(DataError, match="a polygon needs at least 3"):
        _all(f"labelme:{lm}")
    (lm / "a.json").write_text("{not json")
    with pytest.raises(DataError, match="a.json"):
        _all(f"labelme:{lm}")
    labelme_json(lm, "a", [shape("can", [[1, 1], [2, 2]], "mask", mask="!!")])
    with pytest.raises(DataError, match="base64 PNG"):
        _all(f"labelme:{lm}")
    with pytest.raises(ConfigError, match="boxes must be one of skip, mask"):
        _all(f"labelme:{lm}", boxes="fill")
    with pytest.raises(ConfigError, match="unknown option"):
        _all(f"labelme:{lm}", colour="red")
    with pytest.raises(ConfigError, match="no split 'validation'"):
        load_dataset(f"labelme:{lm}", "validation")
    with pytest.raises(MissingFileError):
        _all(f"labelme:{tmp_path / 'nowhere'}")


def test_a_missing_image_is_named(tmp_path):
    xml = cvat_xml(tmp_path / "export", {"a.png": ""})
    (tmp_path / "export" / "images" / "a.png").unlink()
    with pytest.raises(MissingFileError, match="a.png"):
        _all(f"cvat:{xml}")


def test_registry_prefixes_all_load(tmp_path):
    assert set(READERS) >= {"cvat", "cvat-xml", "cvat-coco", "labelme", "x-anylabeling"}


# --------------------------------------------------------------------------- oracle: labelme


def _labelme_shape_to_mask():
    """labelme's own ``labelme.utils.shape.shape_to_mask``, loaded from its file without the
    package's __init__ (which imports onnxruntime and Qt); skipped when labelme is absent."""
    spec = importlib.util.find_spec("labelme")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("labelme is not installed")
    path = Path(spec.submodule_search_locations[0]) / "utils" / "shape.py"
    stub = types.ModuleType("labelme._label_file")
    stub.ShapeDict = dict
    saved = {k: sys.modules.get(k) for k in ("labelme", "labelme._label_file")}
    sys.modules["labelme"] = types.ModuleType("labelme")
    sys.modules["labelme._label_file"] = stub
    try:
        module_spec = importlib.util.spec_from_file_location("labelme_shape_oracle", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    return module.shape_to_mask


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels within one pixel (8-neighbourhood) of the mask's edge, inside or out."""
    padded = np.pad(mask, 1)
    grow = np.zeros_like(mask)
    shrink = np.ones_like(mask)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            window = padded[1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W]
            grow |= window
            shrink &= window
    return grow & ~shrink


LABELME_CASES = [
    ("polygon", [[10.3, 5.2], [30.6, 7.1], [25.2, 22.8], [8.4, 18.9]]),
    ("rectangle", [[33.0, 4.0], [52.0, 17.0]]),
    ("circle", [[20.5, 28.5], [27.5, 28.5]]),
]
# labelme 6.3.1's shape_to_mask((40, 60), points, kind) of LABELME_CASES, as COCO compressed RLE
# (samtune.data.encode_mask), written down from _labelme_shape_to_mask() run with labelme
# installed (`pip install --no-deps --target DIR labelme`, DIR on PYTHONPATH): 287, 280 and 177
# pixels. Ours are 282, 247 and 147: IoU 0.909, 0.882, 0.831.
LABELME_MASKS = {
    "polygon": "_:4n06L41O01O000000001O0000010O0000001ON2M3M3M3MTT1",
    "rectangle": "\\Y1>j00000000000000000000000000000000000000d8",
    "circle": "Ra05Q14M2N2O0O2O00000001N101N2N3LXW1",
}


def _ours(tmp_path) -> np.ndarray:
    labelme_json(tmp_path / "lm", "a", [shape("can", p, kind) for kind, p in LABELME_CASES])
    return _all(f"labelme:{tmp_path / 'lm'}", boxes="mask")[0].masks


def _agree_but_on_the_outline(ours: np.ndarray, theirs: np.ndarray, kind: str) -> float:
    """labelme draws with PIL (outline included), samtune rasterises as COCO (pycocotools):
    the masks may differ only within a pixel of labelme's outline. Returns their IoU."""
    assert not ((ours ^ theirs) & ~_boundary(theirs)).any(), kind
    return float((ours & theirs).sum() / (ours | theirs).sum())


def test_labelme_shapes_against_labelmes_own_shape_to_mask(tmp_path):
    shape_to_mask = _labelme_shape_to_mask()
    for (kind, points), ours in zip(LABELME_CASES, _ours(tmp_path), strict=True):
        theirs = shape_to_mask((H, W), points, kind)
        assert _agree_but_on_the_outline(ours, theirs, kind) > 0.8, kind
        assert LABELME_MASKS[kind] == encode_mask(theirs)["counts"]  # the values written down


def test_labelme_shapes_against_labelmes_masks_written_down(tmp_path):
    from samtune.data import decode_segmentation

    ious = []
    for (kind, _), ours in zip(LABELME_CASES, _ours(tmp_path), strict=True):
        theirs = decode_segmentation({"size": [H, W], "counts": LABELME_MASKS[kind]}, H, W)
        ious.append(_agree_but_on_the_outline(ours, theirs, kind))
    assert np.round(ious, 3).tolist() == [0.909, 0.882, 0.831]


# --------------------------------------------------------------------------- the command line


def test_fit_trains_on_a_cvat_export_and_the_adapter_loads_back(tmp_path):
    import torch
    from typer.testing import CliRunner

    import samtune
    from samtune.cli import app

    blob = np.zeros((8, 10), bool)
    blob[2:7, 1:9] = True
    body = (f'<polygon label="bottle" points="{_points(POLYGON)}"></polygon>'
            + cvat_mask_element("can", blob, left=40, top=25))  # fmt: skip
    xml = cvat_xml(tmp_path / "export", {f"{k}.png": body for k in "abc"})
    run = tmp_path / "run"
    args = ["fit", "--model", "tiny", "--strategy", "decoder", "--dataset", f"cvat:{xml}",
            "--images", str(xml.parent / "images"), "--max-steps", "2", "-o", str(run), "-q"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output[-2000:]
    assert (run / "adapter" / "adapter.safetensors").is_file()
    config = (run / "config.yaml").read_text()
    assert f"dataset: cvat:{xml}" in config and "images:" in config
    tuned = samtune.load_tuned(run / "adapter")
    base = samtune.load_model("tiny")
    changed = [
        name for name, p in tuned.state_dict().items()
        if not torch.equal(p, base.state_dict()[name])
    ]  # fmt: skip
    assert changed and all("mask_decoder" in name for name in changed)


def test_eval_scores_a_labelme_folder_and_fits_default_run_folder_is_named_by_the_tool(tmp_path):
    from typer.testing import CliRunner

    from samtune.cli import app
    from samtune.train.config import FitConfig

    labelme_json(tmp_path / "lm", "a", [shape("can", pairs(POLYGON))])
    args = ["eval", "-m", "tiny", "-d", f"labelme:{tmp_path / 'lm'}", "--split", "all", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output[-2000:]
    report = json.loads(result.output[result.output.index("{") :])["tiny"]
    assert report["metrics"]["num_instances"] == 1 and report["metrics"]["num_images"] == 1
    # a path in the dataset name made runs/lora-cvat:/x/annotations.xml, nested folders
    assert (
        FitConfig(dataset="cvat:/x/annotations.xml").resolved().output_dir
        == "runs/lora-cvat-annotations"
    )

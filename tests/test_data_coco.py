"""COCO loading against pycocotools, image modes, EXIF, and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from samtune.data import InstanceDataset, load_dataset
from samtune.data.images import load_image
from samtune.data.masks import encode_mask
from samtune.errors import DataError, MissingFileError, UnknownNameError

H, W = 40, 60


def _uncompressed_rle(mask):
    flat = mask.T.flatten().astype(np.uint8)  # column-major, as COCO
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            run, current = 0, v
        run += 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def make_coco(tmp_path, *, n_images=2, extra_anns=(), write_images=True):
    images_dir = tmp_path / "images"
    images_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    blob = np.zeros((H, W), bool)
    blob[5:20, 30:50] = True
    blob[10:15, 35:40] = False  # a hole: only RLE can express it
    for i in range(1, n_images + 1):
        name = f"img{i}.png"
        if write_images:
            Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(images_dir / name)
        images.append({"id": i, "file_name": name, "height": H, "width": W})
        anns += [
            {"id": 10 * i + 1, "image_id": i, "category_id": 1, "iscrowd": 0, "area": 100,
             "bbox": [2, 3, 20, 20], "segmentation": [[2, 3, 22, 3, 22, 23, 2, 23], [25.5, 30, 35, 30, 30, 38]]},
            {"id": 10 * i + 2, "image_id": i, "category_id": 2, "iscrowd": 0, "area": 200,
             "bbox": [30, 5, 20, 15], "segmentation": encode_mask(blob)},
            {"id": 10 * i + 3, "image_id": i, "category_id": 2, "iscrowd": 1, "area": 200,
             "bbox": [30, 5, 20, 15], "segmentation": _uncompressed_rle(~blob)},
        ]  # fmt: skip
    images.append({"id": 99, "file_name": "empty.png", "height": H, "width": W})
    if write_images:
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(images_dir / "empty.png")
    anns += list(extra_anns)
    coco = {
        "images": images,
        "annotations": anns,
        "categories": [
            {"id": 1, "name": "can"},
            {"id": 2, "name": "bag"},
            {"id": 3, "name": "net"},
        ],
    }
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps(coco))
    return ann_file, images_dir


def test_masks_equal_pycocotools_ann_to_mask(tmp_path):
    from pycocotools.coco import COCO

    ann_file, images = make_coco(tmp_path)
    ds = InstanceDataset(ann_file, images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coco = COCO(str(ann_file))
    assert len(ds) == 3
    for i in range(len(ds)):
        s = ds[i]
        ann_ids = coco.getAnnIds(imgIds=[s.image_id])
        assert list(s.instance_ids) == ann_ids
        for k, aid in enumerate(ann_ids):
            ref = coco.annToMask(coco.loadAnns([aid])[0]).astype(bool)
            assert np.array_equal(s.masks[k], ref), f"annotation {aid}"
        if ann_ids:
            assert list(s.iscrowd) == [False, False, True]
            assert list(s.category_ids) == [1, 2, 2]
            assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
            ys, xs = np.nonzero(s.masks[1])
            assert list(s.boxes[1]) == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    empty = ds[2]
    assert empty.masks.shape == (0, H, W) and empty.boxes.shape == (0, 4)
    assert ds.stats()["per_class"] == {"can": 2, "bag": 4, "net": 0}


def test_category_selection_remapping_and_min_area(tmp_path):
    ann_file, images = make_coco(tmp_path)
    ds = InstanceDataset(ann_file, images, categories=["bag"], skip_empty=True)
    assert ds.categories == {2: "bag"} and len(ds) == 2
    assert set(ds[0].category_ids) == {2}
    merged = InstanceDataset(ann_file, images, category_map={"can": "waste", 2: "waste"})
    assert merged.categories == {1: "waste"}
    assert list(merged[0].category_ids) == [1, 1, 1]
    big = InstanceDataset(ann_file, images, min_area=300)
    areas = [m.sum() for m in big[0].masks]
    assert all(a >= 300 for a in areas) and len(areas) < 3
    with pytest.raises(DataError, match="unknown category 'glass'"):
        InstanceDataset(ann_file, images, categories=["glass"])


def test_exif_rotation_aligns_masks_with_rotated_image(tmp_path):
    # displayed image: 30 wide, 50 tall, with a red square at x 5-15, y 30-45
    shown = np.zeros((50, 30, 3), np.uint8)
    shown[30:45, 5:15] = (255, 0, 0)
    # stored sideways: rotate so that EXIF orientation 6 (rotate 90 CW on display) restores it
    stored = Image.fromarray(np.rot90(shown, k=1).copy())
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "images").mkdir()
    stored.save(tmp_path / "images" / "r.jpg", exif=exif, quality=100)
    coco = {
        "images": [{"id": 1, "file_name": "r.jpg", "height": 50, "width": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 30, 10, 15],
                         "segmentation": [[5, 30, 15, 30, 15, 45, 5, 45]]}],
        "categories": [{"id": 1, "name": "x"}],
    }  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(coco))
    s = InstanceDataset(tmp_path / "a.json", tmp_path / "images")[0]
    assert s.image.shape == (50, 30, 3)
    red = (s.image[..., 0] > 128) & (s.image[..., 1] < 100)
    iou = (red & s.masks[0]).sum() / (red | s.masks[0]).sum()
    assert iou > 0.85


@pytest.mark.parametrize(
    "mode,array",
    [
        ("L", np.full((4, 5), 77, np.uint8)),
        ("RGBA", np.dstack([np.full((4, 5, 3), 77, np.uint8), np.zeros((4, 5), np.uint8)])),
        ("I;16", np.full((4, 5), 77 * 257, np.uint16)),
    ],
)
def test_image_modes_become_rgb_uint8(tmp_path, mode, array):
    path = tmp_path / "x.png"
    Image.fromarray(array).save(path)
    img = load_image(path)
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8
    assert (img == 77).all()


def test_palette_image_becomes_rgb(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(np.full((3, 3, 3), (10, 200, 30), np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE
    ).save(path)
    assert (load_image(path) == (10, 200, 30)).all()


def test_missing_and_corrupt_images(tmp_path):
    ann_file, images = make_coco(tmp_path)
    (images / "img2.png").unlink()
    with pytest.raises(MissingFileError, match="img2.png"):
        InstanceDataset(ann_file, images)
    with pytest.warns(UserWarning, match="1 missing image file"):
        ds = InstanceDataset(ann_file, images, on_error="skip")
    assert len(ds) == 2
    (images / "img1.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="img1.png.*corrupt.*on_error='skip'"):
        InstanceDataset(ann_file, images, check_files=False)[0]
    with pytest.warns(UserWarning, match="skipped unreadable image"):
        assert ds[0].num_instances == 0


def test_malformed_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [1, 2')
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="bad.json.*not valid JSON"):
        InstanceDataset(bad, tmp_path / "images")
    bad.write_text('{"foo": 1}')
    with pytest.raises(DataError, match="not COCO format"):
        InstanceDataset(bad, tmp_path / "images")


@pytest.mark.parametrize(
    "ann,message",
    [
        ({"id": 500, "image_id": 12345, "category_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5]]}, "annotation of unknown image"),
        ({"id": 501, "image_id": 1, "category_id": 77, "segmentation": [[0, 0, 5, 0, 5, 5]]}, "annotation of unknown category"),
        ({"id": 502, "image_id": 1, "category_id": 1, "bbox": [3, 3, 0, 5], "segmentation": [[0, 0, 5, 0, 5, 5]]}, "zero-area box"),
        ({"id": 503, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 5]]}, "malformed segmentation"),
    ],
)  # fmt: skip
def test_bad_annotations_raise_or_skip_with_count(tmp_path, ann, message):
    ann_file, images = make_coco(tmp_path, extra_anns=[ann])
    with pytest.raises(DataError, match=f"ann.json.*{ann['id']}"):
        InstanceDataset(ann_file, images)
    with pytest.warns(UserWarning, match=f"skipped 1 {message}"):
        ds = InstanceDataset(ann_file, images, on_error="skip")
    assert ds.skipped[message] == 1
    assert sum(len(ds.annotations(i)) for i in range(len(ds))) == 6


def test_image_size_mismatch_is_reported(tmp_path):
    ann_file, images = make_coco(tmp_path)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(images / "img1.png")
    with pytest.raises(DataError, match="img1.png.*10x10"):
        InstanceDataset(ann_file, images)[0]


def test_load_dataset_coco_layouts_and_errors(tmp_path):
    ann_file, images = make_coco(tmp_path)
    ds = load_dataset("coco", "train", annotations=ann_file, images=images)
    assert len(ds) == 3 and ds.name == "coco/train"
    assert ds.image_path(0) == images / "img1.png"
    (tmp_path / "annotations").mkdir()
    ann_file.rename(tmp_path / "annotations" / "instances_val.json")
    images.rename(tmp_path / "val")
    assert len(load_dataset("coco", "val", root=tmp_path)) == 3
    with pytest.raises(MissingFileError, match="no COCO split 'train'"):
        load_dataset("coco", "train", root=tmp_path)
    with pytest.raises(UnknownNameError, match="unknown dataset 'trashbin'.*trashcan"):
        load_dataset("trashbin", "train")
    with pytest.raises(UnknownNameError, match="no split 'dev'"):
        load_dataset("zerowaste", "dev", root=tmp_path)


def test_missing_recipe_data_says_what_to_do(tmp_path):
    with pytest.raises(MissingFileError) as info:
        load_dataset("zerowaste", "train", root=tmp_path / "zw")
    text = str(info.value)
    assert str(tmp_path / "zw") in text and "samtune data download zerowaste" in text
    with pytest.raises(MissingFileError, match="conservancy.umn.edu"):
        load_dataset("trashcan", "test", root=tmp_path)

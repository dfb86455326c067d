"""What the real waste datasets do that a tidy COCO file does not.

TACO's annotation file reuses two annotation ids on other images; TrashCan's val frames come
from train's videos; phone photos carry EXIF rotations that the annotation file may or may not
have followed; a suite must find a broken dataset before its first run, not hours in. Each test
fabricates the smallest layout that shows it; masks are compared with pycocotools.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtune.data import InstanceDataset, load_dataset
from samtune.errors import DataError, SamtuneWarning

# --------------------------------------------------------------------------- helpers


def _square(x: float, y: float, side: float) -> list[float]:
    return [x, y, x + side, y, x + side, y + side, x, y + side]


def _ann(aid: int, image: int, poly: list[float], category: int = 1) -> dict:
    xs, ys = poly[0::2], poly[1::2]
    box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return {"id": aid, "image_id": image, "category_id": category, "iscrowd": 0,
            "area": box[2] * box[3], "bbox": box, "segmentation": [poly]}  # fmt: skip


def _reference_masks(coco_dict: dict, tmp_path: Path) -> dict[int, list[np.ndarray]]:
    """pycocotools' annToMask of every raw annotation, by image, in file order."""
    from pycocotools.coco import COCO

    path = tmp_path / "reference.json"
    path.write_text(json.dumps(coco_dict))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coco = COCO(str(path))
    out: dict[int, list[np.ndarray]] = {}
    for ann in coco_dict["annotations"]:  # annToMask of the record: ids repeat, loadAnns can't
        out.setdefault(ann["image_id"], []).append(coco.annToMask(ann).astype(bool))
    return out


# --------------------------------------------------------------------------- repeated ids


def _taco_like(root: Path, n_images: int = 6) -> dict:
    """A TACO layout whose file, like the real one, reuses annotation ids on other images."""
    images, anns = [], []
    for i in range(n_images):
        name = f"batch_{1 + i % 2}/{i:06d}.jpg"
        (root / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30)).save(root / "data" / name, format="JPEG")
        images.append({"id": i, "width": 40, "height": 30, "file_name": name})
        anns += [
            _ann(10 * i + 1, i, _square(2 + i, 3, 10)),
            _ann(10 * i + 2, i, _square(20, 5 + i, 8)),
        ]
    anns[2]["id"] = 1  # image 1 reuses image 0's first id (TACO: 309 on images 93 and 101)
    anns[9]["id"] = 32  # image 4 reuses image 3's second id (TACO: 4040 on 1281 and 1300)
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "can"}]}
    (root / "data" / "annotations.json").write_text(json.dumps(coco))
    return coco


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_ids_repeated_across_images_load_with_fresh_ids_and_one_warning(tmp_path, on_error):
    coco = _taco_like(tmp_path)
    reference = _reference_masks(coco, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = InstanceDataset(
            tmp_path / "data" / "annotations.json", tmp_path / "data", on_error=on_error
        )
    messages = [str(w.message) for w in caught if issubclass(w.category, SamtuneWarning)]
    assert len(messages) == 1, messages
    assert re.search(r"id 1 on image 1 \(first used on image 0\) is now 53", messages[0])
    assert re.search(r"id 32 on image 4 \(first used on image 3\) is now 54", messages[0])
    samples = [ds[i] for i in range(len(ds))]
    ids = np.concatenate([s.instance_ids for s in samples])
    assert len(ids) == len(coco["annotations"]) == len(set(ids.tolist()))
    assert samples[1].instance_ids.tolist() == [53, 12] and samples[0].instance_ids.tolist() == [
        1,
        2,
    ]
    for s in samples:
        assert len(reference[s.image_id]) == s.num_instances
        for k, ref in enumerate(reference[s.image_id]):
            assert np.array_equal(s.masks[k], ref), (s.image_id, k)
    assert not ds.skipped


def test_taco_recipe_loads_every_instance_across_its_splits(tmp_path):
    coco = _taco_like(tmp_path)
    loaded = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for split in ("train", "val", "test"):
            ds = load_dataset("taco", split, tmp_path)
            loaded += [ds[i].num_instances for i in range(len(ds))]
    assert len(loaded) == len(coco["images"]) and sum(loaded) == len(coco["annotations"])


def test_an_id_repeated_on_the_same_image_is_still_a_duplicate(tmp_path):
    coco = _taco_like(tmp_path)
    coco["annotations"][1]["id"] = coco["annotations"][0]["id"]  # both on image 0
    ann = tmp_path / "dup.json"
    ann.write_text(json.dumps(coco))
    with pytest.raises(DataError, match="dup.json: annotation id 1 appears twice on image 0"):
        InstanceDataset(ann, tmp_path / "data")


REAL_TACO = os.environ.get("SAMTUNE_REAL_TACO")  # a folder holding TACO's data/annotations.json


@pytest.mark.slow
@pytest.mark.skipif(not REAL_TACO, reason="set SAMTUNE_REAL_TACO to a folder with TACO's file")
def test_real_taco_file_loads_every_instance_as_pycocotools_draws_it(tmp_path):
    """TACO's own annotations.json with blank images of the declared sizes (minutes)."""
    from pycocotools.coco import COCO

    raw = json.loads((Path(REAL_TACO) / "data" / "annotations.json").read_text())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "annotations.json").write_text(json.dumps(raw))
    for img in raw["images"]:
        path = tmp_path / "data" / img["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("1", (img["width"], img["height"])).save(path, format="PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coco = COCO(str(tmp_path / "data" / "annotations.json"))
    by_image: dict[int, list[dict]] = {}
    for ann in raw["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    total = 0
    for split in ("train", "val", "test"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = load_dataset("taco", split, tmp_path, min_area=0)
        for i in range(len(ds)):
            s = ds[i]
            refs = by_image.get(s.image_id, [])
            assert len(refs) == s.num_instances
            for k, ann in enumerate(refs):
                assert np.array_equal(s.masks[k], coco.annToMask(ann).astype(bool))
            total += s.num_instances
    assert total == len(raw["annotations"])


# --------------------------------------------------------------------------- frames


def _exif_image(path: Path, stored_hw: tuple[int, int], orientation: int = 6) -> None:
    """A JPEG stored ``stored_hw`` (H, W) with an EXIF orientation (6: shown turned 90 CW)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.new("RGB", (stored_hw[1], stored_hw[0]), (90, 90, 90)).save(path, exif=exif)


def _one_image(tmp_path: Path, declared_hw, polys, name="r.jpg") -> Path:
    coco = {
        "images": [{"id": 1, "file_name": name, "height": declared_hw[0], "width": declared_hw[1]}],
        "annotations": [_ann(k + 1, 1, p) for k, p in enumerate(polys)],
        "categories": [{"id": 1, "name": "x"}],
    }
    path = tmp_path / f"{Path(name).stem}.json"
    path.write_text(json.dumps(coco))
    return path


def test_annotations_of_the_stored_frame_are_drawn_there_and_turned_with_a_warning(tmp_path):
    _exif_image(tmp_path / "r.jpg", (30, 50))  # stored 50 wide, 30 tall; shown 30 x 50
    poly = [40, 2, 49, 2, 49, 12, 40, 12]  # x up to 49: only the stored frame is that wide
    ann = _one_image(tmp_path, (30, 50), [poly])
    with pytest.warns(UserWarning, match=r"r\.jpg.*stored, unrotated size 50x30.*rotated"):
        sample = InstanceDataset(ann, tmp_path)[0]
    stored_mask = _reference_masks(json.loads(ann.read_text()), tmp_path)[1][0]
    turned = Image.fromarray(stored_mask.astype(np.uint8)).transpose(Image.Transpose.ROTATE_270)
    expected = np.array(turned) > 0  # as EXIF orientation 6 turns the image
    assert sample.image.shape[:2] == (50, 30) == sample.masks.shape[1:]
    assert np.array_equal(sample.masks[0], expected) and expected.sum() > 0


def test_the_stored_frame_warning_is_given_once_per_dataset(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        _exif_image(tmp_path / name, (30, 50))
    coco = {
        "images": [
            {"id": i, "file_name": n, "height": 30, "width": 50} for i, n in enumerate("ab")
        ],
        "annotations": [_ann(i + 1, i, _square(40, 2, 8)) for i in range(2)],
        "categories": [{"id": 1, "name": "x"}],
    }
    for rec in coco["images"]:
        rec["file_name"] += ".jpg"
    (tmp_path / "two.json").write_text(json.dumps(coco))
    ds = InstanceDataset(tmp_path / "two.json", tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds[0], ds[1]
    said = [w for w in caught if issubclass(w.category, SamtuneWarning)]
    assert len(said) == 1 and "a.jpg" in str(said[0].message)


def test_annotations_of_the_displayed_frame_are_used_as_they_are(tmp_path):
    _exif_image(tmp_path / "r.jpg", (30, 50))
    ann = _one_image(tmp_path, (50, 30), [_square(5, 35, 10)])  # y up to 45: displayed frame
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamtuneWarning)
        sample = InstanceDataset(ann, tmp_path)[0]
    ref = _reference_masks(json.loads(ann.read_text()), tmp_path)[1][0]
    assert np.array_equal(sample.masks[0], ref)


@pytest.mark.parametrize(
    "declared,poly,words",
    [
        ((40, 40), _square(2, 2, 5), "is 30x50 (WxH) (50x30 as stored, before its EXIF rotation) "
         "but the annotation file declares 40x40"),
        ((50, 30), [40, 2, 49, 2, 49, 12, 40, 12], "declares 30x50 (WxH) but its polygons reach "
         "x=49, y=12, which only the stored (before its EXIF rotation) frame 50x30 holds"),
        ((30, 50), _square(2, 35, 10), "declares 50x30 (WxH) but its polygons reach x=12, y=45, "
         "which only the displayed frame 30x50 holds"),
    ],
)  # fmt: skip
def test_frames_that_disagree_are_refused_naming_the_image(tmp_path, declared, poly, words):
    _exif_image(tmp_path / "r.jpg", (30, 50))
    ann = _one_image(tmp_path, declared, [poly])
    with pytest.raises(DataError) as info:
        InstanceDataset(ann, tmp_path)[0]
    text = str(info.value)
    assert "r.jpg" in text and "(id 1)" in text and words in text, text


def test_a_transposed_size_without_exif_rotation_is_refused(tmp_path):
    """It used to be accepted, and the masks rasterised in a frame the image does not have."""
    Image.new("RGB", (50, 30)).save(tmp_path / "plain.png")
    ann = _one_image(tmp_path, (50, 30), [_square(2, 2, 5)], name="plain.png")
    with pytest.raises(DataError, match=r"plain\.png.*is 50x30 \(WxH\) but .* declares 30x50"):
        InstanceDataset(ann, tmp_path)[0]


# --------------------------------------------------------------------------- TrashCan splits


def _trashcan(root: Path) -> dict[str, list[str]]:
    """TrashCan's layout: frames named vid_<video>_frame<n>.jpg; val shares train's videos."""
    names = {
        "train": [f"vid_{v:06d}_frame{f:07d}.jpg" for v in range(1, 11) for f in range(1, 4)]
        + ["scraped_0001.jpg", "scraped_0002.jpg"],
        "val": [f"vid_{v:06d}_frame{f:07d}.jpg" for v in (1, 2) for f in range(11, 13)],
    }
    base = root / "dataset" / "instance_version"
    for split, files in names.items():
        (base / split).mkdir(parents=True)
        images, anns = [], []
        for i, name in enumerate(files, start=1):
            Image.new("RGB", (32, 24)).save(base / split / name, format="JPEG")
            images.append({"id": i, "file_name": name, "height": 24, "width": 32})
            anns.append(_ann(i, i, _square(2, 2, 8)))
        coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "rov"}]}
        (base / f"instances_{split}_trashcan.json").write_text(json.dumps(coco))
    return names


def _video(name: str) -> str:
    return name.split("_frame")[0] if name.startswith("vid_") else name


def test_trashcan_val_holds_out_whole_videos_and_test_is_the_official_val(tmp_path):
    names = _trashcan(tmp_path)
    split = {s: load_dataset("trashcan", s, tmp_path) for s in ("train", "val", "test")}
    files = {s: [ds.image_info(i)["file_name"] for i in range(len(ds))] for s, ds in split.items()}
    assert sorted(files["train"] + files["val"]) == sorted(names["train"])
    assert not {_video(n) for n in files["train"]} & {_video(n) for n in files["val"]}
    assert len(files["val"]) >= 0.1 * len(names["train"]) and len(files["train"]) > 0
    assert files["test"] == names["val"] and split["test"].name == "trashcan/test"
    again = load_dataset("trashcan", "val", tmp_path)
    assert [again.image_info(i)["file_name"] for i in range(len(again))] == files["val"]
    other = load_dataset("trashcan", "val", tmp_path, split_seed=1)
    assert {other.image_info(i)["file_name"] for i in range(len(other))} != set(files["val"])


# --------------------------------------------------------------------------- suite pre-flight


def test_a_suite_reads_every_split_before_its_first_run(tmp_path, monkeypatch):
    from samtune.data import write_demo_dataset
    from samtune.suite import run as suite_module

    root = write_demo_dataset(tmp_path / "demo", counts={"train": 2, "val": 1, "test": 1})
    test_file = root / "test" / "annotations.json"
    coco = json.loads(test_file.read_text())
    coco["annotations"][0]["bbox"] = "12,4,30,30"
    test_file.write_text(json.dumps(coco))
    spec = {
        "models": ["tiny"],
        "strategies": ["decoder"],
        "datasets": [{"name": "coco", "root": str(root)}],
        "protocols": ["box"],
        "seeds": [0],
        "train": {"max_steps": 1, "log_with": None},
    }

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was read")

    monkeypatch.setattr("samtune.models.loading.load_model", no_model)
    with pytest.raises(DataError) as info:
        suite_module.run_suite(spec, tmp_path / "out")
    text = str(info.value)
    aid = coco["annotations"][0]["id"]
    assert "datasets[0] (coco, split 'test')" in text and f"annotation {aid}" in text
    assert "'bbox'" in text and str(test_file) in text
    assert not (tmp_path / "out").exists()

"""Image names in an annotation file are untrusted, and missing images are counted, not found
one at a time (a silent subset is never trained on)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_data_coco import make_coco

from samtune.data import InstanceDataset
from samtune.errors import DataError, MissingFileError


def test_every_missing_image_is_counted(tmp_path):
    ann_file, images = make_coco(tmp_path, n_images=3)
    (images / "img1.png").unlink()
    (images / "img3.png").unlink()
    with pytest.raises(MissingFileError, match=r"2 of 4 images listed in .*'img1.png', 'img3.png'"):
        InstanceDataset(ann_file, images)


@pytest.mark.parametrize("name", ["../outside.png", "/etc/passwd", "a/../../b.png", "C:x.png"])
def test_a_file_name_that_leaves_the_image_folder_is_refused(tmp_path, name):
    ann_file, images = make_coco(tmp_path)
    (tmp_path / "outside.png").write_bytes((images / "img1.png").read_bytes())
    coco = json.loads(ann_file.read_text())
    coco["images"][0]["file_name"] = name
    ann_file.write_text(json.dumps(coco))
    with pytest.raises(DataError, match="inside"):
        InstanceDataset(ann_file, images)


def test_an_image_symlinked_from_elsewhere_loads(tmp_path):
    ann_file, images = make_coco(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    (images / "img1.png").rename(store / "img1.png")
    (images / "img1.png").symlink_to(store / "img1.png")
    ds = InstanceDataset(ann_file, images)
    assert ds.image_path(0).name == "img1.png"
    assert isinstance(ds[0].image, np.ndarray) and ds[0].image.shape[2] == 3

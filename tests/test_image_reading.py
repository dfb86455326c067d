"""One RGB conversion: an image gives the same pixels whether passed as a path or in memory."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from samtune.data.images import read_image


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda g: Image.fromarray((g * 257).astype(np.uint16)), id="16-bit"),
        pytest.param(lambda g: Image.fromarray(g.astype(np.float32) / 255.0), id="float"),
        pytest.param(lambda g: Image.fromarray(g.astype(np.uint8)).convert("P"), id="palette"),
    ],
)
def test_a_path_and_the_same_image_in_memory_give_the_same_pixels(tmp_path, make):
    gray = np.tile(np.arange(0, 250, 10, dtype=np.int64), (7, 1))
    img = make(gray)
    path = tmp_path / ("x.tif" if img.mode == "F" else "x.png")
    img.save(path)
    from_file, _ = read_image(path)
    in_memory, _ = read_image(img)
    assert from_file.dtype == np.uint8 and from_file.shape == (7, 25, 3)
    assert np.array_equal(from_file, in_memory)
    if img.mode != "P":
        assert np.array_equal(from_file[..., 0], gray)  # 16-bit and [0, 1] float scaled back

"""Training on points where the automatic generator's grid points fall: uniform inside objects."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data import PromptedDataset, load_dataset
from samtune.errors import ConfigError
from samtune.models.identity import PreprocessConfig
from samtune.prompting import center_point
from samtune.train.config import FitConfig


def _points_in_original_pixels(item):
    return item["geometry"].coords_to_original(item["points"].numpy())[:, 0]


def test_random_points_fall_inside_the_object_and_vary_by_epoch():
    data = load_dataset("demo", "val")
    cfg = PreprocessConfig(image_size=128)  # the demo images' size: model pixels = pixels
    centre = PromptedDataset(data, cfg, prompt="point")
    random = PromptedDataset(data, cfg, prompt="point", point_mode="random", seed=1)
    sample = data[0]
    masks = sample.masks[~sample.iscrowd]
    first = _points_in_original_pixels(random[0])
    for (x, y), mask in zip(first, masks, strict=True):
        assert mask[int(y), int(x)]  # inside its object
    expected = np.array([center_point(m) for m in masks], np.float32)
    assert np.array_equal(_points_in_original_pixels(centre[0]), expected)
    assert not np.array_equal(first, expected)
    assert np.array_equal(first, _points_in_original_pixels(random[0]))  # seeded
    random.set_epoch(1)
    assert not np.array_equal(first, _points_in_original_pixels(random[0]))
    assert (random[0]["point_labels"] == 1).all() and random[0]["points"].shape[1] == 1


def test_point_sampling_option_is_checked():
    assert FitConfig(prompt="point", point_sampling="random").point_sampling == "random"
    with pytest.raises(ConfigError, match="point_sampling must be one of center, random"):
        FitConfig(point_sampling="grid")
    with pytest.raises(ValueError, match="point_mode"):
        PromptedDataset(load_dataset("demo", "val"), PreprocessConfig(), point_mode="edge")

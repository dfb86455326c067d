"""Preprocessing equals SamImageProcessor; masks and coordinates follow the same geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.data.transforms import AugmentConfig, Geometry, augment_sample, preprocess_image
from samtune.models.identity import PreprocessConfig

SIZES = [
    (480, 640, 1024),
    (1500, 700, 1024),
    (37, 91, 128),
    (300, 200, 256),
    (128, 128, 128),
    (64, 200, 256),
]


@pytest.fixture(scope="module")
def processor():
    from transformers import SamImageProcessor

    return SamImageProcessor()


@pytest.mark.parametrize("h,w,s", SIZES)
def test_preprocess_equals_sam_image_processor(processor, h, w, s):
    image = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ref = processor(
        images=image,
        size={"longest_edge": s},
        pad_size={"height": s, "width": s},
        return_tensors="pt",
    )
    pixels, geometry = preprocess_image(image, PreprocessConfig(image_size=s))
    assert pixels.shape == (3, s, s) and pixels.dtype == torch.float32
    assert (pixels - ref["pixel_values"][0]).abs().max().item() < 1e-5
    assert list(geometry.resized_size) == ref["reshaped_input_sizes"][0].tolist()
    assert list(geometry.original_size) == ref["original_sizes"][0].tolist()


def test_coords_match_sam_processor_normalisation(processor):
    from transformers import SamProcessor

    proc = SamProcessor(image_processor=processor)
    image = np.zeros((300, 200, 3), np.uint8)
    box = [[[10.0, 20.0, 150.0, 280.0]]]
    ref = proc(images=image, input_boxes=box, return_tensors="pt")
    _, geometry = preprocess_image(image, PreprocessConfig(1024))
    ours = geometry.coords_to_model(np.array(box[0], np.float32))
    assert np.allclose(ours, ref["input_boxes"][0].numpy(), atol=1e-3)
    back = geometry.coords_to_original(ours)
    assert np.allclose(back, box[0], atol=1e-3)


def test_logits_to_original_equals_post_process_masks(processor):
    geometry = Geometry.for_image(300, 200, 1024)
    logits = torch.randn(1, 3, 256, 256)
    ref = processor.post_process_masks(
        logits[None], [geometry.original_size], [geometry.resized_size], binarize=False
    )[0]
    ours = geometry.logits_to_original(logits)
    assert ours.shape == (1, 3, 300, 200)
    assert (ours - ref).abs().max().item() < 1e-5


def _blob_masks(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    masks = []
    for _ in range(3):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        r = rng.uniform(0.1, 0.3) * min(h, w)
        masks.append((yy - cy) ** 2 + (xx - cx) ** 2 < r**2)
    return np.stack(masks)


@pytest.mark.parametrize("h,w,s", [(64, 32, 128), (32, 64, 128), (128, 96, 256), (50, 100, 200)])
def test_mask_forward_and_back_is_unchanged(h, w, s):
    geometry = Geometry.for_image(h, w, s)
    masks = _blob_masks(h, w)
    model = geometry.masks_to_model(masks)
    assert model.shape == (3, s, s) and model.dtype == torch.bool
    rh, rw = geometry.resized_size
    assert not model[:, rh:, :].any() and not model[:, :, rw:].any()  # padding stays empty
    back = geometry.logits_to_original(model.float() * 2 - 1) > 0
    assert torch.equal(back, torch.from_numpy(masks))


def test_mask_forward_and_back_non_integer_scale_is_close():
    geometry = Geometry.for_image(300, 200, 128)  # shrink by 2.34
    masks = _blob_masks(300, 200, seed=3)
    back = geometry.logits_to_original(geometry.masks_to_model(masks).float() * 2 - 1) > 0
    iou = (back.numpy() & masks).sum() / (back.numpy() | masks).sum()
    assert iou > 0.97


def test_low_res_targets_and_coords_agree():
    geometry = Geometry.for_image(200, 100, 1024)
    mask = np.zeros((1, 200, 100), bool)
    mask[0, 50:150, 20:60] = True
    low = geometry.masks_to_model(mask, size=256)
    assert low.shape == (1, 256, 256)
    ys, xs = np.nonzero(low[0].numpy())
    box = geometry.coords_to_model(np.array([20, 50, 60, 150], np.float32)) / 4  # 1024 -> 256
    assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
    assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1


def test_augment_keeps_masks_boxes_and_image_consistent():
    from samtune.data.sample import Sample, masks_to_boxes

    image = np.zeros((60, 80, 3), np.uint8)
    masks = np.zeros((2, 60, 80), bool)
    masks[0, 10:20, 5:25] = True
    masks[1, 30:55, 50:75] = True
    image[masks[0]] = (255, 0, 0)
    image[masks[1]] = (0, 255, 0)
    sample = Sample(
        image, masks, masks_to_boxes(masks), np.array([1, 2]), np.zeros(2, bool),
        np.array([7, 8]), 1, "x.png",
    )  # fmt: skip
    cfg = AugmentConfig(hflip=1.0, vflip=1.0, scale=(2.0, 2.0), color=0.0)
    out = augment_sample(sample, cfg, torch.Generator().manual_seed(0))
    assert out.image.shape == (120, 160, 3) and out.masks.shape == (2, 120, 160)
    red = (out.image[..., 0] > 128) & (out.image[..., 1] < 128)
    inter = (red & out.masks[0]).sum() / (red | out.masks[0]).sum()
    assert inter > 0.9
    # flipped both ways: the first object moves to the bottom-right
    assert out.boxes[0, 0] > 160 / 2 and out.boxes[0, 1] > 120 / 2
    assert np.array_equal(out.boxes, masks_to_boxes(out.masks))


def test_named_augmentations_move_masks_with_the_pixels_and_keep_colours():
    from samtune.data.sample import Sample, masks_to_boxes
    from samtune.data.transforms import AUGMENTATIONS, augment_config
    from samtune.train.config import AUGMENT_NAMES

    assert tuple(AUGMENTATIONS) == AUGMENT_NAMES  # config names them without importing torch
    assert augment_config(False) is None and augment_config(None) is None
    assert augment_config(True) == AugmentConfig() == augment_config("full")
    with pytest.raises(ValueError, match="augment must be true, false or one of flips"):
        augment_config("rotate")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    masks = np.zeros((1, 40, 60), bool)
    masks[0, 5:15, 10:30] = True
    sample = Sample(image, masks, masks_to_boxes(masks), np.array([1]), np.zeros(1, bool),
                    np.array([7]), 1, "x.png")  # fmt: skip
    seen = set()
    for seed in range(16):
        out = augment_sample(sample, augment_config("flips"), torch.Generator().manual_seed(seed))
        flips = [f for f in ((False, False), (True, False), (False, True), (True, True))
                 if np.array_equal(out.image, _flip(image, *f))]  # fmt: skip
        assert len(flips) == 1  # only flipped: same size, same colours, pixel for pixel
        assert np.array_equal(out.masks[0], _flip(masks[0], *flips[0]))
        assert np.array_equal(out.boxes, masks_to_boxes(out.masks))
        seen.add(flips[0])
    assert len(seen) == 4  # both flips, each way, at probability 0.5
    geometric = augment_config("geometric")
    assert geometric.color == 0 and geometric.hue == 0 and geometric.scale != (1.0, 1.0)


def _flip(array: np.ndarray, horizontal: bool, vertical: bool) -> np.ndarray:
    array = array[:, ::-1] if horizontal else array
    return array[::-1] if vertical else array

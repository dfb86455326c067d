"""Prompts derived from ground-truth masks: boxes (with SAM's jitter) and points.

Box prompts come from the masks (tight boxes, the default) or, with ``box_source="annotation"``,
from each annotation's own COCO ``bbox`` (:func:`prompt_boxes`).

The prompt protocols, the centre point and the corrective clicks live in
:mod:`samtune.prompting` (``next_click`` is importable from here too).

Coordinates are (x, y) = (column, row) in the pixels of the masks they were derived from
(original image pixels for a :class:`~samtune.data.sample.Sample`); map them to model pixels
with :meth:`samtune.data.transforms.Geometry.coords_to_model`. Point labels follow SAM:
1 positive, 0 negative, -10 padding (a point the model ignores).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError
from ..prompting import BOX_SOURCES, PAD_LABEL, center_point, next_click
from .sample import masks_to_boxes


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight XYXY boxes (N, 4) float32 of NxHxW bool masks (x2 = last column + 1)."""
    return masks_to_boxes(np.asarray(masks, dtype=bool))


def prompt_boxes(sample, source: str = "mask") -> np.ndarray:
    """The (N, 4) float32 XYXY box prompts of a :class:`~samtune.data.sample.Sample`.

    ``source="mask"``: the tight box of each instance mask (:func:`boxes_from_masks`, equal to
    ``sample.boxes``; samtune's default). ``source="annotation"``: each annotation's own COCO ``bbox``
    (``sample.annotation_boxes``, ``[x, y, w, h]`` -> ``[x, y, x + w, y + h]``) as written in
    the file, as lightning-sam takes it; it can be wider or narrower than the mask.

    Raises:
        ConfigError: an unknown ``source``.
        DataError: ``source="annotation"`` and the sample has no annotation boxes, or an
            annotation without ``bbox``.
    """
    if source == "mask":
        return boxes_from_masks(sample.masks)
    if source != "annotation":
        raise ConfigError(f"box_source must be one of {', '.join(BOX_SOURCES)}; found {source!r}")
    boxes = getattr(sample, "annotation_boxes", None)
    where = f"image {sample.file_name!r} (id {sample.image_id})"
    if boxes is None:
        raise DataError(
            f"box_source 'annotation' needs each annotation's 'bbox', but {where} comes without "
            "annotation boxes; use box_source 'mask'"
        )
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    missing = np.isnan(boxes).any(axis=1)
    if missing.any():
        ids = np.asarray(sample.instance_ids)[missing][:5].tolist()
        raise DataError(
            f"box_source 'annotation' needs each annotation's 'bbox'; in {where}, annotation(s) "
            f"{ids} have none; add them, or use box_source 'mask'"
        )
    return boxes


def jitter_boxes(
    boxes: np.ndarray,
    noise: float = 0.1,
    max_px: float = 20.0,
    rng: np.random.Generator | int | None = None,
    image_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Add SAM's box noise: each coordinate moves by N(0, ``noise`` x box side), at most ``max_px``.

    Args:
        boxes: (N, 4) XYXY.
        noise: standard deviation as a fraction of the box width (x) or height (y); 0 disables.
        max_px: clip each offset to +-``max_px`` pixels (SAM paper: 20).
        rng: numpy Generator or seed.
        image_size: (H, W); when given, boxes are clipped to the image.

    Returns:
        (N, 4) float32 XYXY with x1 <= x2 and y1 <= y2.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if noise <= 0 or len(boxes) == 0:
        return boxes.copy()
    gen = _rng(rng)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    scale = np.stack([w, h, w, h], axis=1) * noise
    offset = np.clip(gen.standard_normal(boxes.shape) * scale, -max_px, max_px)
    out = boxes + offset.astype(np.float32)
    x1, x2 = np.minimum(out[:, 0], out[:, 2]), np.maximum(out[:, 0], out[:, 2])
    y1, y2 = np.minimum(out[:, 1], out[:, 3]), np.maximum(out[:, 1], out[:, 3])
    out = np.stack([x1, y1, x2, y2], axis=1)
    if image_size is not None:
        hh, ww = image_size
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, ww)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, hh)
    return out.astype(np.float32)


def _random_pixels(region: np.ndarray, k: int, gen: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(region)
    if len(xs) == 0 or k == 0:
        return np.zeros((0, 2), dtype=np.float32)
    idx = gen.choice(len(xs), size=k, replace=len(xs) < k)
    return np.stack([xs[idx], ys[idx]], axis=1).astype(np.float32)


def points_from_masks(
    masks: np.ndarray,
    n_pos: int = 1,
    n_neg: int = 0,
    mode: str = "center",
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative points for each of N masks.

    Args:
        masks: NxHxW bool.
        n_pos: positive points per mask (inside it). With ``mode="center"`` the first one is
            the centre of the largest inscribed disc; the rest are uniform inside the mask.
        n_neg: negative points per mask: uniform in the background within the mask's box
            enlarged by 50% (where confusions happen), or anywhere outside if that is empty.
        mode: ``"center"`` or ``"random"`` (all positives uniform inside the mask).
        rng: numpy Generator or seed.

    Returns:
        ``points`` (N, n_pos + n_neg, 2) float32 (x, y) and ``labels`` (N, n_pos + n_neg) int64
        (1 positive, 0 negative). An empty mask gets padding points (label -10) at (0, 0).
    """
    if mode not in ("center", "random"):
        raise ValueError(f"mode must be 'center' or 'random', found {mode!r}")
    if n_pos < 0 or n_neg < 0 or n_pos + n_neg == 0:
        raise ValueError(
            f"need n_pos >= 0, n_neg >= 0 and at least one point, found {n_pos}, {n_neg}"
        )
    masks = np.asarray(masks, dtype=bool)
    gen = _rng(rng)
    n, _, _ = masks.shape  # N x H x W
    k = n_pos + n_neg
    points = np.zeros((n, k, 2), dtype=np.float32)
    labels = np.full((n, k), PAD_LABEL, dtype=np.int64)
    boxes = masks_to_boxes(masks)
    for i in range(n):
        m = masks[i]
        if not m.any():
            continue
        pos = []
        if n_pos and mode == "center":
            pos.append(np.array([center_point(m)], dtype=np.float32))
            pos.append(_random_pixels(m, n_pos - 1, gen))
        elif n_pos:
            pos.append(_random_pixels(m, n_pos, gen))
        pos_pts = np.concatenate(pos) if pos else np.zeros((0, 2), np.float32)
        points[i, :n_pos] = pos_pts
        labels[i, :n_pos] = 1
        if n_neg:
            neg = _random_pixels(_negative_region(m, boxes[i]), n_neg, gen)
            if len(neg):
                points[i, n_pos:] = neg
                labels[i, n_pos:] = 0
    return points, labels


def _negative_region(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Background within the mask's box enlarged by 50%, or all background if that is empty."""
    h, w = mask.shape
    x1, y1, x2, y2 = box
    dx, dy = 0.25 * (x2 - x1) + 1, 0.25 * (y2 - y1) + 1
    near = np.zeros_like(mask)
    near[
        int(max(0, y1 - dy)) : int(min(h, y2 + dy)),
        int(max(0, x1 - dx)) : int(min(w, x2 + dx)),
    ] = True
    region = near & ~mask
    return region if region.any() else ~mask


__all__ = [
    "BOX_SOURCES",
    "PAD_LABEL",
    "boxes_from_masks",
    "jitter_boxes",
    "next_click",
    "points_from_masks",
    "prompt_boxes",
]

"""Prompts derived from ground-truth masks: boxes (with SAM's jitter), points, corrective clicks.

Coordinates are (x, y) = (column, row) in the pixels of the masks they were derived from
(original image pixels for a :class:`~samtune.data.sample.Sample`); map them to model pixels
with :meth:`samtune.data.transforms.Geometry.coords_to_model`. Point labels follow SAM:
1 positive, 0 negative, -10 padding (a point the model ignores).
"""

from __future__ import annotations

import numpy as np

from .sample import masks_to_boxes

PAD_LABEL = -10


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight XYXY boxes (N, 4) float32 of NxHxW bool masks (x2 = last column + 1)."""
    return masks_to_boxes(np.asarray(masks, dtype=bool))


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


def distance_to_boundary(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each pixel inside ``mask`` to the nearest pixel outside it.

    The image border counts as outside, so a point is never placed on an edge of the image
    just because the object is cut by it.
    """
    from scipy.ndimage import distance_transform_edt

    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    return distance_transform_edt(padded)[1:-1, 1:-1]


def center_point(mask: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the centre of the largest inscribed disc (max of the distance transform).

    When the maximum is a ridge (an elongated shape), the ridge pixel nearest to the ridge's
    mean is taken, so a rectangle gets its centre; the result is deterministic.
    Returns None for an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    return _argmax_central(distance_to_boundary(mask))


def _argmax_central(dist: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(dist >= dist.max() - 1e-6)
    d2 = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
    k = int(np.argmin(d2))
    return int(xs[k]), int(ys[k])


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
    n, h, w = masks.shape
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
            x1, y1, x2, y2 = boxes[i]
            dx, dy = 0.25 * (x2 - x1) + 1, 0.25 * (y2 - y1) + 1
            near = np.zeros_like(m)
            near[
                int(max(0, y1 - dy)) : int(min(h, y2 + dy)),
                int(max(0, x1 - dx)) : int(min(w, x2 + dx)),
            ] = True
            region = near & ~m
            if not region.any():
                region = ~m
            neg = _random_pixels(region, n_neg, gen)
            if len(neg):
                points[i, n_pos:] = neg
                labels[i, n_pos:] = 0
    return points, labels


def next_click(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int] | None:
    """The next simulated corrective click (RITM protocol, as in SAM's interactive training).

    The error regions are the false negatives (``gt & ~pred``, missed object) and false
    positives (``pred & ~gt``, false alarm). The click goes to the interior-most pixel of the
    larger error (the maximum of the distance transform over both): positive (label 1) when it
    lies in a miss, negative (label 0) when it lies in a false alarm.

    Args:
        pred: HxW bool predicted mask.
        gt: HxW bool ground-truth mask.

    Returns:
        ``(x, y, label)`` in pixel coordinates, or None when ``pred`` equals ``gt``.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must have the same (H, W)")
    fn = gt & ~pred
    fp = pred & ~gt
    if not fn.any() and not fp.any():
        return None
    d_fn = distance_to_boundary(fn) if fn.any() else np.zeros(gt.shape)
    d_fp = distance_to_boundary(fp) if fp.any() else np.zeros(gt.shape)
    positive = d_fn.max() >= d_fp.max()
    x, y = _argmax_central(d_fn if positive else d_fp)
    return x, y, int(positive)

"""Masks as samtune stores and exchanges them: COCO segmentations (polygons, RLE) decoded to
HxW bool arrays, bool masks encoded as COCO RLE, and instance masks painted into one label map
(by score, later wins on ties) -- used by the data readers, the evaluation and segmentation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import DataError
from .coco_schema import (
    segmentation_problem,
)


def decode_segmentation(seg, height: int, width: int) -> np.ndarray:
    """Decode a COCO segmentation (polygons, uncompressed or compressed RLE) to an HxW bool mask.

    Same result as ``pycocotools.coco.COCO.annToMask``. The segmentation is checked first
    (:func:`samtune.data.coco_schema.segmentation_problem`), so nothing malformed reaches
    pycocotools' C code.

    Raises:
        DataError: a malformed segmentation, or an RLE whose size is not (height, width).
    """
    from pycocotools import mask as mask_utils

    bad = segmentation_problem(seg)
    if bad:
        raise DataError(f"malformed segmentation: {bad}")
    if isinstance(seg, dict) and tuple(seg["size"]) != (height, width):
        raise DataError(
            f"RLE mask size {tuple(seg['size'])} does not match the image size {(height, width)}"
        )
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(dict(seg), height, width)
    else:
        rle = dict(seg)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def encode_mask(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of an HxW bool mask, JSON-ready (``counts`` as str)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def semantic_label_map(
    masks: np.ndarray | torch.Tensor,
    labels: Sequence[int],
    scores: Sequence[float] | None = None,
    *,
    ignore: np.ndarray | torch.Tensor | None = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """Paint instance masks into one class-index map (0 = background).

    Args:
        masks: ``(N, H, W)`` bool instance masks.
        labels: ``N`` class indices (1..K) for the masks.
        scores: ``N`` scores; where masks overlap the highest score wins. Without scores, the
            later mask wins (annotation order, as COCO-to-semantic converters paint).
        ignore: optional ``(H, W)`` bool mask of pixels to mark ``ignore_index`` (crowd regions).

    Returns:
        ``(H, W)`` int64 array.
    """
    as_numpy = not torch.is_tensor(masks)
    m = _as_bool_tensor(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {tuple(m.shape)}")
    n, h, w = m.shape
    out = torch.zeros((h, w), dtype=torch.int64, device=m.device)
    if n:
        order = np.arange(n) if scores is None else np.argsort(np.asarray(scores), kind="stable")
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(1, n + 1)  # painting order; 0 is left for "no mask"
        lut = np.zeros(n + 1, np.int64)
        lut[rank] = np.asarray(labels, dtype=np.int64).reshape(n)
        # one pass: the mask painted last among those covering a pixel wins
        weights = torch.as_tensor(rank, dtype=torch.int32, device=m.device)[:, None, None]
        top = (m.to(torch.int32) * weights).amax(dim=0)
        out = torch.as_tensor(lut, device=m.device)[top.long()]
    if ignore is not None:
        out[_as_bool_tensor(ignore).to(m.device)] = ignore_index
    return out.cpu().numpy() if as_numpy else out


def _as_bool_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t if t.dtype == torch.bool else t != 0

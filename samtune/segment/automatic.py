"""Segment everything: automatic mask generation with any SAM (base model or tuned adapter).

No prompt from the user: a regular grid of single positive points is laid over the image (and,
with ``crop_n_layers``, over overlapping crops of it), every point goes through SAM's decoder
with the multimask output, and the candidates are filtered and de-duplicated:

1. **predicted IoU**: a candidate the IoU head rates at or below ``pred_iou_thresh`` is dropped;
2. **stability**: the IoU between the mask thresholded at ``mask_threshold + offset`` and at
   ``mask_threshold - offset`` (a mask whose outline moves when the threshold moves is unsure)
   must exceed ``stability_score_thresh``;
3. **crop edges**: inside a crop, a mask whose box touches the crop's border (where it is not
   the image's border) is cut by the crop and dropped: another crop sees it whole;
4. **NMS** (``torchvision.ops.batched_nms`` on the masks' boxes): within a crop at
   ``box_nms_thresh`` by predicted IoU, then across crops at ``crop_nms_thresh``, preferring
   masks from smaller crops (they see the object at a higher resolution);
5. **small regions** (``min_mask_region_area > 0``): holes and islands smaller than that many
   pixels are removed, and the masks go through NMS once more (at the larger of the two NMS
   thresholds), masks that had no such region first.

Each NMS pass hands its survivors on best score first, as SAM's generator does, so a later pass
that scores candidates equally (by crop size, by "had no small region") keeps, among
duplicates, the one with the best predicted IoU.

The image is encoded once per crop (:func:`samtune.models.sam_ops.encode_images`) and the points are
decoded ``points_per_batch`` at a time (:func:`samtune.models.sam_ops.decode`): memory is bounded by
``points_per_batch x 3 x H x W`` float logits, and the masks do not depend on it (each point is
decoded independently; candidates are filtered in point order).

Crop boxes and grid points come from ``transformers.SamImageProcessor.generate_crop_boxes``; the
stability score, mask boxes, crop-edge test and padding are the helpers of transformers'
``SamImageProcessor.filter_masks``. Masks are returned as arrays and, with
:meth:`AutoMasks.to_coco`, as COCO RLE (:func:`samtune.data.coco.encode_mask`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torchvision.ops import batched_nms
from transformers import SamImageProcessor
from transformers.models.sam.image_processing_sam import (
    _batched_mask_to_box,
    _compute_stability_score,
    _is_box_near_crop_edge,
    _pad_masks,
)

from ..data.images import load_image, read_image
from ..data.masks import encode_mask, semantic_label_map
from ..data.transforms import Geometry, preprocess_image
from ..io import atomic_dir, dump_json, output_lock
from ..models.identity import PreprocessConfig, preprocess_config
from ..models.sam_ops import decode, encode_images, to_model
from ..models.text import check_geometric_prompts
from ..options import merge_options
from .automatic_config import AutoMaskConfig
from .overlay import overlay as blend
from .prompted import check_outputs, expand_images, load_for_inference, output_folders

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


@dataclass
class AutoMasks:
    """The masks found in one image, best predicted IoU first.

    Attributes:
        masks: (N, H, W) bool at the original resolution.
        predicted_iou: (N,) float32, the IoU head's estimate (also the COCO ``score``).
        stability_score: (N,) float32.
        boxes: (N, 4) float32 XYXY in original pixels (inclusive: the last pixel's index).
        point_coords: (N, 2) float32 (x, y), the grid point that gave the mask.
        crop_boxes: (N, 4) float32 XYXY, the crop the mask was found in.
    """

    masks: np.ndarray
    predicted_iou: np.ndarray
    stability_score: np.ndarray
    boxes: np.ndarray
    point_coords: np.ndarray
    crop_boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.masks)

    def to_coco(self, image_id: int | None = None, category_id: int = 1) -> list[dict]:
        """One COCO result per mask: ``segmentation`` (compressed RLE, counts as str), ``area``,
        ``bbox`` (XYWH, from the RLE), ``score`` (= predicted IoU), ``predicted_iou``,
        ``stability_score``, ``point_coords``, ``crop_box``; with ``image_id``, also
        ``image_id`` and ``category_id`` (class-agnostic: one category), as ``COCO.loadRes``
        reads them."""
        from pycocotools import mask as mask_utils

        out = []
        for i, mask in enumerate(self.masks):
            rle = encode_mask(mask)
            rec = (
                {} if image_id is None else {"image_id": int(image_id), "category_id": category_id}
            )
            rec.update(
                segmentation=rle,
                area=int(mask_utils.area(rle)),
                bbox=[float(v) for v in mask_utils.toBbox(rle)],
                score=float(self.predicted_iou[i]),
                predicted_iou=float(self.predicted_iou[i]),
                stability_score=float(self.stability_score[i]),
                point_coords=[float(v) for v in self.point_coords[i]],
                crop_box=[float(v) for v in self.crop_boxes[i]],
            )
            out.append(rec)
        return out

    def label_map(self) -> np.ndarray:
        """(H, W) int64: 0 background, i + 1 where mask i is; a smaller mask is painted over a
        larger one (parts stay visible on their object)."""
        areas = self.masks.sum(axis=(1, 2))  # (N,); N may be 0: no mask survived the filters
        return semantic_label_map(self.masks, list(range(1, len(self) + 1)), -areas)


@dataclass
class _Found:
    """Candidates kept so far (in one crop, or in the image): masks at the crop's resolution."""

    masks: list[torch.Tensor] = field(default_factory=list)  # (n, h, w) bool, crop pixels
    iou: list[torch.Tensor] = field(default_factory=list)  # (n,)
    stability: list[torch.Tensor] = field(default_factory=list)  # (n,)
    boxes: list[torch.Tensor] = field(default_factory=list)  # (n, 4) XYXY, image pixels
    points: list[torch.Tensor] = field(default_factory=list)  # (n, 2), image pixels

    def cat(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.cat(x) for x in (self.masks, self.iou, self.stability, self.boxes,
                                           self.points))  # fmt: skip


def generate_masks(
    model: torch.nn.Module,
    image: np.ndarray | PILImage | str | os.PathLike,
    config: AutoMaskConfig | None = None,
    **options,
) -> AutoMasks:
    """Every object SAM finds in ``image``, without prompts (see the module docstring).

    Args:
        model: a ``SamModel`` (with or without an adapter); put in eval mode for the call.
        image: HxWx3 uint8 RGB array, PIL image, or a path to an image file.
        config: an :class:`AutoMaskConfig`; ``options`` override its fields
            (``points_per_side=16``).

    Returns:
        :class:`AutoMasks`, best predicted IoU first (ties: grid order).

    Raises:
        ConfigError: an option out of range. InputError / DataError / MissingFileError: an
            image that is not one (see :func:`samtune.data.images.load_image`).
    """
    check_geometric_prompts(model, "automatic mask generation")
    cfg = _config(config, options)
    rgb, _ = read_image(image)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _generate(model, rgb, cfg)
    finally:
        model.train(was_training)


def _config(config: AutoMaskConfig | None, options: dict) -> AutoMaskConfig:
    return merge_options(AutoMaskConfig, config, options)


def _generate(model: torch.nn.Module, image: np.ndarray, cfg: AutoMaskConfig) -> AutoMasks:
    pre = preprocess_config(model)
    height, width = image.shape[:2]
    crop_boxes, grid, _, _ = SamImageProcessor().generate_crop_boxes(
        np.require(image, requirements="W"),  # it makes a tensor of it: no read-only memory
        pre.image_size,
        crop_n_layers=cfg.crop_n_layers,
        overlap_ratio=cfg.crop_overlap_ratio,
        points_per_crop=cfg.points_per_side,
    )
    found, crops = _Found(), []
    for c, box in enumerate(crop_boxes.tolist()):
        crop = _generate_crop(model, image, [int(v) for v in box], grid[0, :, c], pre, cfg)
        for name in ("masks", "iou", "stability", "boxes", "points"):
            getattr(found, name).extend(getattr(crop, name))
        crops.append(torch.tensor(box).expand(len(crop.iou[0]), 4))
    masks, iou, stability, boxes, points = found.cat()
    crop_of = torch.cat(crops)
    if len(crop_boxes) > 1:  # the same object seen in several crops: keep the smallest crop's
        area = (crop_of[:, 2] - crop_of[:, 0]) * (crop_of[:, 3] - crop_of[:, 1])
        keep = _nms(boxes, 1 / area, cfg.crop_nms_thresh)
        masks, iou, stability, boxes, points, crop_of = (
            t[keep] for t in (masks, iou, stability, boxes, points, crop_of)
        )
    if cfg.min_mask_region_area > 0:
        thresh = max(cfg.box_nms_thresh, cfg.crop_nms_thresh)  # as SAM: the looser of the two
        masks, keep = _clean_small_regions(masks, cfg.min_mask_region_area, thresh)
        iou, stability, points, crop_of = (t[keep] for t in (iou, stability, points, crop_of))
        boxes = _batched_mask_to_box(masks).float()
    order = _ranking(iou)
    return AutoMasks(
        masks=masks[order].numpy().reshape(-1, height, width),
        predicted_iou=iou[order].numpy().astype(np.float32),
        stability_score=stability[order].numpy().astype(np.float32),
        boxes=boxes[order].numpy().astype(np.float32).reshape(-1, 4),
        point_coords=points[order].numpy().astype(np.float32).reshape(-1, 2),
        crop_boxes=crop_of[order].numpy().astype(np.float32).reshape(-1, 4),
    )


def _ranking(scores: torch.Tensor) -> torch.Tensor:
    """Indices by decreasing score; equal scores keep their order (deterministic)."""
    return torch.sort(scores, descending=True, stable=True).indices


def _nms(boxes: torch.Tensor, scores: torch.Tensor, thresh: float) -> torch.Tensor:
    """The kept indices, best score first (ties: input order), as ``batched_nms`` gives them.

    The order matters: the later passes (across crops by crop size, after cleaning by
    "unchanged") score many candidates equally, and among equals the earlier one wins. Meta's
    generator feeds them in this order, so among duplicates the best predicted IoU survives.
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long)
    return batched_nms(boxes.float(), scores.float(), torch.zeros(len(boxes)), thresh)


def _generate_crop(
    model: torch.nn.Module,
    image: np.ndarray,
    box: list[int],
    grid: torch.Tensor,
    pre: PreprocessConfig,
    cfg: AutoMaskConfig,
) -> _Found:
    """One crop: encode it once, decode its grid in batches, filter, NMS; masks padded to the
    image. ``grid``: (P, 2) points in the crop's model pixels."""
    x0, y0, x1, y1 = box
    pixel_values, geom = preprocess_image(np.require(image[y0:y1, x0:x1], requirements="CW"), pre)
    embeddings = encode_images(model, to_model(model, pixel_values[None]))
    height, width = image.shape[:2]
    kept = _Found()
    for s in range(0, len(grid), cfg.points_per_batch):
        part = _decode_points(model, embeddings, grid[s : s + cfg.points_per_batch], geom, cfg)
        edge = _is_box_near_crop_edge(part.boxes[0], box, [0, 0, width, height])
        keep = ~edge
        kept.masks.append(part.masks[0][keep])
        kept.iou.append(part.iou[0][keep])
        kept.stability.append(part.stability[0][keep])
        kept.boxes.append(part.boxes[0][keep].float() + torch.tensor([x0, y0, x0, y0]))
        kept.points.append(part.points[0][keep] + torch.tensor([x0, y0]))
    masks, iou, stability, boxes, points = kept.cat()
    keep = _nms(boxes, iou, cfg.box_nms_thresh)
    padded = _pad_masks(masks[keep], box, height, width)
    return _Found([padded], [iou[keep]], [stability[keep]], [boxes[keep]], [points[keep]])


def _decode_points(
    model: torch.nn.Module,
    embeddings: torch.Tensor,
    points: torch.Tensor,
    geom: Geometry,
    cfg: AutoMaskConfig,
) -> _Found:
    """Decode (b, 2) model-pixel points (multimask) and keep the candidates that pass the
    predicted-IoU and stability thresholds; boxes and points in crop pixels."""
    labels = torch.ones(len(points), 1, dtype=torch.long)
    out = decode(
        model,
        embeddings,
        points=to_model(model, points[:, None]),
        labels=to_model(model, labels),
        multimask=True,
        empty_absent=True,  # SAM 2's "no object at this point": an empty mask, filtered out
    )
    k = out.iou_scores.shape[1]
    logits = geom.logits_to_original(out.pred_masks.float().cpu()).flatten(0, 1)
    iou = out.iou_scores.float().cpu().flatten()
    stability = _compute_stability_score(logits, cfg.mask_threshold, cfg.stability_score_offset)
    keep = (iou > cfg.pred_iou_thresh) & (stability > cfg.stability_score_thresh)
    masks = logits[keep] > cfg.mask_threshold
    crop_points = geom.coords_to_original(points).repeat_interleave(k, dim=0)[keep]
    return _Found([masks], [iou[keep]], [stability[keep].float()], [_batched_mask_to_box(masks)],
                  [crop_points])  # fmt: skip


def _clean_small_regions(
    masks: torch.Tensor, min_area: int, nms_thresh: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill holes and remove islands under ``min_area`` pixels; then NMS again, preferring the
    masks this did not change (as SAM's generator does). Returns the masks and kept indices."""
    from scipy import ndimage

    cleaned, unchanged = [], []
    for mask in masks.numpy():
        new, holes = _drop_small(mask, min_area, ndimage, holes=True)
        new, islands = _drop_small(new, min_area, ndimage, holes=False)
        cleaned.append(torch.from_numpy(new))
        unchanged.append(not (holes or islands))
    if not cleaned:
        return masks, torch.zeros(0, dtype=torch.long)
    stacked = torch.stack(cleaned)
    keep = _nms(_batched_mask_to_box(stacked).float(), torch.tensor(unchanged).float(), nms_thresh)
    return stacked[keep], keep


def _drop_small(
    mask: np.ndarray, min_area: int, ndimage, *, holes: bool
) -> tuple[np.ndarray, bool]:
    """``mask`` without its islands (or, with ``holes``, with its holes filled) under
    ``min_area`` pixels (8-connected regions), and whether it had any such region.

    "Had a small region" is SAM's notion of a changed mask, even where nothing moves (a mask
    that is one small island keeps it): the NMS after cleaning prefers masks that had none.
    """
    region = ~mask if holes else mask
    labels, n = ndimage.label(region, structure=np.ones((3, 3)))  # 8-connected, as SAM
    if n == 0:
        return mask, False
    sizes = np.bincount(labels.ravel())[1:]
    small = np.flatnonzero(sizes < min_area) + 1
    if len(small) == 0:
        return mask, False
    if not holes and len(small) == n:  # every island is small: keep the largest, as SAM does
        small = small[small != int(np.argmax(sizes)) + 1]
    hit = np.isin(labels, small)
    return (mask | hit if holes else mask & ~hit), True


# --------------------------------------------------------------------------- files


def write_segmentation(
    model: torch.nn.Module, path: Path, target: Path, cfg: AutoMaskConfig, *, protect=()
) -> int:
    """Generate the masks of the image ``path`` and write the folder ``target`` as a whole
    (``<stem>.json`` COCO-style results, ``<stem>_labels.png``, ``<stem>_overlay.png``),
    replacing only an earlier samtune result folder. Returns the number of masks."""
    image = load_image(path)
    found = generate_masks(model, image, cfg)
    doc = {
        "image": str(path),
        "height": image.shape[0],
        "width": image.shape[1],
        "options": cfg.to_dict(),
        "annotations": found.to_coco(),
    }
    labels = found.label_map()
    with atomic_dir(target, overwrite=True, protect=protect) as tmp:
        (tmp / f"{path.stem}.json").write_text(dump_json(doc))
        dtype = np.uint8 if len(found) < 256 else np.uint16
        Image.fromarray(labels.astype(dtype)).save(tmp / f"{path.stem}_labels.png")
        out = image
        rng = np.random.default_rng(0)  # the same colours every run
        for i in range(len(found)):
            colour = tuple(int(v) for v in rng.integers(40, 256, 3))
            out = blend(out, {colour: labels == i + 1})
        Image.fromarray(out).save(tmp / f"{path.stem}_overlay.png")
    return len(found)


def segment_files(
    model: str | torch.nn.Module,
    images: list[str | os.PathLike],
    output: str | os.PathLike,
    config: AutoMaskConfig | None = None,
    *,
    adapter: str | None = None,
    device: str = "cpu",
    on_image: Callable[[Path, Path, int], None] | None = None,
) -> list[Path]:
    """``samtune segment`` as a function: one result folder ``<output>/<stem>/`` per image.

    ``images`` are files or folders (:func:`samtune.segment.prompted.expand_images`). Every image, the
    output folders, the device and the adapter are checked before the model loads and before
    anything is written. ``on_image(image, folder, number of masks)`` is called after each.

    Returns:
        The folders written, in image order.
    """
    cfg = config if config is not None else AutoMaskConfig()
    paths, output = expand_images(images), Path(output)
    targets = output_folders(paths, output)
    check_outputs(paths, targets, output, paths)
    for path in paths:
        load_image(path)  # decodes it all: a file that is not an image fails here
    sam = load_for_inference(model, adapter, device)
    check_geometric_prompts(sam, "segmenting everything (no --text)")
    with output_lock(output, command="segment"):  # one command writes a folder at a time
        for path, target in zip(paths, targets, strict=True):
            n = write_segmentation(sam, path, target, cfg, protect=paths)
            if on_image is not None:
                on_image(path, target, n)
    return targets


__all__ = ["AutoMaskConfig", "AutoMasks", "generate_masks", "segment_files", "write_segmentation"]

"""The unit every dataset yields: one image with its instance masks, boxes and classes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sample:
    """One annotated image.

    Attributes:
        image: HxWx3 uint8 RGB, EXIF orientation already applied.
        masks: NxHxW bool, one mask per instance, aligned with ``image``.
        boxes: Nx4 float32 XYXY in original image pixels, pixel-edge convention
            (``x2 = last column + 1``, as COCO's ``x + w``), computed from ``masks``.
        category_ids: N int64 category ids (after any remapping, keys of the dataset's
            ``categories``).
        iscrowd: N bool, COCO ``iscrowd`` (crowd regions are kept out of prompts by default).
        instance_ids: N int64 annotation ids, unique within a dataset.
        image_id: the image's id in its annotation file.
        file_name: the image path relative to the dataset's image folder.
        annotation_boxes: Nx4 float32 XYXY in original image pixels from each annotation's
            own COCO ``bbox`` (``[x, y, w, h]`` -> ``[x, y, x + w, y + h]``), as written in the
            file: it may differ from ``boxes`` (the mask's extent). A row is NaN where the
            annotation has no ``bbox``; None when the source has no annotation boxes at all.
    """

    image: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    category_ids: np.ndarray
    iscrowd: np.ndarray
    instance_ids: np.ndarray
    image_id: int
    file_name: str
    meta: dict = field(default_factory=dict)
    annotation_boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        h, w = self.image.shape[:2]
        n = len(self.category_ids)
        if self.masks.shape != (n, h, w):
            raise ValueError(
                f"masks must be {(n, h, w)} (N, H, W) for image {self.file_name!r}, "
                f"found {self.masks.shape}"
            )
        if self.boxes.shape != (n, 4):
            raise ValueError(f"boxes must be ({n}, 4), found {self.boxes.shape}")
        if self.annotation_boxes is not None and self.annotation_boxes.shape != (n, 4):
            raise ValueError(
                f"annotation_boxes must be ({n}, 4), found {self.annotation_boxes.shape}"
            )

    @property
    def num_instances(self) -> int:
        return len(self.category_ids)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def subset(self, keep: np.ndarray) -> Sample:
        """A copy holding only the instances selected by ``keep`` (bool mask or indices)."""
        return Sample(
            image=self.image,
            masks=self.masks[keep],
            boxes=self.boxes[keep],
            category_ids=self.category_ids[keep],
            iscrowd=self.iscrowd[keep],
            instance_ids=self.instance_ids[keep],
            image_id=self.image_id,
            file_name=self.file_name,
            meta=dict(self.meta),
            annotation_boxes=None if self.annotation_boxes is None else self.annotation_boxes[keep],
        )


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight XYXY boxes (float32, pixel-edge convention: x2 = last column + 1) of NxHxW masks.

    An empty mask gives the box (0, 0, 0, 0).
    """
    n = masks.shape[0]
    boxes = np.zeros((n, 4), dtype=np.float32)
    for i in range(n):
        rows = np.flatnonzero(masks[i].any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(masks[i].any(axis=0))
        boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes

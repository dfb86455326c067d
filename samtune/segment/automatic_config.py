"""The options of automatic mask generation (:mod:`samtune.segment.automatic`), light: no torch.

:class:`AutoMaskConfig` is what ``samtune segment`` and ``samtune eval --prompt auto`` build from
their options; the names are those of SAM's ``SamAutomaticMaskGenerator``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from ..options import Options, check_range


@dataclass
class AutoMaskConfig(Options):
    """The options of automatic mask generation (SAM's ``SamAutomaticMaskGenerator`` names)."""

    noun = "mask generation option"

    points_per_side: int = field(
        default=32, metadata={"help": "Grid points along each side of the image (and crop)."}
    )
    points_per_batch: int = field(
        default=64, metadata={"help": "Points per decoder call (memory; not the result)."}
    )
    pred_iou_thresh: float = field(
        default=0.88, metadata={"help": "Keep masks whose predicted IoU is above this."}
    )
    stability_score_thresh: float = field(
        default=0.95, metadata={"help": "Keep masks whose stability score is above this."}
    )
    stability_score_offset: float = field(
        default=1.0, metadata={"help": "Logit offset of the stability score's two thresholds."}
    )
    mask_threshold: float = field(default=0.0, metadata={"help": "Logit threshold of a mask."})
    box_nms_thresh: float = field(
        default=0.7, metadata={"help": "Box IoU above which NMS drops a duplicate mask."}
    )
    crop_n_layers: int = field(
        default=0, metadata={"help": "Crop layers; layer i has (2^i)^2 overlapping crops."}
    )
    crop_nms_thresh: float = field(
        default=0.7, metadata={"help": "Box IoU of the NMS across crops."}
    )
    crop_overlap_ratio: float = field(
        default=512 / 1500, metadata={"help": "Overlap of the first crop layer's crops."}
    )
    min_mask_region_area: int = field(
        default=0, metadata={"help": "Remove holes and islands smaller than this (pixels)."}
    )

    def validate(self) -> None:
        super().validate()
        check_range("points_per_side", self.points_per_side, minimum=1)
        check_range("points_per_batch", self.points_per_batch, minimum=1)
        check_range("crop_n_layers", self.crop_n_layers, minimum=0)
        check_range("min_mask_region_area", self.min_mask_region_area, minimum=0)
        check_range("stability_score_offset", self.stability_score_offset, minimum=0)
        for name in ("box_nms_thresh", "crop_nms_thresh", "crop_overlap_ratio"):
            value = getattr(self, name)
            check_range(name, value, minimum=0)
            if value > 1:
                raise ConfigError(f"{name} must be a fraction in 0 .. 1; found {value!r}")


__all__ = ["AutoMaskConfig"]

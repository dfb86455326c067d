"""SAM preprocessing shared by training, evaluation and prediction, plus optional augmentation.

:func:`preprocess_image` reproduces ``transformers.SamImageProcessor`` exactly: the uint8 image
is resized so that its longest side is ``cfg.image_size`` (bilinear with antialiasing, rounded
back to uint8), normalised with SAM's mean/std and zero-padded at the bottom and right to a
square. For SAM 2 (``cfg.square``) it reproduces ``Sam2ImageProcessor``: the image is
stretched to the square, no padding. :class:`Geometry` records that mapping so masks, boxes and points follow the image, and
so predicted mask logits can be brought back to the original resolution for metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models.identity import PreprocessConfig
from .images import to_rgb_uint8
from .sample import Sample, masks_to_boxes


def resized_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """Size (h, w) after resizing the longest side to ``longest`` (SamImageProcessor rounding).

    A side that would round to 0 pixels (a 4000x2 image at 128) is kept at 1, where
    ``SamImageProcessor`` would fail; every other size is the processor's."""
    scale = longest * 1.0 / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


@dataclass(frozen=True)
class Geometry:
    """How one image maps between its original pixels and the model's padded square.

    Attributes:
        original_size: (H, W) of the original image.
        resized_size: (h, w) after resizing the longest side to ``padded_size`` ((S, S) when
            ``square``).
        padded_size: S, the side of the square model input (content at top-left).
        square: the image was stretched to S x S (SAM 2); logits then go back to the original
            size in one resize, as ``Sam2ImageProcessor.post_process_masks`` does.
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    padded_size: int
    square: bool = False

    @classmethod
    def for_image(cls, height: int, width: int, image_size: int, square: bool = False) -> Geometry:
        if square:
            return cls((int(height), int(width)), (image_size, image_size), image_size, True)
        return cls((int(height), int(width)), resized_shape(height, width, image_size), image_size)

    @property
    def scale_xy(self) -> tuple[float, float]:
        """(sx, sy): model pixels per original pixel along x and y."""
        return (
            self.resized_size[1] / self.original_size[1],
            self.resized_size[0] / self.original_size[0],
        )

    def coords_to_model(self, coords):
        """Map points (..., 2) as (x, y) or boxes (..., 4) as XYXY from original to model pixels.

        Accepts numpy arrays or torch tensors; returns the same type, float32.
        """
        return self._scale_coords(coords, *self.scale_xy)

    def coords_to_original(self, coords):
        """Inverse of :meth:`coords_to_model`."""
        sx, sy = self.scale_xy
        return self._scale_coords(coords, 1.0 / sx, 1.0 / sy)

    @staticmethod
    def _scale_coords(coords, sx: float, sy: float):
        if coords.shape[-1] not in (2, 4):
            raise ValueError(
                f"coordinates must end in 2 (x, y) or 4 (x1, y1, x2, y2), found shape {tuple(coords.shape)}"
            )
        reps = coords.shape[-1] // 2
        if torch.is_tensor(coords):
            factor = torch.tensor([sx, sy] * reps, dtype=torch.float32, device=coords.device)
            return coords.to(torch.float32) * factor
        factor = np.array([sx, sy] * reps, dtype=np.float32)
        return np.asarray(coords, dtype=np.float32) * factor

    def masks_to_model(self, masks, size: int | None = None) -> torch.Tensor:
        """Resize NxHxW masks like the image and pad them to SxS (or to ``size`` x ``size``).

        The masks are resized to ``resized_size`` (bilinear, antialiased when shrinking), padded
        bottom-right to S, then, if ``size`` is given, resized to ``size`` (e.g. 256 for SAM's
        low-resolution mask targets). Bool input gives bool output (threshold 0.5, which is
        exact replication for integer upscales); float input gives float output.

        Returns:
            torch.Tensor (N, S, S) or (N, size, size).
        """
        masks_t = torch.as_tensor(np.asarray(masks) if not torch.is_tensor(masks) else masks)
        is_bool = masks_t.dtype == torch.bool
        x = masks_t.to(torch.float32)
        if x.shape[-2:] != self.original_size:
            raise ValueError(
                f"masks are {tuple(x.shape[-2:])} but the image is {self.original_size} (H, W)"
            )
        squeeze = x.ndim == 2
        x = x.reshape(-1, 1, *x.shape[-2:])
        x = _resize(x, self.resized_size)
        h, w = self.resized_size
        x = F.pad(x, (0, self.padded_size - w, 0, self.padded_size - h))
        if size is not None and size != self.padded_size:
            x = _resize(x, (size, size))
        x = x[:, 0]
        x = x.reshape(*masks_t.shape[:-2], *x.shape[-2:]) if not squeeze else x[0]
        return x >= 0.5 if is_bool else x

    def logits_to_original(self, logits: torch.Tensor) -> torch.Tensor:
        """Map mask logits (..., r, r) of any square resolution to (..., H, W) original pixels.

        Upsample to S x S (bilinear), crop the padding, resize to the original size (bilinear),
        the same steps as ``SamImageProcessor.post_process_masks``.
        """
        if logits.shape[-1] != logits.shape[-2]:
            raise ValueError(f"logits must be square (..., r, r), found {tuple(logits.shape)}")
        lead = logits.shape[:-2]
        x = logits.reshape(-1, 1, *logits.shape[-2:]).to(torch.float32)
        if self.square:
            x = F.interpolate(x, self.original_size, mode="bilinear", align_corners=False)
            return x.reshape(*lead, *self.original_size)
        s = self.padded_size
        if x.shape[-1] != s:
            x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False)
        h, w = self.resized_size
        x = x[..., :h, :w]
        if (h, w) != self.original_size:
            x = F.interpolate(x, self.original_size, mode="bilinear", align_corners=False)
        return x.reshape(*lead, *self.original_size)

    def to_dict(self) -> dict:
        d = {
            "original_size": list(self.original_size),
            "resized_size": list(self.resized_size),
            "padded_size": self.padded_size,
        }
        if self.square:
            d["square"] = True
        return d


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=shrink)


def preprocess_image(
    image: np.ndarray | Any, cfg: PreprocessConfig
) -> tuple[torch.Tensor, Geometry]:
    """Prepare one image exactly as ``SamImageProcessor`` (or, with ``cfg.square``,
    ``Sam2ImageProcessor``) does.

    Args:
        image: HxWx3 uint8 RGB (numpy), a PIL image, or a (3,H,W) uint8 tensor.
        cfg: the model's preprocessing (:func:`samtune.models.preprocess_config`).

    Returns:
        ``pixel_values`` (3, S, S) float32 with S = ``cfg.image_size``, and the
        :class:`Geometry` that maps coordinates and masks to and from it.
    """
    from torchvision.transforms.v2 import functional as tvF

    rgb = to_rgb_uint8(image)
    height, width = rgb.shape[:2]
    geometry = Geometry.for_image(height, width, cfg.image_size, cfg.square)
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    if geometry.resized_size != geometry.original_size:
        x = tvF.resize(
            x,
            list(geometry.resized_size),
            interpolation=tvF.InterpolationMode.BILINEAR,
            antialias=True,
        )
    x = tvF.normalize(x.to(torch.float32), list(cfg.mean), list(cfg.std))
    h, w = geometry.resized_size
    s = cfg.image_size
    x = F.pad(x, (0, s - w, 0, s - h), value=0.0)
    return x.contiguous(), geometry


# --------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation, applied to the original image before preprocessing.

    Attributes:
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        scale: (min, max) random rescale factor of the image (scale jitter); (1, 1) disables.
        color: strength of colour jitter (brightness/contrast/saturation), 0 disables.
        hue: hue jitter (0-0.5), 0 disables.
    """

    hflip: float = 0.5
    vflip: float = 0.0
    scale: tuple[float, float] = (0.75, 1.25)
    color: float = 0.2
    hue: float = 0.0

    def __post_init__(self) -> None:
        if not (0 <= self.hflip <= 1 and 0 <= self.vflip <= 1):
            raise ValueError(
                f"flip probabilities must lie in [0, 1], found {self.hflip}, {self.vflip}"
            )
        if not (0 < self.scale[0] <= self.scale[1]):
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, found {self.scale}")


# Named augmentations (``augment:`` in a fit config). ``flips`` and ``geometric`` move masks and
# boxes exactly with the pixels and leave the colours alone; ``full`` (also ``true``) is
# :class:`AugmentConfig`'s defaults: a horizontal flip, scale jitter and colour jitter.
AUGMENTATIONS: dict[str, AugmentConfig] = {
    "flips": AugmentConfig(hflip=0.5, vflip=0.5, scale=(1.0, 1.0), color=0.0),
    "geometric": AugmentConfig(hflip=0.5, vflip=0.5, scale=(0.75, 1.25), color=0.0),
    "full": AugmentConfig(),
}


def augment_config(value: bool | str | None) -> AugmentConfig | None:
    """The augmentation a fit's ``augment`` option names: None (false), the defaults (true), or
    one of :data:`AUGMENTATIONS` by name."""
    if value is None or value is False:
        return None
    if value is True:
        return AUGMENTATIONS["full"]
    try:
        return AUGMENTATIONS[value]
    except KeyError:
        raise ValueError(
            f"augment must be true, false or one of {', '.join(AUGMENTATIONS)}; found {value!r}"
        ) from None


def augment_sample(sample, cfg: AugmentConfig, generator: torch.Generator):
    """Return an augmented copy of a :class:`~samtune.data.sample.Sample`.

    Uses ``torchvision.transforms.v2`` with ``tv_tensors.Mask`` and ``BoundingBoxes`` so masks
    and boxes move with the image; boxes are then recomputed from the masks (tight boxes).
    Randomness comes from ``generator`` only, so results are reproducible.
    """
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as tvF

    img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1))
    masks = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(sample.masks)))
    h, w = sample.size

    def rand() -> float:
        return float(torch.rand((), generator=generator))

    ann = sample.annotation_boxes  # the file's own boxes move with the image too
    ann = None if ann is None else tv_tensors.BoundingBoxes(
        torch.from_numpy(np.asarray(ann, np.float32)), format="XYXY", canvas_size=(h, w)
    )  # fmt: skip
    if rand() < cfg.hflip:
        img, masks = tvF.horizontal_flip(img), tvF.horizontal_flip(masks)
        ann = None if ann is None else tvF.horizontal_flip(ann)
    if rand() < cfg.vflip:
        img, masks = tvF.vertical_flip(img), tvF.vertical_flip(masks)
        ann = None if ann is None else tvF.vertical_flip(ann)
    lo, hi = cfg.scale
    if hi > lo or lo != 1.0:
        factor = lo + (hi - lo) * rand()
        new = [max(1, round(h * factor)), max(1, round(w * factor))]
        img = tvF.resize(img, new, antialias=True)
        masks = tvF.resize(masks, new)  # nearest for tv_tensors.Mask
        ann = None if ann is None else tvF.resize(ann, new)
    if cfg.color > 0:
        c = cfg.color
        img = tvF.adjust_brightness(img, 1 + c * (2 * rand() - 1))
        img = tvF.adjust_contrast(img, 1 + c * (2 * rand() - 1))
        img = tvF.adjust_saturation(img, 1 + c * (2 * rand() - 1))
    if cfg.hue > 0:
        img = tvF.adjust_hue(img, cfg.hue * (2 * rand() - 1))
    image = img.permute(1, 2, 0).contiguous().numpy()
    masks_np = masks.numpy().astype(bool)
    keep = masks_np.reshape(len(masks_np), -1).any(axis=1)
    out = Sample(
        image=image,
        masks=masks_np,
        boxes=masks_to_boxes(masks_np),
        category_ids=sample.category_ids,
        iscrowd=sample.iscrowd,
        instance_ids=sample.instance_ids,
        image_id=sample.image_id,
        file_name=sample.file_name,
        meta=dict(sample.meta),
        annotation_boxes=None if ann is None else ann.as_subclass(torch.Tensor).numpy(),
    )
    return out if keep.all() else out.subset(keep)

"""Prompted training/evaluation items and their collation, for images with any instance count.

:class:`PromptedDataset` turns a dataset of :class:`~samtune.data.sample.Sample` into model-ready
items: preprocessed pixels, prompts in model pixels, and target masks at the original
resolution. A per-image cap ``max_instances`` is sampled anew each epoch (:meth:`set_epoch`);
``max_instances=None`` keeps every instance, which evaluation must use so nothing is dropped.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..models.identity import PreprocessConfig
from ..prompting import DATA_PROMPTS, PAD_LABEL, parse_prompt
from .prompts import BOX_SOURCES, jitter_boxes, points_from_masks, prompt_boxes
from .sample import Sample
from .transforms import AugmentConfig, augment_sample, preprocess_image


def _seed(*parts: int) -> int:
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes())


class PromptedDataset(Dataset):
    """Items with pixels, prompts and targets for SAM, one per image.

    Args:
        dataset: a dataset of :class:`Sample` (e.g. from :func:`samtune.data.load_dataset`).
        cfg: the model's preprocessing (:func:`samtune.models.preprocess_config`).
        prompt: ``"box"`` (tight box from the mask, plus ``jitter``), ``"point"`` (centre of
            the largest inscribed disc) or ``"points:P,N"`` (first positive at the centre, the
            rest uniform inside; negatives near the object).
        max_instances: keep at most this many instances per image, drawn at random for each
            (seed, epoch, image); None keeps all (use None for evaluation).
        augment: an :class:`AugmentConfig` (True for the defaults) applied before
            preprocessing; None/False for none.
        jitter: box noise as a fraction of the box side (SAM uses 0.1), at most 20 px.
        seed: base seed; every random choice depends on (seed, epoch, index) only.
        include_crowd: also prompt crowd regions (default False: they are left out).
        point_mode: where positive points go: ``"center"`` (as above) or ``"random"`` (every
            positive uniform inside the mask, as automatic segmentation's grid points fall).

    Each item is a dict:

    - ``pixel_values``: (3, S, S) float32;
    - ``geometry``: :class:`~samtune.data.transforms.Geometry` of the (augmented) image;
    - ``boxes``: (N, 4) float32 XYXY in model pixels (always given, whatever the prompt), from
      ``box_source``;
    - ``points``: (N, k, 2) float32 (x, y) in model pixels and ``point_labels`` (N, k) int64
      (1 positive, 0 negative, -10 padding); k = 0 for ``prompt="box"``;
    - ``masks``: (N, H, W) bool at the original (augmented) resolution;
    - ``category_ids``, ``instance_ids``: (N,) int64; ``image_id`` and ``index``: int;
      ``prompt``: the prompt text.

    N may be 0 (an image without instances).

    Raises:
        ConfigError: a ``prompt`` other than these three forms, an unknown ``box_source``.
        DataError: (when an item is read) ``box_source="annotation"`` on an instance without
            an annotation ``bbox``.
    """

    def __init__(
        self,
        dataset: Sequence[Sample],
        cfg: PreprocessConfig,
        prompt: str = "box",
        max_instances: int | None = None,
        augment: AugmentConfig | bool | None = None,
        jitter: float = 0.0,
        seed: int = 0,
        include_crowd: bool = False,
        point_mode: str = "center",
        box_source: str = "mask",
    ) -> None:
        if max_instances is not None and max_instances < 1:
            raise ValueError(f"max_instances must be None or >= 1, found {max_instances}")
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0, found {jitter}")
        self.dataset = dataset
        self.cfg = cfg
        self.prompt = prompt
        self.spec = parse_prompt(prompt, DATA_PROMPTS)
        self.max_instances = max_instances
        self.augment = AugmentConfig() if augment is True else (augment or None)
        self.jitter = float(jitter)
        self.seed = int(seed)
        self.include_crowd = include_crowd
        if point_mode not in ("center", "random"):
            raise ValueError(f"point_mode must be 'center' or 'random', found {point_mode!r}")
        self.point_mode = point_mode
        if box_source not in BOX_SOURCES:
            raise ConfigError(
                f"box_source must be one of {', '.join(BOX_SOURCES)}; found {box_source!r}"
            )
        self.box_source = box_source
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed instance sampling, augmentation and prompt noise for a new epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        seed = _seed(self.seed, self.epoch, index)
        rng = np.random.default_rng(seed)
        if not self.include_crowd and sample.iscrowd.any():
            sample = sample.subset(~sample.iscrowd)
        if self.augment is not None:
            sample = augment_sample(sample, self.augment, torch.Generator().manual_seed(seed))
        n = sample.num_instances
        if self.max_instances is not None and n > self.max_instances:
            keep = np.sort(rng.choice(n, size=self.max_instances, replace=False))
            sample = sample.subset(keep)
        pixel_values, geometry = preprocess_image(sample.image, self.cfg)
        boxes = prompt_boxes(sample, self.box_source)
        if self.jitter > 0:
            boxes = jitter_boxes(boxes, self.jitter, 20.0, rng, sample.size)
        n = sample.num_instances
        if self.spec.kind != "box":
            points, labels = points_from_masks(
                sample.masks, self.spec.n_pos, self.spec.n_neg, self.point_mode, rng
            )
        else:
            points = np.zeros((n, 0, 2), np.float32)
            labels = np.zeros((n, 0), np.int64)
        return {
            "pixel_values": pixel_values,
            "geometry": geometry,
            "boxes": torch.from_numpy(geometry.coords_to_model(boxes)),
            "points": torch.from_numpy(geometry.coords_to_model(points)),
            "point_labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(sample.masks),
            "category_ids": torch.from_numpy(sample.category_ids),
            "instance_ids": torch.from_numpy(sample.instance_ids),
            "image_id": sample.image_id,
            "index": int(index),
            "prompt": self.prompt,
        }


def collate_prompted(items: list[dict], pad: bool = False) -> dict:
    """Collate :class:`PromptedDataset` items without dropping any instance.

    Returns a dict of lists (one entry per image, variable N), except ``pixel_values``,
    stacked to (B, 3, S, S). With ``pad=True`` it also adds ``boxes_padded`` (B, Nmax, 4),
    ``points_padded`` (B, Nmax, k, 2), ``labels_padded`` (B, Nmax, k) (padding label -10) and
    ``instance_valid`` (B, Nmax) bool, for models that need rectangular prompt tensors.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    out: dict = {key: [item[key] for item in items] for key in items[0]}
    out["pixel_values"] = torch.stack(out["pixel_values"])
    if pad:
        b = len(items)
        nmax = max(1, max(len(i["boxes"]) for i in items))
        k = max(i["points"].shape[1] for i in items)
        boxes = torch.zeros(b, nmax, 4)
        points = torch.zeros(b, nmax, k, 2)
        labels = torch.full((b, nmax, k), PAD_LABEL, dtype=torch.int64)
        valid = torch.zeros(b, nmax, dtype=torch.bool)
        for j, item in enumerate(items):
            n = len(item["boxes"])
            boxes[j, :n] = item["boxes"]
            kk = item["points"].shape[1]
            points[j, :n, :kk] = item["points"]
            labels[j, :n, :kk] = item["point_labels"]
            valid[j, :n] = True
        out.update(
            boxes_padded=boxes, points_padded=points, labels_padded=labels, instance_valid=valid
        )
    return out

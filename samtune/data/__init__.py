"""Datasets, prompts and SAM preprocessing.

Public API (see docs/architecture.md, "Data"):

- :class:`Sample`, :func:`load_dataset`, :class:`InstanceDataset`, :func:`list_datasets`;
- :func:`preprocess_image`, :class:`Geometry`, :class:`AugmentConfig` (``transforms``);
- ``prompts``: :func:`boxes_from_masks`, :func:`jitter_boxes`, :func:`points_from_masks`,
  :func:`next_click` (the prompt protocols and click samplers: :mod:`samtune.prompting`);
- :class:`PromptedDataset`, :func:`collate_prompted` (``batching``).
"""

from __future__ import annotations

from .batching import PromptedDataset, collate_prompted
from .coco import InstanceDataset
from .images import load_image
from .masks import decode_segmentation, encode_mask
from .prompts import boxes_from_masks, jitter_boxes, next_click, points_from_masks
from .recipes import RECIPES, get_recipe, list_datasets, load_dataset
from .sample import Sample, masks_to_boxes
from .synthetic import ensure_demo_dataset, write_demo_dataset
from .transforms import AugmentConfig, Geometry, preprocess_image

__all__ = [
    "RECIPES",
    "AugmentConfig",
    "Geometry",
    "InstanceDataset",
    "PromptedDataset",
    "Sample",
    "boxes_from_masks",
    "collate_prompted",
    "decode_segmentation",
    "encode_mask",
    "ensure_demo_dataset",
    "get_recipe",
    "jitter_boxes",
    "list_datasets",
    "load_dataset",
    "load_image",
    "masks_to_boxes",
    "next_click",
    "points_from_masks",
    "preprocess_image",
    "prompts",
    "write_demo_dataset",
]

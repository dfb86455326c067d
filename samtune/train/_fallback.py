"""TEMPORARY stand-ins for pieces other modules own, used only while those are missing.

``samtune.data.PromptedDataset``/``collate_prompted`` and ``samtune.adapters.save_adapter`` are
being written in parallel (see docs/architecture.md). The training loop imports the real ones
and falls back to these minimal versions (same contract) only on ImportError. Delete this file
once ``samtune.data`` and ``samtune.adapters`` provide them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


class PromptedDataset(torch.utils.data.Dataset):
    """Minimal ``samtune.data.batching.PromptedDataset``: box or centre-point prompts."""

    def __init__(
        self, dataset, cfg, prompt="box", max_instances=None, augment=None, jitter=0.0, seed=0
    ):
        self.dataset, self.cfg, self.prompt = dataset, cfg, prompt
        self.max_instances, self.jitter, self.seed, self.epoch = max_instances, jitter, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        from ..data.prompts import center_point, jitter_boxes
        from ..data.transforms import preprocess_image

        sample = self.dataset[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        keep = np.flatnonzero(~np.asarray(sample.iscrowd, bool) & sample.masks.any((1, 2)))
        if self.max_instances is not None and len(keep) > self.max_instances:
            keep = np.sort(rng.choice(keep, self.max_instances, replace=False))
        pixel_values, geometry = preprocess_image(sample.image, self.cfg)
        masks = sample.masks[keep]
        boxes = sample.boxes[keep]
        if self.jitter:
            boxes = jitter_boxes(boxes, noise=self.jitter, rng=rng, image_size=masks.shape[1:])
        points = np.array([center_point(m) for m in masks], dtype=np.float32).reshape(-1, 1, 2)
        return {
            "pixel_values": pixel_values,
            "geometry": geometry,
            "boxes": torch.as_tensor(geometry.coords_to_model(np.asarray(boxes, np.float32))),
            "points": torch.as_tensor(geometry.coords_to_model(points + 0.5)),
            "point_labels": torch.ones(len(keep), 1, dtype=torch.long),
            "masks": torch.as_tensor(masks),
            "category_ids": torch.as_tensor(sample.category_ids[keep]),
            "instance_ids": torch.as_tensor(sample.instance_ids[keep]),
            "image_id": sample.image_id,
            "index": index,
        }


def collate_prompted(items: list[dict]) -> dict:
    return {key: [item[key] for item in items] for key in items[0]}


def save_adapter(model, directory) -> None:
    """Minimal ``samtune.adapters.save_adapter``: the trainable tensors, atomically."""
    from safetensors.torch import save_file

    from ..io import atomic_dir
    from ..models import base_fingerprint, model_source

    sd = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    meta = {"base_model": model_source(model), "base_fingerprint": base_fingerprint(model)}
    with atomic_dir(Path(directory), overwrite=True) as tmp:
        save_file(sd, str(tmp / "adapter.safetensors"), metadata={"samtune": json.dumps(meta)})

"""Masks drawn over an image: what ``samtune predict``/``samtune segment`` write and the
evaluation's worst-case pictures show."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def overlay(image: np.ndarray, masks: Mapping[tuple[int, int, int], np.ndarray], alpha=0.45):
    """Blend ``{rgb colour: HxW bool mask}`` into an HxWx3 uint8 image (returns a new image)."""
    out = image.astype(np.float32).copy()
    for colour, m in masks.items():
        m = np.asarray(m, dtype=bool)
        out[m] = (1 - alpha) * out[m] + alpha * np.asarray(colour, np.float32)
    return out.clip(0, 255).astype(np.uint8)

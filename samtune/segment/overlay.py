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


def draw_labels(
    image: np.ndarray, labels: list[tuple[str, tuple[float, float], tuple[int, int, int]]]
) -> np.ndarray:
    """Write each ``(text, (x, y), rgb colour)`` on an HxWx3 uint8 image (a new image): the
    text in the colour on a dark box whose top-left corner is at ``(x, y)``, kept inside the
    image. Pillow's built-in font, so no font file is needed."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width, height = canvas.size
    for text, (x, y), colour in labels:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left + 2, bottom - top + 2
        x0 = int(min(max(x, 0), max(width - w, 0)))
        y0 = int(min(max(y, 0), max(height - h, 0)))
        draw.rectangle((x0, y0, x0 + w, y0 + h), fill=(0, 0, 0))
        draw.text((x0 + 1 - left, y0 + 1 - top), text, fill=tuple(colour), font=font)
    return np.asarray(canvas).copy()

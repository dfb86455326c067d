"""The model behind a samtune CVAT interactor: load it once, answer prompts on a frame.

``model/`` beside this file holds the merged model (a transformers SamModel folder, loaded
with ``samtune.load_model``) or an adapter (``adapter.safetensors``, applied to the base it
records with ``samtune.load_tuned``). A ``samtune.Predictor`` keeps the last frame's image
embedding, so further clicks on the same frame skip the image encoder.
"""

import hashlib
from pathlib import Path

import numpy as np
import torch

import samtune

MODEL_DIR = Path(__file__).resolve().parent / "model"


class PromptError(ValueError):
    """A request CVAT should not have sent: no prompt, or malformed points."""


def load(model_dir=MODEL_DIR, device=None):
    """The tuned model in ``model_dir``, in eval mode on ``device`` (default: CUDA if any)."""
    model_dir = Path(model_dir)
    if (model_dir / "adapter.safetensors").is_file():
        model = samtune.load_tuned(model_dir)
    else:
        model = samtune.load_model(model_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


def _points(value, what):
    points = np.asarray(value, dtype=np.float32).reshape(-1, 2) if len(value) else None
    if points is not None and not np.isfinite(points).all():
        raise PromptError(f"{what} must be [[x, y], ...] numbers")
    return points


def prompt(pos_points, neg_points, obj_bbox=None):
    """One SAM prompt from CVAT's fields: ``(boxes (1, 4) | None, points (1, K, 2) | None,
    labels (1, K) | None, multimask)``. One click without a box asks for the multimask
    output (SAM's advice for a single ambiguous point)."""
    try:
        pos, neg = _points(pos_points, "pos_points"), _points(neg_points, "neg_points")
        box = None if obj_bbox is None else np.asarray(obj_bbox, np.float32).reshape(2, 2)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"malformed points: {exc}") from exc
    clicks = [p for p in (pos, neg) if p is not None]
    if not clicks and box is None:
        raise PromptError("give at least one point (pos_points / neg_points) or obj_bbox")
    boxes = None if box is None else np.concatenate([box.min(0), box.max(0)])[None]
    if not clicks:
        return boxes, None, None, False
    points = np.concatenate(clicks)[None]
    labels = np.array(
        [1] * len(pos if pos is not None else []) + [0] * len(neg if neg is not None else [])
    )
    return boxes, points, labels[None], boxes is None and points.shape[1] == 1


class ModelHandler:
    """``handle(image, pos_points, neg_points, obj_bbox)`` -> the mask (H, W) bool."""

    def __init__(self, model_dir=MODEL_DIR, device=None):
        self.model = load(model_dir, device)
        self.predictor = samtune.Predictor(self.model)
        self.image_key = None

    def _set_image(self, image):
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
        if key != self.image_key:
            self.predictor.set_image(image)
            self.image_key = key

    def handle(self, image, pos_points, neg_points, obj_bbox=None):
        boxes, points, labels, multimask = prompt(pos_points, neg_points, obj_bbox)
        self._set_image(image)
        try:
            result = self.predictor.predict(boxes, points, labels, multimask=multimask)
        except samtune.InputError as exc:  # a point outside the frame, say
            raise PromptError(str(exc)) from exc
        return result.masks[0]

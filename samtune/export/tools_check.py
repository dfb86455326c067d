"""Running an annotation-tool export the way its tool does, and the export's self-check.

:func:`run_tool` follows samexporter's and osam's ``SegmentAnythingONNX`` step by step (PIL
bilinear resize, SAM's normalisation for square inputs, points scaled to the tool's frame,
the padding point ``(0, 0)`` / -1 after every prompt, 256 x 256 zero ``mask_input``, the mask
from ``low_res_masks`` as samexporter reads it or from ``masks`` as osam does);
:func:`self_check` compares its masks with :func:`samtune.predict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.synthetic import generate_scene
from .tools import SAM_MEAN, SAM_STD, TOOL_MASK_SIDE, Profile


def _resized_hw(h: int, w: int, side: int) -> tuple[int, int]:
    scale = side / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def encoder_feed(image: np.ndarray, profile: Profile, side: int) -> np.ndarray:
    """The encoder input a tool builds from an HxWx3 uint8 RGB image (``side``: the model's S)."""
    long_side = profile.input_side or profile.coord_side or side  # hwc: samexporter's 1024
    h, w = _resized_hw(*image.shape[:2], long_side)
    resized = np.asarray(Image.fromarray(image).resize((w, h), resample=Image.BILINEAR))
    x = resized.astype(np.float32)
    if profile.layout == "hwc":
        return x
    x = (x - np.float32(SAM_MEAN)) / np.float32(SAM_STD)
    x = np.pad(x, ((0, long_side - h), (0, long_side - w), (0, 0)))
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def decoder_feed(
    embeddings: np.ndarray,
    size: tuple[int, int],
    profile: Profile,
    side: int,
    points: np.ndarray,
    labels: np.ndarray,
) -> dict[str, np.ndarray]:
    """The decoder inputs a tool builds for one prompt: ``points`` (K, 2) in original pixels
    with ``labels`` (K,) (1/0 points, 2/3 box corners), plus the padding point."""
    h, w = _resized_hw(*size, profile.coord_side or side)
    coords = np.concatenate([np.asarray(points, np.float64), [[0.0, 0.0]]])[None]
    coords = coords * (w / size[1], h / size[0])
    return {
        "image_embeddings": embeddings,
        "point_coords": coords.astype(np.float32),
        "point_labels": np.concatenate([labels, [-1]])[None].astype(np.float32),
        "mask_input": np.zeros((1, 1, TOOL_MASK_SIDE, TOOL_MASK_SIDE), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.asarray(size, np.float32),
    }


def run_tool(encoder, decoder, profile: Profile, side: int, image: np.ndarray, prompts):
    """Token-0 masks (N, H, W) bool for ``prompts`` [(points (K, 2), labels (K,)), ...],
    through onnxruntime sessions the way the profile's tool runs them."""
    name = encoder.get_inputs()[0].name
    emb = encoder.run(None, {name: encoder_feed(image, profile, side)})[0]
    size = image.shape[:2]
    masks = []
    for points, labels in prompts:
        feed = decoder_feed(emb, size, profile, side, points, labels)
        out, _, low_res = decoder.run(None, feed)
        if profile.layout == "hwc":  # samexporter reads low_res_masks
            masks.append(low_res_to_original(low_res[0, 0], size, profile.coord_side or side))
        else:  # osam reads masks
            masks.append(out[0, 0] > 0)
    return np.stack(masks)


def low_res_to_original(low_res: np.ndarray, size: tuple[int, int], frame: int) -> np.ndarray:
    """samexporter's ``postprocess_masks``: upsample to frame x frame, crop the image's part,
    resize to ``size`` (H, W) (bilinear), threshold at 0."""
    import torch
    import torch.nn.functional as F

    h, w = _resized_hw(*size, frame)
    x = torch.from_numpy(np.ascontiguousarray(low_res, np.float32))[None, None]
    x = F.interpolate(x, size=(frame, frame), mode="bilinear", align_corners=False)
    x = F.interpolate(x[..., :h, :w], size=tuple(size), mode="bilinear", align_corners=False)
    return x[0, 0].numpy() > 0


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-mask IoU of two (N, H, W) bool stacks (1 where both are empty)."""
    inter = (a & b).sum((-2, -1))
    union = (a | b).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image, objects = generate_scene(rng, 256, max_objects=4)
    image = image[:, :192]  # not square
    boxes = []
    for _, m in objects:
        ys, xs = np.nonzero(m[:, :192])
        if len(xs):
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return image, np.asarray(boxes, np.float32).reshape(-1, 4)


def self_check(sam, folder: Path, profile: Profile, stem: str) -> dict[str, Any]:
    """Masks of the written files, run as the tool runs them, against :func:`samtune.predict`
    on a synthetic scene: mean IoU for box prompts and for one centre point per box."""
    import onnxruntime as ort

    from ..segment.prompted import predict

    image, boxes = _scene()
    side = int(sam.config.vision_config.image_size)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    enc, dec = (
        ort.InferenceSession(str(folder / f"{stem}.{p}.onnx"), options, ["CPUExecutionProvider"])
        for p in ("encoder", "decoder")
    )
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    box_prompts = [(b.reshape(2, 2), np.array([2.0, 3.0])) for b in boxes]
    point_prompts = [(c[None], np.array([1.0])) for c in centres]
    tool_boxes = run_tool(enc, dec, profile, side, image, box_prompts)
    tool_points = run_tool(enc, dec, profile, side, image, point_prompts)
    ref_boxes = predict(sam, image, boxes=boxes).masks
    ref_points = predict(sam, image, points=centres[:, None]).masks
    return {
        "input": f"synthetic scene {image.shape[0]}x{image.shape[1]} px, {len(boxes)} objects",
        "how": "the tool's resize (PIL bilinear), its padding point (0, 0)/-1 after every "
        "prompt, token-0 masks, against samtune.predict",
        "box_mean_iou": float(iou(tool_boxes, ref_boxes).mean()),
        "point_mean_iou": float(iou(tool_points, ref_points).mean()),
    }

"""SAM's three steps, written once: encode images, decode prompts, pick the best candidate.

Training (:class:`samtune.train.loop.SamTrainStep`), evaluation (:mod:`samtune.evaluate`) and
:func:`samtune.predict.predict` all run SAM through these functions. They do not move or cast
tensors (gradients and autocast pass through untouched); :func:`to_model` does that for
callers whose inputs live on the CPU.

Shapes: M prompts; K candidates per prompt (3 with ``multimask``, else 1); r = the decoder's
low-resolution mask side (256 for SAM's 1024-pixel images). Coordinates are model pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class Decoded(NamedTuple):
    """The mask decoder's output, one row per prompt."""

    pred_masks: torch.Tensor
    """(M, K, r, r) low-resolution mask logits."""
    iou_scores: torch.Tensor
    """(M, K) the IoU head's estimate of each candidate's IoU."""


class Best(NamedTuple):
    """The candidate the IoU head rates highest, per prompt."""

    masks: torch.Tensor
    """(M, ...) the chosen candidate (logits or masks, whatever was given)."""
    scores: torch.Tensor
    """(M,) its IoU estimate."""
    index: torch.Tensor
    """(M,) int64, which candidate it is."""


def to_model(sam: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` on ``sam``'s device; floating-point tensors also in its dtype."""
    param = next(sam.parameters())
    if tensor.is_floating_point():
        return tensor.to(param.device, param.dtype)
    return tensor.to(param.device)


def encode_images(sam: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) preprocessed images -> (B, C, s, s) image embeddings (the vision encoder).

    The same computation as ``SamModel.get_image_embeddings``; differentiable, so the
    encoder trains when its parameters require gradients.
    """
    return sam.vision_encoder(pixel_values).last_hidden_state


def decode(
    sam: nn.Module,
    embeddings: torch.Tensor,
    *,
    boxes: torch.Tensor | None = None,
    points: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    mask_inputs: torch.Tensor | None = None,
    multimask: bool = False,
) -> Decoded:
    """Prompt encoder + mask decoder for M prompts on image embeddings.

    Args:
        sam: a ``transformers.SamModel`` (with or without an adapter).
        embeddings: (M, C, s, s), one embedding per prompt (gather them with
            ``image_embeddings.index_select(0, image_index)``: its backward is deterministic
            on CPU, advanced indexing's is not), or (1, C, s, s) shared by all M prompts of
            one image (no ``mask_inputs`` then).
        boxes: (M, 4) XYXY.
        points: (M, k, 2) (x, y), with ``labels`` (M, k): 1 positive, 0 negative, -10 padding.
        mask_inputs: (M, 1, r, r) low-resolution logits fed back (e.g. the previous round's).
        multimask: 3 candidates per prompt instead of 1.

    Returns:
        :class:`Decoded` with ``pred_masks`` (M, K, r, r) and ``iou_scores`` (M, K), in the
        model's dtype, differentiable.
    """
    prompts = {"input_boxes": boxes, "input_points": points, "input_labels": labels}
    given = [v for v in prompts.values() if v is not None]
    if not given:
        raise ValueError("decode needs boxes and/or points")
    n = given[0].shape[0]
    shared = embeddings.shape[0] == 1 and n != 1
    if not shared and embeddings.shape[0] != n:
        raise ValueError(f"{embeddings.shape[0]} embeddings for {n} prompts; give M or 1")
    if shared and mask_inputs is not None:
        raise ValueError("mask_inputs need one embedding per prompt, not one shared")
    # Shared: prompts go on SAM's prompt axis of one image; else one prompt per image.
    kwargs = {k: (v[None] if shared else v[:, None]) for k, v in prompts.items() if v is not None}
    if mask_inputs is not None:
        kwargs["input_masks"] = mask_inputs
    out = sam(image_embeddings=embeddings, multimask_output=multimask, **kwargs)
    if shared:
        return Decoded(out.pred_masks[0], out.iou_scores[0])
    return Decoded(out.pred_masks[:, 0], out.iou_scores[:, 0])


def best_candidate(pred_masks: torch.Tensor, iou_scores: torch.Tensor) -> Best:
    """The candidate the IoU head rates highest (as SAM picks at inference).

    Args:
        pred_masks: (M, K, ...) candidates (low-res logits, or masks at any resolution).
        iou_scores: (M, K).

    Returns:
        :class:`Best`: ``masks`` (M, ...), ``scores`` (M,), ``index`` (M,). Selected with
        ``gather``, so gradients reach exactly the chosen candidates.
    """
    index = iou_scores.argmax(dim=1)
    scores = iou_scores.gather(1, index[:, None])[:, 0]
    shape = (-1, 1, *pred_masks.shape[2:])
    pick = index.view(-1, *[1] * (pred_masks.dim() - 1)).expand(shape)
    return Best(pred_masks.gather(1, pick)[:, 0], scores, index)


__all__ = ["Best", "Decoded", "best_candidate", "decode", "encode_images", "to_model"]

"""SAM's three steps, written once: encode images, decode prompts, pick the best candidate.

Training (:class:`samtune.train.loop.SamTrainStep`), evaluation (:mod:`samtune.evaluate`) and
:func:`samtune.segment.prompted.predict` all run SAM through these functions, for every family
(:mod:`samtune.models.family`: ``SamModel``, ``SamHQModel``, ``Sam2Model`` and its kin
``Sam3TrackerModel`` and ``EdgeTamModel``). They do not move or cast
tensors (gradients and autocast pass through untouched); :func:`to_model` does that for
callers whose inputs live on the CPU.

What the encoder hands the decoder (:data:`Embeddings`) depends on the family: SAM's image
embeddings (a tensor), SAM-HQ's embeddings and its first global block's features, SAM 2's
three FPN levels (tuples of tensors, batch first). :func:`select_embeddings`,
:func:`map_embeddings` and :func:`embeddings_batch` treat both forms alike.

Shapes: M prompts; K candidates per prompt (3 with ``multimask``, else 1); r = the decoder's
low-resolution mask side (256 for 1024-pixel images). Coordinates are model pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeAlias

import torch
from torch import nn

from .family import SAM, SAM_HQ, family_of

Embeddings: TypeAlias = torch.Tensor | tuple[torch.Tensor, ...]
"""What the mask decoder consumes of one batch of images (batch first): SAM: (B, C, s, s);
SAM-HQ: ((B, C, s, s), (B, s, s, D)); SAM 2 and its kin (``Family.sam2_like``): ((B, C, 4s, 4s),
(B, C, 2s, 2s), (B, C, s, s))."""

NO_OBJECT_LOGIT = -1024.0
"""The mask logit SAM 2 gives every pixel when its object-score head says "no object"."""


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


def map_embeddings(
    fn: Callable[[torch.Tensor], torch.Tensor], embeddings: Embeddings
) -> Embeddings:
    """``fn`` applied to each tensor of ``embeddings`` (a tensor or a tuple of them)."""
    if torch.is_tensor(embeddings):
        return fn(embeddings)
    return tuple(fn(t) for t in embeddings)


def select_embeddings(embeddings: Embeddings, index: torch.Tensor) -> Embeddings:
    """``index_select(0, index)`` on each tensor: its backward is deterministic on CPU,
    advanced indexing's (``index_put_`` with accumulate) is not."""
    return map_embeddings(lambda t: t.index_select(0, index), embeddings)


def embeddings_batch(embeddings: Embeddings) -> int:
    """How many images ``embeddings`` holds."""
    first = embeddings if torch.is_tensor(embeddings) else embeddings[0]
    return int(first.shape[0])


def stack_embeddings(per_image: list[Embeddings]) -> Embeddings:
    """Stack per-image embeddings (no batch axis) into one batch."""
    if torch.is_tensor(per_image[0]):
        return torch.stack(per_image)
    return tuple(torch.stack(parts) for parts in zip(*per_image, strict=True))


def unbind_embeddings(embeddings: Embeddings) -> list[Embeddings]:
    """Split a batch of embeddings into one entry per image (inverse of :func:`stack_embeddings`)."""
    if torch.is_tensor(embeddings):
        return list(embeddings.unbind(0))
    return list(zip(*(t.unbind(0) for t in embeddings), strict=True))


def encode_images(sam: nn.Module, pixel_values: torch.Tensor) -> Embeddings:
    """(B, 3, S, S) preprocessed images -> what the family's mask decoder consumes.

    SAM: the image embeddings, as ``SamModel.get_image_embeddings``. SAM-HQ: those and the
    first global block's features (the only intermediate embedding its decoder reads). SAM 2
    and its kin (SAM 3's tracker, EdgeTAM): the vision encoder's FPN levels, high to low
    resolution, *before* the decoder's ``conv_s0``/``conv_s1`` and the no-memory embedding,
    which :func:`decode` applies (they are decoder and model parameters: an embedding cache
    must not freeze them); the levels the decoder reads only, as many as the model's
    ``backbone_feature_sizes`` (SAM 3's neck makes a fourth, 0.5x level that the prompted
    model drops). Differentiable, so the encoder trains when its parameters require gradients.
    """
    family = family_of(sam)
    out = sam.vision_encoder(pixel_values)
    if family is SAM_HQ:
        return out.last_hidden_state, out.intermediate_embeddings[0]
    if family.sam2_like:
        return tuple(out.fpn_hidden_states)[: len(sam.backbone_feature_sizes)]
    return out.last_hidden_state


def _no_memory_reaches_decoder(sam: nn.Module) -> bool:
    """Whether the model's own ``forward`` adds its no-memory embedding to the level the
    decoder reads. ``Sam3TrackerModel`` adds it to the *last* FPN level before keeping as
    many levels as ``backbone_feature_sizes``: with SAM 3's four-level neck the sum lands on
    the dropped 0.5x level and never reaches the decoder. samtune computes what the
    transformers model computes, so its masks equal ``model(pixel_values=...)``'s."""
    levels = getattr(sam.config.vision_config, "scale_factors", None)
    return levels is None or len(levels) <= len(sam.backbone_feature_sizes)


def _decoder_inputs(sam: nn.Module, embeddings: Embeddings) -> dict:
    """The keyword arguments of the family's ``forward`` that carry ``embeddings``."""
    family = family_of(sam)
    if family is SAM:
        return {"image_embeddings": embeddings}
    if family is SAM_HQ:
        main, vit_features = embeddings
        return {"image_embeddings": main, "intermediate_embeddings": [vit_features]}
    s0, s1, main = embeddings  # a sam2_like family
    decoder = sam.mask_decoder
    if _no_memory_reaches_decoder(sam):
        main = main + sam.no_memory_embedding.reshape(1, -1, 1, 1)
    return {"image_embeddings": [decoder.conv_s0(s0), decoder.conv_s1(s1), main]}


def decode(
    sam: nn.Module,
    embeddings: torch.Tensor,
    *,
    boxes: torch.Tensor | None = None,
    points: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    mask_inputs: torch.Tensor | None = None,
    multimask: bool = False,
    empty_absent: bool = False,
) -> Decoded:
    """Prompt encoder + mask decoder for M prompts on image embeddings.

    Args:
        sam: a ``SamModel``, ``SamHQModel``, ``Sam2Model``, ``Sam3TrackerModel`` or
            ``EdgeTamModel`` (with or without an adapter).
        embeddings: what :func:`encode_images` returned, one entry per prompt (M images;
            gather them with :func:`select_embeddings`), or one image's (batch 1) shared by
            all M prompts (no ``mask_inputs`` then).
        boxes: (M, 4) XYXY.
        points: (M, k, 2) (x, y), with ``labels`` (M, k): 1 positive, 0 negative, -10 padding.
        mask_inputs: (M, 1, r, r) low-resolution logits fed back (e.g. the previous round's).
        multimask: 3 candidates per prompt instead of 1.
        empty_absent: SAM 2 and its kin only: where its object-score head says the prompted object is
            absent (logit <= 0), every candidate's logits become :data:`NO_OBJECT_LOGIT` (an
            empty mask), as SAM 2's own heads do. For evaluation and prediction; training
            keeps the raw logits (the gradient would vanish).

    Returns:
        :class:`Decoded` with ``pred_masks`` (M, K, r, r) and ``iou_scores`` (M, K), in the
        model's dtype, differentiable.
    """
    prompts = {"input_boxes": boxes, "input_points": points, "input_labels": labels}
    given = [v for v in prompts.values() if v is not None]
    if not given:
        raise ValueError("decode needs boxes and/or points")
    n = given[0].shape[0]
    batch = embeddings_batch(embeddings)
    shared = batch == 1 and n != 1
    if not shared and batch != n:
        raise ValueError(f"{batch} embeddings for {n} prompts; give M or 1")
    if shared and mask_inputs is not None:
        raise ValueError("mask_inputs need one embedding per prompt, not one shared")
    # Shared: prompts go on SAM's prompt axis of one image; else one prompt per image.
    kwargs = {k: (v[None] if shared else v[:, None]) for k, v in prompts.items() if v is not None}
    if mask_inputs is not None:
        kwargs["input_masks"] = mask_inputs
    out = sam(multimask_output=multimask, **_decoder_inputs(sam, embeddings), **kwargs)
    pred_masks = out.pred_masks
    object_scores = getattr(out, "object_score_logits", None)
    if empty_absent and object_scores is not None:
        present = (object_scores > 0)[..., None, None]  # (B, P, 1, 1, 1)
        pred_masks = torch.where(present, pred_masks, pred_masks.new_tensor(NO_OBJECT_LOGIT))
    if shared:
        return Decoded(pred_masks[0], out.iou_scores[0])
    return Decoded(pred_masks[:, 0], out.iou_scores[:, 0])


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


__all__ = [
    "NO_OBJECT_LOGIT",
    "Best",
    "Decoded",
    "Embeddings",
    "best_candidate",
    "decode",
    "embeddings_batch",
    "encode_images",
    "map_embeddings",
    "select_embeddings",
    "stack_embeddings",
    "to_model",
    "unbind_embeddings",
]

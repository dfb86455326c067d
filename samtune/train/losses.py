"""SAM's training loss: focal + dice per pixel (20:1) plus MSE on the IoU head.

From the Segment Anything paper (Kirillov et al. 2023, appendix A): the mask is supervised with
a linear combination of focal and dice loss in a 20:1 ratio, and the IoU prediction head with
the mean squared error between its prediction and the IoU of the predicted mask with the ground
truth. When the model outputs several masks for an ambiguous prompt, only the mask with the
lowest loss is back-propagated ("best of three").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossOutput:
    """The loss of one decoder call over ``M`` prompts.

    ``total`` is a scalar; ``focal``, ``dice``, ``iou_mse`` are scalars (means over prompts) kept
    detached for logging; ``iou`` (M,) is the real IoU of each selected mask; ``best`` (M,) the
    index of the selected mask among the K outputs.
    """

    total: torch.Tensor
    focal: torch.Tensor
    dice: torch.Tensor
    iou_mse: torch.Tensor
    iou: torch.Tensor
    best: torch.Tensor


def sigmoid_focal(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float
) -> torch.Tensor:
    """Element-wise sigmoid focal loss (RetinaNet), ``alpha < 0`` for no weighting; same shape."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Per-mask focal loss: ``logits``/``targets`` (..., H, W) -> (...), mean over pixels."""
    return sigmoid_focal(logits, targets.to(logits.dtype), alpha, gamma).flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Per-mask soft dice loss: ``logits``/``targets`` (..., H, W) -> (...), in [0, 1]."""
    targets = targets.to(logits.dtype)
    prob = logits.sigmoid().flatten(-2)
    targets = targets.flatten(-2)
    inter = (prob * targets).sum(-1)
    return 1 - (2 * inter + eps) / (prob.sum(-1) + targets.sum(-1) + eps)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits > 0`` with boolean ``targets``, (..., H, W) -> (...); empty/empty = 1."""
    pred = logits > 0
    targets = targets.bool()
    inter = (pred & targets).flatten(-2).sum(-1).float()
    union = (pred | targets).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(
    pred_masks: torch.Tensor,
    iou_pred: torch.Tensor,
    targets: torch.Tensor,
    *,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    iou_weight: float = 1.0,
) -> LossOutput:
    """The SAM loss for ``M`` prompts with ``K`` candidate masks each (K = 1 or 3).

    Args:
        pred_masks: (M, K, H, W) mask logits (the decoder's low-resolution output).
        iou_pred: (M, K) the IoU head's predictions.
        targets: (M, H, W) ground-truth masks (bool or {0, 1}) at the same resolution.

    Returns:
        :class:`LossOutput`; ``total`` = mean over prompts of
        ``min_k(focal_weight * focal_k + dice_weight * dice_k) + iou_weight * mean_k (iou_pred_k - iou_k)^2``.
    """
    if pred_masks.ndim != 4 or targets.ndim != 3 or pred_masks.shape[0] != targets.shape[0]:
        raise ValueError(
            f"expected pred_masks (M,K,H,W) and targets (M,H,W); found {tuple(pred_masks.shape)} "
            f"and {tuple(targets.shape)}"
        )
    logits = pred_masks.float()
    tgt = targets.unsqueeze(1).expand_as(logits)
    focal = sigmoid_focal_loss(logits, tgt)  # (M, K)
    dice = dice_loss(logits, tgt)  # (M, K)
    mask_loss = focal_weight * focal + dice_weight * dice
    best = mask_loss.argmin(dim=1)  # (M,)
    pick = best.unsqueeze(1)
    real_iou = mask_iou(logits.detach(), tgt)  # (M, K), no gradient: a target
    iou_mse = F.mse_loss(iou_pred.float(), real_iou, reduction="none").mean(dim=1)
    total = (mask_loss.gather(1, pick).squeeze(1) + iou_weight * iou_mse).mean()
    return LossOutput(
        total=total,
        focal=focal.gather(1, pick).mean().detach(),
        dice=dice.gather(1, pick).mean().detach(),
        iou_mse=iou_mse.mean().detach(),
        iou=real_iou.gather(1, pick).squeeze(1),
        best=best,
    )

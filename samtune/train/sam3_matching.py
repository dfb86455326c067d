"""One-to-one Hungarian matching of SAM 3's DETR queries to the ground-truth instances of a prompt.

The cost is the one Meta's trainer uses: ``sam3.train.matcher.BinaryHungarianMatcherV2`` with
``focal: true, stable: false`` (``sam3/train/configs/roboflow_v100/
roboflow_v100_full_ft_100_images.yaml``, ``scratch.matcher``)::

    C[q, t] = cost_bbox * |box_q - gt_t|_1 (cxcywh)  +  cost_class * focal(q)
              - cost_giou * GIoU(box_q, gt_t)
    focal(q) = -alpha (1 - p_q)^gamma log p_q + (1 - alpha) p_q^gamma log(1 - p_q),  p_q = sigmoid(x_q)

with cost_class 2, cost_bbox 5, cost_giou 2, alpha 0.25, gamma 2. The class cost depends on the
query only (one phrase per row: every target has the same class), and is solved per row with
:func:`scipy.optimize.linear_sum_assignment`.

Box format: ``Sam3Model`` returns ``pred_boxes`` as normalised XYXY (x1, y1, x2, y2 in [0, 1],
fractions of the image's width and height); ground-truth boxes use the same format. The L1 term
is taken on the (cx, cy, w, h) form of both, as Meta's is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ..errors import InputError, RunError


@dataclass(frozen=True)
class MatcherWeights:
    """Weights of the matching cost (defaults: Meta's ``scratch.matcher`` in the config above)."""

    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    alpha: float = 0.25
    gamma: float = 2.0


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` XYXY -> ``(..., 4)`` (cx, cy, w, h), same units."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def pairwise_giou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of every pair: ``(N, 4)`` x ``(M, 4)`` XYXY -> ``(N, M)``."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area1[:, None] + area2[None, :] - inter
    hull_lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    hull_rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    hull = (hull_rb - hull_lt).clamp(min=0).prod(-1)
    return inter / union - (hull - union) / hull


def query_class_cost(logits: torch.Tensor, weights: MatcherWeights) -> torch.Tensor:
    """Focal-style cost of calling each query positive: ``(Q,)`` logits -> ``(Q,)``."""
    prob = logits.sigmoid()
    return -weights.alpha * (1 - prob) ** weights.gamma * F.logsigmoid(logits) + (
        1 - weights.alpha
    ) * prob**weights.gamma * F.logsigmoid(-logits)


def matching_cost(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    gt_boxes: torch.Tensor,
    weights: MatcherWeights = MatcherWeights(),
) -> torch.Tensor:
    """Cost matrix of one row: ``(Q,)`` logits, ``(Q, 4)`` and ``(T, 4)`` normalised XYXY -> ``(Q, T)``."""
    cost_bbox = torch.cdist(xyxy_to_cxcywh(boxes), xyxy_to_cxcywh(gt_boxes), p=1)
    cost_giou = -pairwise_giou(boxes, gt_boxes)
    cost_class = query_class_cost(logits, weights)[:, None]
    return (
        weights.cost_bbox * cost_bbox
        + weights.cost_class * cost_class
        + weights.cost_giou * cost_giou
    )


def _check_inputs(logits: torch.Tensor, boxes: torch.Tensor, gt_boxes: list[torch.Tensor]) -> None:
    if logits.dim() != 2 or boxes.shape != (*logits.shape, 4):
        raise InputError(
            f"SAM 3 matching expects pred_logits (B, Q) and pred_boxes (B, Q, 4); found "
            f"{tuple(logits.shape)} and {tuple(boxes.shape)}: pass Sam3Model's outputs unchanged"
        )
    if len(gt_boxes) != logits.shape[0]:
        raise InputError(
            f"SAM 3 matching expects one ground-truth box tensor per row of the batch "
            f"({logits.shape[0]}); found {len(gt_boxes)}: give every (image, phrase) row its targets"
        )
    for row, gt in enumerate(gt_boxes):
        if gt.dim() != 2 or gt.shape[-1] != 4:
            raise InputError(
                f"SAM 3 matching expects ground-truth boxes (T, 4) per row; row {row} has "
                f"{tuple(gt.shape)}: pass an empty (0, 4) tensor for a row without instances"
            )


@torch.no_grad()
def hungarian_match(
    pred_logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    gt_boxes: list[torch.Tensor],
    weights: MatcherWeights = MatcherWeights(),
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Match queries to instances, one row (one image and one phrase) at a time.

    Args:
        pred_logits: ``(B, Q)`` or ``(B, Q, 1)`` query logits, the scores the loss trains (with
            Meta's joint scoring, :func:`samtune.train.sam3_losses.joint_logits`).
        pred_boxes: ``(B, Q, 4)`` normalised XYXY boxes (``Sam3Model``'s ``pred_boxes``).
        gt_boxes: ``B`` tensors ``(T_b, 4)``, normalised XYXY; ``T_b`` may be 0.
        weights: the cost weights (Meta's defaults).

    Returns:
        ``B`` pairs ``(query_idx, target_idx)`` of int64 tensors on ``pred_logits``' device, each of
        length ``min(Q, T_b)``, ordered by ``target_idx``.
    """
    logits = pred_logits.squeeze(-1) if pred_logits.dim() == 3 else pred_logits
    _check_inputs(logits, pred_boxes, gt_boxes)
    if not (torch.isfinite(logits).all() and torch.isfinite(pred_boxes).all()):
        raise RunError(
            "SAM 3 matching found non-finite pred_logits or pred_boxes (the class and box terms): "
            "lower the learning rate or check the inputs for NaN"
        )
    return [_match_row(logits[b], pred_boxes[b], gt, weights) for b, gt in enumerate(gt_boxes)]


def _match_row(
    logits: torch.Tensor, boxes: torch.Tensor, gt: torch.Tensor, weights: MatcherWeights
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(query_idx, target_idx)`` for one row, ordered by target; empty when ``T`` is 0."""
    device = logits.device
    if gt.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    cost = matching_cost(logits.float(), boxes.float(), gt.to(boxes.device).float(), weights)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    order = cols.argsort()
    query_idx = torch.as_tensor(rows[order], dtype=torch.long, device=device)
    return query_idx, torch.as_tensor(cols[order], dtype=torch.long, device=device)

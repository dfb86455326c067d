"""SAM 3's training losses for concept (phrase) prompts, as Meta's trainer computes them.

One row of a batch is one (image, phrase) pair: ``Sam3Model`` run on an image with one category
name. Its queries are matched one-to-one to the instances of that category
(:mod:`samtune.train.sam3_matching`) and the terms below are those of Meta's ``sam3`` package
(``sam3/train/loss/loss_fns.py``), with the weights of its fine-tuning config
(``sam3/train/configs/roboflow_v100/roboflow_v100_full_ft_100_images.yaml``, the ``loss`` block
and its commented segmentation variant that adds ``Masks``):

=============  ======  =====================================================================
term           weight  what it is (Meta's class)
=============  ======  =====================================================================
loss_ce        20      IoU-aware BCE over all queries: matched queries target
                       ``max(p^0.25 * IoU^0.75, 0.01)`` weighted 10, unmatched ones target 0
                       weighted ``p^2``; zero on rows whose category is absent; mean over
                       ``B x max(Q, 200)`` (``IABCEMdetr``, ``pad_n_queries: 200``)
presence_loss  20      BCE of the presence logit against "the category is in the image",
                       times 0.5 (focal alpha 0.5, gamma 0), mean over rows (``IABCEMdetr``)
loss_bbox      5       L1 of matched (cx, cy, w, h), summed, / number of boxes (``Boxes``)
loss_giou      2       1 - GIoU of matched boxes, summed, / number of boxes (``Boxes``)
loss_mask      200     sigmoid focal (alpha 0.25, gamma 2) of matched masks, mean over
                       pixels, summed, / number of boxes (``Masks``)
loss_dice      10      dice of matched masks, summed, / number of boxes (``Masks``)
=============  ======  =====================================================================

The scores trained (and matched) are Meta's joint scores (``supervise_joint_box_scores``, on in
``sam3/model_builder.py`` whenever the presence token is): ``logit(sigmoid(class) *
sigmoid(presence))`` clamped to [-10, 10]. "Number of boxes" is the batch's instance count,
at least 1. The total is ``sqrt(B) * sum(weight * term)`` (``scale_by_find_batch_size: True``)
over the last decoder layer and any auxiliary layers (every term but the mask ones; Meta's
``compute_aux``), unless ``aux_loss`` is off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError, RunError
from .losses import sigmoid_focal
from .sam3_matching import MatcherWeights, hungarian_match, xyxy_to_cxcywh

MASK_TERMS = ("loss_mask", "loss_dice")
# Which loss terms each model output feeds: named in the error when an output is not finite.
_FEEDS = {
    "pred_logits": "loss_ce",
    "presence_logits": "presence_loss and loss_ce",
    "pred_boxes": "loss_bbox, loss_giou and loss_ce",
    "pred_masks": "loss_mask and loss_dice",
}


@dataclass
class Sam3LossConfig:
    """Weights and parameters of the SAM 3 loss; defaults are Meta's fine-tuning config.

    Source: ``sam3/train/configs/roboflow_v100/roboflow_v100_full_ft_100_images.yaml``
    (facebookresearch/sam3): ``Boxes`` (5, 2), ``IABCEMdetr`` (20, 20; pos_weight 10, alpha 0.25,
    gamma 2, pad_n_queries 200, presence alpha 0.5 / gamma 0 from the class defaults), ``Masks``
    (200, 10; alpha 0.25, gamma 2), ``scale_by_find_batch_size: True``; the matcher is
    ``scratch.matcher``; joint scores from ``sam3/model_builder.py``. ``aux_loss``: Meta's
    model hands the loss every decoder layer's outputs while it trains (``aux_outputs``,
    ``sam3/model/sam3_image.py``), and ``Boxes`` and ``IABCEMdetr`` keep their default
    ``compute_aux=True`` (``Masks`` sets ``compute_aux: false``), with the same weights.
    """

    weight_ce: float = 20.0
    weight_presence: float = 20.0
    weight_bbox: float = 5.0
    weight_giou: float = 2.0
    weight_mask: float = 200.0
    weight_dice: float = 10.0
    pos_weight: float = 10.0
    iou_alpha: float = 0.25  # soft target p^alpha * IoU^(1 - alpha) of a matched query
    neg_gamma: float = 2.0  # an unmatched query's BCE is weighted p^gamma
    pad_n_queries: int | None = 200
    presence_alpha: float = 0.5
    presence_gamma: float = 0.0
    mask_alpha: float = 0.25
    mask_gamma: float = 2.0
    joint_scores: bool = True
    scale_by_batch_size: bool = True
    aux_loss: bool = True  # the terms but the mask ones on every earlier decoder layer too
    matcher: MatcherWeights = field(default_factory=MatcherWeights)

    def __post_init__(self) -> None:
        for name, value in self.weights().items():
            if not value >= 0:
                raise ConfigError(
                    f"SAM 3 loss weight for {name} must be >= 0; found {value}: "
                    "use 0 to turn the term off"
                )
        if self.pad_n_queries is not None and self.pad_n_queries < 1:
            raise ConfigError(
                f"SAM 3 loss pad_n_queries must be a positive query count or None; found "
                f"{self.pad_n_queries}: Meta's config uses 200"
            )
        for name in ("iou_alpha", "presence_alpha", "mask_alpha"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(
                    f"SAM 3 loss {name} must be in [0, 1]; found {getattr(self, name)}"
                )

    def weights(self) -> dict[str, float]:
        """Each term's weight in the total, by term name."""
        return {
            "loss_ce": self.weight_ce,
            "presence_loss": self.weight_presence,
            "loss_bbox": self.weight_bbox,
            "loss_giou": self.weight_giou,
            "loss_mask": self.weight_mask,
            "loss_dice": self.weight_dice,
        }


def joint_logits(pred_logits: torch.Tensor, presence_logits: torch.Tensor) -> torch.Tensor:
    """Meta's joint score logits: ``(B, Q)`` and ``(B,)`` -> ``(B, Q)``, clamped to [-10, 10].

    ``logit(sigmoid(x) * sigmoid(presence))`` with Meta's ``inverse_sigmoid`` (eps 1e-3).
    """
    prob = (pred_logits.sigmoid() * presence_logits.sigmoid()[:, None]).clamp(0, 1)
    return torch.log(prob.clamp(min=1e-3) / (1 - prob).clamp(min=1e-3)).clamp(-10.0, 10.0)


def matched_box_iou(
    boxes1: torch.Tensor, boxes2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and GIoU of aligned pairs: ``(N, 4)`` and ``(N, 4)`` XYXY -> two ``(N,)``."""
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(-1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(-1)
    inter = torch.min(boxes1[:, 2:], boxes2[:, 2:]) - torch.max(boxes1[:, :2], boxes2[:, :2])
    inter = inter.clamp(min=0).prod(-1)
    hull = torch.max(boxes1[:, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, :2], boxes2[:, :2])
    hull = hull.clamp(min=0).prod(-1)
    union = area1 + area2 - inter
    return inter / union, inter / union - (hull - union) / hull


def classification_loss(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    matched: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    present: torch.Tensor,
    cfg: Sam3LossConfig,
) -> torch.Tensor:
    """Meta's ``IABCEMdetr`` ``loss_ce``: scalar.

    ``logits`` ``(B, Q)`` scores, ``pred_boxes`` ``(B, Q, 4)`` normalised XYXY, ``matched`` =
    ``(row_idx, query_idx, gt_boxes)`` with ``gt_boxes`` ``(N, 4)`` normalised XYXY aligned to the
    pairs, ``present`` ``(B,)`` float 1 where the row's category has an instance.
    """
    rows, queries, gt = matched
    prob = logits.sigmoid()
    with torch.no_grad():
        target = torch.zeros_like(logits)
        target[rows, queries] = 1.0
        iou, _ = matched_box_iou(pred_boxes[rows, queries], gt)
        soft = target.clone()
        soft[rows, queries] = (
            prob[rows, queries] ** cfg.iou_alpha * iou ** (1 - cfg.iou_alpha)
        ).clamp(min=0.01)
    loss = (
        F.binary_cross_entropy_with_logits(logits, soft, reduction="none") * target * cfg.pos_weight
    )
    negative = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * (1 - target)
    loss = (loss + negative * prob**cfg.neg_gamma) * present[:, None]
    if cfg.pad_n_queries is None or logits.shape[1] >= cfg.pad_n_queries:
        return loss.mean()
    return loss.sum() / (cfg.pad_n_queries * logits.shape[0])


def presence_loss(
    presence_logits: torch.Tensor, present: torch.Tensor, cfg: Sam3LossConfig
) -> torch.Tensor:
    """Focal loss of ``(B,)`` presence logits against ``(B,)`` float targets, mean over rows."""
    return sigmoid_focal(presence_logits, present, cfg.presence_alpha, cfg.presence_gamma).mean()


def box_losses(
    pred_boxes: torch.Tensor,
    matched: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    num_boxes: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta's ``Boxes``: (L1 on cxcywh, 1 - GIoU), each summed over pairs / ``num_boxes``.

    ``pred_boxes`` ``(B, Q, 4)`` normalised XYXY; ``matched`` as in :func:`classification_loss`.
    """
    rows, queries, gt = matched
    src = pred_boxes[rows, queries]
    l1 = F.l1_loss(xyxy_to_cxcywh(src), xyxy_to_cxcywh(gt), reduction="none").sum() / num_boxes
    _, giou = matched_box_iou(src, gt)
    return l1, (1 - giou).sum() / num_boxes


def mask_losses(
    pred_masks: torch.Tensor,
    rows: torch.Tensor,
    queries: torch.Tensor,
    gt_masks: torch.Tensor,
    num_boxes: float,
    cfg: Sam3LossConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta's ``Masks`` (no point sampling): (focal, dice), each summed over pairs / ``num_boxes``.

    ``pred_masks`` ``(B, Q, h, w)`` logits; ``gt_masks`` ``(N, H, W)`` binary, aligned to the
    ``(rows, queries)`` pairs. As Meta does, predictions are resized to the targets' size
    (bilinear, ``align_corners=False``) when the two differ; the targets are not resized.
    """
    src = pred_masks[rows, queries]
    target = gt_masks.to(src.dtype)
    if src.shape[0] == 0:  # no instances: empty terms of the right shape (Meta's interpolate)
        target = target.new_zeros(src.shape)
    elif src.shape[-2:] != target.shape[-2:]:
        src = F.interpolate(
            src[:, None].float(), size=target.shape[-2:], mode="bilinear", align_corners=False
        )
        src, target = src[:, 0], target.float()
    src, target = src.flatten(1), target.flatten(1)
    focal = sigmoid_focal(src, target, cfg.mask_alpha, cfg.mask_gamma).mean(1).sum() / num_boxes
    prob = src.sigmoid()
    dice = 1 - (2 * (prob * target).sum(1) + 1) / (prob.sum(-1) + target.sum(-1) + 1)
    return focal, dice.sum() / num_boxes


def _squeeze_last(tensor: torch.Tensor, dims: int) -> torch.Tensor:
    """``tensor`` without a trailing size-1 axis when it has ``dims + 1`` axes."""
    return tensor.squeeze(-1) if tensor.dim() == dims + 1 and tensor.shape[-1] == 1 else tensor


def _layer_tensors(layer: dict, name: str, with_masks: bool) -> dict[str, torch.Tensor]:
    """``layer``'s logits ``(B, Q)``, presence ``(B,)``, boxes ``(B, Q, 4)`` (and masks), checked."""
    missing = [k for k in ("pred_logits", "presence_logits", "pred_boxes") if k not in layer]
    if missing:
        raise InputError(
            f"the SAM 3 loss expects {name} to hold pred_logits, presence_logits and pred_boxes; "
            f"{', '.join(missing)} missing: pass Sam3Model's outputs"
        )
    found = {
        "pred_logits": _squeeze_last(layer["pred_logits"], 2),
        "presence_logits": _squeeze_last(layer["presence_logits"], 1),
        "pred_boxes": layer["pred_boxes"],
    }
    if with_masks:
        found["pred_masks"] = layer["pred_masks"]
    batch, queries = found["pred_logits"].shape[:2] if found["pred_logits"].dim() == 2 else (-1, -1)
    expected = {
        "pred_logits": (batch, queries),
        "presence_logits": (batch,),
        "pred_boxes": (batch, queries, 4),
        "pred_masks": (batch, queries),
    }
    for key, tensor in found.items():
        shape = tuple(tensor.shape[:2]) if key == "pred_masks" else tuple(tensor.shape)
        if batch < 0 or shape != expected[key] or (key == "pred_masks" and tensor.dim() != 4):
            raise InputError(
                f"the SAM 3 loss expects {name} pred_logits (B, Q), presence_logits (B, 1), "
                f"pred_boxes (B, Q, 4) and pred_masks (B, Q, h, w); found {key} "
                f"{tuple(layer[key].shape)} with pred_logits {tuple(layer['pred_logits'].shape)}"
            )
        if not torch.isfinite(tensor).all():
            raise RunError(
                f"the SAM 3 loss found non-finite {name} {key} (feeding {_FEEDS[key]}): "
                "lower the learning rate, or check the model's inputs for NaN"
            )
    return found


def _check_targets(targets: list[dict], batch: int, with_masks: bool) -> None:
    """Raise :class:`InputError` unless ``targets`` holds ``batch`` rows of valid boxes (and masks)."""
    if len(targets) != batch:
        raise InputError(
            f"the SAM 3 loss expects one target per (image, phrase) row: {batch}; found "
            f"{len(targets)}: give every row a target, with (0, 4) boxes where the category is absent"
        )
    for row, target in enumerate(targets):
        boxes = target.get("boxes")
        if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
            shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
            raise InputError(
                f"the SAM 3 loss expects target boxes (T, 4) in row {row}; found {shape}"
            )
        if not torch.isfinite(boxes).all() or (boxes[:, 2:] <= boxes[:, :2]).any():
            raise InputError(
                f"the SAM 3 loss expects normalised XYXY target boxes with x2 > x1 and y2 > y1 in "
                f"row {row}; found an empty or non-finite box: drop empty annotations"
            )
        if with_masks:
            masks = target.get("masks")
            if (
                not isinstance(masks, torch.Tensor)
                or masks.dim() != 3
                or masks.shape[0] != boxes.shape[0]
            ):
                shape = (
                    tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
                )
                raise InputError(
                    f"the SAM 3 loss expects target masks ({boxes.shape[0]}, H, W) in row {row}, one "
                    f"per box; found {shape}: give every target masks, or leave pred_masks out"
                )


def _matched(
    tensors: dict[str, torch.Tensor], targets: list[dict], cfg: Sam3LossConfig
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor], list]:
    """The trained scores ``(B, Q)``, ``(row_idx, query_idx, gt_boxes)`` and the per-row matches."""
    logits = tensors["pred_logits"]
    if cfg.joint_scores:
        logits = joint_logits(logits, tensors["presence_logits"])
    gt_boxes = [t["boxes"].to(tensors["pred_boxes"]) for t in targets]
    matches = hungarian_match(
        logits.detach(), tensors["pred_boxes"].detach(), gt_boxes, cfg.matcher
    )
    rows = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)])
    queries = torch.cat([q for q, _ in matches])
    gt = torch.cat([gt_boxes[b][t] for b, (_, t) in enumerate(matches)])
    return logits, (rows, queries, gt), matches


def _layer_losses(
    tensors: dict[str, torch.Tensor], targets: list[dict], num_boxes: float, cfg: Sam3LossConfig
) -> dict[str, torch.Tensor]:
    """Every term for one decoder layer's outputs (mask terms when ``pred_masks`` is there)."""
    logits, matched, matches = _matched(tensors, targets, cfg)
    present = torch.tensor([float(len(t["boxes"]) > 0) for t in targets], device=logits.device)
    losses = {
        "loss_ce": classification_loss(
            logits, tensors["pred_boxes"], matched, present.to(logits.dtype), cfg
        ),
        "presence_loss": presence_loss(tensors["presence_logits"], present.to(logits.dtype), cfg),
    }
    losses["loss_bbox"], losses["loss_giou"] = box_losses(tensors["pred_boxes"], matched, num_boxes)
    if "pred_masks" in tensors:
        gt_masks = torch.cat(
            [
                targets[b]["masks"][t.to(targets[b]["masks"].device)]
                for b, (_, t) in enumerate(matches)
            ]
        )
        losses["loss_mask"], losses["loss_dice"] = mask_losses(
            tensors["pred_masks"],
            matched[0],
            matched[1],
            gt_masks.to(logits.device),
            num_boxes,
            cfg,
        )
    return losses


def sam3_loss(
    outputs: dict,
    targets: list[dict],
    cfg: Sam3LossConfig | None = None,
    num_boxes: float | None = None,
) -> dict[str, torch.Tensor]:
    """SAM 3's training loss for a batch of ``B`` (image, phrase) rows.

    Args:
        outputs: ``Sam3Model``'s outputs (a dict or its ``ModelOutput``): ``pred_logits``
            ``(B, Q)`` or ``(B, Q, 1)`` class logits, ``presence_logits`` ``(B, 1)`` or ``(B,)``,
            ``pred_boxes`` ``(B, Q, 4)`` normalised XYXY, optionally ``pred_masks`` ``(B, Q, h, w)``
            mask logits (without it the mask terms are 0), and optionally ``aux_outputs``: a list of
            dicts with the first three keys for earlier decoder layers (ignored when
            ``cfg.aux_loss`` is off).
        targets: ``B`` dicts: ``boxes`` ``(T_b, 4)`` normalised XYXY (``T_b = 0`` when the phrase's
            category is absent from the image) and, with ``pred_masks``, ``masks`` ``(T_b, H, W)``
            binary at any one size (predictions are resized to it).
        cfg: weights and parameters; Meta's defaults when ``None``.
        num_boxes: the instance count the box and mask terms are divided by; ``None`` counts
            ``targets`` (at least 1). Meta's trainer passes the count averaged over processes
            (``normalization: global``); a multi-process caller can pass that.

    Returns:
        Scalars by name: ``loss_ce``, ``presence_loss``, ``loss_bbox``, ``loss_giou``,
        ``loss_mask``, ``loss_dice``, the same with ``_aux_{i}`` for each auxiliary layer (no mask
        terms), and ``total``: ``sqrt(B)`` (with ``scale_by_batch_size``) times the weighted sum.

    Raises:
        InputError: a missing output or a shape that does not fit the others.
        RunError: a non-finite output or loss term (named in the message).
    """
    cfg = cfg or Sam3LossConfig()
    with_masks = outputs.get("pred_masks") is not None
    main = _layer_tensors(outputs, "outputs", with_masks)
    _check_targets(targets, main["pred_logits"].shape[0], with_masks)
    if num_boxes is None:
        num_boxes = max(float(sum(len(t["boxes"]) for t in targets)), 1.0)
    losses = _layer_losses(main, targets, num_boxes, cfg)
    if not with_masks:
        losses.update({k: main["pred_logits"].new_zeros(()) for k in MASK_TERMS})
    for i, aux in enumerate((outputs.get("aux_outputs") or []) if cfg.aux_loss else []):
        aux_losses = _layer_losses(
            _layer_tensors(aux, f"aux_outputs[{i}]", False), targets, num_boxes, cfg
        )
        losses.update({f"{k}_aux_{i}": v for k, v in aux_losses.items()})
    return _with_total(losses, cfg, main["pred_logits"].shape[0])


def _with_total(
    losses: dict[str, torch.Tensor], cfg: Sam3LossConfig, batch: int
) -> dict[str, torch.Tensor]:
    """``losses`` plus ``total``; :class:`RunError` naming the first term that is not finite."""
    weights = cfg.weights()
    for name, value in losses.items():
        if not torch.isfinite(value):
            raise RunError(
                f"the SAM 3 loss term {name} is {value.item()}: lower the learning rate, or check "
                "the targets (boxes inside the image, masks of the right images)"
            )
    total = sum(weights[name.split("_aux_")[0]] * value for name, value in losses.items())
    scale = math.sqrt(batch) if cfg.scale_by_batch_size else 1.0
    return {**losses, "total": total * scale}

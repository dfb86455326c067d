"""One training step's pieces: the module DDP wraps, its inputs, the loss, frozen-encoder embeddings.

One forward call of :class:`SamTrainStep` per optimizer micro-step does everything that needs
gradients (image encoder when it trains, prompt encoder, mask decoder, and every round of
simulated corrective clicks), so DistributedDataParallel sees exactly one forward per backward.
The loop (:mod:`samtune.train.loop`) strings these together in Accelerate's ``accumulate``
idiom: forward, loss, backward, step, schedule, zero_grad.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.family import family_of
from ..models.identity import fingerprint
from ..models.sam_ops import (
    Embeddings,
    best_candidate,
    decode,
    encode_images,
    map_embeddings,
    select_embeddings,
    stack_embeddings,
    unbind_embeddings,
)
from ..prompting import sample_clicks
from . import losses
from .cache import EmbeddingCache, cache_key, image_digest
from .config import FitConfig


class SamTrainStep(nn.Module):
    """Everything that needs gradients in one forward: encoder (if training), prompts, decoder.

    ``forward`` returns one ``(pred_masks (M, K, r, r), iou_pred (M, K))`` pair per round:
    one round for box or point prompts, ``1 + rounds`` for interactive training.
    """

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.sam = sam

    def forward(
        self,
        image_index: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_embeddings: Embeddings | None = None,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        multimask: bool = False,
        rounds: int = 0,
        seed: int = 0,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Args (M prompts over B images):

        image_index: (M,) which image each prompt belongs to.
        pixel_values: (B, 3, S, S) preprocessed images (the encoder trains), or
        image_embeddings: precomputed :func:`~samtune.models.sam_ops.encode_images` output for the B
        images (the encoder is frozen).
        boxes: (M, 4) XYXY in model pixels; points: (M, k, 2) model pixels and
        point_labels: (M, k) (1 positive, 0 negative); targets: (M, r, r) bool low-res masks,
        needed for ``rounds > 0`` (simulated clicks); seed: for click sampling.
        """
        if pixel_values is not None:
            image_embeddings = encode_images(self.sam, pixel_values)
        # index_select, not image_embeddings[image_index]: the backward of advanced indexing
        # (index_put_ with accumulate) adds the prompts' gradients with multithreaded atomics
        # on CPU, in a different order each run; index_select's (index_add_) is ordered.
        embeddings = select_embeddings(image_embeddings, image_index)
        first = decode(self.sam, embeddings, boxes=boxes, points=points, labels=point_labels,
                       multimask=multimask)  # fmt: skip
        results = [(first.pred_masks, first.iou_scores)]
        if rounds:
            results += self._click_rounds(
                embeddings, points, point_labels, targets, first, rounds, seed
            )
        return results

    def _click_rounds(self, embeddings, points, labels, targets, first, rounds: int, seed: int):
        """Simulated corrective clicks: each round adds one click where the last mask is wrong."""
        generator = torch.Generator().manual_seed(seed)
        logits = best_candidate(*first).masks
        results = []
        for _ in range(rounds):
            click, label = sample_clicks(logits.detach(), targets, generator)
            # low-res pixel -> model pixel (centre of the low-res cell)
            scale = family_of(self.sam).image_size(self.sam.config) / logits.shape[-1]
            click_xy = (click.to(logits.dtype) + 0.5) * scale
            points = torch.cat([points, click_xy[:, None]], dim=1)
            labels = torch.cat([labels, label[:, None].to(labels.dtype)], dim=1)
            out = decode(self.sam, embeddings, points=points, labels=labels,
                         mask_inputs=logits.detach()[:, None])  # fmt: skip
            results.append((out.pred_masks, out.iou_scores))
            logits = out.pred_masks[:, 0]
        return results


def training_loss(
    rounds: list[tuple[torch.Tensor, torch.Tensor]],
    targets: torch.Tensor,
    weight: float,
    cfg: FitConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's loss (mean over rounds of focal, dice and IoU-head terms) and the last
    round's mean IoU (a statistic, detached)."""
    outputs = [
        losses.sam_loss(
            pred,
            iou,
            targets,
            focal_weight=cfg.focal_weight,
            dice_weight=cfg.dice_weight,
            iou_weight=cfg.iou_weight,
        )
        for pred, iou in rounds
    ]
    loss = weight * sum(o.total for o in outputs) / len(outputs)
    return loss, outputs[-1].iou.mean().detach()


class FrozenEncoderEmbeddings:
    """Image embeddings for frozen encoders: from the cache when there, else computed once.

    What is cached is :func:`~samtune.models.sam_ops.encode_images`' output, which depends on
    ``vision_encoder`` alone (its fingerprint keys the cache).

    ``on_encode(encoded, cached)`` (if given) is told, per batch, how many images the encoder
    ran on and how many came from the cache.
    """

    def __init__(self, sam, dataset, cache: EmbeddingCache | None, preprocess, accelerator,
                 on_encode=None) -> None:  # fmt: skip
        self.sam, self.dataset, self.cache, self.accelerator = sam, dataset, cache, accelerator
        self.keys: dict[int, str] = {}
        self.encoder_fp = fingerprint(sam.vision_encoder) if cache is not None else ""
        self.preprocess = preprocess
        self.on_encode = on_encode or (lambda encoded, cached: None)

    def _key(self, index: int) -> str:
        if index not in self.keys:
            image_path = getattr(self.dataset, "image_path", None)
            data = None
            if image_path is not None:
                try:
                    data = Path(image_path(index)).read_bytes()
                except (OSError, TypeError):
                    data = None
            if data is None:
                data = self.dataset[index].image
            self.keys[index] = cache_key(self.encoder_fp, self.preprocess, image_digest(data))
        return self.keys[index]

    def _encode(self, pixel_values: torch.Tensor) -> Embeddings:
        with self.accelerator.autocast():
            return map_embeddings(torch.Tensor.float, encode_images(self.sam, pixel_values))

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor, indices: list[int]) -> Embeddings:
        if self.cache is None:
            self.on_encode(len(indices), 0)
            return self._encode(pixel_values)
        found = [self.cache.get(self._key(i)) for i in indices]
        missing = [j for j, e in enumerate(found) if e is None]
        if missing:
            fresh = unbind_embeddings(self._encode(pixel_values[missing]))
            for j, emb in zip(missing, fresh, strict=True):
                self.cache.put(self._key(indices[j]), emb)
                found[j] = emb
        self.on_encode(len(missing), len(indices) - len(missing))
        device = pixel_values.device
        return stack_embeddings([map_embeddings(lambda t: t.to(device), e) for e in found])


def batch_inputs(
    batch: dict, cfg: FitConfig, embed, model, device
) -> tuple[dict[str, Any], torch.Tensor, float]:
    """Collated batch -> keyword arguments of :class:`SamTrainStep`, (M, r, r) targets, weight."""
    low = family_of(model).low_res_size(model.config)  # the decoder upsamples the grid 4x
    pixels = batch["pixel_values"]  # stacked by collate_prompted (pinned on a GPU machine)
    pixel_values = (pixels if torch.is_tensor(pixels) else torch.stack(list(pixels))).to(device)
    counts = [len(m) for m in batch["masks"]]
    image_index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    targets = torch.cat(
        [
            g.masks_to_model(m, size=low)
            for g, m in zip(batch["geometry"], batch["masks"], strict=True)
        ]
    ).to(device)
    weight = 1.0
    if not counts or sum(counts) == 0:
        # No instance on this process: one dummy prompt with zero weight keeps every process
        # doing the same forward/backward (DDP needs that).
        batch = dict(batch)
        batch["boxes"] = [torch.tensor([[0.0, 0.0, 1.0, 1.0]])]
        batch["points"] = [torch.tensor([[[0.5, 0.5]]])]
        batch["point_labels"] = [torch.ones(1, 1, dtype=torch.long)]
        image_index = torch.zeros(1, dtype=torch.long)
        targets = torch.zeros(1, low, low, dtype=torch.bool, device=device)
        weight = 0.0
    inputs: dict[str, Any] = {"image_index": image_index.to(device)}
    if embed is not None:
        inputs["image_embeddings"] = embed(pixel_values, [int(i) for i in batch["index"]])
    else:
        inputs["pixel_values"] = pixel_values
    inputs.update(_prompt_inputs(batch, cfg, targets, device))
    return inputs, targets.bool(), weight


def _prompt_inputs(batch: dict, cfg: FitConfig, targets: torch.Tensor, device) -> dict[str, Any]:
    def cat(key: str) -> torch.Tensor:
        return torch.cat([torch.as_tensor(x) for x in batch[key]]).to(device)

    if cfg.prompt == "box":
        return {"boxes": cat("boxes").float()}
    inputs = {"points": cat("points").float(), "point_labels": cat("point_labels").long()}
    inputs["multimask"] = True
    if cfg.prompt == "interactive":
        inputs["rounds"] = cfg.interactive_rounds
        inputs["targets"] = targets
    return inputs

"""Evaluation protocols: prompt every ground-truth instance, score the masks SAM returns.

One image at a time: the image is encoded once (``model.get_image_embeddings``), then all its
prompts go through the prompt encoder and mask decoder in chunks of ``prompt_batch``. Images
are sharded over Accelerate processes; every process returns integer pixel counts per
instance, which are gathered and de-duplicated by ``(image index, instance id)`` before any
averaging, so 1 process and N processes give exactly the same numbers.

Protocols (``prompt=``):

- ``box``: one box per instance, the ground-truth box (optionally jittered); single-mask output.
- ``point``: one positive point per instance at the object's centre (maximum of the distance
  transform); multimask output, scored on the IoU head's choice (headline) and on the best
  of the candidates (``oracle``).
- ``clicks:N``: N rounds of simulated corrective clicks (RITM protocol): click 1 as in
  ``point`` (IoU head's choice of the multimask outputs), then each click at the centre of the
  largest error region (positive in a missed region, negative in a false one), with all
  clicks so far and the previous low-resolution logits fed back as mask input, single output.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, UnknownNameError
from . import metrics as M
from .report import EvalReport

PROTOCOLS = ("box", "point", "clicks:N")


@dataclass(frozen=True)
class Protocol:
    """A parsed ``prompt`` string: ``kind`` is ``box``, ``point`` or ``clicks``."""

    kind: str
    clicks: int = 0

    @property
    def name(self) -> str:
        return f"clicks:{self.clicks}" if self.kind == "clicks" else self.kind


def parse_protocol(spec: str | Protocol) -> Protocol:
    """Parse ``"box"``, ``"point"`` or ``"clicks:N"`` (N >= 1).

    Raises:
        UnknownNameError: an unknown protocol name.
        ConfigError: ``clicks`` without a valid positive N.
    """
    if isinstance(spec, Protocol):
        return spec
    s = str(spec).strip().lower()
    if s in ("box", "point"):
        return Protocol(s)
    if s.startswith("click"):
        m = re.fullmatch(r"clicks?:(\d+)", s)
        if not m or int(m.group(1)) < 1:
            raise ConfigError(
                f"invalid click protocol {spec!r}: expected 'clicks:N' with N a positive "
                "integer, e.g. 'clicks:5'"
            )
        return Protocol("clicks", int(m.group(1)))
    raise UnknownNameError(
        f"unknown evaluation protocol {spec!r}; choose one of {', '.join(PROTOCOLS)} "
        "(e.g. --prompt clicks:5)"
    )


# --------------------------------------------------------------------------- helpers


def _unwrap(model: torch.nn.Module, accelerator=None) -> torch.nn.Module:
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    while hasattr(model, "module") and not hasattr(model, "get_image_embeddings"):
        model = model.module
    return model


def _param(model: torch.nn.Module) -> torch.Tensor:
    return next(model.parameters())


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _counts_rows(pred: torch.Tensor, target: torch.Tensor) -> list[dict]:
    c = M.mask_counts(pred, target)
    return [
        {k: int(c[k][i]) for k in ("intersection", "union", "pred_area", "target_area")}
        for i in range(pred.shape[0])
    ]


class _ImageContext:
    """Everything about one image that the protocols need, computed once."""

    def __init__(self, model, sample, cfg, index: int):
        from ..data.transforms import preprocess_image

        self.sample = sample
        self.index = index
        pixel_values, self.geometry = preprocess_image(sample.image, cfg)
        p = _param(model)
        self.embeddings = model.get_image_embeddings(pixel_values[None].to(p.device, p.dtype))

    def decode(self, model, *, multimask: bool, **prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """Run prompt encoder + mask decoder; returns low-res logits (P, M, h, w), scores (P, M)."""
        p = _param(model)
        prompts = {
            k: (v.to(p.device, p.dtype) if v.is_floating_point() else v.to(p.device))
            for k, v in prompts.items()
            if v is not None
        }
        out = model(image_embeddings=self.embeddings, multimask_output=multimask, **prompts)
        # (B, P, M, ...) -> (B*P, M, ...): B = 1 image, or B = instances for clicks
        return out.pred_masks.flatten(0, 1).float(), out.iou_scores.flatten(0, 1).float()

    def to_original(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., h, w) low-res logits -> (..., H, W) bool masks at the original resolution."""
        return self.geometry.logits_to_original(logits.float()) > 0  # on the model's device


def _rng(seed: int, index: int) -> np.random.Generator:
    # Seeded per image so prompts do not depend on how images are sharded over processes.
    return np.random.default_rng([seed, index])


# --------------------------------------------------------------------------- protocols


def _run_box(model, ctx, gt, boxes, chunk, jitter, seed):
    from ..data import prompts as P

    if jitter > 0:
        boxes = np.asarray(P.jitter_boxes(boxes, noise=jitter, rng=_rng(seed, ctx.index)))
    model_boxes = torch.as_tensor(ctx.geometry.coords_to_model(torch.as_tensor(boxes)))
    rows, scores, masks = [], [], []
    for s in range(0, len(boxes), chunk):
        logits, iou = ctx.decode(
            model, multimask=False, input_boxes=model_boxes[None, s : s + chunk]
        )
        pred = ctx.to_original(logits[:, 0])
        rows += _counts_rows(pred, gt[s : s + chunk])
        scores += iou[:, 0].tolist()
        masks.append(pred)
    return rows, scores, torch.cat(masks), {}


def _center_points(ctx, gt_np):
    from ..data import prompts as P

    pts = P.points_from_masks(gt_np, n_pos=1, n_neg=0, mode="center", rng=_rng(0, ctx.index))
    points = pts[0] if isinstance(pts, tuple) else pts
    return np.asarray(points, dtype=np.float32).reshape(len(gt_np), -1, 2)[:, :1]


def _run_point(model, ctx, gt, gt_np, chunk):
    points = _center_points(ctx, gt_np)
    model_points = torch.as_tensor(ctx.geometry.coords_to_model(torch.as_tensor(points)))
    rows, scores, masks, extra = [], [], [], {"oracle": []}
    for s in range(0, len(points), chunk):
        mp = model_points[s : s + chunk]
        logits, iou = ctx.decode(
            model,
            multimask=True,
            input_points=mp[None],
            input_labels=torch.ones(mp.shape[:2], dtype=torch.long)[None],
        )
        pred = ctx.to_original(logits)  # (p, 3, H, W)
        target = gt[s : s + chunk]
        counts = [_counts_rows(pred[:, j], target) for j in range(pred.shape[1])]
        choice = iou.argmax(dim=1).tolist()
        for i, j in enumerate(choice):
            rows.append(counts[j][i])
            cand = [counts[k][i] for k in range(len(counts))]
            best = max(range(len(cand)), key=lambda k: (_iou(cand[k]), -k))
            extra["oracle"].append(cand[best])
            scores.append(float(iou[i, j]))
            masks.append(pred[i, j])
    return rows, scores, torch.stack(masks), extra


def _iou(row: dict) -> float:
    return float(M.iou_from_counts(row["intersection"], row["union"]))


def _run_clicks(model, ctx, gt, gt_np, chunk, n_clicks):
    from ..data import prompts as P

    first = torch.as_tensor(
        ctx.geometry.coords_to_model(torch.as_tensor(_center_points(ctx, gt_np)))
    )
    rows, scores, masks, curves = [], [], [], []
    emb = ctx.embeddings
    for s in range(0, len(gt_np), chunk):
        target = gt[s : s + chunk]
        n = target.shape[0]
        points = first[s : s + chunk].clone()  # (n, k, 2) model pixels
        labels = torch.ones(n, 1, dtype=torch.long)
        low_res = None
        curve: list[list[float]] = [[] for _ in range(n)]
        ctx.embeddings = emb.expand(n, -1, -1, -1)  # batch = instances: one mask input each
        try:
            for k in range(n_clicks):
                logits, iou = ctx.decode(
                    model,
                    multimask=k == 0,
                    input_points=points[:, None],
                    input_labels=labels[:, None],
                    input_masks=low_res,
                )  # logits (n, M, h, w) with batch = n, one prompt each
                choice = iou.argmax(dim=1)
                chosen = logits[torch.arange(n), choice]  # (n, h, w)
                score = iou[torch.arange(n), choice]
                pred = ctx.to_original(chosen)
                step = _counts_rows(pred, target)
                for i in range(n):
                    curve[i].append(_iou(step[i]))
                if k == n_clicks - 1:
                    break
                new_pts, new_lbl = [], []
                pred_np = pred.cpu().numpy()
                for i in range(n):
                    click = P.next_click(pred_np[i], gt_np[s + i])
                    if click is None:  # already perfect: a padding point the model ignores
                        click = (0, 0, P.PAD_LABEL)
                    new_pts.append(click[:2])
                    new_lbl.append(int(click[2]))
                mp = torch.as_tensor(
                    ctx.geometry.coords_to_model(torch.tensor(new_pts, dtype=torch.float32))
                ).reshape(n, 1, 2)
                points = torch.cat([points, mp.to(points.dtype)], dim=1)
                labels = torch.cat([labels, torch.tensor(new_lbl).reshape(n, 1)], dim=1)
                low_res = chosen[:, None]
        finally:
            ctx.embeddings = emb
        rows += step
        scores += score.tolist()
        masks.append(pred)
        curves += curve
    return rows, scores, torch.cat(masks), {"curves": curves}


# --------------------------------------------------------------------------- evaluate


def evaluate(
    model: torch.nn.Module,
    dataset,
    prompt: str | Protocol = "box",
    *,
    accelerator=None,
    prompt_batch: int = 32,
    jitter: float = 0.0,
    seed: int = 0,
    max_images: int | None = None,
    worst: int = 0,
    progress: bool | None = None,
    name: str | None = None,
) -> EvalReport:
    """Evaluate ``model`` on every non-crowd instance of ``dataset`` with one prompt protocol.

    Args:
        model: a ``transformers.SamModel`` (possibly prepared by Accelerate / with an adapter).
            It is put in eval mode for the run and its training mode restored afterwards.
        dataset: a ``samtune.data`` ``InstanceDataset`` (or any sequence of ``Sample``, with
            optional ``.categories`` ``{id: name}`` and ``.name``).
        prompt: ``"box"``, ``"point"`` or ``"clicks:N"`` (see the module docstring).
        accelerator: an ``accelerate.Accelerator``; images are sharded over its processes and
            the results gathered on every process. ``None``: this process does everything.
        prompt_batch: prompts per decoder call (memory: ``prompt_batch x H x W`` floats).
        jitter: box protocol only, relative box noise passed to ``prompts.jitter_boxes``
            (0 = exact ground-truth boxes). Seeded per image from ``seed``.
        seed: seed for the jitter.
        max_images: evaluate only the first ``max_images`` images (None: all; else >= 1).
        worst: keep the ``worst`` lowest-IoU predictions (RLE masks) for overlays.
        progress: show a progress bar (default: when stderr is a terminal, main process only).
        name: label for the report (default: the model's source).

    Returns:
        :class:`EvalReport`; ``report.metrics["miou"]`` is the headline mean instance IoU.

    Raises:
        UnknownNameError / ConfigError: a bad ``prompt`` or option value.
    """
    from ..models import base_fingerprint, model_source, preprocess_config
    from ..train.config import check_range, check_seed, check_type

    protocol = parse_protocol(prompt)
    check_type("prompt_batch", prompt_batch, int)
    check_range("prompt_batch", prompt_batch, minimum=1)
    check_type("jitter", jitter, float)
    check_range("jitter", jitter, minimum=0)
    check_seed("seed", seed)
    check_type("max_images", max_images, int | None)
    check_range("max_images", max_images, minimum=1)
    check_type("worst", worst, int)
    check_range("worst", worst, minimum=0)
    if jitter > 0 and protocol.kind != "box":
        raise ConfigError(f"jitter applies to the box protocol only, not {protocol.name!r}")

    sam = _unwrap(model, accelerator)
    was_training = sam.training
    sam.eval()
    cfg = preprocess_config(sam)
    categories = dict(getattr(dataset, "categories", {}) or {})
    n_images = len(dataset) if max_images is None else min(len(dataset), max_images)
    indices = list(range(n_images))
    rank, world = 0, 1
    if accelerator is not None and accelerator.num_processes > 1:
        rank, world = accelerator.process_index, accelerator.num_processes
        with accelerator.split_between_processes(indices, apply_padding=True) as shard:
            indices = list(shard)

    t0 = time.perf_counter()
    records, images, worst_heap = [], [], []
    n_prompts = 0
    bar = _progress(len(indices), progress and rank == 0 if progress is not None else rank == 0)
    try:
        with torch.no_grad():
            for index in indices:
                rec, img, wst = _evaluate_image(
                    sam,
                    dataset[index],
                    index,
                    cfg,
                    protocol,
                    prompt_batch,
                    jitter,
                    seed,
                    categories,
                    worst,
                )
                records += rec
                images.append(img)
                n_prompts += len(rec)
                for item in wst:
                    _push_worst(worst_heap, item, worst)
                bar(1)
    finally:
        bar(None)
        sam.train(was_training)
    seconds = time.perf_counter() - t0

    if world > 1:
        from accelerate.utils import gather_object

        records = gather_object(records)
        images = gather_object(images)
        worst_heap = gather_object(worst_heap)
        timing = gather_object([{"seconds": seconds, "prompts": n_prompts}])
        seconds = max(t["seconds"] for t in timing)
    records = _dedupe(records, ("image_index", "instance_id"))
    images = _dedupe(images, ("image_index",))
    worst_items = sorted(
        _dedupe(worst_heap, ("image_index", "instance_id")),
        key=lambda r: (r["iou"], r["image_index"], r["instance_id"]),
    )[:worst]

    metrics = _summarize(protocol, records, images, categories)
    return EvalReport(
        protocol=protocol.name,
        metrics=metrics,
        records=records,
        images=images,
        worst=worst_items,
        categories=categories,
        model={
            "name": name or model_source(sam),
            "source": model_source(sam),
            "fingerprint": base_fingerprint(sam),
        },
        dataset={
            "name": getattr(dataset, "name", type(dataset).__name__),
            "num_images": len(images),
        },
        timing={
            "seconds": seconds,
            "processes": world,
            "images_per_s": len(images) / seconds if seconds else float("nan"),
            "prompts_per_s": len(records) / seconds if seconds else float("nan"),
        },
        options={
            "prompt_batch": prompt_batch,
            "jitter": jitter,
            "seed": seed,
            "max_images": max_images,
        },
    )


def _progress(total: int, enabled: bool) -> Callable[[int | None], None]:
    import sys

    if not enabled or not sys.stderr.isatty():
        return lambda n: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="evaluating", unit="img")
    return lambda n: bar.close() if n is None else bar.update(n)


def _push_worst(heap: list, item: dict, k: int) -> None:
    # max-heap on IoU (negated) keeps the k lowest
    entry = (-item["iou"], item["image_index"], item["instance_id"], item)
    if len(heap) < k:
        heapq.heappush(heap, entry)
    elif entry[:3] > heap[0][:3]:
        heapq.heapreplace(heap, entry)


def _dedupe(rows: list, key: tuple[str, ...]) -> list:
    rows = [r[3] if isinstance(r, tuple) else r for r in rows]
    seen: dict[tuple, Any] = {}
    for r in rows:
        seen.setdefault(tuple(r[k] for k in key), r)
    return [seen[k] for k in sorted(seen)]


def _evaluate_image(model, sample, index, cfg, protocol, chunk, jitter, seed, categories, worst):
    masks = np.asarray(sample.masks, dtype=bool)
    crowd = np.asarray(getattr(sample, "iscrowd", np.zeros(len(masks), bool)), dtype=bool)
    device = _param(model).device
    masks_t = torch.from_numpy(masks).to(device)  # one host-to-device copy per image
    nonempty = masks_t.flatten(1).any(1).cpu().numpy() if len(masks) else np.zeros(0, bool)
    keep = ~crowd & nonempty
    image_rec = {
        "image_index": index,
        "image_id": int(sample.image_id),
        "num_instances": int(keep.sum()),
        "skipped_empty": int((~crowd & ~nonempty).sum()),
        "skipped_crowd": int(crowd.sum()),
    }
    cat_index = {cid: i + 1 for i, cid in enumerate(sorted(categories))}
    ids = np.asarray(sample.instance_ids)[keep]
    cats = np.asarray(sample.category_ids)[keep]
    keep_t = torch.from_numpy(keep).to(device)
    gt_np = masks[keep] if protocol.kind != "box" else None  # centre points/clicks need numpy
    h, w = masks.shape[1:] if masks.ndim == 3 else np.asarray(sample.image).shape[:2]
    extra: dict = {}
    if keep.any():
        ctx = _ImageContext(model, sample, cfg, index)
        gt = masks_t[keep_t]  # metrics are counted where the logits are
        if protocol.kind == "box":
            boxes = np.asarray(sample.boxes, dtype=np.float32)[keep]
            rows, scores, pred, extra = _run_box(model, ctx, gt, boxes, chunk, jitter, seed)
        elif protocol.kind == "point":
            rows, scores, pred, extra = _run_point(model, ctx, gt, gt_np, chunk)
        else:
            rows, scores, pred, extra = _run_clicks(model, ctx, gt, gt_np, chunk, protocol.clicks)
    else:
        rows, scores, pred = [], [], torch.zeros((0, h, w), dtype=torch.bool, device=device)

    records = []
    for i, row in enumerate(rows):
        rec = {
            "image_index": index,
            "image_id": int(sample.image_id),
            "instance_id": int(ids[i]),
            "category_id": int(cats[i]),
            **row,
            "iou": _iou(row),
            "score": float(scores[i]),
        }
        if "oracle" in extra:
            rec["oracle"] = extra["oracle"][i]
        if "curves" in extra:
            rec["ious"] = extra["curves"][i]
        records.append(rec)

    if cat_index:  # semantic segmentation: paint predicted and true masks into label maps
        k = len(cat_index) + 1
        pred_map = M.semantic_label_map(pred, [cat_index.get(int(c), 0) for c in cats], scores)
        all_cats = np.asarray(sample.category_ids)
        true_map = M.semantic_label_map(
            masks_t[torch.from_numpy(~crowd).to(device)],
            [cat_index.get(int(c), 0) for c in all_cats[~crowd]],
            ignore=torch.from_numpy(masks[crowd].any(0)) if crowd.any() else None,
        )
        image_rec["confusion"] = M.confusion_matrix(pred_map, true_map, k).tolist()

    worst_items = []
    if worst:
        pred_np = pred.cpu().numpy()
        for i, rec in enumerate(records):
            worst_items.append(
                {
                    "image_index": index,
                    "instance_id": rec["instance_id"],
                    "iou": rec["iou"],
                    "category_id": rec["category_id"],
                    "mask": _rle(pred_np[i]),
                }
            )
    return records, image_rec, worst_items


def _summarize(protocol: Protocol, records: list, images: list, categories: dict) -> dict:
    metrics = M.summarize_instances(records, categories)
    metrics["num_images"] = len(images)
    metrics["skipped_crowd"] = sum(i["skipped_crowd"] for i in images)
    metrics["skipped_empty"] = sum(i["skipped_empty"] for i in images)
    if protocol.kind == "point" and records:
        oracle = M.summarize_instances([{**r, **r["oracle"]} for r in records], categories)
        metrics["oracle"] = {
            k: oracle[k]
            for k in ("miou", "image_miou", "class_miou", "pooled_iou", "dice", "per_class")
        }
        metrics["miou_oracle"] = oracle["miou"]
    if protocol.kind == "clicks" and records:
        metrics.update(M.summarize_clicks([r["ious"] for r in records]))
    confs = [np.asarray(i["confusion"]) for i in images if "confusion" in i]
    if confs and categories:
        conf = np.sum(confs, axis=0)
        ious = M.semantic_iou(conf)
        names = ["background"] + [categories[c] for c in sorted(categories)]
        metrics["semantic_per_class"] = {
            n: (None if np.isnan(v) else float(v)) for n, v in zip(names, ious, strict=True)
        }
        metrics["semantic_miou"] = (
            float(np.nanmean(ious)) if not np.isnan(ious).all() else float("nan")
        )
    return metrics


__all__ = ["PROTOCOLS", "Protocol", "evaluate", "parse_protocol"]

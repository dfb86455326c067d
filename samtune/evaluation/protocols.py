"""Evaluation protocols: prompt every ground-truth instance, score the masks SAM returns.

One image at a time: the image is encoded once, then all its prompts go through the prompt
encoder and mask decoder in chunks of ``prompt_batch`` (both with :mod:`samtune.models.sam_ops`).
Images are sharded over Accelerate processes; every process returns integer pixel counts per
instance, which are gathered and de-duplicated by ``(image index, instance id)`` before any
averaging, so 1 process and N processes give exactly the same numbers.

Protocols (``prompt=``, parsed by :func:`samtune.prompting.parse_prompt`):

- ``box``: one box per instance, the ground-truth box (optionally jittered); single-mask output.
  The box is the mask's tight box, or with ``box_source="annotation"`` the annotation's own
  COCO ``bbox``.
- ``point``: one positive point per instance at the object's centre (maximum of the distance
  transform); multimask output, scored on the IoU head's choice (headline) and on the best
  of the candidates (``oracle``).
- ``clicks:N``: N rounds of simulated corrective clicks (RITM protocol): click 1 as in
  ``point`` (IoU head's choice of the multimask outputs), then each click at the centre of the
  largest error region (positive in a missed region, negative in a false one), with all
  clicks so far and the previous low-resolution logits fed back as mask input, single output.
- ``auto``: no ground-truth prompt; automatic mask generation on every image, scored as
  class-agnostic COCO instance segmentation (:mod:`samtune.evaluation.automatic`).
- ``text``: no ground-truth prompt; SAM 3 prompted by every category name on every image,
  scored class-aware: COCO mask AP per class, semantic mIoU, cgF1
  (:mod:`samtune.evaluation.named`).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import prompting
from ..data.masks import encode_mask, semantic_label_map
from ..data.phrases import dataset_phrases
from ..data.prompts import jitter_boxes, points_from_masks, prompt_boxes
from ..data.transforms import Geometry, preprocess_image
from ..errors import ConfigError, RunError, UnknownNameError
from ..models.family import family_of
from ..models.identity import PreprocessConfig, base_fingerprint, model_source, preprocess_config
from ..models.sam_ops import (
    Embeddings,
    best_candidate,
    decode,
    encode_images,
    map_embeddings,
    to_model,
)
from ..segment.automatic_config import AutoMaskConfig
from . import metrics as M
from .automatic import automatic_report, evaluate_automatic
from .class_metrics import SCORE_THRESHOLD
from .config import PassOptions
from .named import AP_SCORE_FLOOR, check_text_model, evaluate_text, text_report
from .report import EvalReport

PROTOCOLS = prompting.EVAL_PROMPTS
Protocol = prompting.Prompt  # the name the evaluation docs use for a parsed protocol


def parse_protocol(spec: str | Protocol) -> Protocol:
    """Parse an evaluation protocol: ``"box"``, ``"point"``, ``"clicks:N"`` (N >= 1),
    ``"auto"`` or ``"text"``.

    Raises:
        UnknownNameError: an unknown protocol name.
        ConfigError: ``clicks`` without a valid positive N.
    """
    return prompting.parse_prompt(
        spec, PROTOCOLS, what="evaluation protocol", unknown=UnknownNameError
    )


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _Options:
    """The checked options of one evaluation: what every image shares."""

    protocol: Protocol
    cfg: PreprocessConfig
    prompt_batch: int
    jitter: float
    seed: int
    max_images: int | None
    worst: int
    categories: dict[int, str]
    box_source: str = "mask"


@dataclass
class _Image:
    """One image, encoded once: what the protocols need of it."""

    index: int
    geometry: Geometry
    embeddings: Embeddings  # of one image (batch 1)

    def decode(
        self,
        model: torch.nn.Module,
        embeddings: Embeddings | None = None,
        *,
        multimask: bool,
        **prompts: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`~samtune.models.sam_ops.decode` on this image (or on ``embeddings``, one per
        prompt), prompts moved to the model: float32 logits (P, K, h, w) and scores (P, K).
        SAM 2's "object absent" answers are empty masks."""
        moved = {k: to_model(model, v) for k, v in prompts.items() if v is not None}
        emb = self.embeddings if embeddings is None else embeddings
        out = decode(model, emb, multimask=multimask, empty_absent=True, **moved)
        logits = out.pred_masks.float()
        if not torch.isfinite(logits).all():  # else every metric would be NaN, or look valid
            raise RunError(
                f"the model's mask logits on image {self.index} are NaN or infinite, so no "
                "metric can be computed; check its weights for NaN (a diverged run), or, for "
                "a float16 model, evaluate in float32"
            )
        return logits, out.iou_scores.float()

    def to_original(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., h, w) low-res logits -> (..., H, W) bool masks at the original resolution."""
        return self.geometry.logits_to_original(logits.float()) > 0  # on the model's device


def _encode(model: torch.nn.Module, sample: Any, cfg: PreprocessConfig, index: int) -> _Image:
    pixel_values, geometry = preprocess_image(sample.image, cfg)
    return _Image(index, geometry, encode_images(model, to_model(model, pixel_values[None])))


@dataclass
class _Scored:
    """A protocol's result for one image's scored instances, in instance order."""

    rows: list[dict]  # pixel counts of the kept mask
    scores: list[float]  # the IoU head's estimate for it
    masks: torch.Tensor  # (n, H, W) bool, the kept masks
    oracle: list[dict] | None = None  # point: counts of the best candidate
    curves: list[list[float]] | None = None  # clicks: IoU after each click


def _unwrap(model: torch.nn.Module, accelerator: Any = None) -> torch.nn.Module:
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    while hasattr(model, "module") and not hasattr(model, "get_image_embeddings"):
        model = model.module
    return model


def _param(model: torch.nn.Module) -> torch.Tensor:
    return next(model.parameters())


def _counts_rows(pred: torch.Tensor, target: torch.Tensor) -> list[dict]:
    c = M.mask_counts(pred, target)
    return [
        {k: int(c[k][i]) for k in ("intersection", "union", "pred_area", "target_area")}
        for i in range(pred.shape[0])
    ]


def _iou(row: dict) -> float:
    return float(M.iou_from_counts(row["intersection"], row["union"]))


def _rng(seed: int, index: int) -> np.random.Generator:
    # Seeded per image so prompts do not depend on how images are sharded over processes.
    return np.random.default_rng([seed, index])


# --------------------------------------------------------------------------- protocols


def _run_box(
    model: torch.nn.Module, img: _Image, gt: torch.Tensor, boxes: np.ndarray, opts: _Options
) -> _Scored:
    if opts.jitter > 0:
        boxes = np.asarray(jitter_boxes(boxes, noise=opts.jitter, rng=_rng(opts.seed, img.index)))
    model_boxes = torch.as_tensor(img.geometry.coords_to_model(torch.as_tensor(boxes)))
    rows, scores, masks = [], [], []
    for s in range(0, len(boxes), opts.prompt_batch):
        chunk = slice(s, s + opts.prompt_batch)
        logits, iou = img.decode(model, multimask=False, boxes=model_boxes[chunk])
        pred = img.to_original(logits[:, 0])
        rows += _counts_rows(pred, gt[chunk])
        scores += iou[:, 0].tolist()
        masks.append(pred)
    return _Scored(rows, scores, torch.cat(masks))


def _center_points(img: _Image, gt_np: np.ndarray) -> torch.Tensor:
    """(n, 1, 2) model-pixel centre points of the n masks (the first click)."""
    points, _ = points_from_masks(gt_np, n_pos=1, n_neg=0, mode="center", rng=_rng(0, img.index))
    points = np.asarray(points, dtype=np.float32).reshape(len(gt_np), -1, 2)[:, :1]
    return torch.as_tensor(img.geometry.coords_to_model(torch.as_tensor(points)))


def _oracle(candidates: list[dict]) -> dict:
    """The candidate with the highest IoU (the first of equals)."""
    return candidates[max(range(len(candidates)), key=lambda k: (_iou(candidates[k]), -k))]


def _run_point(
    model: torch.nn.Module, img: _Image, gt: torch.Tensor, gt_np: np.ndarray, batch: int
) -> _Scored:
    model_points = _center_points(img, gt_np)
    rows, scores, masks, oracle = [], [], [], []
    for s in range(0, len(model_points), batch):
        mp = model_points[s : s + batch]
        labels = torch.ones(mp.shape[:2], dtype=torch.long)
        logits, iou = img.decode(model, multimask=True, points=mp, labels=labels)
        pred = img.to_original(logits)  # (p, 3, H, W)
        target = gt[s : s + batch]
        counts = [_counts_rows(pred[:, j], target) for j in range(pred.shape[1])]
        best = best_candidate(pred, iou)
        for i, j in enumerate(best.index.tolist()):
            rows.append(counts[j][i])
            oracle.append(_oracle([c[i] for c in counts]))
        scores += best.scores.tolist()
        masks.append(best.masks)
    return _Scored(rows, scores, torch.cat(masks), oracle=oracle)


def _run_clicks(
    model: torch.nn.Module,
    img: _Image,
    gt: torch.Tensor,
    gt_np: np.ndarray,
    batch: int,
    n_clicks: int,
) -> _Scored:
    first = _center_points(img, gt_np)
    parts = []
    for s in range(0, len(gt_np), batch):
        chunk = slice(s, s + batch)
        parts.append(_clicks_chunk(model, img, gt[chunk], gt_np[chunk], first[chunk], n_clicks))
    return _Scored(
        rows=[r for p in parts for r in p.rows],
        scores=[v for p in parts for v in p.scores],
        masks=torch.cat([p.masks for p in parts]),
        curves=[c for p in parts for c in (p.curves or [])],
    )


def _clicks_chunk(
    model: torch.nn.Module,
    img: _Image,
    target: torch.Tensor,
    target_np: np.ndarray,
    points: torch.Tensor,
    n_clicks: int,
) -> _Scored:
    """``n_clicks`` rounds for n instances whose first clicks are ``points`` (n, 1, 2)."""
    n = target.shape[0]
    labels = torch.ones(n, 1, dtype=torch.long)
    # one per instance: one mask input each
    embeddings = map_embeddings(lambda t: t.expand(n, *t.shape[1:]), img.embeddings)
    low_res = None
    curves: list[list[float]] = [[] for _ in range(n)]
    for k in range(n_clicks):
        logits, iou = img.decode(
            model, embeddings, multimask=k == 0, points=points, labels=labels, mask_inputs=low_res
        )
        best = best_candidate(logits, iou)
        pred = img.to_original(best.masks)
        rows = _counts_rows(pred, target)
        for curve, row in zip(curves, rows, strict=True):
            curve.append(_iou(row))
        if k < n_clicks - 1:
            points, labels = _add_clicks(img, pred, target_np, points, labels)
            low_res = best.masks[:, None]
    return _Scored(rows, best.scores.tolist(), pred, curves=curves)


def _add_clicks(
    img: _Image,
    pred: torch.Tensor,
    target_np: np.ndarray,
    points: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append each instance's next corrective click (:func:`~samtune.prompting.next_click`)."""
    new_pts, new_lbl = [], []
    for p, g in zip(pred.cpu().numpy(), target_np, strict=True):
        click = prompting.next_click(p, g)
        if click is None:  # already perfect: a padding point the model ignores
            click = (0, 0, prompting.PAD_LABEL)
        new_pts.append(click[:2])
        new_lbl.append(int(click[2]))
    n = len(new_pts)
    mp = torch.as_tensor(
        img.geometry.coords_to_model(torch.tensor(new_pts, dtype=torch.float32))
    ).reshape(n, 1, 2)
    points = torch.cat([points, mp.to(points.dtype)], dim=1)
    return points, torch.cat([labels, torch.tensor(new_lbl).reshape(n, 1)], dim=1)


# --------------------------------------------------------------------------- evaluate


def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    prompt: str | Protocol = "box",
    *,
    accelerator: Any = None,
    prompt_batch: int = 32,
    jitter: float = 0.0,
    seed: int = 0,
    max_images: int | None = None,
    worst: int = 0,
    progress: bool | None = None,
    name: str | None = None,
    auto: AutoMaskConfig | None = None,
    box_source: str = "mask",
    phrases: Mapping[int, str] | None = None,
) -> EvalReport:
    """Evaluate ``model`` on every non-crowd instance of ``dataset`` with one prompt protocol.

    Args:
        model: a ``transformers.SamModel`` (possibly prepared by Accelerate / with an adapter).
            It is put in eval mode for the run and its training mode restored afterwards.
        dataset: a ``samtune.data`` ``InstanceDataset`` (or any sequence of ``Sample``, with
            optional ``.categories`` ``{id: name}`` and ``.name``).
        prompt: ``"box"``, ``"point"``, ``"clicks:N"``, ``"auto"`` or ``"text"`` (see the
            module docstring; ``text`` needs a SAM 3 model).
        accelerator: an ``accelerate.Accelerator``; images are sharded over its processes and
            the results gathered on every process. ``None``: this process does everything.
        prompt_batch: prompts per decoder call (memory: ``prompt_batch x H x W`` floats).
        jitter: box protocol only, relative box noise passed to ``prompts.jitter_boxes``
            (0 = exact ground-truth boxes). Seeded per image from ``seed``.
        seed: seed for the jitter.
        box_source: box protocol only, where the boxes come from: ``"mask"`` (each mask's
            tight box, the default) or ``"annotation"`` (each annotation's COCO ``bbox``, as
            lightning-sam prompts; the dataset's samples need ``annotation_boxes``).
        max_images: evaluate only the first ``max_images`` images (None: all; else >= 1).
        worst: keep the ``worst`` lowest-IoU predictions (RLE masks) for overlays.
        progress: show a progress bar (default: when stderr is a terminal, main process only).
        name: label for the report (default: the model's source).
        auto: ``auto`` protocol only, the mask generator's options (default:
            :class:`~samtune.segment.automatic_config.AutoMaskConfig` with ``points_per_batch =
            prompt_batch``).
        phrases: ``text`` protocol only, ``{category id: phrase}`` each category is asked by;
            default :func:`samtune.data.phrases.dataset_phrases` (the built-in recipe's map for
            a dataset named like one, else the category names): what ``prompt: text`` trains
            with, so a tuned model is scored on its own phrases.

    Returns:
        :class:`EvalReport`; ``report.metrics["miou"]`` is the headline mean instance IoU
        (``auto``: COCO ``ap``, ``ar100`` ..., see :mod:`samtune.evaluation.automatic`;
        ``text``: class-aware ``ap``, ``semantic_miou``, ``cgf1`` ..., see
        :mod:`samtune.evaluation.named`).

    Raises:
        UnknownNameError / ConfigError: a bad ``prompt`` or option value; ``text`` on a
            model without a text encoder.
    """
    protocol = _check_options(prompt, prompt_batch, jitter, seed, max_images, worst, box_source)
    sam = _unwrap(model, accelerator)
    if protocol.kind == "text":
        check_text_model(sam)
    elif phrases is not None:
        raise ConfigError(f"phrases apply to the text protocol only, not {protocol.name!r}")
    elif family_of(sam).has_text:
        raise ConfigError(
            f"a SAM 3 model is prompted by name: evaluate it with prompt 'text', not "
            f"{protocol.name!r} (samtune's box, point, clicks and auto protocols run SAM, "
            "SAM-HQ and SAM 2)"
        )
    was_training = sam.training
    sam.eval()
    categories = dict(getattr(dataset, "categories", {}) or {})
    opts = _Options(protocol, preprocess_config(sam), prompt_batch, jitter, seed, max_images,
                    worst, categories, box_source)  # fmt: skip
    n_images = len(dataset) if max_images is None else min(len(dataset), max_images)
    indices, rank, world = _shard(list(range(n_images)), accelerator)
    show = progress and rank == 0 if progress is not None else rank == 0
    t0 = time.perf_counter()
    try:
        if protocol.kind == "auto":
            auto = auto if auto is not None else AutoMaskConfig(points_per_batch=prompt_batch)
            return _auto_report(sam, dataset, indices, opts, auto, show, world, name)
        if protocol.kind == "text":
            asked = dataset_phrases(dataset) if phrases is None else dict(phrases)
            return _text_report(sam, dataset, indices, opts, show, world, name, asked)
        results = _run_images(sam, dataset, indices, opts, show)
    finally:
        sam.train(was_training)
    results.seconds = time.perf_counter() - t0
    if world > 1:
        results = _gather(results)
    return _report(sam, dataset, opts, _finish(results, opts.worst), world, name)


def _auto_report(
    sam: torch.nn.Module,
    dataset: Any,
    indices: list[int],
    opts: _Options,
    auto: AutoMaskConfig,
    show: bool,
    world: int,
    name: str | None,
) -> EvalReport:
    """The ``auto`` protocol on this process's images, gathered; COCOeval on the whole."""
    results, ground_truth, seconds = evaluate_automatic(
        sam, dataset, indices, auto, progress=_progress(len(indices), show), gather=world > 1
    )
    return automatic_report(
        results,
        ground_truth,
        seconds,
        model=_model_record(sam, name),
        dataset={
            "name": getattr(dataset, "name", type(dataset).__name__),
            "num_images": len(ground_truth["images"]),
        },  # fmt: skip
        options={**auto.to_dict(), "max_images": opts.max_images},
        processes=world,
    )


def _text_report(
    sam: torch.nn.Module,
    dataset: Any,
    indices: list[int],
    opts: _Options,
    show: bool,
    world: int,
    name: str | None,
    phrases: dict[int, str],
) -> EvalReport:
    """The ``text`` protocol on this process's images, gathered; class-aware metrics."""
    metrics, seconds = evaluate_text(sam, dataset, indices, phrases=phrases,
                                     progress=_progress(len(indices), show), gather=world > 1)  # fmt: skip
    categories = metrics.categories
    return text_report(
        metrics,
        seconds,
        model=_model_record(sam, name),
        dataset={
            "name": getattr(dataset, "name", type(dataset).__name__),
            "num_images": len(metrics.ground_truth["images"]),
        },
        options={
            "score_threshold": SCORE_THRESHOLD,
            "ap_score_floor": AP_SCORE_FLOOR,
            "max_images": opts.max_images,
            "phrases": {categories[cid]: phrases[cid] for cid in categories},
        },  # fmt: skip
        processes=world,
    )


def _model_record(sam: torch.nn.Module, name: str | None) -> dict:
    source = model_source(sam)
    return {"name": name or source, "source": source, "fingerprint": base_fingerprint(sam)}


def _check_options(
    prompt: str | Protocol,
    prompt_batch: int,
    jitter: float,
    seed: int,
    max_images: int | None,
    worst: int,
    box_source: str = "mask",
) -> Protocol:
    """The parsed protocol, once every option is checked (:class:`PassOptions`, the checks
    ``EvalConfig`` uses too), and how they combine with the protocol."""
    protocol = parse_protocol(prompt)
    PassOptions(prompt_batch, jitter, seed, max_images, worst, box_source)
    if jitter > 0 and protocol.kind != "box":
        raise ConfigError(f"jitter applies to the box protocol only, not {protocol.name!r}")
    if box_source != "mask" and protocol.kind != "box":
        raise ConfigError(
            f"box_source applies to the box protocol only, not {protocol.name!r}; leave it 'mask'"
        )
    return protocol


def _shard(indices: list[int], accelerator: Any) -> tuple[list[int], int, int]:
    """This process's image indices, its rank and the number of processes."""
    if accelerator is None or accelerator.num_processes <= 1:
        return indices, 0, 1
    with accelerator.split_between_processes(indices, apply_padding=True) as shard:
        return list(shard), accelerator.process_index, accelerator.num_processes


@dataclass
class _Results:
    """What the images evaluated so far gave (on one process, or gathered from all)."""

    records: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    worst: list = field(default_factory=list)  # heap entries (see _push_worst), then dicts
    prompts: int = 0
    seconds: float = 0.0


def _run_images(
    sam: torch.nn.Module, dataset: Any, indices: Sequence[int], opts: _Options, show: bool
) -> _Results:
    out = _Results()
    bar = _progress(len(indices), show)
    try:
        with torch.no_grad():
            for index in indices:
                records, image, worst = _evaluate_image(sam, dataset[index], index, opts)
                out.records += records
                out.images.append(image)
                out.prompts += len(records)
                for item in worst:
                    _push_worst(out.worst, item, opts.worst)
                bar(1)
    finally:
        bar(None)
    return out


def _gather(res: _Results) -> _Results:
    """Every process's results, on every process; the time is the slowest process's."""
    from accelerate.utils import gather_object

    timing = gather_object([{"seconds": res.seconds, "prompts": res.prompts}])
    return _Results(
        records=gather_object(res.records),
        images=gather_object(res.images),
        worst=gather_object(res.worst),
        prompts=sum(t["prompts"] for t in timing),
        seconds=max(t["seconds"] for t in timing),
    )


def _finish(res: _Results, worst: int) -> _Results:
    """De-duplicated (padding shards repeat images) and sorted; the ``worst`` lowest IoUs."""
    worst_items = sorted(
        _dedupe(res.worst, ("image_index", "instance_id")),
        key=lambda r: (r["iou"], r["image_index"], r["instance_id"]),
    )[:worst]
    return _Results(
        records=_dedupe(res.records, ("image_index", "instance_id")),
        images=_dedupe(res.images, ("image_index",)),
        worst=worst_items,
        prompts=res.prompts,
        seconds=res.seconds,
    )


def _report(
    sam: torch.nn.Module,
    dataset: Any,
    opts: _Options,
    res: _Results,
    world: int,
    name: str | None,
) -> EvalReport:
    seconds, images, records = res.seconds, res.images, res.records
    return EvalReport(
        protocol=opts.protocol.name,
        metrics=_summarize(opts.protocol, records, images, opts.categories),
        records=records,
        images=images,
        worst=res.worst,
        categories=opts.categories,
        model=_model_record(sam, name),
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
            "prompt_batch": opts.prompt_batch,
            "jitter": opts.jitter,
            "seed": opts.seed,
            "max_images": opts.max_images,
            "box_source": opts.box_source,
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


# --------------------------------------------------------------------------- one image


@dataclass
class _Truth:
    """One image's ground truth, and which instances are scored."""

    masks: np.ndarray  # (N, H, W) bool, every instance
    masks_t: torch.Tensor  # the same on the model's device (one host-to-device copy)
    crowd: np.ndarray  # (N,) bool
    empty: np.ndarray  # (N,) bool
    size: tuple[int, int]  # (H, W)

    @property
    def keep(self) -> np.ndarray:
        """(N,) bool: the scored instances (neither crowd nor empty)."""
        return ~self.crowd & ~self.empty


def _truth(sample: Any, device: torch.device) -> _Truth:
    masks = np.asarray(sample.masks, dtype=bool)
    crowd = np.asarray(getattr(sample, "iscrowd", np.zeros(len(masks), bool)), dtype=bool)
    masks_t = torch.from_numpy(masks).to(device)
    nonempty = masks_t.flatten(1).any(1).cpu().numpy() if len(masks) else np.zeros(0, bool)
    size = masks.shape[1:] if masks.ndim == 3 else np.asarray(sample.image).shape[:2]
    return _Truth(masks, masks_t, crowd, ~nonempty, tuple(size))


def _evaluate_image(
    model: torch.nn.Module, sample: Any, index: int, opts: _Options
) -> tuple[list[dict], dict, list[dict]]:
    """Score one image: its instance records, its image record and its worst-mask items."""
    truth = _truth(sample, _param(model).device)
    image_rec = {
        "image_index": index,
        "image_id": int(sample.image_id),
        "num_instances": int(truth.keep.sum()),
        "skipped_empty": int((~truth.crowd & truth.empty).sum()),
        "skipped_crowd": int(truth.crowd.sum()),
    }
    scored = _score(model, sample, index, truth, opts)
    records = _records(sample, index, truth.keep, scored)
    if opts.categories:  # semantic segmentation: paint predicted and true masks into label maps
        image_rec["confusion"] = _confusion(sample, truth, scored, opts.categories)
    worst = _worst_items(records, scored.masks) if opts.worst else []
    return records, image_rec, worst


def _score(
    model: torch.nn.Module, sample: Any, index: int, truth: _Truth, opts: _Options
) -> _Scored:
    """Run the protocol on the image's kept instances."""
    keep = truth.keep
    if not keep.any():
        empty = torch.zeros((0, *truth.size), dtype=torch.bool, device=truth.masks_t.device)
        return _Scored([], [], empty)
    img = _encode(model, sample, opts.cfg, index)
    gt = truth.masks_t[torch.from_numpy(keep).to(truth.masks_t.device)]  # counted on the device
    if opts.protocol.kind == "box":
        boxes = (
            np.asarray(sample.boxes, dtype=np.float32)
            if opts.box_source == "mask"
            else prompt_boxes(sample, opts.box_source)
        )
        return _run_box(model, img, gt, boxes[keep], opts)
    gt_np = truth.masks[keep]  # centre points and clicks need numpy
    if opts.protocol.kind == "point":
        return _run_point(model, img, gt, gt_np, opts.prompt_batch)
    return _run_clicks(model, img, gt, gt_np, opts.prompt_batch, opts.protocol.clicks)


def _records(sample: Any, index: int, keep: np.ndarray, scored: _Scored) -> list[dict]:
    ids = np.asarray(sample.instance_ids)[keep]
    cats = np.asarray(sample.category_ids)[keep]
    records = []
    for i, row in enumerate(scored.rows):
        rec = {
            "image_index": index,
            "image_id": int(sample.image_id),
            "instance_id": int(ids[i]),
            "category_id": int(cats[i]),
            **row,
            "iou": _iou(row),
            "score": float(scored.scores[i]),
        }
        if scored.oracle is not None:
            rec["oracle"] = scored.oracle[i]
        if scored.curves is not None:
            rec["ious"] = scored.curves[i]
        records.append(rec)
    return records


def _confusion(
    sample: Any, truth: _Truth, scored: _Scored, categories: dict[int, str]
) -> list[list[int]]:
    """The image's semantic confusion matrix (0 = background, then the sorted categories)."""
    cat_index = {cid: i + 1 for i, cid in enumerate(sorted(categories))}
    all_cats = np.asarray(sample.category_ids)
    crowd, device = truth.crowd, truth.masks_t.device
    pred_map = semantic_label_map(
        scored.masks, [cat_index.get(int(c), 0) for c in all_cats[truth.keep]], scored.scores
    )
    true_map = semantic_label_map(
        truth.masks_t[torch.from_numpy(~crowd).to(device)],
        [cat_index.get(int(c), 0) for c in all_cats[~crowd]],
        ignore=torch.from_numpy(truth.masks[crowd].any(0)) if crowd.any() else None,
    )
    return M.confusion_matrix(pred_map, true_map, len(cat_index) + 1).tolist()


def _worst_items(records: list[dict], masks: torch.Tensor) -> list[dict]:
    """Each record's mask as COCO RLE, for the worst-predictions overlays."""
    masks_np = masks.cpu().numpy()
    return [
        {
            "image_index": rec["image_index"],
            "instance_id": rec["instance_id"],
            "iou": rec["iou"],
            "category_id": rec["category_id"],
            "mask": encode_mask(masks_np[i]),
        }
        for i, rec in enumerate(records)
    ]


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

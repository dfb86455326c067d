"""PNG figures for evaluation reports (matplotlib, Agg backend: no display needed).

- :func:`plot_per_class`: per-class instance mIoU bars, one group per class, one bar per model;
- :func:`plot_iou_histogram`: distribution of per-instance IoU, one outline per model;
- :func:`plot_click_curve`: mIoU after each click (``clicks:N`` protocol);
- :func:`save_worst_overlays`: the lowest-IoU predictions drawn over their images.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..io import atomic_write
from ..segment.overlay import overlay
from .report import EvalReport


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _as_mapping(reports) -> dict[str, EvalReport]:
    if isinstance(reports, EvalReport):
        return {reports.model.get("name", "model"): reports}
    return dict(reports)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _plt().close(fig)
    return path


def plot_per_class(reports: EvalReport | Mapping[str, EvalReport], path: str | Path) -> Path:
    """Bar chart of per-class instance mIoU (%); several reports give grouped bars."""
    plt = _plt()
    reports = _as_mapping(reports)
    classes = list(next(iter(reports.values())).metrics.get("per_class", {}))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(classes) + 2), 3.5))
    width = 0.8 / max(1, len(reports))
    x = np.arange(len(classes))
    for i, (label, r) in enumerate(reports.items()):
        pc = r.metrics.get("per_class", {})
        vals = [100 * pc.get(c, {}).get("miou", np.nan) for c in classes]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=label)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("instance mIoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"per-class mIoU, {next(iter(reports.values())).protocol} protocol")
    if len(reports) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_iou_histogram(reports: EvalReport | Mapping[str, EvalReport], path: str | Path) -> Path:
    """Histogram of per-instance IoU (20 bins over [0, 1])."""
    plt = _plt()
    reports = _as_mapping(reports)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(0, 1, 21)
    for label, r in reports.items():
        ax.hist([rec["iou"] for rec in r.records], bins=bins, histtype="step", lw=2, label=label)
    ax.set_xlabel("instance IoU")
    ax.set_ylabel("instances")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_click_curve(reports: EvalReport | Mapping[str, EvalReport], path: str | Path) -> Path:
    """mIoU (%) after each click, for ``clicks:N`` reports."""
    plt = _plt()
    reports = _as_mapping(reports)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, r in reports.items():
        keys = sorted((k for k in r.metrics if k.startswith("miou@")), key=lambda k: int(k[5:]))
        ax.plot([int(k[5:]) for k in keys], [100 * r.metrics[k] for k in keys], "o-", label=label)
    ax.set_xlabel("clicks")
    ax.set_ylabel("mIoU (%)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def save_worst_overlays(report: EvalReport, dataset, directory: str | Path) -> list[Path]:
    """Draw each of ``report.worst`` over its image: ground truth green, prediction red.

    Args:
        report: a report made with ``evaluate(..., worst=K)``.
        dataset: the dataset it was evaluated on (images and ground truth are read again).
        directory: where ``worst_<rank>_img<image_id>_inst<instance_id>.png`` files go.
    """
    from pycocotools import mask as mask_utils

    plt = _plt()
    out = []
    for rank, item in enumerate(report.worst):
        sample = dataset[item["image_index"]]
        j = int(np.nonzero(np.asarray(sample.instance_ids) == item["instance_id"])[0][0])
        rle = dict(item["mask"])
        rle["counts"] = rle["counts"].encode("ascii")
        pred = mask_utils.decode(rle).astype(bool)
        fig, ax = plt.subplots(figsize=(5, 5 * sample.image.shape[0] / sample.image.shape[1]))
        ax.imshow(overlay(sample.image, {(0, 200, 0): sample.masks[j], (230, 0, 0): pred}))
        ax.set_title(f"IoU {100 * item['iou']:.1f}%  image {sample.image_id}", fontsize=9)
        ax.axis("off")
        name = f"worst_{rank:02d}_img{sample.image_id}_inst{item['instance_id']}.png"
        out.append(_save(fig, Path(directory) / name))
    return out


__all__ = [
    "overlay",
    "plot_click_curve",
    "plot_iou_histogram",
    "plot_per_class",
    "save_worst_overlays",
]

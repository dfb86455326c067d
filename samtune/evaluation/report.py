"""Evaluation reports: :class:`EvalReport`, ``metrics.json``, markdown tables, model comparisons.

Light (no torch): what a report is and how it reads; :mod:`samtune.evaluation.protocols` makes
them, :mod:`samtune.evaluation.runs` runs and writes several.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, InputError
from ..io import atomic_write, dump_json
from ..tables import format_change, format_number, markdown_table

# metric key -> (column title, shown as percent, higher is better)
METRIC_COLUMNS: dict[str, tuple[str, bool, bool]] = {
    "miou": ("mIoU", True, True),
    "miou_oracle": ("mIoU (oracle)", True, True),
    "image_miou": ("image mIoU", True, True),
    "class_miou": ("class mIoU", True, True),
    "pooled_iou": ("pooled IoU", True, True),
    "dice": ("Dice", True, True),
    "semantic_miou": ("semantic mIoU", True, True),
    "noc@85": ("NoC@85", False, False),
    "noc@90": ("NoC@90", False, False),
    # the auto protocol: COCO instance segmentation, class-agnostic (evaluate.automatic)
    "ap": ("AP", True, True),
    "ap50": ("AP50", True, True),
    "ap75": ("AP75", True, True),
    "ap_small": ("AP small", True, True),
    "ap_medium": ("AP medium", True, True),
    "ap_large": ("AP large", True, True),
    "ar1": ("AR@1", True, True),
    "ar10": ("AR@10", True, True),
    "ar100": ("AR@100", True, True),
    "ar_small": ("AR small", True, True),
    "ar_medium": ("AR medium", True, True),
    "ar_large": ("AR large", True, True),
    # the text protocol: class-aware (evaluation.class_metrics); ap ... ar100 are per-class means
    "cgf1": ("cgF1", True, True),
    "il_mcc": ("IL-MCC", False, True),
    "positive_micro_f1": ("pmF1", True, True),
}


@dataclass
class EvalReport:
    """The result of :func:`samtune.evaluation.protocols.evaluate`.

    Attributes:
        protocol: ``"box"``, ``"point"``, ``"clicks:N"``, ``"auto"`` or ``"text"``.
        metrics: aggregate metrics (fractions in [0, 1]; NoC in clicks). ``metrics["miou"]`` is
            the headline; see ``docs/evaluation.md`` for every key.
        records: one dict per evaluated instance (``image_index``, ``instance_id``,
            ``category_id``, integer pixel counts, ``iou``, ``score`` = predicted IoU; ``oracle``
            counts for ``point``, ``ious`` per click for ``clicks:N``), sorted by
            ``(image_index, instance_id)``.
        images: one dict per image (instance counts, semantic confusion matrix).
        worst: the lowest-IoU predictions kept for overlays (``mask`` as COCO RLE).
        categories: ``{category_id: name}``.
        model, dataset, timing, options: provenance (timing is not part of the metrics).
        coco: ``auto`` and ``text`` protocols only: ``results`` (COCO result list) and
            ``ground_truth`` (COCO dataset), the exact input of its COCOeval run.
    """

    protocol: str
    metrics: dict
    records: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    worst: list[dict] = field(default_factory=list)
    categories: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    coco: dict = field(default_factory=dict)

    @property
    def miou(self) -> float:
        return float(self.metrics.get("miou", float("nan")))

    def to_dict(self) -> dict:
        """What ``metrics.json`` holds: everything but the per-instance/per-image records."""
        return {
            "protocol": self.protocol,
            "metrics": self.metrics,
            "model": self.model,
            "dataset": self.dataset,
            "options": self.options,
            "timing": self.timing,
        }

    def to_markdown(self) -> str:
        """A markdown summary: headline metrics, then per-class instance mIoU."""
        m = self.metrics
        title = (
            f"## {self.model.get('name', 'model')}: `{self.protocol}` protocol on "
            f"{self.dataset.get('name', 'dataset')} ({m.get('num_images', 0)} images, "
            f"{m.get('num_instances', 0)} instances)"
        )
        rows = [
            [title_, format_number(m[key], pct)]
            for key, (title_, pct, _) in METRIC_COLUMNS.items()
            if key in m
        ]
        clicks = sorted((k for k in m if k.startswith("miou@")), key=lambda k: int(k[5:]))
        rows += [[f"mIoU after {k[5:]} click(s)", format_number(m[k], True)] for k in clicks]
        parts = [title, markdown_table(["metric", "value"], rows)]
        if m.get("per_class") and self.protocol == "text":  # class-aware: AP, IoU, cgF1
            from .class_metrics import class_metrics_markdown

            parts.append(class_metrics_markdown({self.model.get("name", "model"): m}))
        elif m.get("per_class"):
            per_class = [
                [name, c["count"], format_number(c["miou"], True)]
                for name, c in m["per_class"].items()
            ]
            parts.append(markdown_table(["class", "instances", "mIoU"], per_class))
        return "\n\n".join(parts) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping) -> EvalReport:
        """The report :meth:`to_dict` describes (what ``metrics.json``, ``comparison.json`` and
        ``samtune eval --json`` hold): ``protocol``, ``metrics``, and ``model``, ``dataset``,
        ``options``, ``timing`` when present. Records, images and worst cases are not in that
        JSON and stay empty.

        Raises:
            InputError: ``data`` is not a mapping with a ``protocol`` string and a ``metrics``
                mapping.
        """
        if not isinstance(data, Mapping):
            raise InputError(
                f"an evaluation report must be a JSON object, found {type(data).__name__}"
            )
        if not isinstance(data.get("protocol"), str) or not isinstance(
            data.get("metrics"), Mapping
        ):
            raise InputError(
                "an evaluation report needs 'protocol' (text) and 'metrics' (an object), as "
                f"metrics.json holds; found keys {sorted(map(str, data))}"
            )
        extra = {k: dict(data.get(k) or {}) for k in ("model", "dataset", "options", "timing")}
        return cls(protocol=data["protocol"], metrics=dict(data["metrics"]), **extra)

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``metrics.json``, ``report.md`` and ``records.jsonl`` into ``directory`` (and,
        for the ``auto`` and ``text`` protocols, ``coco_results.json`` and
        ``coco_ground_truth.json``)."""
        directory = Path(directory)
        paths = {
            "metrics": directory / "metrics.json",
            "markdown": directory / "report.md",
            "records": directory / "records.jsonl",
        }
        with atomic_write(paths["metrics"]) as tmp:
            tmp.write_text(dump_json(_jsonable(self.to_dict()), indent=2) + "\n")
        with atomic_write(paths["markdown"]) as tmp:
            tmp.write_text(self.to_markdown())
        with atomic_write(paths["records"]) as tmp:
            with open(tmp, "w") as fh:
                for r in self.records:
                    fh.write(dump_json(_jsonable(r)) + "\n")
        for key, name in (
            ("results", "coco_results.json"),
            ("ground_truth", "coco_ground_truth.json"),
        ):
            if key in self.coco:
                paths[key] = directory / name
                with atomic_write(paths[key]) as tmp:
                    tmp.write_text(dump_json(self.coco[key]))
        return paths


def _jsonable(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item"):
        return _jsonable(x.item())
    return x


# --------------------------------------------------------------------------- comparison


def reports_to_json(reports: Mapping[str, EvalReport]) -> str:
    """``{label: report.to_dict()}`` as indented JSON (``comparison.json``, ``eval --json``)."""
    return dump_json(_jsonable({k: r.to_dict() for k, r in reports.items()}), indent=2, default=str)


def format_reports(reports: Mapping[str, EvalReport]) -> str:
    """Markdown for ``{label: EvalReport}``: one report's summary, or several side by side."""
    if len(reports) > 1:
        return format_comparison(reports)
    return next(iter(reports.values())).to_markdown()


def format_comparison(
    reports: Mapping[str, EvalReport] | Sequence[EvalReport],
    *,
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    per_class: bool = True,
) -> str:
    """A markdown table of several reports side by side, with deltas against a baseline.

    Args:
        reports: ``{label: EvalReport}`` (or a list, labelled by ``report.model["name"]``).
        baseline: label of the baseline row (default: the first).
        metrics: metric keys for the columns (default: those of :data:`METRIC_COLUMNS` present
            in every report). Percentages for IoU-like metrics, clicks for NoC.
        per_class: add a second table with per-class instance mIoU.

    Returns:
        Markdown text. Each non-baseline cell reads ``value (+delta)``; the protocol and the
        number of images and instances head the table, so a comparison of unequal runs shows.
    """
    if not isinstance(reports, Mapping):
        reports = {r.model.get("name", f"model {i}"): r for i, r in enumerate(reports)}
    if not reports:
        return ""
    labels = list(reports)
    base_label = baseline if baseline is not None else labels[0]
    if base_label not in reports:
        raise ConfigError(f"baseline {base_label!r} is not one of the reports {labels}")
    base = reports[base_label]
    keys = (
        list(metrics)
        if metrics
        else [k for k in METRIC_COLUMNS if all(k in r.metrics for r in reports.values())]
    )
    protocols = sorted({r.protocol for r in reports.values()})
    lines = [
        f"Protocol `{'`, `'.join(protocols)}`, {base.metrics.get('num_images', 0)} images, "
        f"{base.metrics.get('num_instances', 0)} instances; deltas against **{base_label}**.",
    ]
    columns = [(k, METRIC_COLUMNS.get(k, (k, True, True))) for k in keys]
    rows = [
        [label]
        + [
            _cell(r.metrics.get(k), base.metrics.get(k), pct, label == base_label)
            for k, (_, pct, _) in columns
        ]
        for label, r in reports.items()
    ]
    lines.append(markdown_table(["model", *(title for _, (title, _, _) in columns)], rows))
    classes = list(base.metrics.get("per_class", {})) if per_class else []
    if classes and all(r.protocol == "text" for r in reports.values()):
        from .class_metrics import class_metrics_markdown

        ordered = {base_label: base.metrics, **{k: r.metrics for k, r in reports.items()}}
        lines.append(class_metrics_markdown(ordered))
    elif classes:
        rows = [
            [c]
            + [
                _cell(
                    reports[label].metrics.get("per_class", {}).get(c, {}).get("miou"),
                    base.metrics["per_class"][c]["miou"],
                    True,
                    label == base_label,
                )
                for label in labels
            ]
            for c in classes
        ]
        lines.append(markdown_table(["class", *labels], rows))
    return "\n\n".join(lines) + "\n"


def _cell(value, base, percent: bool, is_base: bool) -> str:
    """``value (+change)``: the change against the baseline, left out where it has none."""
    change = "" if is_base else format_change(value, base, percent, missing="")
    return format_number(value, percent) + (f" ({change})" if change else "")


__all__ = ["METRIC_COLUMNS", "EvalReport", "format_comparison", "format_reports", "reports_to_json"]

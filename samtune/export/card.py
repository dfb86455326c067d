"""The model card (README.md) written beside an exported adapter: what it is, how to load it,
and its measured metrics side by side (the one table writer, :mod:`samtune.tables`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..adapters import PACKAGE_NAME, adapter_metadata
from ..errors import (
    InputError,
    quote_untrusted,
)
from ..evaluation.report import METRIC_COLUMNS
from ..io import (
    parse_json,
    read_text,
)
from ..tables import format_change, format_number, markdown_table


def _metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(key, title, percent) of the scalar metrics in ``metrics``, headline ones first."""
    rows = [(k, title, pct) for k, (title, pct, _) in METRIC_COLUMNS.items() if k in metrics]
    known = {k for k, _, _ in rows}
    for key, value in metrics.items():
        if key not in known and isinstance(value, int | float) and not isinstance(value, bool):
            rows.append((key, key, key.startswith("miou@")))
    return rows


def _side_by_side(columns: dict[str, dict[str, Any]]) -> str:
    """A metric x model table; the first column is the baseline of the change column."""
    labels = list(columns)
    first = columns[labels[0]]
    change = len(labels) == 2
    rows = []
    for key, title, pct in _metric_rows(first):
        cells = [format_number(columns[label].get(key, "-"), pct) for label in labels]
        if change:
            cells.append(
                format_change(columns[labels[1]].get(key), first.get(key), pct, missing="-")
            )
        rows.append([title, *cells])
    return markdown_table(["metric", *labels, *(["change"] if change else [])], rows)


def _metrics_section(metrics: str | os.PathLike | None) -> str:
    """The card's evaluation section from a fit's ``metrics.json``, an eval's JSON output
    (``comparison.json`` or ``--json``), a flat ``{name: value}`` JSON, or Markdown."""
    if metrics is None:
        return ""
    path = Path(metrics)
    text = read_text(path, what="metrics file")
    if path.suffix.lower() in (".md", ".markdown"):
        return "## Evaluation\n\n" + text.strip() + "\n"
    data = parse_json(
        text, f"metrics file {str(path)!r}", advice="; it is neither Markdown (.md) nor JSON"
    )
    if not isinstance(data, dict):
        raise InputError(
            f"metrics JSON {str(path)!r} must be an object; found {type(data).__name__}"
        )
    _check_metrics_schema(data, path)
    parts: list[str] = []
    comparison = data.get("comparison")
    if isinstance(comparison, dict) and "steps" in data:  # a fit's metrics.json
        tuned = comparison.get("fine_tuned") or {}
        base = comparison.get("zero_shot") or {}
        for protocol, values in tuned.items():
            columns = {"zero-shot": base[protocol]} if isinstance(base.get(protocol), dict) else {}
            columns["fine-tuned"] = values
            parts.append(f"**{protocol} prompts** (test split)\n\n" + _side_by_side(columns))
        training = (
            [f"{data['steps']} optimizer steps"] if isinstance(data.get("steps"), int) else []
        )
        best = data.get("best") or {}
        if isinstance(best.get("miou"), int | float):
            training.append(
                f"best validation mIoU {format_number(best['miou'], True)} at step {best.get('step')}"
            )
        if training:
            parts.append("Training: " + ", ".join(training) + ".")
    elif data and all(
        isinstance(v, dict) and isinstance(v.get("metrics"), dict) for v in data.values()
    ):
        parts.append(_side_by_side({label: v["metrics"] for label, v in data.items()}))
    else:
        flat = data["metrics"] if isinstance(data.get("metrics"), dict) else data
        rows = _metric_rows(flat)
        if rows:
            table = [[title, format_number(flat[k], pct)] for k, title, pct in rows]
            parts.append(markdown_table(["metric", "value"], table))
    if not parts:
        raise InputError(
            f"metrics file {str(path)!r} holds no metrics samtune recognises (a fit's "
            "metrics.json, an eval's comparison.json, or {name: number})"
        )
    return "## Evaluation\n\n" + "\n\n".join(parts) + "\n"


def _check_metrics_schema(data: dict[str, Any], path: Path) -> None:
    """Refuse a metrics file whose parts have the wrong shape (a list where an object or a
    number belongs), naming the part: what the card reads is

    * a fit's ``metrics.json``: ``{"steps": int, "best": {...}, "comparison": {"zero_shot" |
      "fine_tuned": {protocol: {metric: number}}}}``;
    * an eval's JSON: ``{label: {"metrics": {metric: number}}}``;
    * flat: ``{metric: number}`` or ``{"metrics": {metric: number}}``.

    Raises:
        InputError: naming the file, the part (``comparison.fine_tuned.box``) and its type.
    """

    def refuse(where: str, value: Any, want: str) -> None:
        raise InputError(
            f"metrics file {str(path)!r}: {quote_untrusted(where)} must be {want}; found "
            f"{type(value).__name__}. Give a fit's metrics.json, an eval's JSON or "
            "{name: number}"
        )

    def numbers(metrics: Any, where: str) -> None:
        if not isinstance(metrics, dict):
            refuse(where, metrics, "a JSON object of metrics")
        for key, value in metrics.items():
            if key in METRIC_COLUMNS and not (
                value is None or (isinstance(value, int | float) and not isinstance(value, bool))
            ):
                refuse(f"{where}.{key}" if where else key, value, "a number")

    if "steps" in data and "comparison" in data:  # a fit's metrics.json
        comparison = data["comparison"]
        if not isinstance(comparison, dict):
            refuse("comparison", comparison, "a JSON object")
        for part in ("zero_shot", "fine_tuned"):
            protocols = comparison.get(part) or {}
            if not isinstance(protocols, dict):
                refuse(f"comparison.{part}", protocols, "a JSON object of {protocol: metrics}")
            for protocol, values in protocols.items():
                numbers(values, f"comparison.{part}.{protocol}")
        if not isinstance(data.get("best") or {}, dict):
            refuse("best", data["best"], "a JSON object")
    elif isinstance(data.get("metrics"), dict):
        numbers(data["metrics"], "metrics")
    elif not (data and all(isinstance(v, dict) and "metrics" in v for v in data.values())):
        numbers(data, "")
    else:
        for label, value in data.items():
            numbers(value["metrics"], f"{label}.metrics")


def model_card(model: torch.nn.Module, metrics: str | os.PathLike | None = None) -> str:
    """A Hugging Face model card (README.md with YAML metadata) for a tuned model."""
    meta = adapter_metadata(model)
    base = meta["base_model"]
    strategy = meta["strategy"]
    front = {
        "library_name": "samtune",
        "base_model": base,
        "tags": ["samtune", "segment-anything", "sam", "image-segmentation", strategy],
        "pipeline_tag": "mask-generation",
    }
    yaml_lines = ["---"]
    for key, value in front.items():
        if isinstance(value, list):
            yaml_lines.append(f"{key}:")
            yaml_lines.extend(f"- {json.dumps(v)}" for v in value)
        else:
            yaml_lines.append(f"{key}: {json.dumps(value)}")
    yaml_lines.append("---")
    package = meta["strategy_package"]
    install = (
        f"samtune {package}"
        if package != "samtune" and PACKAGE_NAME.fullmatch(package or "")
        else "samtune"
    )
    body = f"""
# SAM adapter ({strategy})

A [samtune](https://github.com/samtune/samtune) adapter for the Segment Anything Model
`{base}`, trained with the `{strategy}` strategy.

| | |
|---|---|
| strategy | `{strategy}` (package `{meta["strategy_package"]}`) |
| config | `{meta["strategy_config"]}` |
| base model | `{base}` |
| base fingerprint | `{meta["base_fingerprint"]}` |
| samtune | {meta["samtune_version"]} |

## Use

```bash
pip install {install}
```

```python
import samtune

model = samtune.load_adapter("{base}", "<this repository id or folder>")
```
"""
    section = _metrics_section(metrics)
    return "\n".join(yaml_lines) + "\n" + body + ("\n" + section if section else "")

"""The IoU evaluation suite: box, point and click protocols; reports and comparisons.

Public API: :func:`evaluate`, :class:`EvalReport`, :func:`compare`, :func:`format_comparison`,
:func:`parse_protocol`, and the metric functions in :mod:`samtune.evaluate.metrics`.
"""

from __future__ import annotations

from .metrics import mask_dice, mask_iou
from .report import EvalReport, compare, format_comparison
from .runner import PROTOCOLS, Protocol, evaluate, parse_protocol

__all__ = [
    "PROTOCOLS",
    "EvalReport",
    "Protocol",
    "compare",
    "evaluate",
    "format_comparison",
    "mask_dice",
    "mask_iou",
    "parse_protocol",
]

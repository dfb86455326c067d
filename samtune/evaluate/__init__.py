"""The IoU evaluation suite: box, point and click protocols; reports and comparisons.

Public API: :func:`evaluate` (one model, one protocol), :func:`run_evaluation` (a base model
and its adapters from an :class:`EvalConfig`, what ``samtune eval`` runs) and
:func:`write_outputs`, :class:`EvalReport`, :func:`format_comparison`,
:func:`format_reports`, :func:`reports_to_json`, :func:`parse_protocol`, and the metric
functions in :mod:`samtune.evaluate.metrics`.

Names are imported on first use (PEP 562), so :class:`EvalConfig` (and the command line's
help) does not load torch.

``samtune.evaluate`` is both this package and the function :func:`evaluate`: importing any
submodule (``samtune.evaluate.report``...) binds the package to the name ``evaluate`` of
``samtune``, so the package itself is callable and calls :func:`evaluate`.
"""

from __future__ import annotations

from .._lazy import lazy_getattr, make_callable

make_callable(__name__)

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "EvalConfig": ".config",
    "run_evaluation": ".evaluation",
    "write_outputs": ".evaluation",
    "mask_dice": ".metrics",
    "mask_iou": ".metrics",
    "EvalReport": ".report",
    "format_comparison": ".report",
    "format_reports": ".report",
    "reports_to_json": ".report",
    "PROTOCOLS": ".runner",
    "Protocol": ".runner",
    "evaluate": ".runner",
    "parse_protocol": ".runner",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(
    globals(), _EXPORTS, submodules=("config", "evaluation", "metrics", "plots", "report", "runner")
)

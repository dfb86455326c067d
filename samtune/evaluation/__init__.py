"""The IoU evaluation suite: box, point and click protocols; reports and comparisons.

Public API: :func:`evaluate` (one model, one protocol), :func:`run_evaluation` (a base model
and its adapters from an :class:`EvalConfig`, what ``samtune eval`` runs) and
:func:`write_outputs`, :class:`EvalReport`, :func:`format_comparison`,
:func:`format_reports`, :func:`reports_to_json`, :func:`parse_protocol`, and the metric
functions in :mod:`samtune.evaluation.metrics`.

Names are imported on first use (PEP 562), so :class:`EvalConfig` (and the command line's
help) does not load torch.

Files: :mod:`.config` (:class:`EvalConfig`), :mod:`.protocols` (:func:`evaluate`: the box,
point, click and automatic protocols on one model), :mod:`.runs` (:func:`run_evaluation`: a
base model and its adapters, what ``samtune eval`` runs), :mod:`.metrics`, :mod:`.report`,
:mod:`.plots`, :mod:`.automatic` (the prompt-free protocol).
"""

from __future__ import annotations

from .._lazy import lazy_getattr

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "EvalConfig": ".config",
    "run_evaluation": ".runs",
    "write_outputs": ".runs",
    "mask_dice": ".metrics",
    "mask_iou": ".metrics",
    "EvalReport": ".report",
    "format_comparison": ".report",
    "format_reports": ".report",
    "reports_to_json": ".report",
    "PROTOCOLS": ".protocols",
    "Protocol": ".protocols",
    "evaluate": ".protocols",
    "parse_protocol": ".protocols",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(
    globals(),
    _EXPORTS,
    submodules=("automatic", "config", "metrics", "plots", "protocols", "report", "runs"),
)

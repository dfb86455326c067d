"""The training options of SAM 3 by name: ``prompt_map`` and ``sam3_loss`` (checked here).

``prompt_map`` is ``{category name: phrase}`` (YAML mapping, or ``fit(prompt_map=...)``);
``sam3_loss`` a mapping of :class:`~samtune.train.sam3_losses.Sam3LossConfig` fields, e.g.
``{"weight_mask": 100, "matcher": {"cost_class": 1}}``. Both are checked when a
:class:`~samtune.train.config.FitConfig` is made, so a typo stops the run before anything loads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, quote_untrusted
from ..options import check_prompt_map, check_range

TEXT_PROMPTS = ("text", "text+exemplar")
"""Training prompts that ask SAM 3 for each category by name (``+exemplar``: and one box)."""


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _check_numbers(where: str, mapping: Mapping[str, Any], cls: type) -> None:
    unknown = [key for key in mapping if key not in _fields(cls)]
    if unknown:
        raise ConfigError(
            f"{where} has no setting {quote_untrusted(unknown[0])}; known: "
            f"{', '.join(_fields(cls))}"
        )
    for key, number in mapping.items():
        if key in ("matcher", "pad_n_queries", "joint_scores", "scale_by_batch_size", "aux_loss"):
            continue
        check_range(f"{where}.{key}", number, minimum=0)


def sam3_loss_config(value: Mapping[str, Any] | None) -> Any:
    """The :class:`~samtune.train.sam3_losses.Sam3LossConfig` that ``value`` describes
    (Meta's defaults for what it leaves out); ConfigError naming a bad key or value."""
    from .sam3_losses import Sam3LossConfig  # torch: only once a config is made
    from .sam3_matching import MatcherWeights

    if not isinstance(value, Mapping):
        raise ConfigError(
            f"sam3_loss must be a mapping of loss settings (weight_mask: 100, ...); found "
            f"{type(value).__name__} {quote_untrusted(value)}"
        )
    options = dict(value)
    _check_numbers("sam3_loss", options, Sam3LossConfig)
    for key in ("joint_scores", "scale_by_batch_size", "aux_loss"):
        if key in options and not isinstance(options[key], bool):
            raise ConfigError(f"sam3_loss.{key} must be true or false; found {options[key]!r}")
    if "pad_n_queries" in options and options["pad_n_queries"] is not None:
        check_range("sam3_loss.pad_n_queries", options["pad_n_queries"], minimum=1, integer=True)
    if "matcher" in options:
        matcher = options["matcher"]
        if not isinstance(matcher, Mapping):
            raise ConfigError(
                f"sam3_loss.matcher must be a mapping (cost_class: 2, ...); found "
                f"{quote_untrusted(matcher)}"
            )
        _check_numbers("sam3_loss.matcher", matcher, MatcherWeights)
        options["matcher"] = MatcherWeights(**matcher)
    return Sam3LossConfig(**options)


__all__ = ["TEXT_PROMPTS", "check_prompt_map", "sam3_loss_config"]

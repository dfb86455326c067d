"""Adaptation strategies: which parts of SAM train, and how (see :mod:`.base` for the contract)."""

from __future__ import annotations

from .base import Strategy, StrategyConfig, applied_strategy
from .registry import (
    broken_strategies,
    default_config,
    get_strategy,
    list_strategies,
    refresh,
    register_strategy,
    strategy_class,
)

__all__ = [
    "Strategy",
    "StrategyConfig",
    "applied_strategy",
    "broken_strategies",
    "default_config",
    "get_strategy",
    "list_strategies",
    "refresh",
    "register_strategy",
    "strategy_class",
]

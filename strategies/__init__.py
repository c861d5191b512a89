"""Aggregation strategies: every Message-API strategy Flower ships, by name, a worked custom
strategy (`norm_bounded`), the secure-aggregation view, and the wrapper base the curious server
and the recorder build on. A user's own strategy is given by import path ('package.module:Class').

The face is lazy (PEP 562): the registry (and Flower) load on first use of a name below.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "STATELESS", "STRATEGIES", "StrategySpec", "build_strategy", "check_strategy", "is_stateless",
    "resolve_strategy", "spec_of", "strategy_chain", "train_mods",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from strategies import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

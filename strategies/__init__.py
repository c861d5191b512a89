"""Aggregation strategies: Flower's Message-API strategies by name, or a user's by import path.

`build_strategy` fills in what a simulation of N clients needs (every node available, no
federated evaluation round, since fedsim evaluates centrally) wherever the strategy's
constructor accepts those arguments; `strategy.args` in the config override them.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from flwr.serverapp.strategy import FedAvg, Strategy

from fedsim.errors import FedsimError

STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
}


# Strategies that keep nothing between rounds but what the run folder records (the global
# model), so an interrupted run can continue with a fresh instance (`fedsim run --resume`).
STATELESS = {"fedavg"}


def is_stateless(strategy: Strategy) -> bool:
    return type(strategy) in {STRATEGIES[name] for name in STATELESS}


def resolve_strategy(name: str) -> type[Strategy]:
    """A registry name or 'package.module:Class' to a Strategy subclass."""
    if ":" not in name:
        if name not in STRATEGIES:
            raise FedsimError(f"strategy.name: unknown strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))} or 'package.module:Class'")
        return STRATEGIES[name]
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import path's module may fail in any way; say which
        raise FedsimError(f"strategy.name: cannot import module {module_name!r} ({type(exc).__name__}: {exc}); check the import path and PYTHONPATH") from None
    found = getattr(module, attribute, None)
    if found is None:
        raise FedsimError(f"strategy.name: module {module_name!r} has no {attribute!r}; check the class name")
    if not (inspect.isclass(found) and issubclass(found, Strategy)):
        raise FedsimError(f"strategy.name: {name!r} is not a flwr.serverapp.strategy.Strategy subclass")
    return found


def build_strategy(name: str, args: dict[str, Any], num_clients: int) -> Strategy:
    """Instantiate a strategy for a simulation of `num_clients` clients."""
    cls = resolve_strategy(name)
    accepted = inspect.signature(cls).parameters
    defaults = {
        "fraction_evaluate": 0.0,
        "min_available_nodes": num_clients,
        "min_train_nodes": min(2, num_clients),
        "min_evaluate_nodes": min(2, num_clients),
    }
    kwargs = {k: v for k, v in defaults.items() if k in accepted} | dict(args)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise FedsimError(f"strategy.args: {name} rejected its arguments ({exc})") from None

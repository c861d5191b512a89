"""Aggregation strategies: every Message-API strategy Flower ships, by name, or a user's by import path.

`build_strategy` fills in what a simulation of N clients needs (every node available, no
federated evaluation round, since fedsim evaluates centrally; the DP wrappers' sample size)
wherever the strategy's constructor accepts those arguments; `strategy.args` override them.
A DP wrapper wraps `strategy.base` (FedAvg when none is given). Flower's FedXgb* strategies
aggregate XGBoost trees, not tensors, so they are not offered.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.serverapp.strategy import (
    Bulyan,
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    QFedAvg,
    Strategy,
)

from fedsim.errors import FedsimError
from strategies.norm_bounded import NormBoundedFedAvg

if TYPE_CHECKING:
    from fedsim.config import StrategyConfig

STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
    "bulyan": Bulyan,
    "qfedavg": QFedAvg,
    "fedavg-normbound": NormBoundedFedAvg,
    "dp-server-fixed": DifferentialPrivacyServerSideFixedClipping,
    "dp-server-adaptive": DifferentialPrivacyServerSideAdaptiveClipping,
    "dp-client-fixed": DifferentialPrivacyClientSideFixedClipping,
    "dp-client-adaptive": DifferentialPrivacyClientSideAdaptiveClipping,
}

# Wrappers take another strategy as their first argument (`strategy.base` in the config).
WRAPPERS: tuple[type[Strategy], ...] = (
    DifferentialPrivacyServerSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyClientSideAdaptiveClipping,
)

# Client-side DP wrappers expect their clients to clip: the mod each one needs on `train`.
CLIENT_MODS = {
    DifferentialPrivacyClientSideFixedClipping: fixedclipping_mod,
    DifferentialPrivacyClientSideAdaptiveClipping: adaptiveclipping_mod,
}

# Strategies that must see each client's update (robust statistics, per-update clipping,
# per-client losses): they cannot run on a secure sum.
NEEDS_INDIVIDUAL_UPDATES: tuple[type[Strategy], ...] = (
    FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan, QFedAvg, NormBoundedFedAvg,
    DifferentialPrivacyServerSideFixedClipping, DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyClientSideAdaptiveClipping,
)


# Strategies that keep nothing between rounds but what the run folder records (the global
# model), so an interrupted run can continue with a fresh instance (`fedsim run --resume`).
# Server momentum (FedAvgM, FedAdam, ...), adaptive clipping norms and DP accountants are state.
STATELESS = {"fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan", "qfedavg", "fedavg-normbound"}


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


def is_wrapper(cls: type[Strategy]) -> bool:
    return issubclass(cls, WRAPPERS)


def strategy_chain(spec: StrategyConfig) -> list[type[Strategy]]:
    """The classes of a (possibly wrapped) strategy, outermost first."""
    cls = resolve_strategy(spec.name)
    if spec.base is not None and not is_wrapper(cls):
        raise FedsimError(f"strategy.base: {spec.name} is not a wrapper strategy, so it takes no base; remove strategy.base")
    if not is_wrapper(cls):
        return [cls]
    return [cls, *(strategy_chain(spec.base) if spec.base is not None else [FedAvg])]


def train_mods(spec: StrategyConfig) -> list:
    """The ClientApp mods the strategy expects on `train` (a client-side DP wrapper's clipping)."""
    return [mod for cls in strategy_chain(spec) for kind, mod in CLIENT_MODS.items() if issubclass(cls, kind)]


def build_strategy(spec: StrategyConfig, num_clients: int, client_lr: float) -> Strategy:
    """Instantiate the configured strategy (and its base) for a simulation of `num_clients` clients.

    `client_lr` is the clients' learning rate, which QFedAvg needs to turn updates into gradients.
    """
    cls = resolve_strategy(spec.name)
    chain = strategy_chain(spec)
    defaults: dict[str, Any] = {
        "fraction_evaluate": 0.0,
        "min_available_nodes": num_clients,
        "min_train_nodes": min(2, num_clients),
        "min_evaluate_nodes": min(2, num_clients),
        "client_learning_rate": client_lr,
    }
    positional: list[Strategy] = []
    if len(chain) > 1:
        base_spec = spec.base if spec.base is not None else type(spec)(name="fedavg")
        base = build_strategy(base_spec, num_clients, client_lr)
        positional.append(base)
        defaults["num_sampled_clients"] = _sample_size(base, num_clients)
    accepted = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in defaults.items() if k in accepted} | dict(spec.args)
    try:
        return cls(*positional, **kwargs)
    except (TypeError, ValueError) as exc:
        raise FedsimError(f"strategy.args: {spec.name} rejected its arguments ({exc})") from None


def _sample_size(base: Strategy, num_clients: int) -> int:
    """How many clients the base strategy samples per round (Flower's FedAvg rule), for the DP noise scale."""
    fraction = getattr(base, "fraction_train", 1.0)
    return max(int(num_clients * fraction), min(getattr(base, "min_train_nodes", num_clients), num_clients))

"""The strategy registry: every Message-API strategy Flower ships, by name, or a user's by import path.

`build_strategy` fills in what a simulation of N clients needs (every node available, no
federated evaluation round, since fedsim evaluates centrally; the DP wrappers' sample size)
wherever the strategy's constructor accepts those arguments; `strategy.args` override them.
A DP wrapper wraps `strategy.base` (FedAvg when none is given). Flower's FedXgb* strategies
aggregate XGBoost trees, not tensors, so they are not offered.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import Mod
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

from fedsim.core.errors import FedsimError
from fedsim.core.registry import Registry, resolve_import
from strategies.norm_bounded import NormBoundedFedAvg

if TYPE_CHECKING:
    from fedsim.core.config import Config, StrategyConfig

@dataclass(frozen=True)
class StrategySpec:
    """Everything fedsim needs to know about one registered strategy.

    Parameters
    ----------
    cls : type[Strategy]
        The Flower Message-API strategy class.
    wraps : bool
        It takes another strategy as its first argument (`strategy.base` in the config).
    client_mods : tuple
        ClientApp mods its clients need around `train` (a client-side DP wrapper's clipping).
    needs_individual_updates : bool
        It must see each client's update (robust statistics, per-update clipping, per-client
        losses), so it cannot run on a secure sum.
    resumable : bool
        It keeps nothing between rounds but what the run folder records (the global model), so
        an interrupted run can continue with a fresh instance. Server momentum (FedAvgM,
        FedAdam, ...), adaptive clipping norms and DP accountants are state.
    """

    cls: type[Strategy]
    wraps: bool = False
    client_mods: tuple[Mod, ...] = ()
    needs_individual_updates: bool = False
    resumable: bool = False


STRATEGIES: Registry[StrategySpec] = Registry("strategy", "strategy.name")
for _name, _spec in {
    "fedavg": StrategySpec(FedAvg, resumable=True),
    "fedavgm": StrategySpec(FedAvgM),
    "fedprox": StrategySpec(FedProx, resumable=True),
    "fedadam": StrategySpec(FedAdam),
    "fedyogi": StrategySpec(FedYogi),
    "fedadagrad": StrategySpec(FedAdagrad),
    "fedmedian": StrategySpec(FedMedian, needs_individual_updates=True, resumable=True),
    "fedtrimmedavg": StrategySpec(FedTrimmedAvg, needs_individual_updates=True, resumable=True),
    "krum": StrategySpec(Krum, needs_individual_updates=True, resumable=True),
    "multikrum": StrategySpec(MultiKrum, needs_individual_updates=True, resumable=True),
    "bulyan": StrategySpec(Bulyan, needs_individual_updates=True, resumable=True),
    "qfedavg": StrategySpec(QFedAvg, needs_individual_updates=True, resumable=True),
    "fedavg-normbound": StrategySpec(NormBoundedFedAvg, needs_individual_updates=True, resumable=True),
    "dp-server-fixed": StrategySpec(DifferentialPrivacyServerSideFixedClipping, wraps=True, needs_individual_updates=True),
    "dp-server-adaptive": StrategySpec(DifferentialPrivacyServerSideAdaptiveClipping, wraps=True, needs_individual_updates=True),
    "dp-client-fixed": StrategySpec(DifferentialPrivacyClientSideFixedClipping, wraps=True, client_mods=(fixedclipping_mod,)),
    "dp-client-adaptive": StrategySpec(DifferentialPrivacyClientSideAdaptiveClipping, wraps=True,
                                       client_mods=(adaptiveclipping_mod,), needs_individual_updates=True),
}.items():
    STRATEGIES.add(_name, _spec)

#: The names an interrupted run can be resumed with (derived from the specs).
STATELESS = frozenset(name for name, spec in STRATEGIES.items() if spec.resumable)


def spec_of(cls: type[Strategy]) -> StrategySpec:
    """The registered spec of a strategy class, or a derived spec for a user's own class.

    A user's class (given by import path) inherits what its nearest registered base declares
    about wrapping, client mods and individual updates, but is never taken as resumable.

    Parameters
    ----------
    cls : type[Strategy]
        A Flower Message-API strategy class.

    Returns
    -------
    StrategySpec
        The registered spec of `cls`; else one derived from its first registered base other than
        FedAvg (every strategy derives from FedAvg); else a plain spec (no wrapping, no mods).
    """
    for spec in STRATEGIES.values():
        if spec.cls is cls:
            return spec
    for spec in STRATEGIES.values():
        if issubclass(cls, spec.cls) and spec.cls is not FedAvg:
            return StrategySpec(cls, spec.wraps, spec.client_mods, spec.needs_individual_updates, resumable=False)
    return StrategySpec(cls)


def is_stateless(strategy: Strategy) -> bool:
    """Whether an interrupted run with this strategy can continue with a fresh instance.

    Parameters
    ----------
    strategy : Strategy
        A strategy instance (the outermost of a wrapped stack).

    Returns
    -------
    bool
        True only for an instance of exactly a registered class whose spec is resumable.
    """
    return any(spec.resumable and type(strategy) is spec.cls for spec in STRATEGIES.values())


def resolve_strategy(name: str) -> type[Strategy]:
    """The strategy class a config names.

    Parameters
    ----------
    name : str
        A registry name (e.g. "fedavg") or an import path "package.module:Class".

    Returns
    -------
    type[Strategy]
        The strategy class.

    Raises
    ------
    FedsimError
        Unknown name, unimportable path, or something that is not a Strategy subclass.
    """
    if ":" not in name:
        return STRATEGIES.get_or_fail(name, hint=" or 'package.module:Class'").cls
    found = resolve_import(name, "strategy.name")
    if not (inspect.isclass(found) and issubclass(found, Strategy)):
        raise FedsimError(f"strategy.name: {name!r} is not a flwr.serverapp.strategy.Strategy subclass")
    return found


def strategy_chain(spec: StrategyConfig) -> list[type[Strategy]]:
    """The classes of a (possibly wrapped) strategy, outermost first.

    Parameters
    ----------
    spec : StrategyConfig
        The config's `strategy` section (`name`, optional `base`).

    Returns
    -------
    list of type[Strategy]
        The wrapper(s) then the base; a wrapper without `base` wraps FedAvg.

    Raises
    ------
    FedsimError
        If a name is unknown, or `base` is given to a strategy that wraps nothing.
    """
    cls = resolve_strategy(spec.name)
    wraps = spec_of(cls).wraps
    if spec.base is not None and not wraps:
        raise FedsimError(f"strategy.base: {spec.name} is not a wrapper strategy, so it takes no base; remove strategy.base")
    if not wraps:
        return [cls]
    return [cls, *(strategy_chain(spec.base) if spec.base is not None else [FedAvg])]


def check_strategy(config: Config) -> None:
    """Raise FedsimError (one line) where the configured strategy cannot run as configured.

    Checks the name (or import path) and base of `strategy`, and that a strategy needing
    individual updates is not combined with `defense.secure_aggregation`.

    Parameters
    ----------
    config : Config
        The whole config (its `strategy` and `defense` sections are read).

    Returns
    -------
    None

    Raises
    ------
    FedsimError
        One line naming the key and the fix.
    """
    chain = strategy_chain(config.strategy)
    if config.defense.secure_aggregation:
        individual = [cls.__name__ for cls in chain if spec_of(cls).needs_individual_updates]
        if individual:
            able = ", ".join(name for name, spec in STRATEGIES.items() if not spec.needs_individual_updates)
            raise FedsimError(f"strategy: {individual[0]} needs each client's update, which defense.secure_aggregation hides; "
                              f"choose one of {able}")


def train_mods(spec: StrategyConfig) -> list[Mod]:
    """The ClientApp mods the strategy expects around the clients' `train`.

    Parameters
    ----------
    spec : StrategyConfig
        The config's `strategy` section.

    Returns
    -------
    list of callable
        Flower client mods, outermost strategy's first (e.g. `fixedclipping_mod` for
        dp-client-fixed, as Flower's client-side DP wrappers require).
    """
    return [mod for cls in strategy_chain(spec) for mod in spec_of(cls).client_mods]


def build_strategy(spec: StrategyConfig, num_clients: int, client_lr: float) -> Strategy:
    """Instantiate the configured strategy (and its base) for a simulation.

    Defaults fill in what a simulation of N clients needs wherever the constructor accepts
    them (every node available, no federated evaluation, the DP wrappers' sample size);
    `spec.args` override them.

    Parameters
    ----------
    spec : StrategyConfig
        The config's `strategy` section.
    num_clients : int
        Clients in the simulation.
    client_lr : float
        The clients' learning rate, which QFedAvg needs to turn updates into gradients.

    Returns
    -------
    Strategy
        The outermost strategy, its base built recursively.

    Raises
    ------
    FedsimError
        If the name is unknown or the constructor rejects `strategy.args`.
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

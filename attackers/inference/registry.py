"""The inference attacks by registry name (config `attacks:`, `fedsim attack --attack`).

Every entry is a `MembershipInferenceAttack` subclass that registers itself with `@register(name)`
where it is defined; the modules that hold the built-in attacks are imported on the registry's
first read, so they may import this module without a cycle. A config entry may also name a
user's own subclass by import path ('package.module:Class', as `strategy.name` does), checked
up front like a registry name. `make_attack` builds one from a name (or a config entry
`{name, args}`) with its arguments validated against the attack's `Params`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
from pydantic import ValidationError

from attackers.inference.base import AttackParams, MembershipInferenceAttack
from fedsim.core.config import Config
from fedsim.core.errors import FedsimError
from fedsim.core.registry import Registry, resolve_import
from fedsim.core.threat_model import ThreatModel

#: The modules of `attackers.inference` whose classes register the built-in attacks.
BUILTIN_MODULES = ("baselines", "nasr", "unsupervised", "calibrated", "manipulation", "crafted")


def _import_builtin_attacks() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(f"attackers.inference.{module}")


ATTACKS: Registry[type[MembershipInferenceAttack]] = Registry("attack", "attacks", load=_import_builtin_attacks)

AttackClass = TypeVar("AttackClass", bound=type[MembershipInferenceAttack])


def register(name: str) -> Callable[[AttackClass], AttackClass]:
    """Class decorator: register an attack under `name` (its config name) and set its `name` to it.

    Parameters
    ----------
    name : str
        The registry name; one class per name (a second one is a ValueError at import).

    Returns
    -------
    callable
        The decorator; it returns the class unchanged but for `name`.
    """

    def add(cls: AttackClass) -> AttackClass:
        if not (inspect.isclass(cls) and issubclass(cls, MembershipInferenceAttack)):
            raise TypeError(f"@register({name!r}) decorates MembershipInferenceAttack subclasses, not {cls!r}")
        cls.name = name
        ATTACKS.register(name)(cls)
        return cls

    return add


def attack_class(spec: Any, key: str = "attacks") -> type[MembershipInferenceAttack]:
    """The attack class an entry names: a registry name, or a user's class by import path.

    Parameters
    ----------
    spec : str or AttackConfig or mapping
        A registry name or 'package.module:Class', or an entry with `name` and `args`.
    key : str
        Where the entry came from, for the message.

    Returns
    -------
    type[MembershipInferenceAttack]
        The class (not instantiated).

    Raises
    ------
    FedsimError
        One line for an unknown name, a module that does not import, a missing attribute, or an
        object that is not a concrete `MembershipInferenceAttack` subclass with `AttackParams`.
    """
    name = attack_name(spec)
    if ":" not in name:
        return ATTACKS.get_or_fail(name, key, hint=" or 'package.module:Class'")
    found = resolve_import(name, key)
    base = f"{MembershipInferenceAttack.__module__}.{MembershipInferenceAttack.__name__}"
    if not inspect.isclass(found):
        raise FedsimError(f"{key}: {name!r} is a {type(found).__name__}, not a class; name a subclass of {base}")
    if not issubclass(found, MembershipInferenceAttack):
        raise FedsimError(f"{key}: {name!r} is not a subclass of {base}; derive the attack from it")
    if inspect.isabstract(found):
        missing = ", ".join(sorted(found.__abstractmethods__))
        raise FedsimError(f"{key}: {name!r} does not implement {missing}; an attack defines fit and score ({base})")
    if not (inspect.isclass(found.Params) and issubclass(found.Params, AttackParams)):
        raise FedsimError(f"{key}: {name!r} declares Params = {found.Params!r}, which is not a subclass of "
                          f"{AttackParams.__module__}.AttackParams; derive its Params from that")
    return found


def _name_and_args(spec: Any) -> tuple[str, dict[str, Any]]:
    """(name, args) of a registry name or a config entry with `name` and `args` (attribute or key)."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        return spec["name"], dict(spec.get("args") or {})
    return spec.name, dict(spec.args or {})


def attack_params(spec: Any, key: str = "attacks"):
    """The validated parameters of an attack entry.

    Parameters
    ----------
    spec : str or AttackConfig or mapping
        A registry name or import path, or an entry with `name` and `args`.
    key : str
        Where the entry came from, for the message.

    Returns
    -------
    AttackParams
        An instance of the attack's `Params`.

    Raises
    ------
    FedsimError
        One line for an entry `attack_class` refuses, an unknown argument (naming the arguments it
        has) or an ill-typed value.
    """
    name, args = _name_and_args(spec)
    cls = attack_class(name, key)
    try:
        return cls.Params.model_validate(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        declared = ", ".join(cls.Params.model_fields) or "none"
        if first["type"] == "extra_forbidden":
            raise FedsimError(f"{key}: attack {name!r} has no argument {where!r}; its arguments are: {declared}") from None
        raise FedsimError(f"{key}: attack {name!r}, argument {where!r}: {first['msg']} (got {first.get('input')!r})") from None


def make_attack(spec: Any, seed: int | np.random.SeedSequence = 0, **kwargs: Any) -> MembershipInferenceAttack:
    """A fresh attack.

    Parameters
    ----------
    spec : str or AttackConfig or mapping
        A registry name or import path, or an entry with `name` and `args`.
    seed : int or numpy.random.SeedSequence
        Where the attack's randomness comes from (`attackers.inference.base.attack_seed_sequence`).
    **kwargs
        Arguments added to (and overriding) the entry's `args`.

    Returns
    -------
    MembershipInferenceAttack
        The attack, unfitted.

    Raises
    ------
    FedsimError
        As `attack_params`.
    """
    name, args = _name_and_args(spec)
    params = attack_params({"name": name, "args": {**args, **kwargs}})
    return attack_class(name)(params, seed)


def attack_name(spec: Any) -> str:
    """The name of an attack entry as written: a registry name or an import path (leakage.csv's `attack`)."""
    return _name_and_args(spec)[0]


def check_attacks(specs: Iterable[Any], key: str = "attacks", references: bool = True, kept_references: int | None = None) -> None:
    """Raise FedsimError (one line) for the first entry with an unknown name, a bad import path or
    invalid arguments, listed twice, that needs individual updates the attacker does not see
    (`references` False), or more reference clients per round than the run keeps (`kept_references`).

    Parameters
    ----------
    specs : iterable
        Registry names or import paths, or entries with `name` and `args`.
    key : str
        Where the entries came from, for the message.
    references : bool
        Whether the attacker sees individual updates, the other clients' models among them
        (`fedsim.core.threat_model.ThreatModel.sees_individual_updates`).
    kept_references : int, optional
        The other clients' models a round keeps besides the victim's (`RecordConfig.kept_references`);
        None: every client heard.
    """
    seen: set[str] = set()
    for spec in specs:
        attack_params(spec, key)
        name = attack_name(spec)
        if name in seen:
            raise FedsimError(f"{key}: {name} is listed twice; its leakage rows carry only the name, so the two could not be told apart: "
                              "keep one entry (attack the run again for the other, e.g. `fedsim attack RUN --attack ... --out OTHER.csv`)")
        seen.add(name)
        cls = attack_class(name, key)
        if cls.needs_individual_updates and not references:
            raise FedsimError(ThreatModel.refusal(f"{key}: {name} {cls.reads}") + ", or remove it")
        if kept_references is not None and cls.references_needed > kept_references:
            raise FedsimError(f"{key}: {name} {cls.reads}, at least {cls.references_needed} per round, and the run keeps "
                              f"{kept_references} (record.clients: victim, record.references: {kept_references}); set "
                              f"record.references: {cls.references_needed} or more, or record.clients: all, or remove it")


def check_attacks_on(specs: Iterable[Any], config: Config, key: str = "attacks") -> None:
    """`check_attacks` against what a run of `config` offers: its threat model and the clients it records.

    Parameters
    ----------
    specs : iterable
        Registry names or import paths, or entries with `name` and `args`.
    config : Config
        The run's config (`adversary`, `defense.secure_aggregation`, `record`).
    key : str
        Where the entries came from, for the message.

    Raises
    ------
    FedsimError
        One line, as `check_attacks`.
    """
    check_attacks(specs, key, references=ThreatModel.of(config).sees_individual_updates, kept_references=config.record.kept_references())

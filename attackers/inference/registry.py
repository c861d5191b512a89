"""The inference attacks by registry name (config `attacks:`, `fedsim attack --attack`).

Every entry is a `MembershipInferenceAttack` subclass; `make_attack` builds one from a name (or
a config entry `{name, args}`) with its arguments validated against the attack's `Params`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from pydantic import ValidationError

from attackers.inference.base import MembershipInferenceAttack
from attackers.inference.baselines import (
    ConfidenceAttack,
    EntropyAttack,
    GradientNormAttack,
    LabelOnlyAttack,
    LossAttack,
    TrajectoryAttack,
)
from attackers.inference.calibrated import FedMIAAttack, GradientCosineAttack, LiRAAttack, RMIAAttack
from attackers.inference.crafted import CraftedAttack
from attackers.inference.manipulation import SentReturnedAttack
from attackers.inference.nasr import NasrAttack, NasrBlackBoxAttack
from attackers.inference.unsupervised import UnsupervisedNasrAttack
from fedsim.core.errors import FedsimError
from fedsim.core.registry import Registry
from fedsim.core.threat_model import ThreatModel

ATTACKS: Registry[type[MembershipInferenceAttack]] = Registry("attack", "attacks")
for _cls in (LossAttack, ConfidenceAttack, EntropyAttack, GradientNormAttack, TrajectoryAttack,
             LabelOnlyAttack, NasrAttack, NasrBlackBoxAttack, UnsupervisedNasrAttack, FedMIAAttack, LiRAAttack, RMIAAttack,
             SentReturnedAttack, CraftedAttack, GradientCosineAttack):
    ATTACKS.add(_cls.name, _cls)


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
        A registry name, or an entry with `name` and `args`.
    key : str
        Where the entry came from, for the message.

    Returns
    -------
    AttackParams
        An instance of the attack's `Params`.

    Raises
    ------
    FedsimError
        One line for an unknown attack, an unknown argument (naming the arguments it has) or an
        ill-typed value.
    """
    name, args = _name_and_args(spec)
    cls = ATTACKS.get_or_fail(name, key)
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
        A registry name, or an entry with `name` and `args`.
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
    return ATTACKS[name](params, seed)


def attack_name(spec: Any) -> str:
    """The registry name of a name or a config entry.

    Parameters
    ----------
    spec : str or AttackConfig or mapping
        A registry name, or an entry with `name` and `args`.

    Returns
    -------
    str
        The registry name of a name or a config entry.
    """
    return _name_and_args(spec)[0]


def check_attacks(specs: Iterable[Any], key: str = "attacks", references: bool = True) -> None:
    """Raise FedsimError (one line) for the first entry with an unknown name or invalid arguments,
    listed twice, or that needs the other clients' models as references when the attacker has none
    (`references` False).

    Parameters
    ----------
    specs : iterable
        Registry names or entries with `name` and `args`.
    key : str
        Where the entries came from, for the message.
    references : bool
        Whether the attacker holds the other clients' models of each round.
    """
    seen: set[str] = set()
    for spec in specs:
        attack_params(spec, key)
        name = attack_name(spec)
        if name in seen:
            raise FedsimError(f"{key}: {name} is listed twice; its leakage rows carry only the name, so the two could not be told apart: "
                              "keep one entry (attack the run again for the other, e.g. `fedsim attack RUN --attack ... --out OTHER.csv`)")
        seen.add(name)
        if getattr(ATTACKS[name], "needs_references", False) and not references:
            need = getattr(ATTACKS[name], "reads", "calibrates against the other clients' models")
            raise FedsimError(ThreatModel.refusal(f"{key}: {name} {need}") + ", or remove it")
